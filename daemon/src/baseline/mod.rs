//! The baseline analyzer: learns per workload which binaries run, from which parents, and
//! which directories it writes, then reports what the workload never did (issue 15's
//! `baseline_unexpected_exec`, `baseline_unexpected_parent`, `baseline_unexpected_write`).
//!
//! Owns the baselines: in memory while the daemon runs, in `STATE_DIR/baselines` across
//! restarts ([`store`]), bounded in number and size. It hears about execs from verify (with
//! their integrity verdict: only `verified` execs are learned or compared) and about writes
//! from files (the directory, and whether the write alerted), through one bounded channel
//! that never blocks them ([`Feed`]): what does not fit is counted, and a baseline that
//! was learning then is marked partial. It must not judge integrity itself, nor block the
//! pipeline: decisions are [`learn`]'s pure functions, I/O is a save per tick.

#[cfg(test)]
mod bench;
pub mod draft;
pub mod key;
pub mod learn;
pub mod model;
pub mod store;

use crate::alert::AlertDraft;
use crate::alert::AlertKind;
use crate::config::BaselineConfig;
use crate::identity::ContainerInfo;
use crate::image::digest::Digest;
use crate::metrics::Metrics;
use crate::process::Forebear;
use crate::sensor::{ExecEvent, FileEvent};
use draft::Unexpected;
use futures_util::FutureExt;
use key::WorkloadKey;
use learn::{ExecFact, ExecOutcome, WriteFact, WriteOutcome};
use model::{Baseline, State};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// The files a container's image has, for carrying a baseline over an upgrade
/// (verify's image catalog implements it; the baseline does not index images itself).
pub trait ImageFiles: Send + Sync + 'static {
    /// The verified image index of the container's image, `None` when it has none.
    fn index_of<'a>(
        &'a self,
        container: &'a ContainerInfo,
    ) -> futures_util::future::BoxFuture<'a, Option<Arc<crate::image::LayerIndex>>>;
}

/// How often learning ends are checked, losses looked at and changed baselines saved.
const TICK: Duration = Duration::from_secs(1);
/// How often running time and sightings alone are saved.
const PROGRESS_SAVE: Duration = Duration::from_secs(60);
/// Containers whose baseline id is remembered.
const BY_CONTAINER: usize = 16 * 1024;
/// (baseline, kind, entry) cooldowns kept: a container that makes up new directories or
/// exe names must not grow the daemon without bound. Past it, the cooldowns that are over
/// go; if all are running, the oldest half.
const COOLDOWNS: usize = 64 * 1024;
/// Observations that may wait for the analyzer.
pub const FEED_QUEUE: usize = 4096;

/// An exec, once verify judged it.
pub struct ExecSeen {
    pub container: Arc<ContainerInfo>,
    pub exec: Arc<ExecEvent>,
    /// Parents, nearest first.
    pub ancestry: Vec<Forebear>,
    /// The path the verdict is about (as the image records it).
    pub exe: String,
    /// The image's digest at that path.
    pub digest: Option<Digest>,
    /// `verified`, and no alert was raised.
    pub verified: bool,
}

/// A write in a container's writable layer, once files saw (or judged) it.
pub struct WriteSeen {
    pub container: Arc<ContainerInfo>,
    /// The directory written, inside the container.
    pub dir: String,
    /// No integrity alert came of it.
    pub clean: bool,
    /// The write, for an alert's process.
    pub event: Arc<FileEvent>,
    /// The acting process first, then its parents.
    pub ancestry: Vec<Forebear>,
}

pub enum Observed {
    Exec(ExecSeen),
    Write(WriteSeen),
}

/// The sending side, for verify and files: never waits. What does not fit is counted.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Observed>,
    lost: Arc<AtomicU64>,
}

