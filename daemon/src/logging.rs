//! The daemon's output: diagnostics through `tracing`, and structured records (events,
//! later alerts) as one JSON object per line in the same shape.
//!
//! Both go to stdout so that journald and `kubectl logs` keep them in order. Every JSON
//! line has `timestamp`, `level`, `target` and `message`; a record adds its own fields at
//! the top level (tracing's JSON layer is set to flatten, so diagnostics match).

/// How records are written: one JSON object per line, or text for people.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for journald, log shippers).
    Json,
    /// `key=value` text, for people.
    Text,
}
use serde::Serialize;
use std::io::Write;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the tracing subscriber. Call once, before anything logs.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    let _ = FORMAT.set(format);
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Writes one structured record. `value` must serialize to a map; its fields sit beside
/// `timestamp`, `level`, `target` and `message`.
pub fn record<T: Serialize>(level: &str, target: &str, message: &str, value: &T) {
    let mut obj = serde_json::Map::new();
    obj.insert("timestamp".into(), timestamp().into());
    obj.insert("level".into(), level.into());
    obj.insert("target".into(), target.into());
    obj.insert("message".into(), message.into());
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(fields)) => obj.extend(fields),
        Ok(other) => {
            obj.insert("value".into(), other);
        }
        Err(e) => {
            obj.insert("encode_error".into(), e.to_string().into());
        }
    }
    let line = match FORMAT.get().copied().unwrap_or(LogFormat::Json) {
        LogFormat::Json => serde_json::Value::Object(obj).to_string(),
        LogFormat::Text => text_line(&obj),
    };
    // One write of a whole line under the lock keeps records and diagnostics unmixed.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn text_line(obj: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut line = String::new();
    for key in ["timestamp", "level", "target", "message"] {
        if let Some(serde_json::Value::String(s)) = obj.get(key) {
            line.push_str(s);
            line.push(' ');
        }
    }
    for (k, v) in obj {
        if matches!(k.as_str(), "timestamp" | "level" | "target" | "message") {
            continue;
        }
        match v {
            serde_json::Value::String(s) => line.push_str(&format!("{k}={s:?} ")),
            other => line.push_str(&format!("{k}={other} ")),
        }
    }
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_one_line() {
        let mut obj = serde_json::Map::new();
        obj.insert("message".into(), "exec".into());
        obj.insert("pid".into(), 5.into());
        obj.insert("filename".into(), "/bin/a b\n".into());
        let line = text_line(&obj);
        assert!(!line.contains('\n'));
        assert!(line.starts_with("exec "), "{line}");
        assert!(line.contains("pid=5"), "{line}");
    }
}
