//! The daemon's one typed configuration: defaults, the TOML file, and flag overrides.
//!
//! Owns parsing and validation only. Every error names the file, line and key (or the flag)
//! in one sentence, because an operator reading a failed unit's journal has nothing else.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[journal]`.
    pub journal: JournalConfig,
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
            alerts: AlertsConfig::default(),
            api: ApiConfig::default(),
            journal: JournalConfig::default(),
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

/// `[verify]`: how execs are judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Log every exec with its verdict (`message: "exec"`), not only alerts. Useful while
    /// rolling out; off by default because the line costs more daemon CPU per exec
    /// (measured ~40 us) than judging the exec does.
    pub log_execs: bool,
    /// Content hashes remembered, keyed by real inode + ctime + size.
    pub hash_cache_entries: usize,
    /// Files larger than this are not hashed (verdict `unverifiable`).
    pub max_file_bytes: u64,
    /// Execs whose files are read and hashed at once, node-wide (on the blocking pool).
    pub concurrency: usize,
    /// Of those, at most this many for any one container, so that a container whose
    /// files are slow (or block) cannot hold up the others.
    pub concurrency_per_container: usize,
    /// Deadline for reading and hashing the files of one exec; past it the exec is
    /// `unverifiable` and the read is abandoned. Execs of a container that wait longer
    /// than this behind its blocked reads are `unverifiable` too.
    pub inspect_timeout_ms: u64,
    /// Host paths of container runtime binaries whose memfd self-copy (runc) is expected.
    pub runtime_binaries: Vec<PathBuf>,
    /// Scoped allow rules: matching verdicts are logged as info instead of alerting.
    pub allow: Vec<AllowRule>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            log_execs: false,
            hash_cache_entries: 16 * 1024,
            max_file_bytes: 1 << 30,
            concurrency: 4,
            concurrency_per_container: 2,
            inspect_timeout_ms: 5000,
            runtime_binaries: [
                "/usr/sbin/runc",
                "/usr/bin/runc",
                "/usr/local/sbin/runc",
                "/usr/local/bin/runc",
                "/usr/bin/crun",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            allow: Vec::new(),
        }
    }
}

impl VerifyConfig {
    /// `inspect_timeout_ms` as a duration.
    pub fn inspect_timeout(&self) -> Duration {
        Duration::from_millis(self.inspect_timeout_ms)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("verify.{key}"), problem));
        if self.hash_cache_entries == 0 {
            return bad("hash_cache_entries", "must be at least 1".into());
        }
        if self.max_file_bytes == 0 {
            return bad("max_file_bytes", "must be at least 1".into());
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return bad(
                "concurrency",
                format!("must be between 1 and 256, not {}", self.concurrency),
            );
        }
        if self.concurrency_per_container == 0 || self.concurrency_per_container > self.concurrency
        {
            return bad(
                "concurrency_per_container",
                format!(
                    "must be between 1 and verify.concurrency ({}), not {}",
                    self.concurrency, self.concurrency_per_container
                ),
            );
        }
        if !(100..=600_000).contains(&self.inspect_timeout_ms) {
            return bad(
                "inspect_timeout_ms",
                format!(
                    "must be between 100 and 600000, not {}",
                    self.inspect_timeout_ms
                ),
            );
        }
        for (i, rule) in self.allow.iter().enumerate() {
            if let Some(problem) = rule.problem() {
                return bad(&format!("allow[{i}]"), problem);
            }
        }
        Ok(())
    }
}

/// `[[verify.allow]]`: a scoped rule that turns matching verdicts into `info` records
/// instead of alerts, for build and debug workloads. Scoped on purpose: a rule must name
/// at least one workload dimension (image, namespace, pod namespace, container); there is
/// no global off switch. Matching is `verify::allowlist`'s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowRule {
    /// Image references (globs, `*` matches any characters).
    pub images: Vec<String>,
    /// Manifest digests, exact.
    pub image_digests: Vec<String>,
    /// containerd namespaces (globs).
    pub namespaces: Vec<String>,
    /// Kubernetes pod namespaces (globs).
    pub pod_namespaces: Vec<String>,
    /// Container ids or CRI container names (globs).
    pub containers: Vec<String>,
    /// Paths inside the container (globs); empty means any path.
    pub paths: Vec<String>,
    /// Alert kinds this rule covers (`exec_not_in_image`, ...); empty means every exec kind.
    pub kinds: Vec<String>,
}

