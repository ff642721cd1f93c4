//! The alerts of the baseline analyzer: `baseline_unexpected_exec`,
//! `baseline_unexpected_parent`, `baseline_unexpected_write`, with the baseline's key,
//! state and what it learned instead. Building only; when to alert is the stage's.

use super::model::Baseline;
use crate::alert::AlertDraft;
use crate::alert::{AlertKind, AlertProcess, BaselineEvidence, Evidence, Severity};
use crate::identity::ContainerInfo;

/// What was unexpected.
pub enum Unexpected<'a> {
    Exec {
        exe: &'a str,
        parent: &'a str,
        learned: &'a [String],
    },
    Parent {
        exe: &'a str,
        parent: &'a str,
        learned: &'a [String],
    },
    Write {
        dir: &'a str,
        learned: &'a [String],
    },
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

pub fn draft(
    u: &Unexpected<'_>,
    b: &Baseline,
    container: &ContainerInfo,
    process: Option<AlertProcess>,
    repeats: u64,
) -> AlertDraft {
    let shown = super::learn::shown_parent;
    let (kind, severity, path, entry, learned_instead, reason) = match u {
        Unexpected::Exec {
            exe,
            parent,
            learned,
        } => (
            AlertKind::BaselineUnexpectedExec,
            if super::learn::is_living_off_the_land(exe) {
                Severity::High
            } else {
                Severity::Medium
            },
            exe.to_string(),
            format!("{exe} (parent {})", shown(parent)),
            learned.to_vec(),
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
            AlertKind::BaselineUnexpectedParent,
            Severity::Medium,
            exe.to_string(),
            format!("{exe} (parent {})", shown(parent)),
            learned.to_vec(),
            format!(
                "{exe} was started by {}, a parent it never had in workload {}; learned \
                 parents of {exe}: {}",
                shown(parent),
                b.key.workload,
                list(learned)
            ),
        ),
        Unexpected::Write { dir, learned } => (
            AlertKind::BaselineUnexpectedWrite,
            Severity::Medium,
            dir.to_string(),
            dir.to_string(),
            learned.to_vec(),
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
            path: Some(path),
            reason,
            baseline: Some(BaselineEvidence {
                key: b.key.to_string(),
                id: b.key.id(),
                state: b.state.as_str().into(),
                partial: !b.partial.is_empty(),
                learned_since: rfc3339(b.learning_since),
                monitoring_since: b.monitoring_since.map(rfc3339),
                entry,
                learned_instead,
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
