//! Judging one exec once the stage loop has taken it: the hot path with no I/O (a hash
//! this node has made before, an image already indexed), or an inspection on the blocking
//! pool within `verify.inspect_timeout_ms`, then the verdict against the container's image.
//!
//! Owns the flow from an [`ExecJob`] to a verdict, and the hash cache's lookups. The
//! reading is [`inspect`](super::inspect)'s, the rules [`verdict`](super::verdict)'s, what
//! the verdict becomes (alert, record, counts) [`draft`](super::draft)'s.

use super::draft::{finish, finish_with, EvidenceCtx};
use super::hash::ContentKey;
use super::images::ImageEntry;
use super::inspect::{self, Inspection};
use super::paths::ExecPaths;
use super::verdict::{self, ExecVerdict, FileFacts, ImageRecord, Unreadable};
use super::{ExecJob, Shared, SlotEvent, SlotGuard};
use crate::alert::AlertDraft;
use crate::identity::{Attribution, ContainerKey};
use crate::image::digest::Digest;
use crate::sensor::ExecEvent;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

/// Judges an exec the stage will not inspect: `unverifiable`, with the reason.
pub(super) fn refuse(
    shared: &Arc<Shared>,
    jobs: &mut JoinSet<()>,
    job: ExecJob,
    reason: String,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    let alerts = alerts.clone();
    jobs.spawn(async move {
        let attribution = Attribution::Container(job.container.clone());
        let path = job.paths.binary.shown().to_string();
        let v = ExecVerdict::Unverifiable { reason };
        finish(&shared, &job, &attribution, &path, v, None, &alerts).await;
    });
}

/// Inspects an exec on the blocking pool within the deadline, then judges it against its
/// image. The node-wide slot is given back as soon as the inspection ends or times out;
/// the container's slot when the blocking thread really returns.
pub(super) async fn judge_exec(
    shared: &Arc<Shared>,
    job: ExecJob,
    key: ContainerKey,
    slots: mpsc::UnboundedSender<SlotEvent>,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    let timeout = shared.config.inspect_timeout();
    let released = SlotGuard(Some((slots.clone(), SlotEvent::Released)));
    let deadline = Instant::now() + timeout;
    let returned = SlotGuard(Some((slots, SlotEvent::Returned(key))));
    let task = {
        let shared = shared.clone();
        let exec = job.exec.clone();
        let paths = job.paths.clone();
        let roots = job.roots.clone();
        tokio::task::spawn_blocking(move || {
            let _returned = returned;
            inspect::inspect(&shared, &exec, &paths, &roots, deadline)
        })
    };
    // The hashing stops by itself at the deadline; a read blocked in the kernel does not,
    // so the wait is cut a little after it.
    let inspection = tokio::time::timeout(timeout + Duration::from_millis(100), task).await;
    drop(released);
    let inspection = match inspection {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => timed_out_or_failed(
            &job,
            Unreadable::Failed(format!("inspection task failed: {e}")),
        ),
        Err(_) => {
            warn!(container = %job.container.id, pid = job.exec.process.tgid,
                path = job.paths.binary.shown(), "exec inspection passed its deadline; its read is abandoned");
            timed_out_or_failed(
                &job,
                Unreadable::TimedOut {
                    via: job.paths.binary.shown().to_string(),
                    detail: format!("{} ms, blocked in the kernel", timeout.as_millis()),
                },
            )
        }
    };
    let stopped_at_deadline = |f: &FileFacts| matches!(f.actual, Err(Unreadable::TimedOut { .. }));
    if stopped_at_deadline(&inspection.binary)
        || inspection.script.as_ref().is_some_and(stopped_at_deadline)
    {
        shared.timed_out.fetch_add(1, Ordering::Relaxed);
    }
    let image = shared.catalog.for_container(&job.container).await;
    conclude(shared, &job, &image, &inspection, alerts).await;
}

