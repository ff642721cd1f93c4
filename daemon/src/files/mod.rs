//! The files analyzer: writes to a container's files and executable mappings, judged
//! against the container's verified image index and the content the file has once its
//! writer is done (issue 14's alert kinds: `file_image_modified`, `file_executable_created`,
//! `file_sensitive_write`, `library_modified`, `library_not_in_image`, `library_fileless`).
//!
//! Owns its state: each container's layer directories (from its root mount), the inodes
//! already judged for mappings (and, through the sensor's feedback handle, the kernel's map
//! of clean inodes, so that a library every process maps is judged once and its mappings
//! stop reaching userspace), the judgements in flight and the alerts already raised. It
//! reads the image catalog the verify stage fills, never verify's verdicts; a process's
//! mapping of its own executable is left to verify (the exec's verdict).
//!
//! Most writes are data files: they are dropped on the pipeline thread from path and mode
//! alone ([`judge::write_concern`]). The rest, and new mappings, are judged in tasks (the
//! I/O on the blocking pool, a few at once), which report back here.

pub mod draft;
pub mod inspect;
pub mod judge;
pub mod layers;
mod task;

use crate::alert::AlertDraft;
use crate::config::{AllowRule, FilesConfig};
use crate::identity::{Attribution, ContainerInfo};
use crate::image::digest::Digest;
use crate::metrics::{FileMetrics, Metrics};
use crate::process::{Batch, Forebear, Tracked};
use crate::sensor::{FileEvent, FileFeedback, FileIdentity, FileOp, Observation};
use crate::verify::allowlist::Subject as AllowSubject;
use crate::verify::images::ImageCatalog;
use judge::{Finding, Rules};
use layers::{ContainerLayers, Layer, Located};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use task::{judge_fileless, judge_mapping, judge_unlink, judge_write};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

/// Judgements that read files at once (the blocking pool does the reading).
const CONCURRENT_INSPECTIONS: usize = 4;
/// Containers whose layers are remembered, inodes judged, alerts raised.
const REMEMBERED: usize = 16 * 1024;
/// How often the kernel's file counters are copied into the metrics.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// A map that forgets its oldest entries past a bound.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            if self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// One version of an inode: a new ctime is a new version, judged again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct InodeVersion {
    file: FileIdentity,
    ctime: (i64, u32),
}

impl InodeVersion {
    fn of(e: &FileEvent) -> Self {
        Self {
            file: e.file,
            ctime: (e.ctime_sec, e.ctime_nsec),
        }
    }
}

/// What a judgement task found.
enum Outcome {
    /// Nothing to say, and nothing to remember.
    Quiet,
    /// The mapped inode is the image's or not code: the kernel stops sending it.
    Clean,
    /// Could not be judged; the reason is logged at debug and counted.
    Unjudged(String),
    Alert {
        finding: Finding,
        note: Option<String>,
        manifest: Option<String>,
    },
}

