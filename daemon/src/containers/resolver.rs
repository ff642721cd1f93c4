//! The stage's decisions: which container an event belongs to, whether it must wait, and
//! when a waiting event gives up.
//!
//! Owns the [`ContainerTable`], the [`PendingQueue`] and the counters, and applies the
//! watcher's [`Update`]s to them. Pure apart from the injected [`ProcessTree`] (the pid
//! fall-back's `/proc` walk): time is an argument (CLOCK_MONOTONIC ns, the sensor's clock)
//! and output goes into a `Vec`, so the async driver in `stage.rs` stays a thin loop and
//! tests need neither tokio nor containerd. Lookups use each event's own timestamp, so an
//! event goes to the container that owned its namespace when it happened.

use super::pending::{PendingQueue, Waiting};
use super::table::{ContainerTable, Listed, TableStats};
use super::ContainerEvent;
use crate::clock::MonoNs;
use crate::config::ContainersConfig;
use crate::identity::{Attribution, ContainerInfo, ContainerKey, UnresolvedReason};
use crate::procfs;
use crate::sensor::{Observation, SensorEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// What the containerd watcher tells the stage.
#[derive(Debug)]
pub enum Update {
    /// A full listing after (re)connecting: the table is made to match it.
    Resync(Vec<Listed>),
    /// The listing above is in; containerd is reachable.
    Connected,
    /// containerd went away; the table is kept as last known.
    Disconnected,
    /// A container was created or updated.
    Container(ContainerInfo),
    Deleted(ContainerKey),
    /// The init process of a container's task exists (created or started).
    TaskStarted {
        key: ContainerKey,
        pid: u32,
        mnt_ns: Option<u32>,
        started_at: Option<SystemTime>,
    },
    /// The init process (pid 0: whichever it was) exited at `exited`.
    TaskExited {
        key: ContainerKey,
        pid: u32,
        exited: MonoNs,
    },
}

/// A process's ancestors, nearest first, starting with `pid` itself.
pub trait ProcessTree {
    fn ancestry(&self, pid: u32) -> Vec<u32>;
}

/// The real process tree, read from `/proc`.
pub struct ProcTree;

impl ProcessTree for ProcTree {
    fn ancestry(&self, pid: u32) -> Vec<u32> {
        procfs::ancestry(pid, procfs::MAX_ANCESTORS, procfs::ppid_of)
    }
}

/// How events left the stage, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub container: u64,
    pub host: u64,
    pub unresolved: u64,
    /// Events that had to wait in the pending queue (resolved or not in the end).
    pub waited: u64,
    /// Of those, released early because the queue was full.
    pub queue_full: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StageStats {
    #[serde(flatten)]
    pub table: TableStats,
    pub pending: usize,
    pub containerd_connected: bool,
    pub events: Counts,
}

pub struct Resolver<P = ProcTree> {
    host_mnt_ns: u32,
    table: ContainerTable,
    pending: PendingQueue<Observation>,
    connected: bool,
    tree: P,
    counts: Counts,
}

/// What an event is looked up by: its mount namespace, the pids it names, and when it
/// happened. `None` for loss reports, which belong to no process.
/// What an observation is looked up by: its mount namespace, its pid and the related one
/// (0: none), and when it happened.
fn lookup_keys(o: &Observation) -> (u32, [u32; 2], MonoNs) {
    let p = o.process();
    (p.mnt_ns, [p.tgid, o.related_pid().unwrap_or(0)], p.ktime_ns)
}

fn lookup(
    table: &ContainerTable,
    host_mnt_ns: u32,
    mnt_ns: u32,
    pids: &[u32],
    at: MonoNs,
) -> Option<Attribution> {
    if mnt_ns == host_mnt_ns {
        return Some(Attribution::Host);
    }
    table
        .by_mnt_ns(mnt_ns, at)
        .or_else(|| table.by_pids(pids, at))
        .map(|c| Attribution::Container(Arc::clone(c)))
}

impl<P: ProcessTree> Resolver<P> {
    pub fn new(config: &ContainersConfig, host_mnt_ns: u32, tree: P) -> Self {
        Self {
            host_mnt_ns,
            table: ContainerTable::new(config.exited_grace()),
            pending: PendingQueue::new(config.pending_capacity, config.pending_timeout()),
            connected: false,
            tree,
            counts: Counts::default(),
        }
    }

    fn emit(&mut self, event: Observation, a: Attribution, out: &mut Vec<ContainerEvent>) {
        match &a {
            Attribution::Container(_) => self.counts.container += 1,
            Attribution::Host => self.counts.host += 1,
            Attribution::Unresolved(_) => self.counts.unresolved += 1,
        }
        out.push(ContainerEvent::Observed(event, a));
    }

    fn give_up(
        &mut self,
        w: Waiting<Observation>,
        reason: impl Fn(u64) -> UnresolvedReason,
        now: MonoNs,
        out: &mut Vec<ContainerEvent>,
    ) {
        let reason = reason(w.waited_ms(now));
        self.emit(w.item, Attribution::Unresolved(reason), out);
    }

    /// Attributes `event` now if the table knows its container, else queues it. Returns
    /// true when it was queued while containerd is unreachable: the caller should make
    /// the watcher retry now rather than at the end of its backoff.
    pub fn on_event(
        &mut self,
        event: SensorEvent,
        now: MonoNs,
        out: &mut Vec<ContainerEvent>,
    ) -> bool {
        let event = match event {
            SensorEvent::Observed(o) => o,
            SensorEvent::Lost(lost) => {
                out.push(ContainerEvent::Lost(lost));
                return false;
            }
        };
        let (mnt_ns, pids, at) = lookup_keys(&event);
        if let Some(a) = lookup(&self.table, self.host_mnt_ns, mnt_ns, &pids, at) {
            self.emit(event, a, out);
            return false;
        }
        // Unknown for now. An exec's process is alive, so its ancestry can be read once,
        // here; later retries (after it may have exited) reuse what was read.
        let mut all = vec![pids[0]];
        if event.process_is_alive() {
            all.extend(self.tree.ancestry(pids[1]));
        } else if pids[1] != 0 {
            all.push(pids[1]);
        }
        if let Some(a) = lookup(&self.table, self.host_mnt_ns, mnt_ns, &all, at) {
            self.emit(event, a, out);
            return false;
        }
        self.counts.waited += 1;
        if let Some(evicted) = self.pending.push(event, mnt_ns, all, at, now) {
            self.counts.queue_full += 1;
            let reason = |waited_ms| UnresolvedReason::QueueFull { waited_ms };
            self.give_up(evicted, reason, now, out);
        }
        !self.connected
    }

    pub fn on_update(&mut self, update: Update, now: MonoNs, out: &mut Vec<ContainerEvent>) {
        let learned = match update {
            Update::Resync(listing) => self.table.resync(listing, now),
            Update::Connected => {
                self.connected = true;
                false
            }
            Update::Disconnected => {
                self.connected = false;
                false
            }
            Update::Container(info) => {
                self.table.upsert(info);
                false
            }
            Update::Deleted(key) => {
                self.table.deleted(&key, now);
                false
            }
            Update::TaskStarted {
                key,
                pid,
                mnt_ns,
                started_at,
            } => self.table.task_started(&key, pid, mnt_ns, started_at, now),
            Update::TaskExited { key, pid, exited } => {
                self.table.task_exited(&key, pid, exited, now);
                false
            }
        };
        if learned {
            self.retry(out);
        }
    }

    /// Releases every waiting event the table can now attribute, in arrival order.
    fn retry(&mut self, out: &mut Vec<ContainerEvent>) {
        let (table, host) = (&self.table, self.host_mnt_ns);
        let resolved = self
            .pending
            .take_resolved(|mnt_ns, pids, at| lookup(table, host, mnt_ns, pids, at));
        for (w, a) in resolved {
            self.emit(w.item, a, out);
        }
    }

    /// Lets waiting events whose time is up go on, unresolved.
    pub fn on_deadline(&mut self, now: MonoNs, out: &mut Vec<ContainerEvent>) {
        let connected = self.connected;
        for w in self.pending.take_expired(now) {
            let reason = |waited_ms| {
                if connected {
                    UnresolvedReason::NotFound { waited_ms }
                } else {
                    UnresolvedReason::ContainerdUnavailable { waited_ms }
                }
            };
            self.give_up(w, reason, now, out);
        }
    }

    /// Forgets containers and mappings whose grace period is over.
    pub fn sweep(&mut self, now: MonoNs) {
        self.table.expire(now);
    }

    /// At shutdown: a last retry, then whatever still waits goes on unresolved.
    pub fn finish(&mut self, now: MonoNs, out: &mut Vec<ContainerEvent>) {
        self.retry(out);
        for w in self.pending.take_all() {
            let reason = |waited_ms| UnresolvedReason::ShuttingDown { waited_ms };
            self.give_up(w, reason, now, out);
        }
    }

    pub fn next_deadline(&self) -> Option<MonoNs> {
        self.pending.next_deadline()
    }

    pub fn table(&self) -> &ContainerTable {
        &self.table
    }

    pub fn stats(&self) -> StageStats {
        StageStats {
            table: self.table.stats(),
            pending: self.pending.len(),
            containerd_connected: self.connected,
            events: self.counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::table::ListedTask;
    use crate::fixtures;
    use crate::sensor::LossCounts;
    use std::collections::HashMap;

    const HOST_NS: u32 = 1;
    const MS: MonoNs = 1_000_000;
    const TIMEOUT_MS: u64 = 1000;
    const T0: MonoNs = 7_000 * MS;

    /// A fake process tree: child -> parent.
    #[derive(Default)]
    struct Tree(HashMap<u32, u32>);

    impl ProcessTree for Tree {
        fn ancestry(&self, pid: u32) -> Vec<u32> {
            procfs::ancestry(pid, 16, |p| self.0.get(&p).copied())
        }
    }

    fn resolver(capacity: usize, tree: Tree) -> Resolver<Tree> {
        let config = ContainersConfig {
            pending_timeout_ms: TIMEOUT_MS,
            pending_capacity: capacity,
            ..ContainersConfig::default()
        };
        let mut r = Resolver::new(&config, HOST_NS, tree);
        r.on_update(Update::Connected, T0, &mut Vec::new());
        r
    }

    fn exec_at(tgid: u32, ppid: u32, mnt_ns: u32, at: MonoNs) -> SensorEvent {
        fixtures::exec_at(tgid, ppid, mnt_ns, at)
    }

    fn exec(tgid: u32, ppid: u32, mnt_ns: u32) -> SensorEvent {
        exec_at(tgid, ppid, mnt_ns, T0)
    }

    fn exit(tgid: u32, mnt_ns: u32) -> SensorEvent {
        fixtures::exit_at(tgid, mnt_ns, T0)
    }

    fn key(id: &str) -> ContainerKey {
        ContainerKey::new("default", id)
    }

    fn started(id: &str, pid: u32, mnt_ns: Option<u32>) -> Update {
        Update::TaskStarted {
            key: key(id),
            pid,
            mnt_ns,
            started_at: None,
        }
    }

    /// (container id, host or reason; what) of each output event.
    fn summary(out: &[ContainerEvent]) -> Vec<(String, String)> {
        out.iter()
            .map(|e| {
                let (a, what) = match e {
                    ContainerEvent::Observed(o, a) => match o.as_exec() {
                        Some(x) => (a, x.filename.clone()),
                        None => (a, o.kind().name().into()),
                    },
                    ContainerEvent::Lost(_) => return ("lost".into(), String::new()),
                };
                let who = match a {
                    Attribution::Container(c) => c.id.clone(),
                    Attribution::Host => "host".into(),
                    Attribution::Unresolved(r) => r.as_str().into(),
                };
                (who, what)
            })
            .collect()
    }

    fn pair(who: &str, what: &str) -> (String, String) {
        (who.to_string(), what.to_string())
    }

    #[test]
    fn known_namespace_and_host_resolve_at_once() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        r.on_update(started("a", 100, Some(50)), T0, &mut out);
        r.on_event(exec(101, 100, 50), T0, &mut out);
        r.on_event(exec(7, 1, HOST_NS), T0, &mut out);
        r.on_event(SensorEvent::Lost(LossCounts::default()), T0, &mut out);
        assert_eq!(
            summary(&out),
            vec![
                pair("a", "/bin/101"),
                pair("host", "/bin/7"),
                pair("lost", "")
            ]
        );
        assert_eq!(r.stats().events.container, 1);
        assert_eq!(r.stats().pending, 0);
    }

    #[test]
    fn early_exec_waits_and_resolves_when_the_task_appears() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        // The entrypoint execs before containerd's task event reaches us.
        assert!(!r.on_event(exec(200, 190, 60), T0, &mut out));
        r.on_event(exit(200, 60), T0, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().pending, 2);
        r.on_update(started("b", 200, Some(60)), T0 + 5 * MS, &mut out);
        assert_eq!(
            summary(&out),
            vec![pair("b", "/bin/200"), pair("b", "exit")]
        );
        assert_eq!(r.stats().pending, 0);
        assert_eq!(r.stats().events.waited, 2);
    }

    #[test]
    fn first_exec_of_a_new_container_is_not_given_to_the_last_owner_of_its_namespace() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        r.on_update(started("old", 10, Some(60)), T0, &mut out);
        let exited = Update::TaskExited {
            key: key("old"),
            pid: 10,
            exited: T0 + 100 * MS,
        };
        r.on_update(exited, T0 + 110 * MS, &mut out);
        // A late event of the old container, then the new one's first exec in the reused
        // namespace, before containerd reports the new task.
        r.on_event(exec_at(11, 10, 60, T0 + 90 * MS), T0 + 115 * MS, &mut out);
        r.on_event(exec_at(20, 19, 60, T0 + 120 * MS), T0 + 121 * MS, &mut out);
        assert_eq!(summary(&out), vec![pair("old", "/bin/11")]);
        r.on_update(started("new", 20, Some(60)), T0 + 125 * MS, &mut out);
        assert_eq!(summary(&out)[1], pair("new", "/bin/20"));
    }

    #[test]
    fn pid_fallback_uses_the_ancestry_read_at_arrival() {
        // 302 -> 301 -> 300 (the task's init), all in a namespace never reported.
        let tree = Tree([(301, 300), (300, 290)].into_iter().collect());
        let mut r = resolver(8, tree);
        let mut out = Vec::new();
        r.on_event(exec(302, 301, 70), T0, &mut out);
        // The mount namespace could not be read (init already gone): pid only.
        r.on_update(started("c", 300, None), T0, &mut out);
        assert_eq!(summary(&out), vec![pair("c", "/bin/302")]);
        // A known pid resolves at once, too.
        r.on_event(exec(303, 300, 71), T0, &mut out);
        assert_eq!(summary(&out)[1], pair("c", "/bin/303"));
    }

    #[test]
    fn timeout_marks_unresolved_with_the_reason() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        r.on_event(exec(400, 1, 80), T0, &mut out);
        r.on_deadline(T0 + TIMEOUT_MS * MS - 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.next_deadline(), Some(T0 + TIMEOUT_MS * MS));
        r.on_deadline(T0 + TIMEOUT_MS * MS, &mut out);
        assert_eq!(
            summary(&out),
            vec![pair(
                "no container known for this mount namespace",
                "/bin/400"
            )]
        );
        let ContainerEvent::Observed(_, Attribution::Unresolved(reason)) = &out[0] else {
            panic!("not unresolved")
        };
        assert_eq!(reason.waited_ms(), TIMEOUT_MS);
        assert_eq!(r.stats().events.unresolved, 1);
    }

    #[test]
    fn while_containerd_is_down_the_reason_says_so_and_the_watcher_is_poked() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        r.on_update(started("a", 100, Some(50)), T0, &mut out);
        r.on_update(Update::Disconnected, T0, &mut out);
        // The last known table still answers.
        assert!(!r.on_event(exec(101, 100, 50), T0, &mut out));
        assert!(
            r.on_event(exec(500, 1, 90), T0, &mut out),
            "poke the watcher"
        );
        r.on_deadline(T0 + TIMEOUT_MS * MS, &mut out);
        assert_eq!(
            summary(&out),
            vec![
                pair("a", "/bin/101"),
                pair("containerd unavailable", "/bin/500")
            ]
        );
    }

    #[test]
    fn a_full_queue_releases_the_oldest_unresolved() {
        let mut r = resolver(2, Tree::default());
        let mut out = Vec::new();
        for pid in [1001, 1002, 1003] {
            r.on_event(exec(pid, 1, 99), T0, &mut out);
        }
        assert_eq!(summary(&out), vec![pair("pending queue full", "/bin/1001")]);
        assert_eq!(r.stats().pending, 2);
        assert_eq!(r.stats().events.queue_full, 1);
        r.finish(T0, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(summary(&out)[2].0, "daemon shutting down");
        assert_eq!(r.stats().events.unresolved, 3);
    }

    #[test]
    fn resync_resolves_waiting_events_and_forgets_vanished_containers() {
        let mut r = resolver(8, Tree::default());
        let mut out = Vec::new();
        r.on_update(started("old", 10, Some(11)), T0, &mut out);
        r.on_event(exec(600, 1, 12), T0, &mut out);
        let listing = vec![Listed {
            info: ContainerInfo::new("default", "new", None, Default::default(), None),
            task: Some(ListedTask {
                pid: 600,
                mnt_ns: Some(12),
                started_at: None,
            }),
        }];
        r.on_update(Update::Resync(listing), T0 + MS, &mut out);
        assert_eq!(summary(&out), vec![pair("new", "/bin/600")]);
        r.sweep(T0 + 3_600_000 * MS);
        assert!(r.table().get(&key("old")).is_none());
        assert_eq!(r.table().len(), 1);
    }
}
