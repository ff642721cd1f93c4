//! `[verify]` and its `[[verify.allow]]` rules: the keys, their defaults and what a value
//! must be. Matching a rule against an exec is `verify::allowlist`'s, not this file's.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
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
