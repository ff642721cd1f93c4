//! The verify stage: gives every exec in a container exactly one verdict, and turns every
//! verdict but `verified` into an alert draft (or an `info` record, when a scoped allow
//! rule matches).
//!
//! Owns the judgement of execs: which files an exec asks to be checked ([`paths`]),
//! locating and hashing them ([`inspect`], [`target`], [`hash`]), the container's verified
//! image ([`images`]), ancestry ([`process`]), the allowlist ([`allowlist`]) and the pure
//! decision ([`verdict`]). The common case, a binary whose content was hashed before in a
//! container whose image is indexed, needs no I/O and is judged in the stage loop itself:
//! a task per exec would cost more than the judgement (a spawn, and often a wake-up of
//! another worker thread). Everything else is read on the blocking pool, within
//! `verify.inspect_timeout_ms`, scheduled per container ([`schedule`]): a container whose
//! files block or crawl holds up only its own judgements, and the stage loop itself never
//! waits for a read.

pub mod allowlist;
pub mod hash;
pub mod images;
mod inspect;
pub mod paths;
pub mod schedule;
pub mod target;
pub mod verdict;

use crate::alert::{AlertContainer, AlertDraft, AlertKind, AlertProcess, Evidence, Loss};
use crate::config::VerifyConfig;
use crate::identity::{Attribution, ContainerInfo, ContainerKey};
use crate::logging;
use crate::metrics::{Metrics, Verdict};
use crate::process::{Batch, ProcessContext, Tracked};
use crate::sensor::{EventKind, ExecEvent, LossCounts, Observation, ProcessEvent};
use hash::{ContentKey, HashCache};
use images::{ImageCatalog, ImageEntry};
use inspect::Inspection;
use paths::ExecPaths;
use schedule::FairQueue;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use verdict::{ExecVerdict, FileFacts, ImageRecord, Unreadable};