impl AllowRule {
    /// `None` if the rule is valid, else what is wrong with it.
    pub fn problem(&self) -> Option<String> {
        if self.images.is_empty()
            && self.image_digests.is_empty()
            && self.namespaces.is_empty()
            && self.pod_namespaces.is_empty()
            && self.containers.is_empty()
        {
            return Some(
                "must name at least one of images, image_digests, namespaces, pod_namespaces, \
                 containers (there is no global allow)"
                    .into(),
            );
        }
        // A selector of wildcards only (`*`, `*:*`, `*/*`) matches every workload: the
        // global off switch by another name.
        let selectors = [
            ("images", &self.images),
            ("namespaces", &self.namespaces),
            ("pod_namespaces", &self.pod_namespaces),
            ("containers", &self.containers),
        ];
        for (field, patterns) in selectors {
            if let Some(p) = patterns.iter().find(|p| !names_something(p)) {
                return Some(format!(
                    "{field} pattern {p:?} matches every workload: name one (a letter or digit \
                     besides wildcards and separators; there is no global allow)"
                ));
            }
        }
        self.kinds
            .iter()
            .find(|k| crate::alert::AlertKind::parse(k).is_none())
            .map(|k| format!("unknown kind {k:?}"))
    }
}

/// True when a selector glob names something: it has a letter or digit that is not a
/// wildcard. `*`, `?*` and `*:*` name nothing.
fn names_something(pattern: &str) -> bool {
    pattern.chars().any(|c| c.is_alphanumeric())
}

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
    fn validate(&self) -> Result<(), (String, String)> {
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

/// What a client of the API may do. Ordered: a responder may do everything a viewer may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Subscribe to and list alerts, list containers, read status.
    Viewer,
    /// Also the response calls (kill, pause, ...) that later versions add.
    Responder,
}

impl Role {
    /// The role's name in the config and in log lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Responder => "responder",
        }
    }
}

/// Where the API's unix socket is unless `api.socket` says otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/layerguard/layerguard.sock";

/// `[api]`: the gRPC API (`layerguard.v1`), on a unix socket and, only with mutual TLS,
/// on TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all (the CLI's watch/alerts/containers/status need it).
    pub enabled: bool,
    /// The unix socket; its directory is created if missing.
    pub socket: PathBuf,
    /// File mode of the socket: who may connect is who may use it. Octal in TOML (0o660).
    pub socket_mode: u32,
    /// Group owning the socket (a name or a numeric gid); unset keeps the daemon's group.
    pub socket_group: Option<String>,
    /// The role of every client of the unix socket.
    pub socket_role: Role,
    /// TCP address for remote clients, e.g. `0.0.0.0:50051`. Requires `tls_cert`,
    /// `tls_key` and `tls_client_ca`: there is no TCP without mutual TLS.
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// PEM server certificate chain and private key for TCP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that client certificates must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate identity -> role. An identity is the subject common name, a DNS
    /// name or a URI (SPIFFE id) in the subject alternative names. A verified client
    /// whose certificate names no listed identity may only call the health service.
    pub roles: std::collections::BTreeMap<String, Role>,
    /// How many alerts a subscriber may fall behind the live stream before it is switched
    /// to catching up from the journal (it is told so). Memory: one shared ring of this
    /// many alerts.
    pub subscriber_queue: usize,
    /// Concurrent Subscribe streams; more are refused with RESOURCE_EXHAUSTED.
    pub max_subscribers: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: DEFAULT_API_SOCKET.into(),
            socket_mode: 0o660,
            socket_group: None,
            socket_role: Role::Responder,
            tcp_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            roles: Default::default(),
            subscriber_queue: 4096,
            max_subscribers: 64,
        }
    }
}

