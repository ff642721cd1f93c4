//! What a verdict becomes: an alert draft with its evidence, or an `exec` record, or only
//! counts; and the sentences people read in them.
//!
//! Owns the alert's shape for exec verdicts (container, process with ancestry, evidence,
//! summary and reason), the allowlist's say, the per-exec record, and counting every
//! verdict once (in [`Metrics`](crate::metrics::Metrics)). Decides no verdict.

use super::allowlist;
use super::images::ImageEntry;
use super::verdict::{ExecVerdict, ImageRecord};
use super::{ExecJob, Shared};
use crate::alert::{AlertDraft, AlertKind, Evidence, Loss};
use crate::identity::{Attribution, ContainerInfo};
use crate::logging;
use crate::metrics::Verdict;
use crate::sensor::{EventKind, ExecEvent, LossCounts};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::error;

pub(super) struct EvidenceCtx {
    pub(super) expected: ImageRecord,
    pub(super) upper_layer: bool,
    pub(super) interpreter: Option<String>,
    pub(super) interpreter_verdict: Option<String>,
}

pub(super) async fn finish(
    shared: &Arc<Shared>,
    job: &ExecJob,
    attribution: &Attribution,
    path: &str,
    verdict: ExecVerdict,
    image: Option<&ImageEntry>,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    let ctx = EvidenceCtx {
        expected: ImageRecord::Missing,
        upper_layer: job.exec.upper_layer,
        interpreter: None,
        interpreter_verdict: None,
    };
    finish_with(shared, job, attribution, path, verdict, image, ctx, alerts).await;
}

fn record_metrics(
    shared: &Shared,
    c: &ContainerInfo,
    verdict: &ExecVerdict,
    image: Option<&ImageEntry>,
    alerting: bool,
    allowed: bool,
) {
    let m = &shared.metrics;
    let image = image.map(|i| i.state.name());
    let class = match verdict {
        _ if allowed => Verdict::Skipped,
        ExecVerdict::Unverifiable { .. } => Verdict::Unverifiable,
        _ if alerting => Verdict::Alerted,
        _ => Verdict::Verified,
    };
    let key = (!c.id.is_empty()).then(|| c.key());
    m.record_verdict(key.as_ref(), class, image, verdict.name());
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish_with(
    shared: &Arc<Shared>,
    job: &ExecJob,
    attribution: &Attribution,
    path: &str,
    verdict: ExecVerdict,
    image: Option<&ImageEntry>,
    ctx: EvidenceCtx,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    let kind = verdict.alert_kind();
    let c = &job.container;
    let manifest = kind.and_then(|_| {
        c.manifest_digest
            .clone()
            .or_else(|| image.and_then(|i| i.manifest.clone()))
    });
    let allowed_by = kind.and_then(|kind| {
        let subject = allowlist::Subject::of(c, manifest.as_deref(), path, kind);
        shared.config.allow.iter().position(|r| r.matches(&subject))
    });
    if shared.config.log_execs || allowed_by.is_some() {
        let record = VerdictRecord {
            verdict: &verdict,
            path,
            allowed_by_rule: allowed_by,
        };
        log_exec(&job.exec, attribution, Some(&record));
    }
    record_metrics(
        shared,
        c,
        &verdict,
        image,
        kind.is_some(),
        allowed_by.is_some(),
    );
    if let Some(feed) = shared.baseline.as_ref().filter(|_| !c.id.is_empty()) {
        // Learned only when verified and alert-free; an allowed alert is not learned either.
        let digest = match image.map(|i| i.record(path)) {
            Some(ImageRecord::File { sha256, .. }) => Some(sha256),
            _ => None,
        };
        feed.send(crate::baseline::Observed::Exec(crate::baseline::ExecSeen {
            container: c.clone(),
            exec: job.exec.clone(),
            ancestry: job.ancestry.clone(),
            exe: path.to_string(),
            digest,
            verified: kind.is_none() && matches!(verdict, ExecVerdict::Verified),
        }));
    }
    let Some(kind) = kind else { return };
    if allowed_by.is_some() {
        return;
    }
    let (expected_sha256, expected_layer) = match &ctx.expected {
        ImageRecord::File { sha256, layer } => (Some(sha256.hex()), Some(layer.to_string())),
        _ => (None, None),
    };
    let reason = reason_sentence(&verdict, path, c);
    let draft = AlertDraft {
        severity: None,
        kind,
        summary: format!("{}: {} {}", kind.as_str(), path, where_it_ran(c, &job.exec)),
        container: c.alert_container(manifest),
        process: Some(crate::process::exec_actor(
            &job.exec,
            path,
            job.ancestry.clone(),
        )),
        evidence: Some(Evidence {
            path: Some(path.to_string()),
            expected_sha256,
            expected_layer,
            actual_sha256: verdict.actual().map(|d| d.hex()),
            upper_layer: ctx.upper_layer,
            interpreter: ctx.interpreter,
            interpreter_verdict: ctx.interpreter_verdict,
            reason,
            ..Default::default()
        }),
        loss: None,
    };
    if alerts.send(draft).await.is_err() {
        error!("alert stage stopped; an alert could not be delivered");
    }
}

/// Where an exec ran, for an alert's summary: the container, or the mount namespace of one
/// the containers stage could not identify.
fn where_it_ran(c: &ContainerInfo, exec: &ExecEvent) -> String {
    if c.id.is_empty() {
        return format!(
            "in an unidentified container (mount namespace {})",
            exec.process.mnt_ns
        );
    }
    let image = c
        .image
        .as_deref()
        .map(|i| format!(" (image {i})"))
        .unwrap_or_default();
    format!("in container {}/{}{image}", c.namespace, c.id)
}

fn reason_sentence(v: &ExecVerdict, path: &str, c: &ContainerInfo) -> String {
    let image = c.image.as_deref().unwrap_or("its image");
    match v {
        ExecVerdict::Verified => format!("{path} matches {image}"),
        ExecVerdict::Modified {
            expected,
            layer,
            actual,
        } => {
            format!("{path} has sha256 {actual}, but layer {layer} of {image} recorded {expected}")
        }
        ExecVerdict::NotInImage { .. } => format!("{path} is not a file of {image}"),
        ExecVerdict::Fileless { .. } => format!("executed from a memfd or anonymous file ({path})"),
        ExecVerdict::Deleted { .. } => format!("{path} had no links left when it was executed"),
        ExecVerdict::Unverifiable { reason } => reason.clone(),
        ExecVerdict::UntrustedImage { reason } => format!("{image} failed verification: {reason}"),
    }
}

#[derive(Serialize)]
pub(super) struct VerdictRecord<'a> {
    #[serde(flatten)]
    verdict: &'a ExecVerdict,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_by_rule: Option<usize>,
}