impl Feed {
    pub fn send(&self, o: Observed) {
        if self.tx.try_send(o).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the API asks of the analyzer; `id` is a baseline's id (or a unique prefix of it).
pub enum Command {
    List(oneshot::Sender<Vec<Baseline>>),
    Get(String, oneshot::Sender<Result<Baseline, String>>),
    Lock(String, oneshot::Sender<Result<Baseline, String>>),
    Relearn(String, oneshot::Sender<Result<Baseline, String>>),
    /// Merges a document into the baseline of its key (created when there is none).
    Import(Box<Baseline>, oneshot::Sender<Result<Baseline, String>>),
}

/// The API's handle on the analyzer.
#[derive(Clone)]
pub struct Handle(mpsc::Sender<Command>);

impl Handle {
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(make(tx))
            .await
            .map_err(|_| "the baseline analyzer is not running".to_string())?;
        rx.await
            .map_err(|_| "the baseline analyzer stopped".to_string())
    }
}

/// Figures for the stop line.
#[derive(Debug, Default, serde::Serialize)]
pub struct BaselineStats {
    pub baselines: usize,
    pub learned: u64,
    pub alerts: u64,
    pub folded: u64,
    pub lost: u64,
}

pub struct BaselineStage {
    config: BaselineConfig,
    store: Option<Arc<Store>>,
    /// The save running on the blocking pool (one at a time: they replace the same files);
    /// it hands back the ids it could not save.
    saving: Option<tokio::task::JoinHandle<Vec<String>>>,
    catalog: Arc<dyn ImageFiles>,
    metrics: Arc<Metrics>,
    baselines: HashMap<String, Baseline>,
    /// (containerd namespace, container id) -> (manifest, baseline id).
    by_container: HashMap<(String, String), (String, String)>,
    dirty: HashSet<String>,
    /// (baseline id, kind, entry) -> (last alert, repeats folded since).
    cooldown: HashMap<(String, AlertKind, String), (u64, u64)>,
    started: SystemTime,
    /// The containers stage's table: which workloads run (learning counts their time).
    containers: Option<tokio::sync::watch::Receiver<crate::containers::ContainerList>>,
    last_tick: u64,
    last_progress_save: u64,
    lost: Arc<AtomicU64>,
    /// Losses (the feed's and the sensor's) at the last tick.
    lost_seen: u64,
    stats: BaselineStats,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now() -> u64 {
    unix(SystemTime::now())
}

impl BaselineStage {
    /// Loads the stored baselines from `dir` (a baseline that was learning when the daemon
    /// stopped is marked partial: what happened meanwhile was not seen). Returns the stage,
    /// the feed for verify and files, and the API's handle.
    pub fn new(
        config: &BaselineConfig,
        dir: &std::path::Path,
        catalog: Arc<dyn ImageFiles>,
        metrics: Arc<Metrics>,
    ) -> (
        Self,
        mpsc::Receiver<Observed>,
        Feed,
        Handle,
        mpsc::Receiver<Command>,
    ) {
        let store = match Store::open(dir) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                error!(error = %e, "baselines are kept in memory only");
                None
            }
        };
        let mut baselines = HashMap::new();
        for mut b in store.iter().flat_map(|s| s.load_all()) {
            if b.state == State::Learning {
                b.mark_partial("the daemon was not running for part of the time it learned");
            }
            baselines.insert(b.key.id(), b);
        }
        if !baselines.is_empty() {
            info!(baselines = baselines.len(), dir = %dir.display(), "baselines loaded");
        }
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let lost = Arc::new(AtomicU64::new(0));
        let stage = Self {
            config: config.clone(),
            store,
            saving: None,
            catalog,
            metrics,
            baselines,
            by_container: HashMap::new(),
            dirty: HashSet::new(),
            cooldown: HashMap::new(),
            started: SystemTime::now(),
            containers: None,
            last_tick: now(),
            last_progress_save: now(),
            lost: lost.clone(),
            lost_seen: 0,
            stats: BaselineStats::default(),
        };
        (stage, rx, Feed { tx, lost }, Handle(cmd_tx), cmd_rx)
    }

