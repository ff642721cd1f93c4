//! Live counters an indexing run updates and a terminal (or a status API) reads.
//!
//! Owns: the counters only. Writers are the indexer and the layer walkers on blocking threads;
//! readers poll. Nothing here blocks or allocates on the hot path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How far an indexing run is, shared with whoever shows it (a terminal's progress line).
#[derive(Default)]
pub struct Progress {
    /// Layers the image has (0 until the manifest is read).
    pub layers_total: AtomicUsize,
    /// Layers finished.
    pub layers_done: AtomicUsize,
    /// Of those, taken from the layer cache.
    pub layers_from_cache: AtomicUsize,
    /// Compressed bytes of all layers that must be read (cache misses only).
    pub bytes_total: AtomicU64,
    /// Compressed bytes of layers already finished.
    bytes_finished: AtomicU64,
    /// Entries seen by the tar walkers so far.
    pub entries_seen: AtomicU64,
    /// Byte counters of layers being read right now.
    active: Mutex<Vec<Arc<AtomicU64>>>,
}

/// A consistent-enough reading for one progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub layers_total: usize,
    pub layers_done: usize,
    pub bytes_total: u64,
    pub bytes_read: u64,
    pub entries_seen: u64,
}

impl Progress {
    /// Nothing done yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a layer read in progress; its counter is live until `finish_layer`.
    pub fn start_layer(&self, size: u64) -> Arc<AtomicU64> {
        self.bytes_total.fetch_add(size, Ordering::Relaxed);
        let counter = Arc::new(AtomicU64::new(0));
        self.active
            .lock()
            .expect("progress lock")
            .push(Arc::clone(&counter));
        counter
    }

    /// Counts a layer finished, with the bytes `counter` saw read.
    pub fn finish_layer(&self, counter: &Arc<AtomicU64>) {
        self.active
            .lock()
            .expect("progress lock")
            .retain(|c| !Arc::ptr_eq(c, counter));
        self.bytes_finished
            .fetch_add(counter.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let active: u64 = self
            .active
            .lock()
            .expect("progress lock")
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        ProgressSnapshot {
            layers_total: self.layers_total.load(Ordering::Relaxed),
            layers_done: self.layers_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_read: self.bytes_finished.load(Ordering::Relaxed) + active,
            entries_seen: self.entries_seen.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_active_and_finished_layers() {
        let p = Progress::new();
        let a = p.start_layer(100);
        let b = p.start_layer(50);
        a.store(40, Ordering::Relaxed);
        b.store(50, Ordering::Relaxed);
        p.finish_layer(&b);
        let s = p.snapshot();
        assert_eq!((s.bytes_total, s.bytes_read), (150, 90));
    }
}