/// Counters the stage keeps over its life, reported on stop and by the status API.
#[derive(Debug, Default)]
pub struct VerifyCounters {
    pub verdicts: Mutex<BTreeMap<&'static str, u64>>,
    pub allowed: AtomicU64,
    pub alerts: AtomicU64,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyStats {
    pub verdicts: BTreeMap<&'static str, u64>,
    pub allowed: u64,
    pub alerts: u64,
    pub hash_cache_hits: u64,
    pub hash_cache_misses: u64,
    pub hash_cache_entries: usize,
    /// Inspections that passed `verify.inspect_timeout_ms` (their reads were abandoned).
    pub inspections_timed_out: u64,
    /// Execs not inspected because their container's queue was full or its reads stayed
    /// blocked past the deadline.
    pub inspections_refused: u64,
}

/// Digests of the container runtime binaries on this host (runc's memfd self-copy).
#[derive(Debug, Default)]
pub struct RuntimeDigests(Vec<String>);

impl RuntimeDigests {
    pub fn load(paths: &[std::path::PathBuf], limit: u64) -> Self {
        let mut digests = Vec::new();
        for p in paths {
            match std::fs::File::open(p) {
                Ok(f) => match hash::sha256_hex(std::io::BufReader::new(f), limit) {
                    Ok(d) => {
                        info!(path = %p.display(), sha256 = %d, "container runtime recognised");
                        digests.push(d);
                    }
                    Err(e) => warn!(path = %p.display(), error = %e, "cannot hash runtime binary"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path = %p.display(), error = %e, "cannot read runtime binary"),
            }
        }
        Self(digests)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.0.iter().any(|d| d == sha256)
    }
}

pub(crate) struct Shared {
    config: VerifyConfig,
    catalog: ImageCatalog,
    hashes: Mutex<HashCache>,
    runtime: RuntimeDigests,
    counters: VerifyCounters,
    timed_out: AtomicU64,
    refused: AtomicU64,
    /// Per-container verdict counts and hash cache figures for the API.
    metrics: Arc<Metrics>,
}

/// Execs of one container that may wait for inspection; more are `unverifiable` at once
/// (their container's reads are not keeping up, or are blocked).
const WAITING_PER_CONTAINER: usize = 1024;
/// Execs that may wait for inspection on the node, all containers together.
const WAITING_TOTAL: usize = 16 * 1024;

pub struct VerifyStage {
    shared: Arc<Shared>,
}

/// Everything a verdict needs, captured in order in the stage loop.
struct ExecJob {
    exec: Arc<ExecEvent>,
    paths: ExecPaths,
    container: Arc<ContainerInfo>,
    ancestry: Vec<crate::process::Forebear>,
    /// Live pids of the container, nearest first, whose root can be used to open files.
    roots: Vec<u32>,
}

/// What the stage loop hears back from the inspections it started.
enum SlotEvent {
    /// An inspection finished or passed its deadline: a node-wide slot is free.
    Released,
    /// The thread of an inspection for this container returned.
    Returned(ContainerKey),
}

/// Sends its event when dropped: a slot comes back even if its task panics or is dropped.
struct SlotGuard(Option<(mpsc::UnboundedSender<SlotEvent>, SlotEvent)>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some((tx, event)) = self.0.take() {
            let _ = tx.send(event);
        }
    }
}

impl VerifyStage {
    /// `metrics`: where verdicts per container and hash cache figures are counted (the
    /// API's status and container listing).
    pub fn new(config: &VerifyConfig, catalog: ImageCatalog, metrics: Arc<Metrics>) -> Self {
        let runtime = RuntimeDigests::load(&config.runtime_binaries, config.max_file_bytes);
        Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                catalog,
                hashes: Mutex::new(HashCache::new(config.hash_cache_entries)),
                runtime,
                counters: VerifyCounters::default(),
                timed_out: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Judges every exec of the batches from `events` (the process stage's), until it
    /// closes and every judgement started has ended.
    pub async fn run(
        self,
        mut events: mpsc::Receiver<Batch>,
        alerts: mpsc::Sender<AlertDraft>,
    ) -> VerifyStats {
        let config = &self.shared.config;
        let timeout = config.inspect_timeout();
        let mut queue: FairQueue<ContainerKey, ExecJob> = FairQueue::new(
            config.concurrency,
            config.concurrency_per_container,
            WAITING_PER_CONTAINER,
            WAITING_TOTAL,
        );
        let (slot_tx, mut slot_rx) = mpsc::unbounded_channel();
        let mut jobs = JoinSet::new();
        let mut expiry = tokio::time::interval(timeout / 4);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events_open = true;
        loop {
            while let Some((key, job)) = queue.take_next() {
                let shared = self.shared.clone();
                let alerts = alerts.clone();
                let slots = slot_tx.clone();
                jobs.spawn(async move { judge_exec(&shared, job, key, slots, &alerts).await });
            }
            if !events_open && queue.waiting() == 0 && jobs.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(slot) = slot_rx.recv() => match slot {
                    SlotEvent::Released => queue.release(),
                    SlotEvent::Returned(key) => queue.returned(&key),
                },
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Err(e) = done {
                        error!(error = %e, "exec judgement task failed");
                    }
                }
                batch = events.recv(), if events_open => {
                    let Some(batch) = batch else {
                        events_open = false;
                        continue;
                    };
                    // Alone on the channel, the batch is ours: no copies.
                    let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                    for event in batch {
                        self.on_event(event, &mut queue, &mut jobs, &alerts).await;
                    }
                }
                _ = expiry.tick(), if queue.waiting() > 0 => {
                    for (_, job, busy) in queue.expire(Instant::now(), timeout) {
                        let reason = format!(
                            "not inspected: waited longer than verify.inspect_timeout_ms ({} ms) \
                             behind {busy} read(s) of this container that have not returned",
                            timeout.as_millis()
                        );
                        refuse(&self.shared, &mut jobs, job, reason, &alerts);
                    }
                }
            }
        }
        let s = &self.shared;
        let cache = s.hashes.lock().unwrap_or_else(|e| e.into_inner());
        VerifyStats {
            verdicts: s
                .counters
                .verdicts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            allowed: s.counters.allowed.load(Ordering::Relaxed),
            alerts: s.counters.alerts.load(Ordering::Relaxed),
            hash_cache_hits: cache.hits.load(Ordering::Relaxed),
            hash_cache_misses: cache.misses.load(Ordering::Relaxed),
            hash_cache_entries: cache.len(),
            inspections_timed_out: s.timed_out.load(Ordering::Relaxed),
            inspections_refused: s.refused.load(Ordering::Relaxed),
        }
    }

