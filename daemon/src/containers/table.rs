//! The live table of containers on this node, and the indexes that map a sensor event's
//! mount namespace or pid, at the time of the event, to one of them.
//!
//! Owns the containers' lifecycle as containerd reports it (created, task started, task
//! exited, deleted, resynced) and the grace period that keeps an exited container findable
//! for late events before it leaves memory. Pure: times are arguments (CLOCK_MONOTONIC
//! nanoseconds, see [`clock`](crate::clock)), so tests drive it with any clock. It must not
//! talk to containerd or read `/proc`.
//!
//! Why lookups take the event's time: the kernel hands a freed namespace inode number (and,
//! eventually, a pid) to the next one created, measured here as "every container of a
//! start/remove loop got the same mount namespace number". So one number can name an exited
//! container (for its late events) and a new one (for its first events, which may arrive
//! before containerd reports it). Each index entry keeps its owners with their exit times,
//! and an event belongs to the owner that was alive when it happened.

use crate::clock::MonoNs;
use crate::identity::{ContainerInfo, ContainerKey};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The init process of a container's task, as far as the table needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    /// Inode of `/proc/<pid>/ns/mnt`; `None` when the process was gone before it was read.
    pub mnt_ns: Option<u32>,
    pub started_at: Option<SystemTime>,
    pub exited_at: Option<MonoNs>,
}

/// A container and its task, as a full listing from containerd reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub info: ContainerInfo,
    /// The live task, if any (a created, running or paused one; not a stopped one).
    pub task: Option<ListedTask>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedTask {
    pub pid: u32,
    pub mnt_ns: Option<u32>,
    pub started_at: Option<SystemTime>,
}

/// A container as readers outside the stage see it (the API's container listing).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveContainer {
    pub info: Arc<ContainerInfo>,
    pub task: Option<Task>,
}

#[derive(Debug)]
struct Entry {
    info: Arc<ContainerInfo>,
    task: Option<Task>,
    deleted_at: Option<MonoNs>,
}

/// One container that owns (or owned) a mount namespace or pid number.
#[derive(Debug)]
struct Owner {
    key: ContainerKey,
    /// When its task exited: events after this are not its.
    exited: Option<MonoNs>,
    /// When this entry is forgotten (grace period after we learned of the exit).
    expires: Option<MonoNs>,
}

/// Number -> owners, oldest first. Almost always one owner; two while a reused number's
/// previous owner is in its grace period.
type Index = HashMap<u32, Vec<Owner>>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// Containers in the table, including deleted ones still in their grace period.
    pub containers: usize,
    pub running_tasks: usize,
    /// Owners in the mount namespace and pid indexes.
    pub mnt_ns_index: usize,
    pub pid_index: usize,
}

#[derive(Debug)]
pub struct ContainerTable {
    grace: MonoNs,
    containers: HashMap<ContainerKey, Entry>,
    by_mnt: Index,
    by_pid: Index,
    /// Bumped by every change a reader of [`ContainerTable::live`] could see.
    revision: u64,
}

