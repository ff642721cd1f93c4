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
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            log: true,
            file: None,
            file_max_bytes: 64 * 1024 * 1024,
            file_keep: 5,
            queue: 16 * 1024,
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
