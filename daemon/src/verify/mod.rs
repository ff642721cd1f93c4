//! The verify stage: gives every exec in a container exactly one verdict, and turns every
//! verdict but `verified` into an alert draft (or an `info` record, when a scoped allow
//! rule matches).
//!
//! Owns the judgement of execs: locating and hashing the file that actually ran
//! ([`target`], [`hash`]), the container's verified image ([`images`]), ancestry
//! ([`process`]), the allowlist ([`allowlist`]) and the pure decision ([`verdict`]).
//! Image indexing and hashing run off the runtime's worker threads; several execs are
//! judged at once, bounded, so one slow image cannot hold up every other container.
//! The common case, a binary whose content was hashed before in a container whose image
//! is indexed, needs no I/O and is judged in the stage loop itself: a task per exec would
//! cost more than the judgement (a spawn, and often a wake-up of another worker thread).

pub mod allowlist;
pub mod hash;
pub mod images;
pub mod process;
pub mod target;
pub mod verdict;

use crate::alert::{AlertContainer, AlertDraft, AlertKind, AlertProcess, Evidence, Loss};
use crate::config::VerifyConfig;
use crate::containers::{Attribution, ContainerEvent, ContainerInfo};
use crate::logging;
use crate::metrics::{Metrics, Verdict};
use crate::sensor::{ExecEvent, LossCounts};
use hash::{ContentKey, HashCache};
use images::{ImageCatalog, ImageEntry};
use process::ProcessTable;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use verdict::{ExecVerdict, FileFacts, ImageRecord};

/// Programs that take a script path as their first argument (`sh /tmp/x.sh`).
const SCRIPT_RUNNERS: &[&str] = &[
    "sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "python", "python2", "python3", "perl",
    "ruby", "node", "php", "lua",
];

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

struct Shared {
    config: VerifyConfig,
    catalog: ImageCatalog,
    hashes: Mutex<HashCache>,
    runtime: RuntimeDigests,
    counters: VerifyCounters,
    /// Per-container verdict counts and hash cache figures for the API.
    metrics: Arc<Metrics>,
}

/// Events taken from the channel per wake-up of the stage.
const EVENT_BATCH: usize = 256;

pub struct VerifyStage {
    shared: Arc<Shared>,
    procs: ProcessTable,
}

/// Everything a verdict needs, captured in order in the stage loop.
struct ExecJob {
    exec: Box<ExecEvent>,
    container: Arc<ContainerInfo>,
    ancestry: Vec<process::Forebear>,
    /// Live pids of the container, nearest first, whose root can be used to open files.
    roots: Vec<u32>,
    /// What the hash cache already answered for it, looked up once in the stage loop.
    cached: Option<Inspection>,
}

