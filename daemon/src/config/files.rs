//! `[files]`: file integrity (writes to image files, new executables, sensitive files,
//! executable mappings). The keys, their defaults and what a value must be; judging is
//! `files/`'s.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The sensitive paths every node watches unless `files.sensitive` says otherwise
/// (globs: `*` matches within one path component).
pub const DEFAULT_SENSITIVE: [&str; 15] = [
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d/*",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/sudoers",
    "/etc/sudoers.d/*",
    "/root/.ssh/*",
    "/home/*/.ssh/*",
    "/etc/crontab",
    "/etc/cron.d/*",
    "/var/spool/cron/*",
    "/var/spool/cron/crontabs/*",
    "/etc/profile.d/*",
];

/// The sensitive paths whose change is critical, not high: a line in `/etc/ld.so.preload`
/// loads code into every dynamically linked process of the container.
pub const DEFAULT_CRITICAL: [&str; 1] = ["/etc/ld.so.preload"];

/// `[files]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Attach the file programs (writes and mappings) and run the files analyzer.
    pub enabled: bool,
    /// Paths whose create or write is `file_sensitive_write` (globs). Replaces the
    /// defaults when set; `sensitive_extra` adds to them instead.
    pub sensitive: Vec<String>,
    /// Added to `sensitive`.
    pub sensitive_extra: Vec<String>,
    /// Of the sensitive paths, those whose alert is critical.
    pub critical: Vec<String>,
    /// Image files, besides executables and shared libraries, whose changed content is
    /// `file_image_modified` (globs), e.g. an app's config.
    pub protect: Vec<String>,
    /// How long a written file must stay unchanged (size and mtime) before it is hashed:
    /// the writer is done. Short, because a write's alert should be prompt: a file that
    /// changes while it is read is settled and read again, and a writer that goes on after
    /// a pause is sent again by the kernel (within a second) and judged again.
    pub settle_ms: u64,
    /// A file still changing after this long is hashed as it is (a writer that keeps it
    /// open and busy), and the alert says so.
    pub max_wait_ms: u64,
    /// The syscall hook (raw_syscalls:sys_exit) for what the default hooks cannot see:
    /// rename, link and unlink (named by the caller's path), and mmap/mprotect with
    /// PROT_EXEC of pages already in memory. Off by default: it costs every syscall of
    /// every task on the node (the README's bench figure). Not attached when a kernel hook
    /// family serves both (see `kernel_hooks`).
    pub syscall_hooks: bool,
    /// Which kernel hooks serve executable mappings and rename/link/unlink: `auto` tries
    /// fentry on the LSM entry points, then BPF-LSM programs on the same hooks, then keeps
    /// the tracepoints (and the syscall hook when asked); `fentry` or `lsm` insist on one
    /// (the daemon does not start without it, and says why); `tracepoints` uses neither.
    pub kernel_hooks: KernelHooks,
}

/// `files.kernel_hooks`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelHooks {
    /// fentry, else BPF-LSM, else the tracepoints.
    #[default]
    Auto,
    /// fentry or no start.
    Fentry,
    /// BPF-LSM or no start.
    Lsm,
    /// Neither: the tracepoints (and the syscall hook when asked).
    Tracepoints,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sensitive: DEFAULT_SENSITIVE.iter().map(|s| s.to_string()).collect(),
            sensitive_extra: Vec::new(),
            critical: DEFAULT_CRITICAL.iter().map(|s| s.to_string()).collect(),
            protect: Vec::new(),
            settle_ms: 1,
            max_wait_ms: 2000,
            syscall_hooks: false,
            kernel_hooks: KernelHooks::Auto,
        }
    }
}

impl FilesConfig {
    /// `settle_ms` as a duration.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    /// `max_wait_ms` as a duration.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// Every sensitive glob: `sensitive` and `sensitive_extra`.
    pub fn sensitive_globs(&self) -> impl Iterator<Item = &str> {
        self.sensitive
            .iter()
            .chain(&self.sensitive_extra)
            .map(String::as_str)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("files.{key}"), problem));
        if self.settle_ms > 1000 {
            return bad(
                "settle_ms",
                format!("must be at most 1000, not {}", self.settle_ms),
            );
        }
        if self.max_wait_ms < self.settle_ms || self.max_wait_ms > 60_000 {
            return bad(
                "max_wait_ms",
                format!(
                    "must be between files.settle_ms ({}) and 60000, not {}",
                    self.settle_ms, self.max_wait_ms
                ),
            );
        }
        let globs = [
            ("sensitive", &self.sensitive),
            ("sensitive_extra", &self.sensitive_extra),
            ("critical", &self.critical),
            ("protect", &self.protect),
        ];
        for (key, list) in globs {
            if let Some((i, g)) = list.iter().enumerate().find(|(_, g)| !g.starts_with('/')) {
                return bad(
                    &format!("{key}[{i}]"),
                    format!("{g:?} must be an absolute path inside the container"),
                );
            }
        }
        Ok(())
    }
}