    /// Counts learning time only while a container of the workload runs, from the
    /// containers stage's table.
    pub fn with_containers(
        mut self,
        table: tokio::sync::watch::Receiver<crate::containers::ContainerList>,
    ) -> Self {
        self.containers = Some(table);
        self
    }

    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Observed>,
        mut commands: mpsc::Receiver<Command>,
        alerts: mpsc::Sender<AlertDraft>,
    ) -> BaselineStats {
        self.lost_seen = self.losses();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        loop {
            tokio::select! {
                o = input.recv() => match o {
                    Some(o) => self.on_observed(o, &alerts).await,
                    None => break,
                },
                c = commands.recv(), if commands_open => match c {
                    Some(c) => self.on_command(c),
                    None => commands_open = false,
                },
                _ = tick.tick() => self.tick(),
            }
        }
        self.tick();
        // The last save, waited for: every baseline is on disk when the daemon stops.
        if let Some(saving) = self.saving.take() {
            let _ = saving.await;
        }
        self.start_save();
        if let Some(saving) = self.saving.take() {
            if let Ok(failed) = saving.await {
                if !failed.is_empty() {
                    error!(baselines = failed.len(), "baselines not saved at stop");
                }
            }
        }
        self.stats.baselines = self.baselines.len();
        self.stats.lost = self.lost.load(Ordering::Relaxed);
        self.stats
    }

    /// Losses that may have hidden behaviour from a learning baseline.
    fn losses(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
            + (self.metrics.lost_kernel.total() + self.metrics.lost_queue.get())
    }

    /// The baselines with a running container now (all of them when the stage has no
    /// container table: then every second counts as running).
    fn running(&mut self) -> Option<HashSet<String>> {
        let list = self.containers.as_ref()?.borrow().clone();
        let ids = list
            .iter()
            .filter(|c| c.task.as_ref().is_some_and(|t| t.exited_at.is_none()))
            .filter_map(|c| self.id_of(&c.info))
            .collect();
        Some(ids)
    }

    /// The id of `container`'s baseline key, `None` before its image manifest is known.
    /// Every exec and tick asks: the id (a sha256 over the key's fields) is worked out
    /// once per container and image.
    fn id_of(&mut self, container: &ContainerInfo) -> Option<String> {
        let seen = (container.namespace.clone(), container.id.clone());
        if let Some((manifest, id)) = self.by_container.get(&seen) {
            if container.manifest_digest.as_ref() == Some(manifest) {
                return Some(id.clone());
            }
        }
        let manifest = container.manifest_digest.clone()?;
        let (key, _) = key::key_of(container)?;
        let id = key.id();
        if self.by_container.len() >= BY_CONTAINER {
            self.by_container.clear();
        }
        self.by_container.insert(seen, (manifest, id.clone()));
        Some(id)
    }

    fn tick(&mut self) {
        let t = now();
        // Seconds since the last tick, as running time (a stall or a suspended VM counts
        // for at most a few ticks).
        let elapsed = t.saturating_sub(self.last_tick).min(5 * TICK.as_secs());
        self.last_tick = t;
        let running = self.running();
        let losses = self.losses();
        let lost = losses > self.lost_seen;
        self.lost_seen = losses;
        // Running time and last sightings are saved with the next change, or once every
        // PROGRESS_SAVE (a crash loses at most that much learning time), not every second.
        let progress = t.saturating_sub(self.last_progress_save) >= PROGRESS_SAVE.as_secs();
        if progress {
            self.last_progress_save = t;
        }
        let mut states = std::collections::BTreeMap::<&'static str, u64>::new();
        for b in self.baselines.values() {
            *states.entry(b.state.as_str()).or_default() += 1;
        }
        self.metrics.set_baseline_states(states);
        for (id, b) in self.baselines.iter_mut() {
            if lost && b.state == State::Learning {
                b.mark_partial("events were lost while it learned");
                self.dirty.insert(id.clone());
            }
            if running.as_ref().is_none_or(|r| r.contains(id)) {
                // An idle workload is still there: not retained by events alone.
                b.last_seen = b.last_seen.max(t);
                if b.state == State::Learning {
                    b.ran_seconds += elapsed;
                }
                if progress {
                    self.dirty.insert(id.clone());
                }
            }
            if learn::learning_done(b, t, &self.config) {
                learn::lock(b, t);
                info!(baseline = %b.key, id, entries = b.entries(), partial = !b.partial.is_empty(),
                    "baseline learned: monitoring");
                self.dirty.insert(id.clone());
            }
        }
        // Workloads gone for baseline.retain_hours, then the oldest past the bound.
        let retain = self.config.retain().as_secs();
        let gone: Vec<String> = self
            .baselines
            .iter()
            .filter(|(_, b)| t.saturating_sub(b.last_seen) > retain)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.evict(&id, "its workload was not seen for baseline.retain_hours");
        }
        while self.baselines.len() > self.config.max_baselines {
            let Some(oldest) = self
                .baselines
                .iter()
                .min_by_key(|(_, b)| b.last_seen)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.evict(&oldest, "baseline.max_baselines was reached");
        }
        self.start_save();
    }

    /// Saves `b` before an operator's change is answered (rare: it may wait for the
    /// disk), so that what `lock`, `relearn` or `import` said survives a crash right after.
    fn save_now(&mut self, b: &Baseline) {
        let id = b.key.id();
        let Some(store) = &self.store else {
            return;
        };
        match store.save(b) {
            Ok(()) => {
                self.dirty.remove(&id);
            }
            Err(e) => {
                warn!(error = %e, "baseline not saved; trying again");
                self.dirty.insert(id);
            }
        }
    }

    /// Saves the changed baselines on the blocking pool (writes and fsyncs must not stall
    /// the pipeline thread), unless the last save is still running.
    fn start_save(&mut self) {
        if let Some(saving) = &self.saving {
            if !saving.is_finished() {
                return;
            }
            if let Some(Ok(failed)) = self.saving.take().and_then(|s| s.now_or_never()) {
                self.dirty.extend(failed);
            }
        }
        let Some(store) = self.store.clone() else {
            self.dirty.clear();
            return;
        };
        if self.dirty.is_empty() {
            return;
        }
        let docs: Vec<Baseline> = std::mem::take(&mut self.dirty)
            .iter()
            .filter_map(|id| self.baselines.get(id).cloned())
            .collect();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for b in docs {
                if let Err(e) = store.save(&b) {
                    // Kept in memory and tried again next tick (a full disk frees up).
                    warn!(error = %e, "baseline not saved; trying again");
                    failed.push(b.key.id());
                }
            }
            failed
        }));
    }

    fn evict(&mut self, id: &str, why: &str) {
        if let Some(b) = self.baselines.remove(id) {
            info!(baseline = %b.key, id, why, "baseline removed");
        }
        self.dirty.remove(id);
        if let Some(store) = &self.store {
            store.remove(id);
        }
    }

    /// The baseline of `container`'s workload, created (or seeded from the workload's
    /// previous image) when it has none; `None` before its image manifest is known.
    async fn baseline_of(&mut self, container: &ContainerInfo) -> Option<String> {
        let id = self.id_of(container)?;
        if self.baselines.contains_key(&id) {
            return Some(id);
        }
        let (key, source) = key::key_of(container)?;
        let t = now();
        let previous = self
            .baselines
            .values()
            .filter(|b| b.key.same_workload(&key))
            .max_by_key(|b| b.last_seen)
            .cloned();
        let b = match previous {
            Some(prev) => self.seed(&prev, key, container, t).await,
            None => {
                let mut b = Baseline::new(key, source, t);
                if container.created_at.is_some_and(|c| c < self.started) {
                    b.mark_partial("the daemon started after the workload");
                }
                b
            }
        };
        info!(baseline = %b.key, id, state = b.state.as_str(), seeded_from = b.seeded_from.as_deref().unwrap_or(""),
            "new baseline");
        self.baselines.insert(id.clone(), b);
        self.dirty.insert(id.clone());
        Some(id)
    }

    /// An upgrade: the previous image's baseline, kept to what the new image still has.
    async fn seed(
        &self,
        prev: &Baseline,
        key: WorkloadKey,
        container: &ContainerInfo,
        t: u64,
    ) -> Baseline {
        match &self.catalog.index_of(container).await {
            Some(index) => learn::seed_upgrade(prev, key, |p| index.lookup(p).is_some(), t),
            None => {
                let mut b = Baseline::new(key, prev.name_source, t);
                b.mark_partial(
                    "its image could not be indexed to carry over the previous image's baseline",
                );
                b
            }
        }
    }

    async fn on_observed(&mut self, o: Observed, alerts: &mpsc::Sender<AlertDraft>) {
        let container = match &o {
            Observed::Exec(e) => e.container.clone(),
            Observed::Write(w) => w.container.clone(),
        };
        let Some(id) = self.baseline_of(&container).await else {
            return;
        };
        let t = now();
        let Some(b) = self.baselines.get_mut(&id) else {
            return;
        };
        let (unexpected, process) = match &o {
            Observed::Exec(e) => {
                let parent = e
                    .ancestry
                    .first()
                    .and_then(|f| f.exe.as_deref())
                    .filter(|_| e.exec.ppid != 0)
                    .map(str::to_string)
                    .unwrap_or_default();
                // The container's first process: its parent is the runtime's shim.
                let parent = if is_runtime(&parent) {
                    String::new()
                } else {
                    parent
                };
                let fact = ExecFact {
                    exe: &e.exe,
                    parent: &parent,
                    digest: e.digest,
                    verified: e.verified,
                    container: &container.id,
                    now: t,
                };
                let unexpected = match learn::observe_exec(b, &fact, &self.config) {
                    ExecOutcome::Learned => {
                        self.stats.learned += 1;
                        self.dirty.insert(id.clone());
                        debug!(baseline = %b.key, exe = %e.exe, parent, "learned exec");
                        return;
                    }
                    ExecOutcome::UnexpectedExec { learned } => Unexpected::Exec {
                        exe: e.exe.clone(),
                        parent,
                        learned,
                    },
                    ExecOutcome::UnexpectedParent { learned } => Unexpected::Parent {
                        exe: e.exe.clone(),
                        parent,
                        learned,
                    },
                    _ => return,
                };
                let process = crate::process::exec_actor(&e.exec, &e.exe, e.ancestry.clone());
                (unexpected, process)
            }
            Observed::Write(w) => {
                let fact = WriteFact {
                    dir: &w.dir,
                    clean: w.clean,
                    container: &container.id,
                    now: t,
                };
                let unexpected = match learn::observe_write(b, &fact, &self.config) {
                    WriteOutcome::Learned => {
                        self.stats.learned += 1;
                        self.dirty.insert(id.clone());
                        debug!(baseline = %b.key, dir = %w.dir, "learned write directory");
                        return;
                    }
                    WriteOutcome::Unexpected { learned } => Unexpected::Write {
                        dir: w.dir.clone(),
                        learned,
                    },
                    _ => return,
                };
                let process = crate::process::file_actor(&w.event, w.ancestry.clone());
                (unexpected, process)
            }
        };
        let ck = (id.clone(), unexpected.kind(), unexpected.entry());
        let cooldown = self.config.cooldown().as_secs();
        let repeats = match self.cooldown.get_mut(&ck) {
            Some((last, folded)) if t.saturating_sub(*last) < cooldown => {
                *folded += 1;
                self.stats.folded += 1;
                return;
            }
            Some((last, folded)) => {
                *last = t;
                std::mem::take(folded)
            }
            None => {
                if self.cooldown.len() >= COOLDOWNS {
                    prune_cooldowns(&mut self.cooldown, t, cooldown);
                }
                self.cooldown.insert(ck, (t, 0));
                0
            }
        };
        let d = draft::draft(&unexpected, b, &container, Some(process), repeats);
        self.stats.alerts += 1;
        if alerts.send(d).await.is_err() {
            error!("alert stage stopped; a baseline alert could not be delivered");
        }
    }

    /// The baseline `id` names: an exact id, or the only one it is a prefix of.
    fn resolve(&self, id: &str) -> Result<String, String> {
        if self.baselines.contains_key(id) {
            return Ok(id.to_string());
        }
        let matches: Vec<&String> = self
            .baselines
            .iter()
            .filter(|(k, b)| !id.is_empty() && (k.starts_with(id) || b.key.to_string() == id))
            .map(|(k, _)| k)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(format!("no baseline {id} (see `layerguard baseline list`)")),
            _ => Err(format!(
                "{id} names {} baselines: give more of the id",
                matches.len()
            )),
        }
    }

    fn on_command(&mut self, c: Command) {
        let t = now();
        match c {
            Command::List(reply) => {
                let mut all: Vec<Baseline> = self.baselines.values().cloned().collect();
                all.sort_by(|a, b| a.key.cmp(&b.key));
                let _ = reply.send(all);
            }
            Command::Get(id, reply) => {
                let _ = reply.send(self.resolve(&id).map(|id| self.baselines[&id].clone()));
            }
            Command::Lock(id, reply) => {
                let r = self.resolve(&id).map(|id| {
                    let b = self.baselines.get_mut(&id).expect("resolved");
                    if b.state == State::Learning {
                        learn::lock(b, t);
                    }
                    info!(baseline = %b.key, id, "baseline locked: monitoring");
                    let b = b.clone();
                    self.save_now(&b);
                    b
                });
                let _ = reply.send(r);
            }
            Command::Relearn(id, reply) => {
                let r = self.resolve(&id).map(|id| {
                    let b = self.baselines.get_mut(&id).expect("resolved");
                    learn::relearn(b, t);
                    info!(baseline = %b.key, id, "baseline learning again");
                    let b = b.clone();
                    self.save_now(&b);
                    b
                });
                let _ = reply.send(r);
            }
            Command::Import(doc, reply) => {
                let id = doc.key.id();
                let max = self.config.max_entries;
                let b = self.baselines.entry(id.clone()).or_insert_with(|| {
                    let mut b = Baseline::new(doc.key.clone(), doc.name_source, t);
                    b.state = doc.state;
                    b.monitoring_since = doc.monitoring_since.map(|_| t);
                    b
                });
                b.merge(&doc, max);
                info!(baseline = %b.key, id, entries = b.entries(), "baseline imported");
                let b = b.clone();
                self.save_now(&b);
                let _ = reply.send(Ok(b));
            }
        }
    }
}