/// The facts the blocking part found.
struct Inspection {
    binary: FileFacts,
    script: Option<FileFacts>,
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
                metrics,
            }),
            procs: ProcessTable::new(config.process_table_entries),
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ContainerEvent>,
        alerts: mpsc::Sender<AlertDraft>,
    ) -> VerifyStats {
        let permits = Arc::new(Semaphore::new(self.shared.config.concurrency));
        let mut jobs = JoinSet::new();
        // Taken in batches (a sensor drain's worth): the loop's own bookkeeping then runs
        // once per batch, not once per event.
        let mut batch = Vec::with_capacity(EVENT_BATCH);
        while events.recv_many(&mut batch, EVENT_BATCH).await > 0 {
            // Reap finished judgements so the set stays small.
            while let Some(done) = jobs.try_join_next() {
                if let Err(e) = done {
                    error!(error = %e, "exec judgement task failed");
                }
            }
            for event in batch.drain(..) {
                match event {
                    ContainerEvent::Fork(f, _) => {
                        self.procs.on_fork(f.process.tgid, f.parent_tgid);
                        self.procs.seen_in(f.process.mnt_ns, f.process.tgid);
                    }
                    ContainerEvent::Exit(e, _) => {
                        self.procs.on_exit(e.process.mnt_ns, e.process.tgid)
                    }
                    ContainerEvent::Lost(lost) => {
                        let _ = alerts.send(loss_draft(&lost)).await;
                    }
                    ContainerEvent::Exec(exec, attribution) => {
                        // The table only, no I/O per exec: alerts complete it from /proc later.
                        let ancestry = self.procs.ancestry(exec.ppid, |_| None);
                        self.procs.on_exec(
                            exec.process.tgid,
                            exec.ppid,
                            target::absolute(&exec.filename, None).into(),
                        );
                        let container = match attribution {
                            Attribution::Container(c) => c,
                            Attribution::Host => {
                                if self.shared.config.log_execs {
                                    log_exec(&exec, &attribution, None);
                                }
                                continue;
                            }
                            Attribution::Unresolved(reason) => {
                                let v = ExecVerdict::Unverifiable {
                                    reason: format!("container unknown: {reason}"),
                                };
                                let job = ExecJob {
                                    roots: vec![],
                                    container: Arc::new(ContainerInfo::default()),
                                    ancestry,
                                    exec,
                                    cached: None,
                                };
                                let shared = self.shared.clone();
                                finish(
                                    &shared,
                                    &job,
                                    &attribution,
                                    &job.exec.filename.clone(),
                                    v,
                                    None,
                                    &alerts,
                                )
                                .await;
                                continue;
                            }
                        };
                        let cached = cached_inspection(&self.shared, &exec);
                        let image = match &cached {
                            Some(_) => self.shared.catalog.ready(&container),
                            None => None,
                        };
                        if let (Some(inspection), Some(image)) = (&cached, image) {
                            self.procs.seen_in(exec.process.mnt_ns, exec.process.tgid);
                            let job = ExecJob {
                                exec,
                                container,
                                ancestry,
                                roots: Vec::new(),
                                cached: None,
                            };
                            conclude(&self.shared, &job, &image, inspection, &alerts).await;
                            continue;
                        }
                        // Any live process of the same mount namespace can open the container's
                        // root; the one that exec'd first, then its parents, then the others.
                        let mut roots = vec![exec.process.tgid, exec.ppid];
                        roots.extend(ancestry.iter().map(|a| a.pid));
                        roots.extend(self.procs.pids_in(exec.process.mnt_ns));
                        roots.dedup();
                        self.procs.seen_in(exec.process.mnt_ns, exec.process.tgid);
                        let job = ExecJob {
                            exec,
                            container,
                            ancestry,
                            roots,
                            cached,
                        };
                        let permit = permits.clone().acquire_owned().await.expect("never closed");
                        let shared = self.shared.clone();
                        let alerts = alerts.clone();
                        jobs.spawn(async move {
                            judge_exec(&shared, job, &alerts).await;
                            drop(permit);
                        });
                    }
                }
            }
        }
        while let Some(done) = jobs.join_next().await {
            if let Err(e) = done {
                error!(error = %e, "exec judgement task failed");
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
        }
    }
}

