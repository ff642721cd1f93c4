//! The alerts of the baseline analyzer: `baseline_unexpected_exec`,
//! `baseline_unexpected_parent`, `baseline_unexpected_write`, with the baseline's key,
//! state and what it learned instead. Building only; when to alert is the stage's.

use super::model::{rfc3339, Baseline};
use crate::alert::AlertDraft;
use crate::alert::{AlertKind, AlertProcess, BaselineEvidence, Evidence, Severity};
use crate::identity::ContainerInfo;

/// What was unexpected, and what was learned instead.
pub enum Unexpected {
    Exec {
        exe: String,
        parent: String,
        learned: Vec<String>,
    },
    Parent {
        exe: String,
        parent: String,
        learned: Vec<String>,
    },
    Write {
        dir: String,
        learned: Vec<String>,
    },
}

impl Unexpected {
    pub fn kind(&self) -> AlertKind {
        match self {
            Unexpected::Exec { .. } => AlertKind::BaselineUnexpectedExec,
            Unexpected::Parent { .. } => AlertKind::BaselineUnexpectedParent,
            Unexpected::Write { .. } => AlertKind::BaselineUnexpectedWrite,
        }
    }

    /// The entry a cooldown folds repeats of (with the baseline and the kind).
    pub fn entry(&self) -> String {
        match self {
            Unexpected::Exec { exe, parent, .. } | Unexpected::Parent { exe, parent, .. } => {
                format!("{exe}\0{parent}")
            }
            Unexpected::Write { dir, .. } => dir.clone(),
        }
    }
}

pub fn draft(
    u: &Unexpected,
    b: &Baseline,
    container: &ContainerInfo,
    process: Option<AlertProcess>,
    repeats: u64,
) -> AlertDraft {
    let shown = super::learn::shown_parent;
    let kind = u.kind();
    let (severity, path, entry, learned, reason) = match u {
        Unexpected::Exec {
            exe,
            parent,
            learned,
        } => (
            if super::learn::is_living_off_the_land(exe) {
                Severity::High
            } else {
                Severity::Medium
            },
            exe,
            format!("{exe} (parent {})", shown(parent)),
            learned,
            format!(
                "{exe} ran (started by {}), which workload {} never ran while it learned; \
                 learned execs include: {}",
                shown(parent),
                b.key.workload,
                list(learned)
            ),
        ),
        Unexpected::Parent {
            exe,
            parent,
            learned,
        } => (
            Severity::Medium,
            exe,
            format!("{exe} (parent {})", shown(parent)),
            learned,
            format!(
                "{exe} was started by {}, a parent it never had in workload {}; learned \
                 parents of {exe}: {}",
                shown(parent),
                b.key.workload,
                list(learned)
            ),
        ),
        Unexpected::Write { dir, learned } => (
            Severity::Medium,
            dir,
            dir.clone(),
            learned,
            format!(
                "{dir} was written, a directory workload {} never wrote while it learned; \
                 learned directories include: {}",
                b.key.workload,
                list(learned)
            ),
        ),
    };
    let mut reason = reason;
    if !b.partial.is_empty() {
        reason.push_str(&format!(
            " (the baseline is partial: {})",
            b.partial.join("; ")
        ));
    }
    if repeats > 0 {
        reason.push_str(&format!(" ({repeats} more since the last alert of this)"));
    }
    AlertDraft {
        kind,
        severity: Some(severity),
        summary: format!(
            "{}: {path} in container {}/{} (workload {})",
            kind.as_str(),
            container.namespace,
            container.id,
            b.key.workload
        ),
        container: container.alert_container(Some(b.key.manifest.clone())),
        process,
        evidence: Some(Evidence {
            path: Some(path.clone()),
            reason,
            baseline: Some(BaselineEvidence {
                key: b.key.to_string(),
                id: b.key.id(),
                state: b.state.as_str().into(),
                partial: !b.partial.is_empty(),
                learned_since: rfc3339(b.learning_since),
                monitoring_since: b.monitoring_since.map(rfc3339),
                entry,
                learned_instead: learned.clone(),
                repeats,
            }),
            ..Default::default()
        }),
        loss: None,
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
