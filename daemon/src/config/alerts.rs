//! `[alerts]` and `[journal]`: where alerts go and how the on-disk journal keeps them; the
//! keys, their defaults and what a value must be.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[alerts]`: where alerts go besides the gRPC stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Every alert as a JSON record on the daemon's output.
    pub log: bool,
    /// Also append alerts to this JSONL file (`--alert-log`); empty: off.
    pub file: Option<PathBuf>,
    /// Rotate the file beyond this size ...
    pub file_max_bytes: u64,
    /// ... keeping this many old files (`FILE.1` newest).
    pub file_keep: u32,
    /// Alert drafts waiting for the alert stage.
    pub queue: usize,
    /// The JSONL file's lines: `layerguard` (the alert as every sink carries it) or `falco`
    /// (Falco's output JSON, as the `falco` webhook posts it).
    pub file_format: AlertFormat,
    /// `[[alerts.webhook]]`: receivers alerts are POSTed to, from the journal.
    pub webhook: Vec<WebhookConfig>,
}

pub use crate::alert::AlertFormat;

/// One `[[alerts.webhook]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` (Falcosidekick listens on `http://HOST:2801/`).
    pub url: String,
    /// The body: `falco` or `layerguard`.
    #[serde(default = "falco")]
    pub format: AlertFormat,
    /// Alerts below this severity are not posted.
    #[serde(default = "info")]
    pub min_severity: crate::alert::Severity,
    /// A file of `Name: value` lines sent as headers with every POST (an Authorization
    /// header): it must not be readable by group or others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_file: Option<PathBuf>,
    /// One POST may take this long before it counts as failed and is retried.
    #[serde(default = "webhook_timeout")]
    pub timeout_ms: u64,
}

fn falco() -> AlertFormat {
    AlertFormat::Falco
}
fn info() -> crate::alert::Severity {
    crate::alert::Severity::Info
}
fn webhook_timeout() -> u64 {
    5000
}

impl WebhookConfig {
    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// (host, port, path and query) of an `http://` URL, or why it is not one.
    pub fn target(&self) -> Result<(String, u16, String), String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{:?}: https is not supported yet; post to a Falcosidekick (or a TLS proxy) over http on a trusted network",
                    self.url
                ))
            }
            _ => return Err(format!("{:?} must start with http://", self.url)),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{:?} has no host", self.url))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok((host, uri.port_u16().unwrap_or(80), path))
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            log: true,
            file: None,
            file_max_bytes: 64 * 1024 * 1024,
            file_keep: 5,
            queue: 16 * 1024,
            file_format: AlertFormat::Layerguard,
            webhook: Vec::new(),
        }
    }
}

impl AlertsConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.file_max_bytes < 4096 {
            return Err((
                "alerts.file_max_bytes".into(),
                format!("must be at least 4096, not {}", self.file_max_bytes),
            ));
        }
        if self.queue == 0 {
            return Err(("alerts.queue".into(), "must be at least 1".into()));
        }
        for (i, w) in self.webhook.iter().enumerate() {
            let at = |field: &str| format!("alerts.webhook[{i}].{field}");
            if let Err(problem) = w.target() {
                return Err((at("url"), problem));
            }
            if self.webhook[..i].iter().any(|o| o.url == w.url) {
                return Err((at("url"), format!("{:?} is given twice", w.url)));
            }
            if !(100..=60_000).contains(&w.timeout_ms) {
                return Err((
                    at("timeout_ms"),
                    format!("must be between 100 and 60000, not {}", w.timeout_ms),
                ));
            }
        }
        Ok(())
    }
}

/// When journaled alerts are forced to disk (see `alert::journal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Before each alert is published: survives power loss; a disk flush per alert.
    Always,
    /// At most every `fsync_interval_ms`: a crash of the daemon loses nothing, a power
    /// loss at most the last interval.
    Batched,
    /// Left to the kernel's writeback.
    Never,
}

/// `[journal]`: the on-disk alert journal in `<state_dir>/journal`, from which
/// subscribers resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Off: alerts are streamed live only, and a resuming subscriber gets a gap.
    pub enabled: bool,
    /// A segment file is closed beyond this size; retention deletes whole segments.
    pub segment_bytes: u64,
    /// Old segments are deleted while the journal is larger than this.
    pub max_bytes: u64,
    /// Segments whose newest alert is older than this are deleted.
    pub max_age_hours: u64,
    /// When appended alerts are forced to disk.
    pub fsync: FsyncMode,
    /// How often, with `fsync = "batched"`.
    pub fsync_interval_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            segment_bytes: 16 << 20,
            max_bytes: 256 << 20,
            max_age_hours: 7 * 24,
            fsync: FsyncMode::Batched,
            fsync_interval_ms: 100,
        }
    }
}

impl JournalConfig {
    /// `max_age_hours` as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_hours * 3600)
    }
    /// `fsync_interval_ms` as a duration.
    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("journal.{key}"), problem));
        const MIB: u64 = 1 << 20;
        if !(MIB..=1024 * MIB).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!(
                    "must be between 1 MiB and 1 GiB, not {}",
                    self.segment_bytes
                ),
            );
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return bad(
                "max_bytes",
                format!(
                    "must be at least twice journal.segment_bytes ({}), not {}",
                    self.segment_bytes, self.max_bytes
                ),
            );
        }
        // A year; beyond it the value is a unit mistake (seconds written as hours).
        if !(1..=24 * 366).contains(&self.max_age_hours) {
            return bad(
                "max_age_hours",
                format!("must be between 1 and 8784, not {}", self.max_age_hours),
            );
        }
        if !(1..=60_000).contains(&self.fsync_interval_ms) {
            return bad(
                "fsync_interval_ms",
                format!(
                    "must be between 1 and 60000, not {}",
                    self.fsync_interval_ms
                ),
            );
        }
        Ok(())
    }
}
