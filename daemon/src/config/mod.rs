//! The daemon's one typed configuration: defaults, the TOML file, and flag overrides.
//!
//! Owns parsing and validation only. Every error names the file, line and key (or the flag)
//! in one sentence, because an operator reading a failed unit's journal has nothing else.
//!
//! One type, [`Config`], in a few files: this one has the top level and the sections of
//! the event pipeline (`[sensor]`, `[containerd]`, `[containers]`, `[process]`); the
//! analyzers' and outputs' sections have a file each (`verify`, `files`, `baseline`, `trust`, `alerts`, `api`); `load`
//! reads a file and overrides and says where a bad value came from.

mod alerts;
mod api;
mod baseline;
mod files;
mod load;
mod respond;
#[cfg(test)]
mod tests;
mod trust;
mod verify;

pub use alerts::{AlertFormat, AlertsConfig, FsyncMode, JournalConfig, WebhookConfig};
pub use api::{ApiConfig, Role, DEFAULT_API_SOCKET};
pub use baseline::BaselineConfig;
pub use files::{FilesConfig, KernelHooks};
pub use load::{ConfigError, ConfigSource, Origin, Override};
pub use respond::{NeverConfig, PolicyAction, PolicyMode, RespondConfig, ResponsePolicyConfig};
pub use trust::{KeyStatus, Rfc3339, TrustConfig, TrustKeyConfig, TrustMode, TrustPolicyConfig};
pub use verify::{AllowRule, VerifyConfig};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where `layerguard run` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/layerguard/layerguard.toml";
/// containerd's API socket on a stock install.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// Where the daemon keeps its layer cache and journal.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/layerguard";

pub use crate::logging::LogFormat;

/// Scheduling of the event pipeline's thread (`sensor.scheduling`). Its hashing and
/// indexing threads are SCHED_BATCH unless this is `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineScheduling {
    /// Real-time (SCHED_FIFO, priority 1) while the machine is quiet, so an exec is judged
    /// at once even when every CPU is busy; SCHED_BATCH during exec storms, so the
    /// workload is not preempted at every drain. See `sensor::pace`.
    Adaptive,
    /// Always SCHED_BATCH: wake-ups never preempt a running task; an alert can wait for
    /// a busy CPU's scheduler slice (a few ms).
    Batch,
    /// The scheduler's default policy.
    Normal,
}

/// The daemon's whole configuration: the TOML file's top level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name reported in every alert; defaults to the host name.
    pub node_name: String,
    /// containerd's API socket.
    pub containerd_socket: PathBuf,
    /// Caches and the journal live here.
    pub state_dir: PathBuf,
    /// How the daemon's output is written.
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `debug`, `layerguard::sensor=debug`, ...).
    pub log_level: String,
    /// `[sensor]`.
    pub sensor: SensorConfig,
    /// `[containerd]`.
    pub containerd: ContainerdConfig,
    /// `[containers]`.
    pub containers: ContainersConfig,
    /// `[process]`.
    pub process: ProcessConfig,
    /// `[verify]`.
    pub verify: VerifyConfig,
    /// `[files]`.
    pub files: FilesConfig,
    /// `[baseline]`.
    pub baseline: BaselineConfig,
    /// `[trust]`.
    pub trust: TrustConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[journal]`.
    pub journal: JournalConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[respond]`.
    pub respond: RespondConfig,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `HOST:PORT` to serve `/metrics` (OpenMetrics text) on; empty: off. Anyone who can
    /// connect can read it: keep it on loopback or a trusted network.
    pub listen: String,
}

impl MetricsConfig {
    /// The address, `None` when off.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, (String, String)> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            (
                "metrics.listen".to_string(),
                format!("{:?} is not HOST:PORT (like 127.0.0.1:9464)", self.listen),
            )
        })
    }
}

/// `[sensor]`: the kernel sensor and how the daemon drains it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// Report processes of the host mount namespace too (off: dropped in the kernel).
    pub monitor_host: bool,
    /// Size of the kernel ring buffer; a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// The kernel always wakes the daemon when this much data waits. Below that only
    /// execs wake it, at most 8 at once and 40 a second after that; the drain timer
    /// collects the rest. Wake-ups per event cost more than the sensor itself.
    pub wakeup_bytes: u32,
    /// After a drain that found records, the next drain happens this much later even if
    /// the kernel does not wake the daemon: the latency of forks, exits and of execs in a
    /// storm past the kernel's wake-up allowance. Each drain is a thread wake-up (about
    /// 20 us of CPU on a 2-core VM), so shorter costs every exec in a storm.
    pub drain_interval_ms: u64,
    /// Capacity of the channel from the sensor to the next stage, in events.
    pub event_queue: usize,
    /// How often the kernel's loss counters are read and reported.
    pub stats_interval_ms: u64,
    /// How the event pipeline's thread (ring buffer drain, containers, verify, alerts) is
    /// scheduled; see [`PipelineScheduling`].
    pub scheduling: PipelineScheduling,
}

/// `[containerd]`: how long layerguard waits for containerd, for every caller (the
/// containers watcher, the image content store, the responder), so that a hung containerd
/// can wedge none of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdConfig {
    /// Until the socket accepts a connection.
    pub connect_timeout_ms: u64,
    /// For the answer to one call.
    pub call_timeout_ms: u64,
    /// Between two messages of a stream (the chunks of a content blob being read).
    pub stream_timeout_ms: u64,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        let t = crate::containerd::Timeouts::default();
        Self {
            connect_timeout_ms: t.connect.as_millis() as u64,
            call_timeout_ms: t.call.as_millis() as u64,
            stream_timeout_ms: t.stream.as_millis() as u64,
        }
    }
}

