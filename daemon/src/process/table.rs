//! The process tracker: a bounded pid table kept from the sensor's fork, exec and exit
//! events, with `/proc` as the fall-back for what the kernel filters (host processes such
//! as the shim) and for what ran before the daemon started.
//!
//! Owns the table. Exited processes stay until pushed out by newer ones, so an exec judged
//! after its parent exited still gets its ancestry.

use crate::alert::Ancestor;
use crate::sensor::FileIdentity;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Hashes the table's u32 keys (pids, mount namespace inodes) with one multiplication.
/// Three table operations per exec made SipHash a visible cost; the keys are assigned
/// by the kernel, not chosen by whoever runs in a container, so flooding is not a concern.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: the product's low bits follow the key's low bits (which is
        // where pids differ), its high bits depend on all of them.
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

pub const MAX_ANCESTORS: usize = 8;
/// Live pids remembered per mount namespace, to reach a container's root filesystem
/// after the process that exec'd has gone.
pub const ROOTS_PER_NAMESPACE: usize = 8;

/// A process's executable path, shared: every fork copies its parent's and every exec's
/// ancestry holds up to eight of them, so a copy must not allocate.
pub type ExePath = Arc<str>;

#[derive(Clone, Debug, Default)]
struct Proc {
    ppid: u32,
    exe: Option<ExePath>,
    /// The real inode of the executable (from the exec event; unknown when seeded).
    exe_file: Option<FileIdentity>,
}

/// One step of an ancestry as the table knows it; it becomes an alert's [`Ancestor`] only
/// when an alert is raised (most execs raise none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forebear {
    pub pid: u32,
    pub exe: Option<ExePath>,
}

impl From<Forebear> for Ancestor {
    fn from(f: Forebear) -> Self {
        Ancestor {
            pid: f.pid,
            exe: f.exe.map(|e| e.to_string()),
        }
    }
}

pub struct ProcessTable {
    capacity: usize,
    procs: IdMap<Proc>,
    order: VecDeque<u32>,
    /// mount namespace -> recently seen live pids in it, newest last.
    by_namespace: IdMap<VecDeque<u32>>,
}

impl ProcessTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(16),
            procs: IdMap::default(),
            order: VecDeque::new(),
            by_namespace: IdMap::default(),
        }
    }

    /// Remembers that `pid` lives in mount namespace `mnt_ns`.
    pub fn seen_in(&mut self, mnt_ns: u32, pid: u32) {
        if !self.by_namespace.contains_key(&mnt_ns) && self.by_namespace.len() >= self.capacity {
            // Far more namespaces than containers: drop them all rather than grow.
            self.by_namespace.clear();
        }
        let pids = self.by_namespace.entry(mnt_ns).or_default();
        pids.retain(|&p| p != pid);
        pids.push_back(pid);
        while pids.len() > ROOTS_PER_NAMESPACE {
            pids.pop_front();
        }
    }

    pub fn on_exit(&mut self, mnt_ns: u32, pid: u32) {
        if let Some(pids) = self.by_namespace.get_mut(&mnt_ns) {
            pids.retain(|&p| p != pid);
            if pids.is_empty() {
                self.by_namespace.remove(&mnt_ns);
            }
        }
    }

    /// Pids believed alive in `mnt_ns`, newest first.
    pub fn pids_in(&self, mnt_ns: u32) -> Vec<u32> {
        self.by_namespace
            .get(&mnt_ns)
            .map(|p| p.iter().rev().copied().collect())
            .unwrap_or_default()
    }

    fn entry(&mut self, pid: u32) -> &mut Proc {
        if !self.procs.contains_key(&pid) {
            self.order.push_back(pid);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.procs.remove(&old);
                }
            }
        }
        self.procs.entry(pid).or_default()
    }

    pub fn on_fork(&mut self, child: u32, parent: u32) {
        let (inherited, file) = self
            .procs
            .get(&parent)
            .map_or((None, None), |p| (p.exe.clone(), p.exe_file));
        let e = self.entry(child);
        e.ppid = parent;
        e.exe = inherited;
        e.exe_file = file;
    }

    pub fn on_exec(&mut self, pid: u32, ppid: u32, exe: ExePath) {
        let e = self.entry(pid);
        e.ppid = ppid;
        e.exe = Some(exe);
        e.exe_file = None;
    }

    /// The real inode `pid` exec'd (after [`on_exec`](Self::on_exec)).
    pub fn set_exe_file(&mut self, pid: u32, file: FileIdentity) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exe_file = Some(file);
        }
    }

    /// The real inode of `pid`'s executable, if an exec event told it.
    pub fn exe_file(&self, pid: u32) -> Option<FileIdentity> {
        self.procs.get(&pid).and_then(|p| p.exe_file)
    }

    /// Every live process outside the host mount namespace, from `/proc`: containers that
    /// ran before the daemon started then have roots to open their files through and
    /// ancestry, as new ones do. Returns how many were added.
    pub fn seed_from_proc(&mut self, host_mnt_ns: u32) -> usize {
        let mut added = 0;
        for pid in crate::procfs::pids() {
            let Some(ns) = crate::procfs::mnt_ns_of(pid).ok() else {
                continue;
            };
            if ns == host_mnt_ns {
                continue;
            }
            let Some((ppid, exe)) = from_proc(pid) else {
                continue;
            };
            let e = self.entry(pid);
            e.ppid = ppid;
            e.exe = exe;
            self.seen_in(ns, pid);
            added += 1;
        }
        added
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Parent first, up to [`MAX_ANCESTORS`], stopping at pid 1 or an unknown parent.
    pub fn ancestry(
        &self,
        ppid: u32,
        proc_fallback: impl Fn(u32) -> Option<(u32, Option<ExePath>)>,
    ) -> Vec<Forebear> {
        let mut out = Vec::new();
        let mut pid = ppid;
        while pid > 1 && out.len() < MAX_ANCESTORS {
            let (next, exe) = match self.procs.get(&pid) {
                Some(p) => (p.ppid, p.exe.clone()),
                None => match proc_fallback(pid) {
                    Some(x) => x,
                    None => {
                        out.push(Forebear { pid, exe: None });
                        break;
                    }
                },
            };
            out.push(Forebear { pid, exe });
            if next == pid {
                break;
            }
            pid = next;
        }
        out
    }
}

