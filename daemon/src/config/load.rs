//! Reading a configuration: the TOML file, `--set` and flag overrides, validation, and
//! errors that point at the file's line or the flag that set a bad value.

use std::path::{Path, PathBuf};

use super::Config;

/// Where a setting came from, so that an error can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of the config file (none when it cannot be told).
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: Option<usize>,
    },
    /// A command-line flag, as the user spelled it.
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "config file {}, line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "config file {}", path.display()),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the configuration was refused: one sentence naming the file, line and key (or the flag).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    #[error("{origin}: {message}")]
    /// Not TOML, or not the schema (unknown key, wrong type).
    Parse {
        /// Where.
        origin: Origin,
        /// What the parser said.
        message: String,
    },
    #[error("{origin}: key `{key}` {problem}")]
    /// A value the schema allows but the daemon cannot run with.
    Invalid {
        /// Where it was set.
        origin: Origin,
        /// The dotted key.
        key: String,
        /// What is wrong, as "must be ...".
        problem: String,
    },
}

/// A `KEY=VALUE` override from the command line (`--set sensor.monitor_host=true`, or a
/// dedicated flag such as `--state-dir`).
#[derive(Clone, Debug)]
pub struct Override {
    /// The dotted key (`sensor.drain_interval_ms`).
    pub key: String,
    /// The value, as TOML.
    pub value: toml::Value,
    /// How the user spelled it, for error messages.
    pub flag: String,
}

impl Override {
    /// Parses `key=value`; the value is TOML (`true`, `5`, `"x"`) or else a bare string.
    pub fn parse_set(s: &str) -> Result<Self, String> {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(format!("`{s}` has an empty key"));
        }
        let raw = raw.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Self {
            flag: format!("--set {s}"),
            key,
            value,
        })
    }

    /// An override from a dedicated flag (`--state-dir`, ...).
    pub fn new(flag: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        Self {
            flag: flag.to_string(),
            key: key.to_string(),
            value: value.into(),
        }
    }
}

/// Where a running daemon's config came from, to read it again on SIGHUP.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// The file.
    pub path: std::path::PathBuf,
    /// Given with `--config` (a missing file is then an error).
    pub explicit: bool,
    /// The flags' overrides, applied again.
    pub overrides: Vec<Override>,
}

impl ConfigSource {
    /// Reads and validates the config as at start.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.path, self.explicit, &self.overrides)
    }
}

impl Config {
    /// Loads the file (a missing file at the default path means defaults), then applies
    /// overrides in order, then validates.
    pub fn load(path: &Path, explicit: bool, overrides: &[Override]) -> Result<Self, ConfigError> {
        let (config, text) = match std::fs::read_to_string(path) {
            Ok(text) => (Self::from_toml(&text, path)?, Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                (Self::default(), None)
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let config = config.with_overrides(overrides)?;
        config.validate().map_err(|(key, problem)| {
            let origin = overrides
                .iter()
                .rev()
                .find(|o| o.key == key)
                .map(|o| Origin::Flag(o.flag.clone()))
                .unwrap_or_else(|| Origin::File {
                    path: path.to_path_buf(),
                    line: text.as_deref().and_then(|t| line_of_key(t, &key)),
                });
            ConfigError::Invalid {
                origin,
                key,
                problem,
            }
        })?;
        Ok(config)
    }

    /// Parses a config file's text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_number(text, s.start));
            // toml's messages can span lines ("invalid table header\nexpected ..."): one
            // line, for a journal.
            let mut message = e
                .message()
                .trim()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            if let Some(key) = e.span().and_then(|s| key_at(text, s.start)) {
                if !message.contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(&key))) {
                    message = format!("key `{key}`: {message}");
                } else {
                    message = format!("{message} (in `{key}`)");
                }
            }
            ConfigError::Parse {
                origin: Origin::File {
                    path: path.to_path_buf(),
                    line,
                },
                message,
            }
        })
    }

    fn with_overrides(self, overrides: &[Override]) -> Result<Self, ConfigError> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut table = toml::Table::try_from(&self).expect("a Config always serializes");
        for o in overrides {
            set_dotted(&mut table, &o.key, o.value.clone());
            // Checking after each one pins an error on the flag that caused it.
            toml::Value::Table(table.clone())
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    origin: Origin::Flag(o.flag.clone()),
                    message: format!("key `{}`: {}", o.key, e.message().trim()),
                })?;
        }
        Ok(toml::Value::Table(table)
            .try_into::<Config>()
            .expect("checked above"))
    }

    /// Semantic checks that types alone cannot express; returns (key, problem).
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((key.to_string(), problem));
        let s = &self.sensor;
        if !s.ring_buffer_bytes.is_power_of_two() || s.ring_buffer_bytes < 4096 {
            return bad(
                "sensor.ring_buffer_bytes",
                format!(
                    "must be a power of two of at least 4096, not {}",
                    s.ring_buffer_bytes
                ),
            );
        }
        if s.wakeup_bytes >= s.ring_buffer_bytes {
            return bad(
                "sensor.wakeup_bytes",
                format!(
                    "must be smaller than sensor.ring_buffer_bytes ({}), not {}",
                    s.ring_buffer_bytes, s.wakeup_bytes
                ),
            );
        }
        if s.drain_interval_ms == 0 || s.drain_interval_ms > 1000 {
            return bad(
                "sensor.drain_interval_ms",
                format!("must be between 1 and 1000, not {}", s.drain_interval_ms),
            );
        }
        if s.event_queue == 0 {
            return bad("sensor.event_queue", "must be at least 1".into());
        }
        if s.stats_interval_ms == 0 {
            return bad("sensor.stats_interval_ms", "must be at least 1".into());
        }
        self.containerd.validate()?;
        self.containers.validate()?;
        self.process.validate()?;
        self.verify.validate()?;
        self.files.validate()?;
        self.baseline.validate()?;
        self.trust.validate()?;
        self.alerts.validate()?;
        self.api.validate()?;
        self.journal.validate()?;
        self.metrics.address()?;
        self.respond.validate()?;
        if !self.alerts.webhook.is_empty() && !self.journal.enabled {
            return bad(
                "alerts.webhook",
                "needs the journal (journal.enabled = true): webhooks are delivered from it".into(),
            );
        }
        if self.node_name.trim().is_empty() {
            return bad("node_name", "must not be empty".into());
        }
        if !self.state_dir.is_absolute() {
            return bad(
                "state_dir",
                format!("must be an absolute path, not {}", self.state_dir.display()),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad("log_level", format!("is not a valid log filter: {e}"));
        }
        Ok(())
    }
}

fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
    t.insert(last.to_string(), value);
}

fn line_number(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key on the line holding `offset`: the table header above it plus the key
/// before `=`. Good enough for the flat files we document; errors fall back to no key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']'))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        })
        .filter(|t| !t.is_empty());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The line where `dotted` is set (`sensor.drain_interval_ms`), or its table begins
/// (`verify.allow[1]`: the second `[[verify.allow]]`). A key the file does not set is
/// pointed at by its closest enclosing table that the file has.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let mut want = dotted.to_string();
    loop {
        if let Some(line) = find_key_line(text, &want) {
            return Some(line);
        }
        // `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a`.
        let cut = want.rfind(['.', '[']).filter(|&i| i > 0)?;
        want.truncate(cut);
    }
}

fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_string();
            let n = arrays.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            if table == dotted {
                return Some(i + 1);
            }
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_string();
            if table == dotted {
                return Some(i + 1);
            }
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let full = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            if full == dotted {
                return Some(i + 1);
            }
        }
    }
    None
}