    async fn on_event(
        &self,
        event: Tracked,
        queue: &mut FairQueue<ContainerKey, ExecJob>,
        jobs: &mut JoinSet<()>,
        alerts: &mpsc::Sender<AlertDraft>,
    ) {
        let (exec, attribution, process) = match event {
            Tracked::Lost(lost) => {
                let _ = alerts.send(loss_draft(&lost)).await;
                return;
            }
            Tracked::Observed {
                event: Observation::Process(ProcessEvent::Exec(exec)),
                attribution,
                process,
            } => (exec, attribution, process),
            // Forks and exits are the process stage's business.
            Tracked::Observed { .. } => return,
        };
        let ProcessContext { ancestry, roots } = process;
        let paths = paths::exec_paths(&exec);
        let container = match attribution {
            Attribution::Container(c) => c,
            Attribution::Host => {
                if self.shared.config.log_execs {
                    log_exec(&exec, &attribution, None);
                }
                return;
            }
            Attribution::Unresolved(reason) => {
                let v = ExecVerdict::Unverifiable {
                    reason: format!("container unknown: {reason}"),
                };
                let path = paths.binary.shown().to_string();
                let job = ExecJob {
                    roots: vec![],
                    container: Arc::new(ContainerInfo::default()),
                    ancestry,
                    exec,
                    paths,
                };
                finish(&self.shared, &job, &attribution, &path, v, None, alerts).await;
                return;
            }
        };
        if let Some(inspection) = cached_inspection(&self.shared, &exec, &paths) {
            if let Some(image) = self.shared.catalog.ready(&container) {
                let job = ExecJob {
                    exec,
                    paths,
                    container,
                    ancestry,
                    roots: Vec::new(),
                };
                conclude(&self.shared, &job, &image, &inspection, alerts).await;
                return;
            }
        }
        let key = container.key();
        let job = ExecJob {
            exec,
            paths,
            container,
            ancestry,
            roots,
        };
        if let Err((job, full)) = queue.push(key, job, Instant::now()) {
            let reason = format!(
                "not inspected: {} execs of this container already wait for inspection \
                 ({} read(s) busy); the node reads too slowly to keep up",
                full.waiting, full.busy
            );
            refuse(&self.shared, jobs, job, reason, alerts);
        }
    }
}

/// Judges an exec the stage will not inspect: `unverifiable`, with the reason.
fn refuse(
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
async fn judge_exec(
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
async fn conclude(
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
fn cached_inspection(shared: &Shared, exec: &ExecEvent, paths: &ExecPaths) -> Option<Inspection> {
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

fn content_key(exec: &ExecEvent) -> ContentKey {
    ContentKey {
        dev: exec.real_file.dev,
        ino: exec.real_file.ino,
        ctime_sec: exec.ctime_sec,
        ctime_nsec: exec.ctime_nsec,
        size: exec.size,
    }
}

struct EvidenceCtx {
    expected: ImageRecord,
    upper_layer: bool,
    interpreter: Option<String>,
    interpreter_verdict: Option<String>,
}

async fn finish(
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
    m.record_verdict(key.as_ref(), class, image);
}

/// Looks `key` up in the hash cache and, with the cache locked anyway, copies its hit and
/// miss counts to the API's metrics.
pub(crate) fn cached_hash(shared: &Shared, key: &ContentKey) -> Option<String> {
    let cache = shared.hashes.lock().unwrap_or_else(|e| e.into_inner());
    let found = cache.get(key);
    let m = &shared.metrics;
    m.hash_cache_hits.set(cache.hits.load(Ordering::Relaxed));
    m.hash_cache_misses
        .set(cache.misses.load(Ordering::Relaxed));
    found
}

#[allow(clippy::too_many_arguments)]
async fn finish_with(
    shared: &Arc<Shared>,
    job: &ExecJob,
    attribution: &Attribution,
    path: &str,
    verdict: ExecVerdict,
    image: Option<&ImageEntry>,
    ctx: EvidenceCtx,
    alerts: &mpsc::Sender<AlertDraft>,
) {
    {
        let mut v = shared
            .counters
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *v.entry(verdict.name()).or_default() += 1;
    }
    let kind = verdict.alert_kind();
    let c = &job.container;
    let manifest = kind.and_then(|_| {
        c.manifest_digest
            .clone()
            .or_else(|| image.and_then(|i| i.manifest.clone()))
    });
    let allowed_by = kind.and_then(|kind| {
        let subject = allowlist::Subject {
            image: c.image.as_deref(),
            manifest_digest: manifest.as_deref(),
            namespace: &c.namespace,
            pod_namespace: c.pod_namespace.as_deref(),
            container_id: &c.id,
            container_name: c.container_name.as_deref(),
            path,
            kind,
        };
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
    let Some(kind) = kind else { return };
    if allowed_by.is_some() {
        shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let (expected_sha256, expected_layer) = match &ctx.expected {
        ImageRecord::File { sha256, layer } => (Some(sha256.clone()), Some(layer.clone())),
        _ => (None, None),
    };
    let reason = reason_sentence(&verdict, path, c);
    let ancestry = crate::process::complete_ancestry(job.ancestry.clone());
    let draft = AlertDraft {
        kind,
        summary: format!("{}: {} {}", kind.as_str(), path, where_it_ran(c, &job.exec)),
        container: (!c.id.is_empty()).then(|| AlertContainer {
            namespace: c.namespace.clone(),
            id: c.id.clone(),
            image: c.image.clone(),
            manifest_digest: manifest,
            pod_name: c.pod_name.clone(),
            pod_namespace: c.pod_namespace.clone(),
            pod_uid: c.pod_uid.clone(),
            container_name: c.container_name.clone(),
        }),
        process: Some(AlertProcess {
            pid: job.exec.process.tgid,
            ppid: job.exec.ppid,
            uid: job.exec.uid,
            gid: job.exec.gid,
            exe: path.to_string(),
            argv: job.exec.argv.clone(),
            argv_truncated: job.exec.argv_truncated,
            ancestry,
            exec_time: Some(wall_clock_of(job.exec.process.ktime_ns)),
        }),
        evidence: Some(Evidence {
            path: Some(path.to_string()),
            expected_sha256,
            expected_layer,
            actual_sha256: verdict.actual_sha256().map(str::to_string),
            upper_layer: ctx.upper_layer,
            interpreter: ctx.interpreter,
            interpreter_verdict: ctx.interpreter_verdict,
            reason,
        }),
        loss: None,
    };
    shared.counters.alerts.fetch_add(1, Ordering::Relaxed);
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

/// The wall-clock time (RFC 3339, microseconds) of a kernel CLOCK_MONOTONIC stamp, by
/// the two clocks' offset now (an NTP step since the event would shift it).
fn wall_clock_of(ktime_ns: u64) -> String {
    humantime::format_rfc3339_micros(crate::clock::to_wall(ktime_ns)).to_string()
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
struct VerdictRecord<'a> {
    #[serde(flatten)]
    verdict: &'a ExecVerdict,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_by_rule: Option<usize>,
}

/// An exec record: the event's own fields at the top level, its attribution under
/// `container`, and its verdict under `verdict` (absent for host processes).
fn log_exec(exec: &ExecEvent, container: &Attribution, verdict: Option<&VerdictRecord<'_>>) {
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

fn loss_draft(lost: &LossCounts) -> AlertDraft {
    let by_kind: Vec<String> = EventKind::ALL
        .iter()
        .map(|&k| format!("{} {}", k.name(), lost.kernel(k)))
        .collect();
    AlertDraft {
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

    fn exec(argv: &[&str]) -> ExecEvent {
        crate::fixtures::exec_event(argv)
    }

    #[test]
    fn kernel_times_become_wall_clock_times() {
        let mono = crate::clock::now();
        let wall = |ktime| {
            humantime::parse_rfc3339(&wall_clock_of(ktime))
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