/// An inspection that produced nothing: the binary's facts carry why.
fn timed_out_or_failed(job: &ExecJob, why: Unreadable) -> Inspection {
    Inspection {
        binary: FileFacts {
            path: job.paths.binary.shown().to_string(),
            actual: Err(why),
            memfd: job.exec.memfd,
            deleted: job.exec.deleted,
            upper_layer: job.exec.upper_layer,
            runtime: false,
        },
        script: None,
    }
}

/// The verdict from what was found about the file(s) and what the image records.
pub(super) async fn conclude(
    shared: &Arc<Shared>,
    job: &ExecJob,
    image: &ImageEntry,
    inspection: &Inspection,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    let attribution = Attribution::Container(job.container.clone());
    let bin = &inspection.binary;
    if inspection.script.is_none()
        && !bin.memfd
        && !bin.deleted
        && bin
            .actual
            .as_ref()
            .is_ok_and(|h| image.has_content(&bin.path, h))
    {
        let ctx = EvidenceCtx {
            expected: ImageRecord::Missing, // a verified exec raises nothing to show it in
            upper_layer: bin.upper_layer,
            interpreter: None,
            interpreter_verdict: None,
        };
        let v = ExecVerdict::Verified;
        finish_with(
            shared,
            job,
            &attribution,
            &bin.path,
            v,
            Some(image),
            ctx,
            alerts,
        )
        .await;
        return;
    }
    let bin_record = image.record(&inspection.binary.path);
    let mut verdict = verdict::judge(&inspection.binary, &image.state, &bin_record);
    let mut evidence_path = inspection.binary.path.clone();
    let mut expected = bin_record;
    if let Some(script) = &inspection.script {
        let script_record = image.record(&script.path);
        let sv = verdict::judge(script, &image.state, &script_record);
        if sv.rank() > verdict.rank() {
            evidence_path = script.path.clone();
            expected = script_record;
        }
        verdict = verdict::worse(verdict, sv);
    }
    let ctx = EvidenceCtx {
        expected,
        upper_layer: inspection.binary.upper_layer,
        interpreter: inspection
            .script
            .as_ref()
            .map(|_| inspection.binary.path.clone()),
        interpreter_verdict: inspection.script.as_ref().map(|_| {
            verdict::judge(
                &inspection.binary,
                &image.state,
                &image.record(&inspection.binary.path),
            )
            .name()
            .to_string()
        }),
    };
    finish_with(
        shared,
        job,
        &attribution,
        &evidence_path,
        verdict,
        Some(image),
        ctx,
        alerts,
    )
    .await;
}

/// The hot path: a binary whose content this node has hashed before, named whole by the
/// event, is judged with no I/O at all. Anything else (memfd, scripts, a cache miss, a
/// name the sensor could not keep) goes to [`inspect::inspect`] on the blocking pool.
pub(super) fn cached_inspection(
    shared: &Shared,
    exec: &ExecEvent,
    paths: &ExecPaths,
) -> Option<Inspection> {
    if exec.memfd || paths.script.is_some() || exec.size > shared.config.max_file_bytes {
        return None;
    }
    let path = paths.binary.known()?;
    let actual = cached_hash(shared, &content_key(exec))?;
    Some(Inspection {
        binary: FileFacts {
            path: path.to_string(),
            actual: Ok(actual),
            memfd: false,
            deleted: exec.deleted,
            upper_layer: exec.upper_layer,
            runtime: false,
        },
        script: None,
    })
}

pub(super) fn content_key(exec: &ExecEvent) -> ContentKey {
    ContentKey {
        dev: exec.real_file.dev,
        ino: exec.real_file.ino,
        ctime_sec: exec.ctime_sec,
        ctime_nsec: exec.ctime_nsec,
        size: exec.size,
    }
}

/// Looks `key` up in the hash cache, counting the hit or miss (in the metrics, once).
pub(super) fn cached_hash(shared: &Shared, key: &ContentKey) -> Option<Digest> {
    let found = shared
        .hashes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key);
    let m = &shared.metrics;
    match found {
        Some(_) => m.hash_cache_hits.inc(),
        None => m.hash_cache_misses.inc(),
    }
    found
}