/// Room in the cooldowns: the ones that are over go; if all are running, the older half.
fn prune_cooldowns(
    cooldowns: &mut HashMap<(String, AlertKind, String), (u64, u64)>,
    t: u64,
    cooldown: u64,
) {
    cooldowns.retain(|_, (last, _)| t.saturating_sub(*last) < cooldown);
    if cooldowns.len() >= COOLDOWNS {
        let mut times: Vec<u64> = cooldowns.values().map(|(last, _)| *last).collect();
        times.sort_unstable();
        let median = times[times.len() / 2];
        cooldowns.retain(|_, (last, _)| *last > median);
    }
    warn!(
        kept = cooldowns.len(),
        "baseline cooldowns pruned: a workload keeps doing new unexpected things"
    );
}

/// The container runtime's shims and runc: the parent of a container's first process.
fn is_runtime(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    name.starts_with("containerd-shim") || name == "runc" || name == "crun"
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoImages;

    impl ImageFiles for NoImages {
        fn index_of<'a>(
            &'a self,
            _: &'a ContainerInfo,
        ) -> futures_util::future::BoxFuture<'a, Option<Arc<crate::image::LayerIndex>>> {
            Box::pin(async { None })
        }
    }

    fn container(id: &str) -> Arc<ContainerInfo> {
        let labels = [(key::LABEL_WORKLOAD.to_string(), "web".to_string())].into();
        let mut c = ContainerInfo::new("default", id, Some("web:1".into()), labels, None);
        c.manifest_digest = Some(format!("sha256:{}", "ab".repeat(32)));
        Arc::new(c)
    }

    #[tokio::test]
    async fn losses_while_learning_make_the_baseline_partial_and_it_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let config = BaselineConfig::default();
        let (mut stage, _input, feed, _handle, _commands) = BaselineStage::new(
            &config,
            dir.path(),
            Arc::new(NoImages),
            Arc::new(Metrics::new()),
        );
        let (alerts, _rx) = mpsc::channel(8);
        let w = WriteSeen {
            container: container("c1"),
            dir: "/tmp".into(),
            clean: true,
            event: Arc::new(crate::fixtures::file_write(1, "/snapshots/1/fs/tmp/x")),
            ancestry: Vec::new(),
        };
        stage.on_observed(Observed::Write(w), &alerts).await;
        stage.tick();
        let id = stage.baselines.keys().next().unwrap().clone();
        assert!(stage.baselines[&id].partial.is_empty());
        // The feed's queue overflowed (or the kernel ring did): what was learned may miss
        // something.
        feed.lost.fetch_add(3, Ordering::Relaxed);
        stage.tick();
        let b = &stage.baselines[&id];
        assert_eq!(
            b.partial,
            vec!["events were lost while it learned".to_string()]
        );
        if let Some(saving) = stage.saving.take() {
            saving.await.unwrap();
        }
        let stored = Store::open(dir.path()).unwrap().load_all();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].writes.len(), 1);
    }

    #[test]
    fn cooldowns_stay_bounded_and_keep_the_running_ones() {
        let mut c = HashMap::new();
        for i in 0..COOLDOWNS as u64 {
            c.insert(
                (
                    "b".to_string(),
                    AlertKind::BaselineUnexpectedWrite,
                    format!("/d{i}"),
                ),
                (i, 0),
            );
        }
        // All still running (cooldown longer than their ages): the older half goes.
        prune_cooldowns(&mut c, COOLDOWNS as u64, 10 * COOLDOWNS as u64);
        assert!(c.len() < COOLDOWNS / 2 + 1, "{}", c.len());
        assert!(c.values().all(|(last, _)| *last >= COOLDOWNS as u64 / 2));
        // Over: they go.
        prune_cooldowns(&mut c, 100 * COOLDOWNS as u64, 1);
        assert!(c.is_empty());
    }
}