async fn judge_exec(shared: &Arc<Shared>, mut job: ExecJob, alerts: &mpsc::Sender<AlertDraft>) {
    let image = shared.catalog.for_container(&job.container).await;
    let inspection = match job.cached.take() {
        Some(i) => Ok(i),
        None => {
            let shared = shared.clone();
            let exec = job.exec.clone();
            let roots = job.roots.clone();
            tokio::task::spawn_blocking(move || inspect(&shared, &exec, &roots)).await
        }
    };
    match inspection {
        Ok(i) => conclude(shared, &job, &image, &i, alerts).await,
        Err(e) => {
            let v = ExecVerdict::Unverifiable {
                reason: format!("inspection task failed: {e}"),
            };
            let attribution = Attribution::Container(job.container.clone());
            finish(
                shared,
                &job,
                &attribution,
                &job.exec.filename.clone(),
                v,
                Some(&*image),
                alerts,
            )
            .await;
        }
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

/// The hot path: a binary whose content this node has hashed before, executed by an
/// absolute path (or a relative one with the kernel's cwd), is judged with no I/O at all.
/// Anything else (memfd, scripts, a cache miss) goes to [`inspect`] on the blocking pool.
fn cached_inspection(shared: &Shared, exec: &ExecEvent) -> Option<Inspection> {
    if exec.memfd || exec.interpreter.is_some() || script_argument(exec).is_some() {
        return None;
    }
    if !exec.filename.starts_with('/') && (exec.cwd.is_none() || exec.cwd_truncated) {
        return None;
    }
    let actual = cached_hash(shared, &content_key(exec))?;
    Some(Inspection {
        binary: FileFacts {
            path: target::absolute(&exec.filename, exec.cwd.as_deref()),
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

/// Finds and hashes the executed file (and the script it runs). Blocking.
fn inspect(shared: &Shared, exec: &ExecEvent, roots: &[u32]) -> Inspection {
    let pid = exec.process.tgid;
    // Only processes still in the exec's mount namespace show the container's root: any
    // other (a host parent, a reused pid) would resolve paths on the wrong tree.
    let roots: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|&p| target::mnt_ns_of(p) == Some(exec.process.mnt_ns))
        .collect();
    let roots = roots.as_slice();
    let limit = shared.config.max_file_bytes;
    let live_exe = target::open_exe(pid, exec.file);
    // The kernel's cwd (read at exec time for relative names) beats /proc, which only
    // knows it while the process lives.
    let cwd = exec
        .cwd
        .clone()
        .filter(|_| !exec.cwd_truncated)
        .or_else(|| target::cwd(pid))
        .or_else(|| target::cwd(exec.ppid));
    let called = exec
        .interpreter
        .clone()
        .unwrap_or_else(|| exec.filename.clone());
    // The path as the exec named it, whether or not the process still lives: reading it
    // back from /proc/PID/exe instead gave a symlink's target (`/bin/busybox` for the
    // `/bin/sh` of a `#!` line) only when the daemon was quick enough to find the process
    // alive, and never on the cached path. The image lookup resolves symlinks either way.
    let path = target::absolute(&called, cwd.as_deref());
    let key = content_key(exec);
    let cached = if exec.memfd {
        None
    } else {
        cached_hash(shared, &key)
    };
    let actual = match cached {
        Some(h) => Ok(h),
        None => {
            let hashed = match live_exe {
                Ok(opened) => target::hash_opened(opened, limit),
                Err(live_err) if exec.memfd => Err(live_err),
                Err(live_err) => open_checked_in_roots(roots, &path, exec)
                    .and_then(|o| target::hash_opened(o, limit))
                    .map_err(|e| format!("{live_err}; {e}")),
            };
            if let (Ok(h), false) = (&hashed, exec.memfd) {
                shared
                    .hashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, h.clone());
            }
            hashed
        }
    };
    let runtime = exec.memfd && actual.as_ref().is_ok_and(|h| shared.runtime.contains(h));
    let binary = FileFacts {
        path: if exec.memfd {
            exec.filename.clone()
        } else {
            path
        },
        actual,
        memfd: exec.memfd,
        deleted: exec.deleted,
        upper_layer: exec.upper_layer,
        runtime,
    };
    let script_path = if exec.interpreter.is_some() {
        Some(target::absolute(&exec.filename, cwd.as_deref()))
    } else {
        script_argument(exec).map(|a| target::absolute(a, cwd.as_deref()))
    };
    let script = script_path.and_then(|p| {
        let opened = roots.iter().find_map(|&r| target::open_in_root(r, &p).ok());
        // `sh -c ...` style runs name no file: only a file that exists counts as a script,
        // except for a `#!` exec, whose script certainly ran.
        if opened.is_none() && exec.interpreter.is_none() {
            return None;
        }
        let actual = match opened {
            Some(o) => target::hash_opened(o, limit),
            None => Err(format!("{p} could not be opened in the container")),
        };
        Some(FileFacts {
            path: p,
            actual,
            memfd: false,
            deleted: false,
            upper_layer: false,
            runtime: false,
        })
    });
    Inspection { binary, script }
}

/// The script a shell or interpreter was asked to run (`sh /tmp/x.sh`), if argv names one.
fn script_argument(exec: &ExecEvent) -> Option<&str> {
    let argv0 = exec.argv.first()?;
    let argv0 = argv0.rsplit('/').next().unwrap_or(argv0);
    let runner = SCRIPT_RUNNERS.iter().any(|r| {
        argv0 == *r
            || (argv0.starts_with(r)
                && argv0[r.len()..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.'))
    });
    if !runner {
        return None;
    }
    exec.argv
        .get(1)
        .map(String::as_str)
        .filter(|a| !a.is_empty() && !a.starts_with('-'))
}

/// Opens `path` in the first live root of the container whose file is the one that ran.
fn open_checked_in_roots(
    roots: &[u32],
    path: &str,
    exec: &ExecEvent,
) -> Result<target::Opened, String> {
    use std::os::unix::fs::MetadataExt;
    let mut last = format!("no live process of the container to open {path} through");
    for &root in roots {
        match target::open_in_root(root, path) {
            Ok(o) => {
                let meta = o.file.metadata().map_err(|e| e.to_string())?;
                if (meta.dev(), meta.ino()) == (exec.file.dev, exec.file.ino) {
                    return Ok(o);
                }
                last = format!(
                    "{} is another file than the one that ran (replaced since)",
                    o.via
                );
            }
            Err(e) => last = e,
        }
    }
    Err(last)
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
fn cached_hash(shared: &Shared, key: &ContentKey) -> Option<String> {
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
    let ancestry = complete_ancestry(job.ancestry.clone());
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

/// Extends an ancestry that stopped at a pid the event table does not know (host
/// processes such as the shim are filtered in the kernel) from /proc, for alerts only.
fn complete_ancestry(mut chain: Vec<process::Forebear>) -> Vec<crate::alert::Ancestor> {
    let Some(last) = chain.pop() else {
        return Vec::new();
    };
    if last.exe.is_some() {
        chain.push(last);
        return chain.into_iter().map(Into::into).collect();
    }
    let known: Vec<u32> = chain.iter().map(|a| a.pid).collect();
    let table = ProcessTable::new(16);
    let rest = table.ancestry(last.pid, process::from_proc);
    chain.extend(
        rest.into_iter()
            .filter(|a| !known.contains(&a.pid))
            .take(process::MAX_ANCESTORS.saturating_sub(known.len())),
    );
    chain.into_iter().map(Into::into).collect()
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
    humantime::format_rfc3339_micros(crate::containers::clock::to_wall(ktime_ns)).to_string()
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
    AlertDraft {
        kind: AlertKind::SensorEventsLost,
        summary: format!(
            "{} sensor events lost (exec {}, fork {}, exit {}, undecodable {})",
            lost.total(),
            lost.exec,
            lost.fork,
            lost.exit,
            lost.undecodable
        ),
        container: None,
        process: None,
        evidence: None,
        loss: Some(Loss {
            kernel_exec: lost.exec,
            kernel_fork: lost.fork,
            kernel_exit: lost.exit,
            undecodable: lost.undecodable,
            queues: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::event::{FileIdentity, ProcessRef};

    fn exec(argv: &[&str]) -> ExecEvent {
        ExecEvent {
            process: ProcessRef {
                pid: 1,
                tgid: 1,
                mnt_ns: 1,
                pid_ns: 1,
                ktime_ns: 0,
            },
            ppid: 0,
            uid: 0,
            gid: 0,
            comm: String::new(),
            filename: argv[0].into(),
            interpreter: None,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argc: argv.len() as u32,
            argv_truncated: false,
            filename_truncated: false,
            cwd: None,
            cwd_truncated: false,
            file: FileIdentity { dev: 0, ino: 0 },
            real_file: FileIdentity { dev: 0, ino: 0 },
            ctime_sec: 0,
            ctime_nsec: 0,
            size: 0,
            nlink: 1,
            mode: 0,
            overlay: true,
            upper_layer: false,
            memfd: false,
            deleted: false,
            storm: false,
        }
    }

    #[test]
    fn kernel_times_become_wall_clock_times() {
        let mono = crate::containers::clock::now();
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
    fn script_arguments_of_shells_and_interpreters() {
        assert_eq!(
            script_argument(&exec(&["sh", "/tmp/x.sh"])),
            Some("/tmp/x.sh")
        );
        assert_eq!(
            script_argument(&exec(&["/bin/bash", "x.sh", "a"])),
            Some("x.sh")
        );
        assert_eq!(
            script_argument(&exec(&["python3.11", "run.py"])),
            Some("run.py")
        );
        assert_eq!(script_argument(&exec(&["sh", "-c", "echo"])), None);
        assert_eq!(script_argument(&exec(&["ls", "/tmp"])), None);
        assert_eq!(script_argument(&exec(&["shred", "x"])), None);
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
            exec: 3,
            fork: 1,
            exit: 0,
            undecodable: 0,
        });
        assert_eq!(d.kind, AlertKind::SensorEventsLost);
        assert_eq!(d.loss.unwrap().kernel_exec, 3);
    }
}
