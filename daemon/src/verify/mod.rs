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
mod draft;
pub mod hash;
pub mod images;
mod inspect;
mod judge;
pub mod paths;
pub mod schedule;
pub mod target;
pub mod verdict;

use crate::alert::AlertDraft;
use crate::config::VerifyConfig;
use crate::identity::{Attribution, ContainerInfo, ContainerKey};
use crate::image::digest::Digest;
use crate::metrics::Metrics;
use crate::process::{Batch, ProcessContext, Tracked};
use crate::sensor::{ExecEvent, Observation, ProcessEvent};
use draft::{finish, log_exec, loss_draft};
use hash::HashCache;
use images::ImageCatalog;
use judge::{cached_inspection, conclude, judge_exec, refuse};
use paths::ExecPaths;
use schedule::FairQueue;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use verdict::ExecVerdict;

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
pub struct RuntimeDigests(Vec<Digest>);

impl RuntimeDigests {
    pub fn load(paths: &[std::path::PathBuf], limit: u64) -> Self {
        let mut digests = Vec::new();
        for p in paths {
            match std::fs::File::open(p) {
                Ok(f) => match hash::digest_of(std::io::BufReader::new(f), limit, None) {
                    Ok(d) => {
                        info!(path = %p.display(), sha256 = %d.hex(), "container runtime recognised");
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

    pub fn contains(&self, digest: &Digest) -> bool {
        self.0.contains(digest)
    }
}

pub(crate) struct Shared {
    config: VerifyConfig,
    catalog: Arc<ImageCatalog>,
    hashes: Mutex<HashCache>,
    runtime: RuntimeDigests,
    timed_out: AtomicU64,
    refused: AtomicU64,
    /// Per-container verdict counts and hash cache figures for the API.
    metrics: Arc<Metrics>,
    /// Where every container exec's outcome goes, when the baseline runs.
    baseline: Option<crate::baseline::Feed>,
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
    pub fn new(config: &VerifyConfig, catalog: Arc<ImageCatalog>, metrics: Arc<Metrics>) -> Self {
        let runtime = RuntimeDigests::load(&config.runtime_binaries, config.max_file_bytes);
        Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                catalog,
                hashes: Mutex::new(HashCache::new(config.hash_cache_entries)),
                runtime,
                timed_out: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                metrics,
                baseline: None,
            }),
        }
    }

    /// Sends every container exec's outcome to the baseline (see [`crate::baseline`]).
    pub fn with_baseline(mut self, feed: crate::baseline::Feed) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.baseline = Some(feed);
        }
        self
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
        let totals = s.metrics.verdict_totals();
        VerifyStats {
            verdicts: s.metrics.verdicts_by_name(),
            allowed: totals.skipped,
            alerts: totals.alerted + totals.unverifiable,
            hash_cache_hits: s.metrics.hash_cache_hits.get(),
            hash_cache_misses: s.metrics.hash_cache_misses.get(),
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
        let ProcessContext {
            ancestry, roots, ..
        } = process;
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
