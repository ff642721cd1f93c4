//! What analyzers tell the kernel, and the kernel's file counters they report: the
//! `lg_clean` map of inodes judged clean for mappings, the counters of file events the
//! kernel did not send, and its io_uring requests per mount namespace (`lg_io_uring`).
//!
//! Owns the map handles, taken out of the loaded object. Deciding what is clean is the
//! files analyzer's; this only writes what it is told and reads what the kernel counted.

use super::wire;
use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use std::sync::{Arc, Mutex};

// SAFETY: plain #[repr(C)] integer structs (see wire::Pod), valid for any bit pattern.
unsafe impl aya::Pod for wire::FileId {}
unsafe impl aya::Pod for wire::CleanInode {}

/// Which writes the kernel sends (`lg_watch_dirs`): besides those with an exec bit or a
/// library's name, writes in directories of these names; all writes with `every`. The
/// files analyzer decides them from its config (`files::judge::watched_dirs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchedDirs {
    pub names: Vec<String>,
    pub every: bool,
}

/// The sensor's per-CPU counters (`lg_stats`), shared by the consumer and this handle.
pub type SharedStats = Arc<Mutex<PerCpuArray<MapData, u64>>>;

/// One per-CPU counter of a counter map, summed over the CPUs.
pub fn per_cpu_sum(map: &PerCpuArray<MapData, u64>, index: u32) -> Result<u64, MapError> {
    Ok(map.get(&index, 0)?.iter().sum())
}

/// [`per_cpu_sum`] of the shared `lg_stats`.
pub fn sum(stats: &SharedStats, index: u32) -> Result<u64, MapError> {
    per_cpu_sum(&stats.lock().unwrap_or_else(|e| e.into_inner()), index)
}

/// What the kernel counted of file events (cumulative since load).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounters {
    /// Write and mapping tracepoint hits of container processes on regular files.
    pub seen: u64,
    /// Not sent: the same file (and parent and mode, or process) was sent within a second.
    pub repeats: u64,
    /// Not sent: mappings of inodes judged clean.
    pub clean_hits: u64,
    /// io_uring requests submitted in containers.
    pub io_uring: u64,
    /// Not sent: writes that cannot alert (data files).
    pub data_writes: u64,
    /// Syscall hooks: renames, links, unlinks and executable mappings seen in containers.
    pub syscalls: u64,
    /// Kernel hooks (fentry, BPF LSM): the same.
    pub kernel_hooks: u64,
}

pub struct FileFeedback {
    clean: HashMap<MapData, wire::FileId, wire::CleanInode>,
    io_uring: HashMap<MapData, u32, u64>,
    stats: SharedStats,
}

impl FileFeedback {
    pub(super) fn new(
        clean: HashMap<MapData, wire::FileId, wire::CleanInode>,
        io_uring: HashMap<MapData, u32, u64>,
        stats: SharedStats,
    ) -> Self {
        Self {
            clean,
            io_uring,
            stats,
        }
    }

    /// io_uring requests per container mount namespace, cumulative (a namespace the
    /// kernel's bounded map evicted starts again from 0).
    pub fn io_uring_by_mnt_ns(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = self.io_uring.iter().filter_map(Result::ok).collect();
        out.sort_unstable();
        out
    }

    /// The kernel stops sending mappings of this inode while its ctime stays the same.
    pub fn mark_clean(
        &mut self,
        kernel_dev: u32,
        ino: u64,
        ctime: (i64, u32),
    ) -> Result<(), MapError> {
        let key = wire::FileId {
            ino,
            dev: kernel_dev,
            _pad: 0,
        };
        let value = wire::CleanInode {
            ctime_sec: ctime.0,
            ctime_nsec: ctime.1,
            ..Default::default()
        };
        self.clean.insert(key, value, 0)
    }

    /// The kernel sends mappings of this inode again.
    pub fn forget(&mut self, kernel_dev: u32, ino: u64) -> Result<(), MapError> {
        let key = wire::FileId {
            ino,
            dev: kernel_dev,
            _pad: 0,
        };
        match self.clean.remove(&key) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }

    pub fn counters(&self) -> Result<FileCounters, MapError> {
        Ok(FileCounters {
            seen: sum(&self.stats, wire::STAT_FILE_SEEN)?,
            repeats: sum(&self.stats, wire::STAT_FILE_REPEATS)?,
            clean_hits: sum(&self.stats, wire::STAT_MAP_CLEAN_HITS)?,
            io_uring: sum(&self.stats, wire::STAT_IO_URING)?,
            data_writes: sum(&self.stats, wire::STAT_FILE_DATA)?,
            syscalls: sum(&self.stats, wire::STAT_SYSCALLS)?,
            kernel_hooks: sum(&self.stats, wire::STAT_KERNEL_HOOKS)?,
        })
    }
}