impl ApiConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("api.{key}"), problem));
        if !self.socket.is_absolute() {
            return bad(
                "socket",
                format!("must be an absolute path, not {}", self.socket.display()),
            );
        }
        if self.socket_mode > 0o777 {
            return bad(
                "socket_mode",
                format!(
                    "must be a file mode such as 0o660, not {:#o}",
                    self.socket_mode
                ),
            );
        }
        if self.socket_mode & 0o600 != 0o600 {
            return bad(
                "socket_mode",
                format!(
                    "must let the owner (root) read and write, not {:#o}",
                    self.socket_mode
                ),
            );
        }
        if self.socket_group.as_deref().is_some_and(str::is_empty) {
            return bad("socket_group", "must not be empty when set".into());
        }
        let tls = [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ];
        if self.tcp_listen.is_some() {
            for (key, value) in tls {
                if value.is_none() {
                    return bad(
                        "tcp_listen",
                        format!(
                            "needs api.{key} as well: TCP is only served with mutual TLS \
                             (api.tls_cert, api.tls_key, api.tls_client_ca)"
                        ),
                    );
                }
            }
        }
        for (key, value) in tls {
            if let Some(p) = value.as_ref().filter(|p| !p.is_absolute()) {
                return bad(
                    key,
                    format!("must be an absolute path, not {}", p.display()),
                );
            }
        }
        if let Some(identity) = self.roles.keys().find(|k| k.trim().is_empty()) {
            return bad("roles", format!("has an empty identity {identity:?}"));
        }
        if !(16..=1 << 20).contains(&self.subscriber_queue) {
            return bad(
                "subscriber_queue",
                format!(
                    "must be between 16 and 1048576, not {}",
                    self.subscriber_queue
                ),
            );
        }
        if !(1..=10_000).contains(&self.max_subscribers) {
            return bad(
                "max_subscribers",
                format!("must be between 1 and 10000, not {}", self.max_subscribers),
            );
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

    fn validate(&self) -> Result<(), (String, String)> {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

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
        self.alerts.validate()?;
        self.api.validate()?;
        self.journal.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/lg.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sensor, SensorConfig::default());
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn the_readme_example_parses_and_shows_the_sensor_defaults() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\nnode_name")
            .expect("README.md has the config example");
        let body = &readme[start + "```toml\n".len()..];
        let example = &body[..body.find("```").expect("the example ends")];
        let c = parse(example).unwrap_or_else(|e| panic!("README.md's config example: {e}"));
        assert_eq!(c.sensor, SensorConfig::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("log_format = \"text\"\n\n[sensor]\nmonitor_hots = true\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("monitor_hots"), "{msg}");
        assert!(msg.contains("/etc/lg.toml"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let err = parse("[sensor]\ndrain_interval_ms = \"fast\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("sensor.drain_interval_ms"), "{msg}");
        let err = parse("log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("log_format"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_point_at_the_file_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "# x\n[sensor]\nring_buffer_bytes = 5000\n").unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("sensor.ring_buffer_bytes"), "{err}");
        assert!(err.contains("power of two"), "{err}");
    }

    #[test]
    fn overrides_apply_and_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let c = Config::load(
            &missing,
            false,
            &[
                Override::parse_set("sensor.monitor_host=true").unwrap(),
                Override::new("--state-dir", "state_dir", "/tmp/x"),
            ],
        )
        .unwrap();
        assert!(c.sensor.monitor_host);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));

        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("sensor.nope=1").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set sensor.nope=1"), "{err}");
        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("sensor.drain_interval_ms=0").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set sensor.drain_interval_ms=0"), "{err}");
    }

    #[test]
    fn containers_section_parses_and_defaults() {
        let c = parse("[containers]\npending_timeout_ms = 250\n").unwrap();
        assert_eq!(c.containers.pending_timeout(), Duration::from_millis(250));
        assert_eq!(
            c.containers.exited_grace_ms,
            ContainersConfig::default().exited_grace_ms
        );
        assert_eq!(parse("").unwrap().containers, ContainersConfig::default());
    }

    #[test]
    fn containers_unknown_key_names_key_and_line() {
        let err = parse("[containers]\npending_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("pending_timeout"),
            "{err}"
        );
    }

    #[test]
    fn containers_semantic_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[containers]\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("containers.reconnect_max_ms"), "{err}");

        let missing = dir.path().join("none.toml");
        for (set, key) in [
            (
                "containers.pending_timeout_ms=0",
                "containers.pending_timeout_ms",
            ),
            (
                "containers.pending_capacity=0",
                "containers.pending_capacity",
            ),
            (
                "containers.exited_grace_ms=99999999",
                "containers.exited_grace_ms",
            ),
            (
                "containers.stats_interval_ms=0",
                "containers.stats_interval_ms",
            ),
        ] {
            let err = Config::load(&missing, false, &[Override::parse_set(set).unwrap()])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("--set {set}")) && err.contains(key),
                "{err}"
            );
        }
        let c = Config::load(
            &missing,
            false,
            &[Override::parse_set("containers.exited_grace_ms=0").unwrap()],
        )
        .unwrap();
        assert_eq!(c.containers.exited_grace(), Duration::ZERO);
    }

    #[test]
    fn errors_in_tables_and_arrays_of_tables_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[verify]\nlog_execs = true\n\n[[verify.allow]]\nnamespaces = [\"ci\"]\n\n\
             [[verify.allow]]\npaths = [\"/tmp/*\"]\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 7") && err.contains("verify.allow[1]"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[api]\nsocket_mode = 0o660\ntcp_listen = \"0.0.0.0:5\"\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("api.tls_cert"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let err = parse("[sensor\nx = 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = Config::load(Path::new("/nonexistent/lg.toml"), true, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}

#[cfg(test)]
mod api_journal_tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/lg.toml"))
    }

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn api_and_journal_default_to_a_local_socket_and_an_on_disk_journal() {
        let c = parse("").unwrap();
        assert_eq!(c.api, ApiConfig::default());
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(c.api.socket_mode, 0o660);
        assert!(c.api.tcp_listen.is_none(), "no TCP unless configured");
        assert_eq!(c.journal, JournalConfig::default());
        assert_eq!(c.journal.fsync, FsyncMode::Batched);
        assert!(c.api.validate().is_ok() && c.journal.validate().is_ok());
    }

    #[test]
    fn api_section_parses_octal_modes_roles_and_tls() {
        let c = load(
            "[api]\nsocket_mode = 0o640\nsocket_group = \"layerguard\"\n\
             tcp_listen = \"127.0.0.1:50051\"\ntls_cert = \"/etc/lg/server.crt\"\n\
             tls_key = \"/etc/lg/server.key\"\ntls_client_ca = \"/etc/lg/ca.crt\"\n\
             [api.roles]\n\"siem.example\" = \"viewer\"\n\"spiffe://c/ns/sec/sa/ir\" = \"responder\"\n",
        )
        .unwrap();
        assert_eq!(c.api.socket_mode, 0o640);
        assert_eq!(c.api.socket_group.as_deref(), Some("layerguard"));
        assert_eq!(c.api.tcp_listen.unwrap().port(), 50051);
        assert_eq!(c.api.roles["siem.example"], Role::Viewer);
        assert_eq!(c.api.roles["spiffe://c/ns/sec/sa/ir"], Role::Responder);
        assert!(Role::Responder > Role::Viewer);
    }

    #[test]
    fn tcp_without_tls_is_refused_naming_the_missing_key() {
        let err = load("[api]\ntcp_listen = \"0.0.0.0:50051\"\n").unwrap_err();
        assert!(err.contains("api.tls_cert"), "{err}");
        assert!(err.contains("mutual TLS"), "{err}");
        let err =
            load("[api]\ntcp_listen = \"0.0.0.0:50051\"\ntls_cert = \"/a\"\ntls_key = \"/b\"\n")
                .unwrap_err();
        assert!(err.contains("api.tls_client_ca"), "{err}");
    }

    #[test]
    fn api_semantic_errors_name_key_and_line() {
        let err = load("[api]\n\nsocket_mode = 0o1777\n").unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("api.socket_mode"),
            "{err}"
        );
        let err = load("[api]\nsocket_mode = 0o060\n").unwrap_err();
        assert!(err.contains("owner"), "{err}");
        let err = load("[api]\nsocket = \"relative.sock\"\n").unwrap_err();
        assert!(
            err.contains("api.socket") && err.contains("absolute"),
            "{err}"
        );
        let err = load("[api]\nsubscriber_queue = 1\n").unwrap_err();
        assert!(err.contains("api.subscriber_queue"), "{err}");
        let err = load("[api]\nmax_subscribers = 0\n").unwrap_err();
        assert!(err.contains("api.max_subscribers"), "{err}");
        let err = load("[api.roles]\n\"x\" = \"admin\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("admin"), "{err}");
        let err = load("[api]\ntcp_listen = \"nonsense\"\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("tcp_listen"),
            "{err}"
        );
    }

    #[test]
    fn journal_section_parses_and_validates() {
        let c = load(
            "[journal]\nsegment_bytes = 4194304\nmax_bytes = 67108864\nmax_age_hours = 24\n\
             fsync = \"always\"\n",
        )
        .unwrap();
        assert_eq!(c.journal.segment_bytes, 4 << 20);
        assert_eq!(c.journal.max_age(), Duration::from_secs(86_400));
        assert_eq!(c.journal.fsync, FsyncMode::Always);
        let err = load("[journal]\nsegment_bytes = 1024\n").unwrap_err();
        assert!(err.contains("journal.segment_bytes"), "{err}");
        let err = load("[journal]\nmax_bytes = 1048576\n").unwrap_err();
        assert!(
            err.contains("journal.max_bytes") && err.contains("twice"),
            "{err}"
        );
        let err = load("[journal]\nmax_age_hours = 0\n").unwrap_err();
        assert!(err.contains("journal.max_age_hours"), "{err}");
        let err = load("[journal]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("fsync"), "{err}");
        let err = load("[journal]\nfsync_interval_ms = 0\n").unwrap_err();
        assert!(err.contains("journal.fsync_interval_ms"), "{err}");
    }

    #[test]
    fn api_and_journal_keys_can_be_set_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let c = Config::load(
            &missing,
            false,
            &[
                Override::parse_set("api.socket=/tmp/lg.sock").unwrap(),
                Override::parse_set("journal.enabled=false").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(c.api.socket, PathBuf::from("/tmp/lg.sock"));
        assert!(!c.journal.enabled);
        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("api.subscriber_queue=2").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set api.subscriber_queue=2"), "{err}");
    }
}
