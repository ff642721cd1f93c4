//! `[respond]`: automatic responses to severe alerts. The keys, their defaults and what a
//! value must be; deciding and acting are `respond/`'s.

use crate::alert::{AlertKind, Severity};
use serde::{Deserialize, Serialize};

/// `[respond]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// Containers no policy touches.
    pub never: NeverConfig,
    /// Actions taken (or dry-run) per minute at most, node-wide; the rest are reported.
    pub max_actions_per_minute: u32,
    /// `[[respond.policy]]`, first match wins.
    pub policy: Vec<ResponsePolicyConfig>,
}

impl Default for RespondConfig {
    fn default() -> Self {
        Self {
            never: NeverConfig::default(),
            max_actions_per_minute: 10,
            policy: Vec::new(),
        }
    }
}

/// `[respond.never]`: containers left alone whatever a policy says. The daemon's own
/// container is always among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeverConfig {
    /// Kubernetes pod namespaces.
    pub pod_namespaces: Vec<String>,
    /// containerd namespaces.
    pub namespaces: Vec<String>,
    /// Image reference globs (as `[[trust.policy]]` images).
    pub images: Vec<String>,
}

impl Default for NeverConfig {
    fn default() -> Self {
        Self {
            pod_namespaces: vec!["kube-system".into()],
            namespaces: Vec::new(),
            images: Vec::new(),
        }
    }
}

/// What a policy does to the container an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Freeze the task (cgroup freezer).
    Pause,
    /// SIGKILL every process of the task.
    Kill,
    /// Drop all traffic of the container's network namespace but loopback (nftables).
    Isolate,
}

impl PolicyAction {
    /// The name in config, alerts and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Kill => "kill",
            Self::Isolate => "isolate",
        }
    }
}

/// Whether a policy acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Acts.
    Enforce,
    /// Writes `response_taken` with `dry_run: true` and does nothing.
    DryRun,
}

/// One `[[respond.policy]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsePolicyConfig {
    /// Named in every response alert it causes.
    pub name: String,
    /// Alert kinds it answers (any kind when empty, then `min_severity` is required).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// ...and/or at least this severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// containerd namespaces (any when empty).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Kubernetes pod namespaces (any when empty).
    #[serde(default)]
    pub pod_namespaces: Vec<String>,
    /// Image reference globs (any when empty).
    #[serde(default)]
    pub images: Vec<String>,
    /// CRI container names (the `io.kubernetes.container.name` label; any when empty).
    #[serde(default)]
    pub workloads: Vec<String>,
    /// `pause`, `kill` or `isolate`.
    pub action: PolicyAction,
    /// `enforce` or `dry_run`.
    #[serde(default = "enforce")]
    pub mode: PolicyMode,
}

fn enforce() -> PolicyMode {
    PolicyMode::Enforce
}

impl ResponsePolicyConfig {
    /// Its kinds, parsed (validated at load).
    pub fn kinds(&self) -> Vec<AlertKind> {
        self.kinds
            .iter()
            .filter_map(|k| AlertKind::parse(k))
            .collect()
    }
}

impl RespondConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.max_actions_per_minute == 0 {
            return Err((
                "respond.max_actions_per_minute".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, p) in self.policy.iter().enumerate() {
            let at = |f: &str| format!("respond.policy[{i}].{f}");
            if p.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if self.policy[..i].iter().any(|o| o.name == p.name) {
                return Err((
                    at("name"),
                    format!("{:?} is used by another policy", p.name),
                ));
            }
            if let Some(k) = p.kinds.iter().find(|k| AlertKind::parse(k).is_none()) {
                return Err((at("kinds"), format!("{k:?} is not an alert kind")));
            }
            if let Some(k) = p.kinds.iter().find(|k| k.starts_with("response_")) {
                return Err((
                    at("kinds"),
                    format!("{k:?}: a response never triggers another response"),
                ));
            }
            if p.kinds.is_empty() && p.min_severity.is_none() {
                return Err((
                    at("kinds"),
                    "a policy needs kinds, min_severity or both (else it would answer every alert)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}