/// What a task hands back to the stage.
struct Done {
    /// The in-flight key it held.
    key: JobKey,
    event: Arc<FileEvent>,
    container: Arc<ContainerInfo>,
    ancestry: Vec<Forebear>,
    located: Option<Located>,
    /// A mapping of the acting process's own executable, as the process table knows it.
    own_exe: bool,
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum JobKey {
    /// A write, by container mount namespace and host path.
    Write(u32, std::path::PathBuf),
    Map(InodeVersion),
}

/// A write that came again while its judgement ran.
type Again = (Arc<FileEvent>, Arc<ContainerInfo>, Vec<Forebear>);

/// What every task reads.
struct Shared {
    config: FilesConfig,
    rules: Rules,
    catalog: Arc<ImageCatalog>,
    max_file_bytes: u64,
    permits: Semaphore,
    metrics: Arc<Metrics>,
}

/// Figures for the stop line.
#[derive(Debug, Default, serde::Serialize)]
pub struct FilesStats {
    pub alerts: u64,
    pub marked_clean: u64,
    pub unjudged: u64,
}

pub struct FilesStage {
    shared: Arc<Shared>,
    allow: Vec<AllowRule>,
    feedback: Option<FileFeedback>,
    metrics: Arc<Metrics>,
    layers: Bounded<u32, Option<Arc<ContainerLayers>>>,
    /// Inode versions judged clean for mappings.
    clean: Bounded<InodeVersion, ()>,
    /// Inode versions judged for a container's mappings and found wanting (an alert was
    /// raised, or was verify's to raise): not read again for that container.
    wanting: Bounded<(u32, InodeVersion), ()>,
    inflight: HashSet<JobKey>,
    /// Writes that came again while their judgement ran: judged once more after it.
    again: HashMap<JobKey, Again>,
    alerted: Bounded<(u32, String, crate::alert::AlertKind), Option<Digest>>,
    /// Where learned write directories go, when the baseline runs.
    baseline: Option<crate::baseline::Feed>,
    stats: FilesStats,
}

impl FilesStage {
    /// `feedback`: the kernel's clean map and file counters (`None` in tests without a
    /// sensor); `allow`: `[[verify.allow]]`, which covers file kinds too.
    pub fn new(
        config: &FilesConfig,
        catalog: Arc<ImageCatalog>,
        max_file_bytes: u64,
        allow: Vec<AllowRule>,
        feedback: Option<FileFeedback>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                rules: Rules::new(config),
                catalog,
                max_file_bytes,
                permits: Semaphore::new(CONCURRENT_INSPECTIONS),
                metrics: metrics.clone(),
            }),
            allow,
            feedback,
            metrics,
            layers: Bounded::new(REMEMBERED),
            clean: Bounded::new(REMEMBERED),
            wanting: Bounded::new(REMEMBERED),
            inflight: HashSet::new(),
            again: HashMap::new(),
            alerted: Bounded::new(REMEMBERED),
            baseline: None,
            stats: FilesStats::default(),
        }
    }

    fn file_metrics(&self) -> Option<&FileMetrics> {
        self.metrics.files.as_ref()
    }

    /// Judges the file events of every batch from `events` until it closes and every
    /// judgement started has ended.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Batch>,
        alerts: mpsc::Sender<AlertDraft>,
    ) -> FilesStats {
        let mut jobs: JoinSet<Done> = JoinSet::new();
        let mut counters = tokio::time::interval(COUNTERS_EVERY);
        counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        loop {
            if !open && jobs.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = jobs.join_next(), if !jobs.is_empty() => match done {
                    Ok(done) => self.finish(done, &alerts, &mut jobs).await,
                    Err(e) => error!(error = %e, "file judgement task failed"),
                },
                batch = events.recv(), if open => {
                    let Some(batch) = batch else {
                        open = false;
                        continue;
                    };
                    self.on_batch(&batch, &mut jobs);
                }
                _ = counters.tick() => self.copy_counters(),
            }
        }
        self.copy_counters();
        self.stats
    }

    fn copy_counters(&self) {
        let (Some(feedback), Some(m)) = (&self.feedback, self.file_metrics()) else {
            return;
        };
        match feedback.counters() {
            Ok(c) => {
                m.kernel_seen.set(c.seen);
                m.kernel_repeats.set(c.repeats);
                m.kernel_clean_hits.set(c.clean_hits);
                m.io_uring_requests.set(c.io_uring);
                m.kernel_data_writes.set(c.data_writes);
                m.kernel_syscalls.set(c.syscalls);
                m.kernel_hook_calls.set(c.kernel_hooks);
                *m.io_uring_by_mnt_ns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = feedback.io_uring_by_mnt_ns();
            }
            Err(e) => debug!(error = %e, "cannot read the kernel's file counters"),
        }
    }

    fn on_batch(&mut self, batch: &Batch, jobs: &mut JoinSet<Done>) {
        for t in batch.iter() {
            let Tracked::Observed {
                event: Observation::File(file),
                attribution,
                process,
            } = t
            else {
                continue;
            };
            let Attribution::Container(container) = attribution else {
                continue;
            };
            if let Some(m) = self.file_metrics() {
                match file.op {
                    FileOp::Write => m.writes.inc(),
                    FileOp::Map => m.mappings.inc(),
                    FileOp::Linked | FileOp::Unlinked => m.names.inc(),
                }
            }
            match file.op {
                FileOp::Write | FileOp::Linked | FileOp::Unlinked => {
                    self.on_change(file, container, &process.ancestry, &process.roots, jobs)
                }
                FileOp::Map => {
                    let own_exe = process.exe_file == Some(file.file);
                    self.on_map(
                        file,
                        container,
                        &process.ancestry,
                        &process.roots,
                        own_exe,
                        jobs,
                    )
                }
            }
        }
    }

    /// The container's layers, read from the root mount of one of its live processes.
    fn layers_of(&mut self, mnt_ns: u32, roots: &[u32]) -> Option<Arc<ContainerLayers>> {
        if let Some(l) = self.layers.get(&mnt_ns) {
            return l.clone();
        }
        let found = roots.iter().find_map(|pid| {
            let m = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
            // A pid reused outside the namespace must not lend its mounts.
            (crate::procfs::mnt_ns_of(*pid).ok()? == mnt_ns)
                .then(|| ContainerLayers::from_mountinfo(&m))
        });
        match found {
            Some(layers) => {
                let layers = layers.map(Arc::new);
                if layers.is_none() {
                    info!(
                        mnt_ns,
                        "container root is not an overlay: its files are not judged"
                    );
                }
                self.layers.insert(mnt_ns, layers.clone());
                layers
            }
            // No live process to read it from: try again with the next event.
            None => None,
        }
    }

    fn locate(&mut self, file: &FileEvent, roots: &[u32]) -> Option<Located> {
        let path = file.host_path.as_deref()?;
        let located = self.layers_of(file.process.mnt_ns, roots)?.locate(path);
        if located.is_none() {
            if let Some(m) = self.file_metrics() {
                m.outside_layers.inc();
            }
        }
        located
    }

    /// A change to a file: a write (named by the kernel), or a rename, link or unlink
    /// (named by the caller).
    fn on_change(
        &mut self,
        file: &Arc<FileEvent>,
        container: &Arc<ContainerInfo>,
        ancestry: &[Forebear],
        roots: &[u32],
        jobs: &mut JoinSet<Done>,
    ) {
        let judged = match file.op {
            FileOp::Write => self.write_to_judge(file, container, ancestry, roots),
            _ => self.name_to_judge(file, roots),
        };
        if let Some((file, located, concern)) = judged {
            self.spawn_change(file, container, ancestry, located, concern, jobs);
        }
    }

    /// A write that may alert: where it is and what it could mean. The others (data
    /// files, and the directories the kernel sends for the baseline) are only learned.
    fn write_to_judge(
        &mut self,
        file: &Arc<FileEvent>,
        container: &Arc<ContainerInfo>,
        ancestry: &[Forebear],
        roots: &[u32],
    ) -> Option<(Arc<FileEvent>, Located, judge::Concern)> {
        let located = self.locate(file, roots)?;
        // Image layers change only on the host; a container's process dirtying one is
        // an access-time update.
        if located.layer != Layer::Upper {
            return None;
        }
        let concern = if file.data_dir {
            None
        } else {
            judge::write_concern(&self.shared.rules, &located.path, file.mode)
        };
        let Some(concern) = concern else {
            self.learn_write(file, container, ancestry, &located, true);
            return None;
        };
        Some((file.clone(), located, concern))
    }

    /// Tells the baseline a directory of the writable layer was written.
    fn learn_write(
        &self,
        file: &Arc<FileEvent>,
        container: &Arc<ContainerInfo>,
        ancestry: &[Forebear],
        located: &Located,
        clean: bool,
    ) {
        let Some(feed) = &self.baseline else {
            return;
        };
        let dir = match located.path.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((dir, _)) => dir.to_string(),
        };
        feed.send(crate::baseline::Observed::Write(
            crate::baseline::WriteSeen {
                container: container.clone(),
                dir,
                clean,
                event: file.clone(),
                ancestry: ancestry.to_vec(),
            },
        ));
    }

    /// Sends the directories of writes to the baseline (see [`crate::baseline`]).
    pub fn with_baseline(mut self, feed: crate::baseline::Feed) -> Self {
        self.baseline = Some(feed);
        self
    }

    /// A rename, link or unlink that may alert. The caller's path is looked up in the
    /// writable layer, where every new name in the container's root lands: what is there
    /// now is judged (with its mode), not what the caller said.
    fn name_to_judge(
        &mut self,
        file: &Arc<FileEvent>,
        roots: &[u32],
    ) -> Option<(Arc<FileEvent>, Located, judge::Concern)> {
        let Some(path) = file.container_path.as_deref() else {
            debug!(
                tgid = file.process.tgid,
                "a rename, link or unlink path too long to judge"
            );
            return None;
        };
        let upper = self.layers_of(file.process.mnt_ns, roots)?.upper.clone()?;
        let located = Located {
            layer: Layer::Upper,
            path: path.to_string(),
            host: upper.join(path.trim_start_matches('/')),
            layer_dir: upper,
        };
        match file.op {
            FileOp::Unlinked => {
                let concern = judge::sensitive_concern(&self.shared.rules, path)?;
                Some((file.clone(), located, concern))
            }
            // A kernel hook ran before the kernel made the change: the judgement task waits
            // for the name (`task::await_name`), which decides the concern from what is
            // there. The concern here is a placeholder.
            _ if file.path_from_kernel => Some((file.clone(), located, judge::Concern::Candidate)),
            _ => {
                // Gone again, not a regular file, not in the root's layers (a volume), or
                // reached through a symlink the caller's path has: not judged (opened
                // beneath the layer without following symlinks, like every read here).
                let meta = inspect::open_in_layer(&located.layer_dir, &located.path)
                    .and_then(|f| f.metadata())
                    .map_err(|e| debug!(path, error = %e, "a renamed or linked file not judged"))
                    .ok()?;
                let mode = std::os::unix::fs::MetadataExt::mode(&meta);
                let concern = judge::write_concern(&self.shared.rules, path, mode)?;
                let file = Arc::new(FileEvent {
                    mode,
                    ..(**file).clone()
                });
                Some((file, located, concern))
            }
        }
    }

    fn spawn_change(
        &mut self,
        file: Arc<FileEvent>,
        container: &Arc<ContainerInfo>,
        ancestry: &[Forebear],
        located: Located,
        concern: judge::Concern,
        jobs: &mut JoinSet<Done>,
    ) {
        let key = JobKey::Write(file.process.mnt_ns, located.host.clone());
        if self.inflight.contains(&key) {
            self.again
                .insert(key, (file, container.clone(), ancestry.to_vec()));
            return;
        }
        self.inflight.insert(key.clone());
        let shared = self.shared.clone();
        let (event, container) = (file, container.clone());
        // Copied only for the writes and mappings that are judged.
        let ancestry = ancestry.to_vec();
        jobs.spawn(async move {
            let mut event = event;
            let outcome = match event.op {
                FileOp::Unlinked
                    if event.path_from_kernel
                        && !task::await_gone(&shared, &event, &located).await =>
                {
                    Outcome::Quiet
                }
                FileOp::Unlinked => judge_unlink(&shared, &container, &located, concern).await,
                FileOp::Linked if event.path_from_kernel => {
                    match task::await_name(&shared, &event, &located).await {
                        Some((named, concern)) => {
                            event = Arc::new(named);
                            judge_write(&shared, &event, &container, &located, concern).await
                        }
                        None => Outcome::Quiet,
                    }
                }
                _ => judge_write(&shared, &event, &container, &located, concern).await,
            };
            Done {
                key,
                event,
                container,
                ancestry,
                located: Some(located),
                own_exe: false,
                outcome,
            }
        });
    }

    fn on_map(
        &mut self,
        file: &Arc<FileEvent>,
        container: &Arc<ContainerInfo>,
        ancestry: &[Forebear],
        roots: &[u32],
        own_exe: bool,
        jobs: &mut JoinSet<Done>,
    ) {
        let version = InodeVersion::of(file);
        if self.clean.get(&version).is_some() {
            // Judged clean, but the kernel's map forgot it (bounded): tell it again.
            return self.mark_clean(file);
        }
        if self.wanting.get(&(file.process.mnt_ns, version)).is_some() {
            return;
        }
        let key = JobKey::Map(version);
        if self.inflight.contains(&key) {
            return;
        }
        let fileless = file.memfd || file.deleted;
        let located = if fileless {
            None
        } else {
            match self.locate(file, roots) {
                Some(l) => Some(l),
                None => return,
            }
        };
        self.inflight.insert(key.clone());
        // While it is judged, the kernel holds back this inode's other mappings too: a
        // library that a storm of new processes maps is sent a few times, not once per
        // process (the judgement waits for CPU behind that storm). Forgotten again
        // unless it is clean.
        self.mark_clean(file);
        let shared = self.shared.clone();
        let (event, container) = (file.clone(), container.clone());
        let ancestry = ancestry.to_vec();
        jobs.spawn(async move {
            let outcome = match &located {
                Some(l) => judge_mapping(&shared, &event, &container, l).await,
                None => judge_fileless(&shared, &event).await,
            };
            Done {
                key,
                event,
                container,
                ancestry,
                located,
                own_exe,
                outcome,
            }
        });
    }

    fn mark_clean(&mut self, file: &FileEvent) {
        let Some(feedback) = &mut self.feedback else {
            return;
        };
        let ctime = (file.ctime_sec, file.ctime_nsec);
        if let Err(e) = feedback.mark_clean(file.kernel_dev, file.file.ino, ctime) {
            warn!(error = %e, ino = file.file.ino, "cannot mark an inode clean in the kernel");
        }
    }

    fn forget(&mut self, file: &FileEvent) {
        let Some(feedback) = &mut self.feedback else {
            return;
        };
        if let Err(e) = feedback.forget(file.kernel_dev, file.file.ino) {
            warn!(error = %e, ino = file.file.ino, "cannot unmark an inode in the kernel");
        }
    }

    async fn finish(
        &mut self,
        done: Done,
        alerts: &mpsc::Sender<AlertDraft>,
        jobs: &mut JoinSet<Done>,
    ) {
        self.inflight.remove(&done.key);
        if done.event.op == FileOp::Map && !matches!(done.outcome, Outcome::Clean) {
            self.forget(&done.event);
        }
        if matches!(done.event.op, FileOp::Write | FileOp::Linked) {
            if let Some(located) = &done.located {
                let clean = !matches!(done.outcome, Outcome::Alert { .. });
                self.learn_write(&done.event, &done.container, &done.ancestry, located, clean);
            }
        }
        match done.outcome {
            Outcome::Quiet => {}
            Outcome::Clean => {
                self.clean.insert(InodeVersion::of(&done.event), ());
                self.stats.marked_clean += 1;
                if let Some(m) = self.file_metrics() {
                    m.marked_clean.inc();
                }
            }
            Outcome::Unjudged(ref reason) => {
                self.stats.unjudged += 1;
                if let Some(m) = self.file_metrics() {
                    m.unjudged.inc();
                }
                debug!(reason, ino = done.event.file.ino, "file event not judged");
            }
            Outcome::Alert {
                ref finding,
                ref note,
                ref manifest,
            } => {
                if done.event.op == FileOp::Map {
                    let version = InodeVersion::of(&done.event);
                    self.wanting
                        .insert((done.event.process.mnt_ns, version), ());
                }
                // A process's mapping of its own executable is the exec's, which verify
                // judges. (The ELF loader may touch the new image before the exec event
                // told the process table: /proc says it then.)
                let own_exe = done.own_exe
                    || crate::procfs::exe_ino(done.event.process.tgid) == Some(done.event.file.ino);
                if !(done.event.op == FileOp::Map && own_exe) {
                    self.alert(&done, finding, note.clone(), manifest.clone(), alerts)
                        .await
                }
            }
        }
        if let Some((event, container, ancestry)) = self.again.remove(&done.key) {
            let roots = [event.process.tgid];
            self.on_change(&event, &container, &ancestry, &roots, jobs);
        }
    }

    async fn alert(
        &mut self,
        done: &Done,
        finding: &Finding,
        note: Option<String>,
        manifest: Option<String>,
        alerts: &mpsc::Sender<AlertDraft>,
    ) {
        let kind = draft::kind_of(finding);
        let path = done
            .located
            .as_ref()
            .map(|l| l.path.clone())
            .or_else(|| done.event.host_path.clone())
            .unwrap_or_default();
        let c = &done.container;
        let manifest_digest = manifest.as_deref().or(c.manifest_digest.as_deref());
        let subject = AllowSubject::of(c, manifest_digest, &path, kind);
        if self.allow.iter().any(|r| r.matches(&subject)) {
            debug!(
                kind = kind.as_str(),
                path, "file alert allowed by a verify.allow rule"
            );
            return;
        }
        // Once per container, path, kind and content.
        let actual = draft::actual_of(finding);
        let key = (done.event.process.mnt_ns, path, kind);
        if self.alerted.get(&key) == Some(&actual) {
            return;
        }
        // Remembers this content: another version is another alert.
        self.alerted.insert(key, actual);
        let draft = draft::draft(
            finding,
            draft::Subject {
                event: &done.event,
                container: c,
                manifest,
                ancestry: done.ancestry.clone(),
                located: done.located.as_ref(),
                note,
            },
        );
        self.stats.alerts += 1;
        if alerts.send(draft).await.is_err() {
            error!("alert stage stopped; a file alert could not be delivered");
        }
    }
}