/// An exec record: the event's own fields at the top level, its attribution under
/// `container`, and its verdict under `verdict` (absent for host processes).
pub(super) fn log_exec(
    exec: &ExecEvent,
    container: &Attribution,
    verdict: Option<&VerdictRecord<'_>>,
) {
    #[derive(Serialize)]
    struct ExecRecord<'a> {
        #[serde(flatten)]
        exec: &'a ExecEvent,
        container: &'a Attribution,
        #[serde(skip_serializing_if = "Option::is_none")]
        verdict: Option<&'a VerdictRecord<'a>>,
    }
    logging::record(
        "INFO",
        "layerguard::exec",
        "exec",
        &ExecRecord {
            exec,
            container,
            verdict,
        },
    );
}

pub(super) fn loss_draft(lost: &LossCounts) -> AlertDraft {
    // The process kinds always (the figures operators know), other kinds when they lost any.
    let by_kind: Vec<String> = EventKind::ALL
        .iter()
        .filter(|&&k| k != EventKind::File || lost.kernel(k) > 0)
        .map(|&k| format!("{} {}", k.name(), lost.kernel(k)))
        .collect();
    AlertDraft {
        severity: None,
        kind: AlertKind::SensorEventsLost,
        summary: format!(
            "{} sensor events lost ({}, undecodable {})",
            lost.total(),
            by_kind.join(", "),
            lost.undecodable
        ),
        container: None,
        process: None,
        evidence: None,
        loss: Some(Loss {
            kernel: lost
                .kernel
                .iter()
                .map(|(k, n)| (k.name().to_string(), *n))
                .collect(),
            undecodable: lost.undecodable,
            queues: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;

    fn exec(argv: &[&str]) -> ExecEvent {
        crate::fixtures::exec_event(argv)
    }

    #[test]
    fn kernel_times_become_wall_clock_times() {
        let mono = crate::clock::now();
        let wall = |ktime| {
            humantime::parse_rfc3339(&crate::process::wall_clock_of(ktime))
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((wall(mono) - now).abs() < 1.0);
        assert!((wall(mono - 5_000_000_000) - (now - 5.0)).abs() < 1.0);
    }

    #[test]
    fn summaries_name_the_container_or_say_it_is_unknown() {
        let mut e = exec(&["/tmp/x"]);
        e.process.mnt_ns = 4026532290;
        assert_eq!(
            where_it_ran(&ContainerInfo::default(), &e),
            "in an unidentified container (mount namespace 4026532290)"
        );
        let c = ContainerInfo {
            namespace: "k8s.io".into(),
            id: "abc".into(),
            image: Some("nginx:1".into()),
            ..ContainerInfo::default()
        };
        assert_eq!(
            where_it_ran(&c, &e),
            "in container k8s.io/abc (image nginx:1)"
        );
    }

    #[test]
    fn losses_become_one_alert_with_counts() {
        let d = loss_draft(&LossCounts {
            kernel: [(EventKind::Exec, 3), (EventKind::Fork, 1)]
                .into_iter()
                .collect(),
            undecodable: 0,
        });
        assert_eq!(d.kind, AlertKind::SensorEventsLost);
        assert_eq!(
            d.summary,
            "4 sensor events lost (exec 3, fork 1, exit 0, undecodable 0)"
        );
        assert_eq!(d.loss.unwrap().kernel["exec"], 3);
    }
}