impl ContainerdConfig {
    /// The deadlines, as the client takes them.
    pub fn timeouts(&self) -> crate::containerd::Timeouts {
        crate::containerd::Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            call: Duration::from_millis(self.call_timeout_ms),
            stream: Duration::from_millis(self.stream_timeout_ms),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
            ("stream_timeout_ms", self.stream_timeout_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return Err((
                    format!("containerd.{key}"),
                    format!("must be between 1 and 600000, not {value}"),
                ));
            }
        }
        Ok(())
    }
}

/// The containers stage: how long events wait for containerd, how long exited containers
/// are remembered, how containerd is retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// How long an event whose container containerd has not reported yet may wait before
    /// it goes on marked unresolved. Containers exec within milliseconds of their start,
    /// often before containerd's task event reaches us.
    pub pending_timeout_ms: u64,
    /// Events that may wait at once; beyond that the oldest goes on unresolved.
    pub pending_capacity: usize,
    /// How long an exited task's namespace, and a deleted container, stay known for
    /// events that arrive late. Bounds memory: after it they leave the table.
    pub exited_grace_ms: u64,
    /// First wait before reconnecting to containerd; doubles per failure up to the max.
    pub reconnect_min_ms: u64,
    /// The longest wait between two reconnects.
    pub reconnect_max_ms: u64,
    /// How often the table's size and the stage's counters are logged.
    pub stats_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: hostname(),
            containerd_socket: DEFAULT_CONTAINERD_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            log_format: LogFormat::Json,
            log_level: "info".into(),
            sensor: SensorConfig::default(),
            containerd: ContainerdConfig::default(),
            containers: ContainersConfig::default(),
            process: ProcessConfig::default(),
            verify: VerifyConfig::default(),
            files: FilesConfig::default(),
            baseline: BaselineConfig::default(),
            trust: TrustConfig::default(),
            alerts: AlertsConfig::default(),
            api: ApiConfig::default(),
            journal: JournalConfig::default(),
            metrics: MetricsConfig::default(),
            respond: RespondConfig::default(),
        }
    }
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            monitor_host: false,
            ring_buffer_bytes: 8 * 1024 * 1024,
            wakeup_bytes: 256 * 1024,
            drain_interval_ms: 10,
            event_queue: 16 * 1024,
            stats_interval_ms: 1000,
            scheduling: PipelineScheduling::Adaptive,
        }
    }
}

impl SensorConfig {
    /// `drain_interval_ms` as a duration.
    pub fn drain_interval(&self) -> Duration {
        Duration::from_millis(self.drain_interval_ms)
    }
    /// `stats_interval_ms` as a duration.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            pending_timeout_ms: 1000,
            pending_capacity: 4096,
            exited_grace_ms: 10_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            stats_interval_ms: 60_000,
        }
    }
}

impl ContainersConfig {
    /// `pending_timeout_ms` as a duration.
    pub fn pending_timeout(&self) -> Duration {
        Duration::from_millis(self.pending_timeout_ms)
    }
    /// `exited_grace_ms` as a duration.
    pub fn exited_grace(&self) -> Duration {
        Duration::from_millis(self.exited_grace_ms)
    }
    /// `reconnect_min_ms` as a duration.
    pub fn reconnect_min(&self) -> Duration {
        Duration::from_millis(self.reconnect_min_ms)
    }
    /// `reconnect_max_ms` as a duration.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms)
    }
    /// `stats_interval_ms` as a duration.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }

    /// Returns (key, problem) for the first invalid setting.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("containers.{key}"), problem));
        let within = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                bad(key, format!("must be between {min} and {max}, not {value}"))
            } else {
                Ok(())
            }
        };
        // An hour is far beyond any sensible wait; larger values are typos (seconds read
        // as milliseconds the other way round) that would hold events or memory forever.
        const HOUR_MS: u64 = 3_600_000;
        within("pending_timeout_ms", self.pending_timeout_ms, 1, 60_000)?;
        within("pending_capacity", self.pending_capacity as u64, 1, 1 << 20)?;
        within("exited_grace_ms", self.exited_grace_ms, 0, HOUR_MS)?;
        within("reconnect_min_ms", self.reconnect_min_ms, 1, 60_000)?;
        within("reconnect_max_ms", self.reconnect_max_ms, 1, 600_000)?;
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return bad(
                "reconnect_max_ms",
                format!(
                    "must not be smaller than containers.reconnect_min_ms ({}), not {}",
                    self.reconnect_min_ms, self.reconnect_max_ms
                ),
            );
        }
        within("stats_interval_ms", self.stats_interval_ms, 1, 24 * HOUR_MS)?;
        Ok(())
    }
}

/// `[process]`: the process tracker every analyzer reads ancestry from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Processes remembered (the oldest are forgotten first), for ancestry and for
    /// reaching a container's files after the process that ran one has gone.
    pub table_entries: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            table_entries: 64 * 1024,
        }
    }
}

impl ProcessConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if !(16..=1 << 22).contains(&self.table_entries) {
            return Err((
                "process.table_entries".into(),
                format!("must be between 16 and 4194304, not {}", self.table_entries),
            ));
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