/// Extends an ancestry that stopped at a pid the event table does not know (host
/// processes such as the shim are filtered in the kernel) from `/proc`, for alerts only:
/// it reads `/proc`, so it runs when an alert is drafted, not per event.
pub fn complete_ancestry(mut chain: Vec<Forebear>) -> Vec<Ancestor> {
    let Some(last) = chain.pop() else {
        return Vec::new();
    };
    if last.exe.is_some() {
        chain.push(last);
        return chain.into_iter().map(Into::into).collect();
    }
    let known: Vec<u32> = chain.iter().map(|a| a.pid).collect();
    let table = ProcessTable::new(16);
    let rest = table.ancestry(last.pid, from_proc);
    chain.extend(
        rest.into_iter()
            .filter(|a| !known.contains(&a.pid))
            .take(MAX_ANCESTORS.saturating_sub(known.len())),
    );
    chain.into_iter().map(Into::into).collect()
}

/// Parent pid and executable of a live process, from `/proc`.
pub fn from_proc(pid: u32) -> Option<(u32, Option<ExePath>)> {
    Some((
        crate::procfs::ppid_of(pid)?,
        crate::procfs::exe_path(pid).map(ExePath::from),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_walks_events_then_proc() {
        let mut t = ProcessTable::new(100);
        t.on_exec(10, 5, "/bin/sh".into());
        t.on_fork(11, 10);
        t.on_exec(11, 10, "/tmp/x".into());
        let a = t.ancestry(11, |pid| {
            (pid == 5).then(|| (1, Some("/usr/bin/containerd-shim".into())))
        });
        let pids: Vec<u32> = a.iter().map(|x| x.pid).collect();
        assert_eq!(pids, vec![11, 10, 5]);
        assert_eq!(a[1].exe.as_deref(), Some("/bin/sh"));
        assert_eq!(a[2].exe.as_deref(), Some("/usr/bin/containerd-shim"));
    }

    #[test]
    fn table_is_bounded_and_ancestry_capped() {
        let mut t = ProcessTable::new(16);
        for pid in 2..100 {
            t.on_exec(pid, pid - 1, format!("/p{pid}").into());
        }
        assert_eq!(t.len(), 16);
        let a = t.ancestry(99, |_| None);
        assert_eq!(a.len(), MAX_ANCESTORS);
    }
}