impl ContainerTable {
    /// `grace`: how long an exited task's namespace and pid, and a deleted container, stay
    /// findable for events that arrive late.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace: crate::clock::nanos(grace),
            containers: HashMap::new(),
            by_mnt: Index::new(),
            by_pid: Index::new(),
            revision: 0,
        }
    }

    /// A container was created or changed (labels, image). A container re-created under
    /// the id of a deleted one starts over.
    pub fn upsert(&mut self, info: ContainerInfo) {
        self.revision += 1;
        let key = info.key();
        match self.containers.get_mut(&key) {
            Some(entry) => {
                if entry.deleted_at.take().is_some() {
                    entry.task = None;
                }
                entry.info = Arc::new(info);
            }
            None => {
                self.containers.insert(
                    key,
                    Entry {
                        info: Arc::new(info),
                        task: None,
                        deleted_at: None,
                    },
                );
            }
        }
    }

    /// A container's task started (or was created: its init process already sits in the
    /// container's namespaces). Returns true when the table learned a new mapping, i.e.
    /// waiting events may now resolve.
    pub fn task_started(
        &mut self,
        key: &ContainerKey,
        pid: u32,
        mnt_ns: Option<u32>,
        started_at: Option<SystemTime>,
        now: MonoNs,
    ) -> bool {
        if pid == 0 {
            return false;
        }
        self.revision += 1;
        let entry = self.containers.entry(key.clone()).or_insert_with(|| Entry {
            info: Arc::new(ContainerInfo::bare(key)),
            task: None,
            deleted_at: None,
        });
        let previous = entry.task.filter(|t| t.exited_at.is_none());
        let same = previous.filter(|t| t.pid == pid);
        let mnt_ns = mnt_ns.or(same.and_then(|t| t.mnt_ns));
        entry.task = Some(Task {
            pid,
            mnt_ns,
            started_at: started_at.or(same.and_then(|t| t.started_at)),
            exited_at: None,
        });
        // A new task of the same container whose old one's exit we missed.
        if let Some(old) = previous.filter(|t| t.pid != pid) {
            self.index_exited(key, old, now, now);
        }
        let mut learned = point(&mut self.by_pid, pid, key);
        if let Some(ns) = mnt_ns {
            learned |= point(&mut self.by_mnt, ns, key);
        }
        learned
    }

    /// A container's init process exited at `exited`; we learned it at `now`. `pid` 0
    /// means "whatever task it had".
    pub fn task_exited(&mut self, key: &ContainerKey, pid: u32, exited: MonoNs, now: MonoNs) {
        self.revision += 1;
        let Some(task) = self.containers.get_mut(key).and_then(|e| e.task.as_mut()) else {
            return;
        };
        if (pid != 0 && task.pid != pid) || task.exited_at.is_some() {
            return;
        }
        task.exited_at = Some(exited);
        let task = *task;
        self.index_exited(key, task, exited, now);
    }

    fn index_exited(&mut self, key: &ContainerKey, task: Task, exited: MonoNs, now: MonoNs) {
        let expires = now.saturating_add(self.grace);
        mark_exited(&mut self.by_pid, task.pid, key, exited, expires);
        if let Some(ns) = task.mnt_ns {
            mark_exited(&mut self.by_mnt, ns, key, exited, expires);
        }
    }

    /// A container was deleted; it leaves the table after the grace period.
    pub fn deleted(&mut self, key: &ContainerKey, now: MonoNs) {
        self.task_exited(key, 0, now, now);
        if let Some(entry) = self.containers.get_mut(key) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// Makes the table match a full listing taken after (re)connecting: listed containers
    /// are upserted, tasks no longer listed are exited, containers no longer listed are
    /// deleted (as of `now`: the real time was missed). Returns true when a new mapping
    /// was learned.
    pub fn resync(&mut self, listing: Vec<Listed>, now: MonoNs) -> bool {
        let mut seen = HashSet::with_capacity(listing.len());
        let mut learned = false;
        for Listed { info, task } in listing {
            let key = info.key();
            self.upsert(info);
            match task {
                Some(t) => learned |= self.task_started(&key, t.pid, t.mnt_ns, t.started_at, now),
                None => self.task_exited(&key, 0, now, now),
            }
            seen.insert(key);
        }
        let vanished: Vec<ContainerKey> = self
            .containers
            .iter()
            .filter(|(k, e)| e.deleted_at.is_none() && !seen.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in vanished {
            self.deleted(&key, now);
        }
        learned
    }

    /// The container that owned mount namespace `mnt_ns` at time `at`.
    pub fn by_mnt_ns(&self, mnt_ns: u32, at: MonoNs) -> Option<&Arc<ContainerInfo>> {
        self.resolve(owner_at(&self.by_mnt, mnt_ns, at)?)
    }

    /// The container of the first pid in `pids` that was a task's init at time `at`.
    pub fn by_pids(&self, pids: &[u32], at: MonoNs) -> Option<&Arc<ContainerInfo>> {
        pids.iter()
            .filter(|&&p| p != 0)
            .find_map(|&p| self.resolve(owner_at(&self.by_pid, p, at)?))
    }

    fn resolve(&self, key: &ContainerKey) -> Option<&Arc<ContainerInfo>> {
        self.containers.get(key).map(|e| &e.info)
    }

    #[cfg(test)]
    pub fn get(&self, key: &ContainerKey) -> Option<(&Arc<ContainerInfo>, Option<Task>)> {
        self.containers.get(key).map(|e| (&e.info, e.task))
    }

    /// Drops what outlived its grace period; returns how many containers left.
    pub fn expire(&mut self, now: MonoNs) -> usize {
        let grace = self.grace;
        let before = self.containers.len();
        self.containers
            .retain(|_, e| e.deleted_at.is_none_or(|d| d.saturating_add(grace) > now));
        let removed = before - self.containers.len();
        if removed > 0 {
            self.revision += 1;
        }
        let containers = &self.containers;
        // Owners normally expire with their task; the containment check catches a mapping
        // of a container deleted without its task exit being seen.
        let keep = |o: &Owner| o.expires.is_none_or(|t| t > now) && containers.contains_key(&o.key);
        for index in [&mut self.by_mnt, &mut self.by_pid] {
            index.retain(|_, owners| {
                owners.retain(keep);
                !owners.is_empty()
            });
        }
        removed
    }

    pub fn stats(&self) -> TableStats {
        let owners = |i: &Index| i.values().map(Vec::len).sum();
        TableStats {
            containers: self.containers.len(),
            running_tasks: self
                .containers
                .values()
                .filter(|e| e.task.is_some_and(|t| t.exited_at.is_none()))
                .count(),
            mnt_ns_index: owners(&self.by_mnt),
            pid_index: owners(&self.by_pid),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// Changes when what [`ContainerTable::live`] returns may have changed.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The containers containerd still has (not the deleted ones kept for late events),
    /// with their task.
    pub fn live(&self) -> Vec<LiveContainer> {
        self.containers
            .values()
            .filter(|e| e.deleted_at.is_none())
            .map(|e| LiveContainer {
                info: Arc::clone(&e.info),
                task: e.task,
            })
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

/// Adds `key` as a live owner of `at`; true if that is news.
fn point(index: &mut Index, at: u32, key: &ContainerKey) -> bool {
    let owners = index.entry(at).or_default();
    if owners.iter().any(|o| o.key == *key && o.exited.is_none()) {
        return false;
    }
    owners.push(Owner {
        key: key.clone(),
        exited: None,
        expires: None,
    });
    true
}

/// Records that `key`'s ownership of `at` ended at `exited`, forgotten at `expires`.
fn mark_exited(index: &mut Index, at: u32, key: &ContainerKey, exited: MonoNs, expires: MonoNs) {
    for o in index.get_mut(&at).into_iter().flatten() {
        if o.key == *key && o.exited.is_none() {
            o.exited = Some(exited);
            o.expires = Some(expires);
        }
    }
}

/// The owner of `at` at time `t`: of those alive then (not exited before `t`), the one
/// that exited first. Owners are [C1 exited T1, C2 exited T2, C3 alive]: an event before
/// T1 is C1's, between T1 and T2 C2's, after T2 C3's.
fn owner_at(index: &Index, at: u32, t: MonoNs) -> Option<&ContainerKey> {
    index
        .get(&at)?
        .iter()
        .filter(|o| o.exited.is_none_or(|x| t <= x))
        .min_by_key(|o| o.exited.unwrap_or(MonoNs::MAX))
        .map(|o| &o.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: MonoNs = 1_000_000;
    const GRACE_MS: MonoNs = 10_000;
    const GRACE: Duration = Duration::from_millis(GRACE_MS);
    /// Somewhere after boot; events at T0 + x.
    const T0: MonoNs = 1_000_000 * MS;

    fn info(ns: &str, id: &str) -> ContainerInfo {
        ContainerInfo::new(ns, id, Some(format!("img-{id}")), Default::default(), None)
    }

    fn key(ns: &str, id: &str) -> ContainerKey {
        ContainerKey::new(ns, id)
    }

    fn at(ms: MonoNs) -> MonoNs {
        T0 + ms * MS
    }

    #[test]
    fn lookup_by_mnt_ns_and_pid_after_task_start() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "a"));
        assert!(t.by_mnt_ns(100, at(0)).is_none());
        assert!(t.task_started(&key("default", "a"), 4000, Some(100), None, at(0)));
        assert_eq!(t.by_mnt_ns(100, at(1)).unwrap().id, "a");
        // Events from before containerd told us (the race the pending queue is for).
        assert_eq!(t.by_mnt_ns(100, at(0) - 5 * MS).unwrap().id, "a");
        assert_eq!(t.by_pids(&[1, 4000], at(1)).unwrap().id, "a");
        assert!(t.by_pids(&[0, 1], at(1)).is_none());
        // The same start reported twice (create, then start) is not news.
        assert!(!t.task_started(&key("default", "a"), 4000, Some(100), None, at(2)));
        assert_eq!(t.stats().running_tasks, 1);
        assert_eq!(t.stats().mnt_ns_index, 1);
    }

    #[test]
    fn same_id_in_two_namespaces_are_two_containers() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "x"));
        t.upsert(info("k8s.io", "x"));
        t.task_started(&key("default", "x"), 10, Some(1), None, at(0));
        t.task_started(&key("k8s.io", "x"), 20, Some(2), None, at(0));
        assert_eq!(t.by_mnt_ns(1, at(1)).unwrap().namespace, "default");
        assert_eq!(t.by_mnt_ns(2, at(1)).unwrap().namespace, "k8s.io");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn update_replaces_identity_and_keeps_task() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "a"));
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        let mut changed = info("default", "a");
        changed.image = Some("other".into());
        t.upsert(changed);
        assert_eq!(
            t.by_mnt_ns(1, at(1)).unwrap().image.as_deref(),
            Some("other")
        );
    }

    #[test]
    fn exited_task_is_found_for_its_own_late_events_during_the_grace_period() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "a"));
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        // Exited at 100 ms, learned at 150 ms.
        t.task_exited(&key("default", "a"), 10, at(100), at(150));
        t.expire(at(5000));
        assert!(
            t.by_mnt_ns(1, at(90)).is_some(),
            "a late event from before the exit"
        );
        assert!(
            t.by_mnt_ns(1, at(120)).is_none(),
            "nothing runs in a dead namespace"
        );
        t.expire(at(150 + GRACE_MS));
        assert!(t.by_mnt_ns(1, at(90)).is_none());
        assert!(t.by_pids(&[10], at(90)).is_none());
        // The container itself still exists in containerd (stopped, not deleted).
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().running_tasks, 0);
        assert_eq!(t.stats().mnt_ns_index, 0);
    }

    #[test]
    fn reused_namespace_number_splits_events_by_time() {
        let mut t = ContainerTable::new(GRACE);
        t.task_started(&key("default", "old"), 10, Some(7), None, at(0));
        t.task_exited(&key("default", "old"), 10, at(100), at(110));
        // The kernel gives the freed number to the next container at once; its first exec
        // arrives before containerd reports it, and must not go to the old one.
        assert!(t.by_mnt_ns(7, at(105)).is_none());
        assert!(t.task_started(&key("default", "new"), 20, Some(7), None, at(120)));
        assert_eq!(t.by_mnt_ns(7, at(105)).unwrap().id, "new");
        assert_eq!(
            t.by_mnt_ns(7, at(99)).unwrap().id,
            "old",
            "late event of the old one"
        );
        assert_eq!(t.stats().mnt_ns_index, 2);
        t.expire(at(110 + GRACE_MS));
        assert_eq!(t.by_mnt_ns(7, at(99)).unwrap().id, "new");
        assert_eq!(t.stats().mnt_ns_index, 1);
    }

    #[test]
    fn deleted_container_leaves_after_grace() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "a"));
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        t.deleted(&key("default", "a"), at(0));
        assert_eq!(t.expire(at(GRACE_MS - 1)), 0);
        assert!(t.by_mnt_ns(1, at(0)).is_some());
        assert_eq!(t.expire(at(GRACE_MS)), 1);
        assert!(t.is_empty());
        assert_eq!(t.stats(), TableStats::default());
    }

    #[test]
    fn exit_of_another_pid_is_ignored() {
        let mut t = ContainerTable::new(GRACE);
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        t.task_exited(&key("default", "a"), 11, at(1), at(1));
        t.expire(at(GRACE_MS * 2));
        assert!(t.by_mnt_ns(1, at(GRACE_MS * 2)).is_some());
    }

    #[test]
    fn task_without_container_gets_a_bare_entry() {
        let mut t = ContainerTable::new(GRACE);
        t.task_started(&key("moby", "b"), 10, Some(1), None, at(0));
        let c = t.by_mnt_ns(1, at(1)).unwrap();
        assert_eq!((c.namespace.as_str(), c.id.as_str()), ("moby", "b"));
        assert!(c.image.is_none());
        // The create arriving later fills the identity in.
        t.upsert(info("moby", "b"));
        assert_eq!(
            t.by_mnt_ns(1, at(1)).unwrap().image.as_deref(),
            Some("img-b")
        );
    }

    #[test]
    fn restarted_task_moves_the_mappings() {
        let mut t = ContainerTable::new(GRACE);
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        t.task_exited(&key("default", "a"), 10, at(5), at(5));
        t.task_started(&key("default", "a"), 20, Some(2), None, at(10));
        assert_eq!(t.by_mnt_ns(2, at(11)).unwrap().id, "a");
        t.expire(at(5 + GRACE_MS));
        assert!(t.by_mnt_ns(1, at(1)).is_none() && t.by_pids(&[10], at(1)).is_none());
        assert!(t.by_mnt_ns(2, at(11)).is_some() && t.by_pids(&[20], at(11)).is_some());
    }

    #[test]
    fn missed_exit_is_closed_by_the_next_task() {
        let mut t = ContainerTable::new(GRACE);
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        t.task_started(&key("default", "a"), 20, Some(2), None, at(50));
        assert!(t.by_mnt_ns(1, at(60)).is_none());
        t.expire(at(50 + GRACE_MS));
        assert_eq!(t.stats().mnt_ns_index, 1);
        assert_eq!(t.stats().pid_index, 1);
    }

    #[test]
    fn recreated_container_id_is_revived() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "a"));
        t.task_started(&key("default", "a"), 10, Some(1), None, at(0));
        t.deleted(&key("default", "a"), at(1));
        t.upsert(info("default", "a"));
        t.task_started(&key("default", "a"), 20, Some(2), None, at(2));
        t.expire(at(GRACE_MS * 2));
        assert_eq!(t.len(), 1, "the new container stays");
        assert!(t.by_mnt_ns(2, at(GRACE_MS * 2)).is_some());
        assert!(
            t.by_mnt_ns(1, at(0)).is_none(),
            "the old task's namespace aged out"
        );
    }

    #[test]
    fn resync_adds_listed_and_removes_vanished() {
        let mut t = ContainerTable::new(GRACE);
        t.upsert(info("default", "gone"));
        t.task_started(&key("default", "gone"), 10, Some(1), None, at(0));
        t.upsert(info("default", "stopped"));
        t.task_started(&key("default", "stopped"), 11, Some(2), None, at(0));
        let listing = vec![
            Listed {
                info: info("default", "stopped"),
                task: None,
            },
            Listed {
                info: info("k8s.io", "new"),
                task: Some(ListedTask {
                    pid: 30,
                    mnt_ns: Some(3),
                    started_at: None,
                }),
            },
        ];
        assert!(t.resync(listing, at(100)));
        assert_eq!(t.by_mnt_ns(3, at(100)).unwrap().id, "new");
        // What we missed meanwhile still resolves for events from before the resync.
        assert_eq!(t.by_mnt_ns(1, at(50)).unwrap().id, "gone");
        t.expire(at(100 + GRACE_MS));
        assert!(t.get(&key("default", "gone")).is_none());
        assert!(t.by_mnt_ns(1, at(50)).is_none() && t.by_mnt_ns(2, at(50)).is_none());
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().running_tasks, 1);
    }

    #[test]
    fn many_containers_created_and_deleted_leave_nothing_behind() {
        let mut t = ContainerTable::new(GRACE);
        for i in 0..50u32 {
            let k = key("default", &format!("c{i}"));
            let start = at(u64::from(i) * 10);
            t.upsert(info("default", &k.id));
            // Every one gets the same namespace number, as the kernel hands them out.
            t.task_started(&k, 1000 + i, Some(7), None, start);
            t.task_exited(&k, 1000 + i, start + 5 * MS, start + 6 * MS);
            t.deleted(&k, start + 7 * MS);
        }
        assert_eq!(t.len(), 50);
        assert_eq!(t.by_mnt_ns(7, at(123)).unwrap().id, "c12");
        t.expire(at(500 + GRACE_MS));
        assert_eq!(t.stats(), TableStats::default());
    }
}
