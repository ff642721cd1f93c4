//! The alert journal: every alert on disk in `<state_dir>/journal/`, so that a subscriber
//! that reconnects (even after a daemon restart or crash) gets everything after the last
//! sequence number it saw, and the live fan-out that feeds subscribers after each append.
//!
//! Owns the segment files, their recovery, retention, reading by sequence number (forward
//! for catch-up, backward for listing), and the broadcast channel of live alerts. It must
//! not filter, convert or serve anything: that is `api`'s job.
//!
//! Format. A segment `<first_seq:020>.seg` starts with [`MAGIC`] and holds framed records:
//! `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload (len bytes)`, the CRC covering the
//! seq bytes and the payload, the payload the alert's JSON (the same schema as every other
//! sink, so `layerguard` versions that add fields still read old journals). Sequence
//! numbers only increase; they may skip (an append that failed) and the reader reports any
//! skip as a gap. A sparse in-memory index (one entry per [`SPARSE_EVERY_BYTES`]) per
//! segment bounds the scan to find a sequence number.
//!
//! Durability. Each record is written with one `write(2)` before the alert is published
//! live, so a killed daemon (SIGKILL, OOM, panic) loses nothing that a subscriber saw.
//! `fsync` is batched (default every 100 ms, on a helper thread): a kernel crash or power
//! loss may cost the last interval, which is what an fsync per alert (`always`, about
//! 1-10 ms each on real disks) would cost in throughput and exec-to-alert latency instead.
//! On open every segment is scanned. A torn record at the very end (a write cut short by a
//! crash) is cut. Any other damage (a record failing its checksum, a broken header) never
//! costs the intact records around it: the segment is copied as found into
//! `journal/quarantine/`, rewritten with its intact records only, and readers get a gap
//! naming exactly the lost sequence numbers. The sequence never goes backwards or repeats:
//! `journal/next_seq` holds the high-water mark (written at most every fsync interval and
//! at close), and the next alert after a restart is past both it and the last record.
//!
//! Retention deletes whole segments, oldest first, while the journal is over its size
//! bound or a segment's newest record is older than the age bound; the newest segment is
//! always kept, because it carries the sequence across restarts.
//!
//! Reading. The newest journaled alerts are also kept in memory (a bounded tail, a cache of
//! the files: same alerts, same gaps), so a subscriber that fell a little behind catches
//! up without disk reads or JSON decoding; older positions are read from the segments.

mod recover;
mod segment;
#[cfg(test)]
mod tests;

pub use segment::{MAGIC, MAX_RECORD_BYTES};

/// The format of the journal directory as a whole (segment names and framing, `next_seq`,
/// `quarantine/`), recorded in `<state_dir>/FORMAT` by `statedir`. Bump it when a
/// layerguard could no longer read what an older one wrote, and give `statedir` a
/// migration from the old number.
pub const STORE_FORMAT: u32 = 1;

use super::{Alert, AlertSink, SinkError};
use recover::recover_segment;
use segment::{encode, read_block, read_segment, Segment, SegmentEnd, Snapshot, SEGMENT_SUFFIX};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

/// Alerts kept in memory per slot of the live queue, for cheap catch-up after a lag. At
/// about 1-2 KiB an alert, the default queue of 4096 bounds this to roughly 12 MiB, and
/// only while that many alerts were actually raised.
pub const RECENT_PER_LIVE_SLOT: usize = 2;
/// Retention by age is checked at most this often (and at every segment rotation).
const RETENTION_CHECK: Duration = Duration::from_secs(60);
/// The high-water mark of the sequence: the seq the next alert gets, or more.
const HIGH_WATER_FILE: &str = "next_seq";
/// Where damaged segments are copied, as found, before they are rewritten.
const QUARANTINE_DIR: &str = "quarantine";
/// How often the high-water mark is written when fsync is not batched.
const HIGH_WATER_INTERVAL: Duration = Duration::from_millis(100);

/// When appended records are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fsync` before each alert is published: survives power loss, costs a disk flush
    /// per alert on the pipeline's path.
    Always,
    /// `fsync` on a helper thread at most once per interval, when something was written.
    Batched(Duration),
    /// Leave it to the kernel's writeback; a process crash still loses nothing.
    Never,
}

#[derive(Clone, Debug)]
pub struct JournalLimits {
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    /// Whole old segments are deleted while the journal is larger.
    pub max_bytes: u64,
    /// Segments whose newest record is older are deleted.
    pub max_age: Duration,
    pub fsync: FsyncPolicy,
    /// Capacity of the live broadcast: how many alerts a subscriber may fall behind before
    /// it is switched to catching up from the journal.
    pub live_queue: usize,
    /// The newest journaled alerts also kept in memory, so that catching up after a short
    /// lag needs no disk read or decoding.
    pub recent_alerts: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            segment_bytes: 16 << 20,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(7 * 24 * 3600),
            fsync: FsyncPolicy::Batched(Duration::from_millis(100)),
            live_queue: 4096,
            recent_alerts: 4096 * RECENT_PER_LIVE_SLOT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: alert {seq} is not after the last journaled one ({last})")]
    OutOfOrder { seq: u64, last: u64 },
    #[error("journal: cannot encode alert {seq}: {source}")]
    Encode {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal: alert {seq} encodes to {size} bytes, over the {MAX_RECORD_BYTES}-byte record limit")]
    TooLarge { seq: u64, size: usize },
}

/// Serves `reader` from the in-memory tail (alerts up to `end`), as the disk would.
fn read_recent(
    recent: &VecDeque<Arc<Alert>>,
    reader: &mut JournalReader,
    end: u64,
    max: usize,
    out: &mut Vec<Entry>,
) {
    let start = recent.partition_point(|a| a.seq < reader.next_seq);
    let mut produced = 0;
    for alert in recent.range(start..) {
        if alert.seq >= end || produced >= max {
            return;
        }
        if alert.seq > reader.next_seq {
            out.push(Entry::Gap {
                first_seq: reader.next_seq,
                last_seq: alert.seq - 1,
                reason: GapReason::Lost,
            });
        }
        out.push(Entry::Alert(alert.clone()));
        produced += 1;
        reader.next_seq = alert.seq + 1;
    }
    // Published but not (yet) in memory cannot happen: `end` is at most `next_seq`.
    if produced < max {
        skip_lost_to(reader, end, out);
    }
}

/// Moves `reader` up to `next`, telling it with a gap when that skips alerts.
fn skip_lost_to(reader: &mut JournalReader, next: u64, out: &mut Vec<Entry>) {
    if reader.next_seq < next {
        out.push(Entry::Gap {
            first_seq: reader.next_seq,
            last_seq: next - 1,
            reason: GapReason::Lost,
        });
        reader.next_seq = next;
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a reader could not deliver some sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// Older than the oldest segment: deleted by retention (or never journaled).
    Retention,
    /// Inside the journal's range but not in it: an append failed, or a corrupt record
    /// was cut.
    Lost,
    /// The journal is disabled: only live alerts exist.
    Disabled,
}

impl GapReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Retention => "no longer in the journal (retention)",
            Self::Lost => "lost by the journal (write failure or corruption)",
            Self::Disabled => "the journal is disabled",
        }
    }
}

/// One item read from the journal, in sequence order.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// Shared, because a subscriber keeps it as is.
    Alert(Arc<Alert>),
    /// `first_seq..=last_seq` cannot be delivered.
    Gap {
        first_seq: u64,
        last_seq: u64,
        reason: GapReason,
    },
}

/// Sizes and bounds, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    pub enabled: bool,
    pub dir: Option<PathBuf>,
    pub bytes: u64,
    pub segments: usize,
    /// Oldest and newest journaled seq; 0 when empty.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The seq the next alert gets.
    pub next_seq: u64,
    /// Alerts appended since the journal was opened (journaled or not).
    pub published: u64,
}

struct Store {
    dir: PathBuf,
    /// Oldest first; the last one is appended to.
    segments: Vec<Segment>,
    /// Append handle of the last segment (`None` until the first append, or after a
    /// failure that left its end unknown: the next append starts a new segment).
    active: Option<Arc<File>>,
    last_retention: Instant,
}

struct Inner {
    /// The seq the next alert must have or exceed.
    next_seq: u64,
    published: u64,
    store: Option<Store>,
    /// The most recently published alerts, oldest first (at most
    /// [`RECENT_PER_LIVE_SLOT`] x the live queue): a subscriber that lagged a little
    /// catches up from memory instead of re-reading and decoding the segment.
    recent: VecDeque<Arc<Alert>>,
}

/// Shared with the fsync thread.
struct SyncShared {
    file: Mutex<Option<Arc<File>>>,
    dirty: AtomicBool,
    /// The journal's directory (where the high-water mark goes); `None` when disabled.
    dir: Option<PathBuf>,
    /// The seq the next alert gets, as last published, and as last written to disk.
    next_seq: AtomicU64,
    /// The mark on disk; the lock also serialises writers (the helper thread, open, close).
    high_water_written: Mutex<u64>,
    /// fsync the segment each interval (batched), or only write the high-water mark.
    fsync_segment: bool,
    /// fsync the high-water mark when written.
    durable: bool,
    stop: Mutex<bool>,
    wake: Condvar,
}

pub struct Journal {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Alert>>,
    limits: JournalLimits,
    sync: Arc<SyncShared>,
    sync_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A position in the journal for [`Journal::read`]. Cheap to create; keeps the segment
/// it reads open so that a sequential reader does not search again.
#[derive(Debug)]
pub struct JournalReader {
    next_seq: u64,
    open: Option<OpenSegment>,
}

#[derive(Debug)]
struct OpenSegment {
    first_seq: u64,
    file: File,
    offset: u64,
    /// The reader's `next_seq` when `offset` was valid; otherwise reposition.
    at_seq: u64,
}

impl JournalReader {
    /// Reads alerts with seq >= `next_seq`.
    pub fn new(next_seq: u64) -> Self {
        Self {
            next_seq: next_seq.max(1),
            open: None,
        }
    }

    /// The seq the next entry will start at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Moves on without reading (the reader learnt of these alerts elsewhere).
    pub fn skip_to(&mut self, seq: u64) {
        if seq > self.next_seq {
            self.next_seq = seq;
        }
    }
}

/// The result of [`Journal::scan_back`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanBack {
    /// Nothing older is left.
    Done,
    /// Stopped; continue with `before`.
    More { before: u64 },
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovering from a crash: a torn or
    /// corrupt tail is cut and logged. Returns the journal and the seq the next alert must
    /// get (one past the last journaled one; 1 for a new journal).
    pub fn open(dir: &Path, limits: JournalLimits) -> Result<(Arc<Journal>, u64), JournalError> {
        create_private_dir(dir)?;
        let quarantine = dir.join(QUARANTINE_DIR);
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(first) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first, entry.path()));
        }
        names.sort();
        let mut segments: Vec<Segment> = Vec::new();
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let newest = i + 1 == count;
            // Alerts are private: older versions created segments 0644.
            make_private(&path)?;
            let after = segments
                .last()
                .and_then(|s| s.last_seq.or(Some(s.first_seq.saturating_sub(1))))
                .unwrap_or(0);
            if let Some(seg) = recover_segment(&path, first_seq, after, newest, &quarantine)? {
                segments.push(seg);
            }
        }
        let from_segments = segments
            .last()
            .map(|s| s.last_seq.map_or(s.first_seq, |l| l + 1).max(s.first_seq))
            .unwrap_or(1)
            .max(1);
        let high_water = read_high_water(dir);
        let next_seq = from_segments.max(high_water.unwrap_or(0));
        if next_seq > from_segments {
            warn!(dir = %dir.display(), first_seq = from_segments, last_seq = next_seq - 1,
                "alert journal: these alerts were numbered before but are not in the journal \
                 (damaged or cut); readers get a gap for them and the sequence goes on after them");
        }
        let active = match segments.last() {
            Some(s) => Some(Arc::new(
                OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(io(&s.path))?,
            )),
            None => None,
        };
        let store = Store {
            dir: dir.to_path_buf(),
            segments,
            active: active.clone(),
            last_retention: Instant::now(),
        };
        let journal = Self::build(
            Inner {
                next_seq,
                published: 0,
                store: Some(store),
                recent: VecDeque::new(),
            },
            limits,
        );
        *journal.sync.file.lock().unwrap_or_else(|e| e.into_inner()) = active;
        journal.sync.next_seq.store(next_seq, Ordering::Release);
        // Best effort here: a full disk must not stop the start; the helper thread keeps
        // trying (and says so).
        if let Err(e) = journal.sync.write_high_water(next_seq) {
            warn!(dir = %dir.display(), error = %e,
                "cannot write the alert journal's high-water mark yet; retrying in the background");
        }
        {
            let mut inner = journal.lock();
            let limits = journal.limits.clone();
            if let Some(store) = inner.store.as_mut() {
                store.apply_retention(&limits);
            }
        }
        let stats = journal.stats();
        info!(
            dir = %dir.display(),
            segments = stats.segments,
            bytes = stats.bytes,
            first_seq = stats.first_seq,
            last_seq = stats.last_seq,
            "alert journal open"
        );
        Ok((journal, next_seq))
    }

    /// A journal that keeps nothing: alerts are only broadcast live, and a reader gets a
    /// gap for anything before now. Sequence numbers start at `first_seq`.
    pub fn disabled(first_seq: u64, live_queue: usize) -> Arc<Journal> {
        Self::build(
            Inner {
                next_seq: first_seq.max(1),
                published: 0,
                store: None,
                recent: VecDeque::new(),
            },
            JournalLimits {
                live_queue,
                fsync: FsyncPolicy::Never,
                ..JournalLimits::default()
            },
        )
    }

    fn build(inner: Inner, limits: JournalLimits) -> Arc<Journal> {
        let (live, _) = broadcast::channel(limits.live_queue.max(1));
        let sync = Arc::new(SyncShared {
            file: Mutex::new(None),
            dirty: AtomicBool::new(false),
            dir: inner.store.as_ref().map(|s| s.dir.clone()),
            next_seq: AtomicU64::new(inner.next_seq),
            high_water_written: Mutex::new(0),
            fsync_segment: matches!(limits.fsync, FsyncPolicy::Batched(_)),
            durable: limits.fsync != FsyncPolicy::Never,
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        // The helper thread fsyncs batched appends and, whatever the policy, keeps the
        // high-water mark of the sequence on disk.
        let every = match limits.fsync {
            FsyncPolicy::Batched(every) => every,
            _ => HIGH_WATER_INTERVAL,
        };
        let thread = inner.store.is_some().then(|| {
            let shared = sync.clone();
            std::thread::Builder::new()
                .name("lg-journal-sync".into())
                .spawn(move || sync_loop(&shared, every))
                .ok()
        });
        let thread = thread.flatten();
        Arc::new(Journal {
            inner: Mutex::new(inner),
            live,
            limits,
            sync,
            sync_thread: Mutex::new(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent metadata (every field is
        // updated after the write it describes), so carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The seq the next alert gets: everything below it has been published.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// A live receiver plus the seq from which it receives: every alert with a smaller seq
    /// was published before, and is in the journal (or a gap) for a reader.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Alert>>, u64) {
        let inner = self.lock();
        (self.live.subscribe(), inner.next_seq)
    }

    /// How many alerts a live receiver may fall behind before it lags.
    pub fn live_capacity(&self) -> usize {
        self.limits.live_queue.max(1)
    }

    /// Writes the alert, then publishes it live. The alert is published even when the
    /// write fails (the stream must not go silent because a disk is full); a reader then
    /// sees a gap where it is missing from the journal.
    pub fn append(&self, alert: &Alert) -> Result<(), JournalError> {
        let mut inner = self.lock();
        if alert.seq < inner.next_seq {
            return Err(JournalError::OutOfOrder {
                seq: alert.seq,
                last: inner.next_seq - 1,
            });
        }
        inner.next_seq = alert.seq + 1;
        inner.published += 1;
        self.sync.next_seq.store(inner.next_seq, Ordering::Release);
        let result = match inner.store.as_mut() {
            Some(store) => store.append(alert, &self.limits, &self.sync),
            None => Ok(()),
        };
        // Sent under the lock: a concurrent `subscribe` sees either the alert in the
        // journal range or on its receiver, never neither.
        let shared = Arc::new(alert.clone());
        // Only what the journal holds: the tail is a cache of the disk, so a reader gets
        // the same alerts and gaps from either.
        if inner.store.is_some() && result.is_ok() && self.limits.recent_alerts > 0 {
            if inner.recent.len() >= self.limits.recent_alerts {
                inner.recent.pop_front();
            }
            inner.recent.push_back(shared.clone());
        }
        let _ = self.live.send(shared);
        result
    }

    /// Reads up to `max` entries from `reader`'s position: alerts, and gaps for whatever
    /// cannot be delivered. Returns an empty batch when the reader has caught up with
    /// every published alert. Blocking file I/O: call from a blocking context.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn read(&self, reader: &mut JournalReader, max: usize) -> Vec<Entry> {
        self.read_until(reader, max, u64::MAX)
    }

    /// [`read`](Self::read), stopping before seq `until` (a subscriber that gets the
    /// rest from a live receiver must not be told of those as a gap).
    pub fn read_until(&self, reader: &mut JournalReader, max: usize, until: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        while out.len() < max {
            let snap = {
                let inner = self.lock();
                let end = inner.next_seq.min(until);
                if reader.next_seq >= end {
                    break;
                }
                let Some(store) = inner.store.as_ref() else {
                    out.push(Entry::Gap {
                        first_seq: reader.next_seq,
                        last_seq: end - 1,
                        reason: GapReason::Disabled,
                    });
                    reader.next_seq = end;
                    break;
                };
                let oldest = store.segments.first().map_or(end, |s| s.first_seq.min(end));
                if reader.next_seq < oldest {
                    out.push(Entry::Gap {
                        first_seq: reader.next_seq,
                        last_seq: oldest - 1,
                        reason: GapReason::Retention,
                    });
                    reader.next_seq = oldest;
                    reader.open = None;
                    continue;
                }
                if inner
                    .recent
                    .front()
                    .is_some_and(|a| a.seq <= reader.next_seq)
                {
                    read_recent(&inner.recent, reader, end, max - out.len(), &mut out);
                    continue;
                }
                let i = store
                    .segments
                    .partition_point(|s| s.first_seq <= reader.next_seq)
                    - 1;
                let seg = &store.segments[i];
                Snapshot {
                    first_seq: seg.first_seq,
                    path: seg.path.clone(),
                    committed: seg.len,
                    start: seg.offset_for(reader.next_seq),
                    next_first: store
                        .segments
                        .get(i + 1)
                        .map_or(end, |s| s.first_seq.min(end)),
                }
            };
            match read_segment(reader, &snap, max - out.len(), &mut out) {
                Ok(SegmentEnd::Budget) => {}
                Ok(SegmentEnd::Committed) | Ok(SegmentEnd::Limit) => {
                    // Everything written so far is read; what is missing before the next
                    // segment (or the end) was never journaled.
                    skip_lost_to(reader, snap.next_first, &mut out);
                }
                Ok(SegmentEnd::Vanished) => reader.open = None,
                Err(problem) => {
                    error!(segment = %snap.path.display(), offset = problem.offset,
                        problem = %problem.reason,
                        "alert journal unreadable past this point; readers get a gap");
                    skip_lost_to(reader, snap.next_first, &mut out);
                    reader.open = None;
                }
            }
        }
        out
    }

    /// Visits journaled alerts with seq < `before`, newest first, until `visit` returns
    /// false or about `max_scan` records were decoded. Blocking file I/O.
    pub fn scan_back(
        &self,
        before: u64,
        max_scan: usize,
        mut visit: impl FnMut(Alert) -> bool,
    ) -> ScanBack {
        let mut before = before;
        let mut scanned = 0usize;
        loop {
            let block = {
                let inner = self.lock();
                let Some(store) = inner.store.as_ref() else {
                    return ScanBack::Done;
                };
                let i = store.segments.partition_point(|s| s.first_seq < before);
                if i == 0 {
                    return ScanBack::Done;
                }
                let seg = &store.segments[i - 1];
                let k = seg.sparse.partition_point(|&(s, _)| s < before);
                if k == 0 {
                    // An empty segment (or all records cut): go to the one before it.
                    before = seg.first_seq;
                    continue;
                }
                let (block_seq, start) = seg.sparse[k - 1];
                let end = seg.sparse.get(k).map_or(seg.len, |&(_, o)| o);
                (seg.path.clone(), block_seq, start, end)
            };
            let (path, block_seq, start, end) = block;
            let records = match read_block(&path, start, end) {
                Ok(r) => r,
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "alert journal block unreadable; skipped in listing");
                    Vec::new()
                }
            };
            for alert in records.into_iter().rev().filter(|a| a.seq < before) {
                scanned += 1;
                let seq = alert.seq;
                if !visit(alert) {
                    return ScanBack::More { before: seq };
                }
            }
            before = block_seq;
            if scanned >= max_scan {
                return ScanBack::More { before };
            }
        }
    }

    pub fn stats(&self) -> JournalStats {
        let inner = self.lock();
        let Some(store) = inner.store.as_ref() else {
            return JournalStats {
                next_seq: inner.next_seq,
                published: inner.published,
                ..JournalStats::default()
            };
        };
        let first_seq = store
            .segments
            .iter()
            .find_map(|s| s.sparse.first().map(|&(seq, _)| seq))
            .unwrap_or(0);
        let last_seq = store
            .segments
            .iter()
            .rev()
            .find_map(|s| s.last_seq)
            .unwrap_or(0);
        JournalStats {
            enabled: true,
            dir: Some(store.dir.clone()),
            bytes: store.segments.iter().map(|s| s.len).sum(),
            segments: store.segments.len(),
            first_seq,
            last_seq,
            next_seq: inner.next_seq,
            published: inner.published,
        }
    }

    /// Forces what was written to disk and stops the fsync thread. Appends after this
    /// still work (and are synced per the policy only if it is `always`).
    pub fn close(&self) -> Result<(), JournalError> {
        if let Some(t) = self
            .sync_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            *self.sync.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.sync.wake.notify_all();
            let _ = t.join();
        }
        let inner = self.lock();
        if let (Some(store), false) = (
            inner.store.as_ref(),
            self.limits.fsync == FsyncPolicy::Never,
        ) {
            if let (Some(file), Some(seg)) = (store.active.as_ref(), store.segments.last()) {
                file.sync_data().map_err(io(&seg.path))?;
            }
        }
        if let Some(store) = inner.store.as_ref() {
            self.sync
                .write_high_water(inner.next_seq)
                .map_err(io(&store.dir.join(HIGH_WATER_FILE)))?;
        }
        Ok(())
    }
}

impl Store {
    fn append(
        &mut self,
        alert: &Alert,
        limits: &JournalLimits,
        sync: &SyncShared,
    ) -> Result<(), JournalError> {
        let frame = encode(alert)?;
        let needs_new = match (self.segments.last(), &self.active) {
            (Some(seg), Some(_)) => {
                seg.last_seq.is_some() && seg.len + frame.len() as u64 > limits.segment_bytes
            }
            _ => true,
        };
        let mut rotated = false;
        if needs_new {
            self.start_segment(alert.seq, limits, sync)?;
            rotated = true;
        }
        let file = self
            .active
            .clone()
            .expect("a segment is active after start_segment");
        let seg = self.segments.last_mut().expect("a segment exists");
        if let Err(e) = (&*file).write_all(&frame) {
            // Take a partial frame back; if even that fails the end is unknown, so the
            // next append starts a new segment instead of writing after garbage.
            if file.set_len(seg.len).is_err() {
                self.active = None;
            }
            return Err(io(&seg.path)(e));
        }
        let offset = seg.len;
        seg.len += frame.len() as u64;
        seg.last_seq = Some(alert.seq);
        seg.last_write = SystemTime::now();
        seg.index(alert.seq, offset);
        match limits.fsync {
            FsyncPolicy::Always => file.sync_data().map_err(io(&seg.path))?,
            FsyncPolicy::Batched(_) => sync.dirty.store(true, Ordering::Release),
            FsyncPolicy::Never => {}
        }
        if rotated || self.last_retention.elapsed() >= RETENTION_CHECK {
            self.apply_retention(limits);
        }
        Ok(())
    }

    /// Closes the current segment (synced unless the policy is `never`) and starts one
    /// whose first record is `first_seq`. An empty newest segment (a marker of the
    /// sequence) is reused rather than left behind; its name stays, which readers handle
    /// (a name is the lowest seq a segment may hold).
    fn start_segment(
        &mut self,
        first_seq: u64,
        limits: &JournalLimits,
        sync: &SyncShared,
    ) -> Result<(), JournalError> {
        if let (Some(file), Some(seg)) = (self.active.take(), self.segments.last()) {
            if limits.fsync != FsyncPolicy::Never {
                file.sync_data().map_err(io(&seg.path))?;
            }
        }
        if let Some(empty) = self.segments.last().filter(|s| s.last_seq.is_none()) {
            // Reuse it in place (never delete and recreate: a reader may hold it open
            // under the same name), dropping whatever a failed write left after the
            // header.
            let path = empty.path.clone();
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            file.set_len(MAGIC.len() as u64).map_err(io(&path))?;
            let file = Arc::new(file);
            self.active = Some(file.clone());
            *sync.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
            return Ok(());
        }
        let path = self.dir.join(Segment::file_name(first_seq));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(MAGIC).map_err(io(&path))?;
        if limits.fsync != FsyncPolicy::Never {
            file.sync_data().map_err(io(&path))?;
            sync_dir(&self.dir)?;
        }
        drop(file);
        let file = Arc::new(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(&path))?,
        );
        self.segments.push(Segment {
            first_seq,
            path,
            len: MAGIC.len() as u64,
            last_seq: None,
            sparse: Vec::new(),
            last_write: SystemTime::now(),
        });
        self.active = Some(file.clone());
        *sync.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }

    fn apply_retention(&mut self, limits: &JournalLimits) {
        self.last_retention = Instant::now();
        let now = SystemTime::now();
        let mut total: u64 = self.segments.iter().map(|s| s.len).sum();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let age = now.duration_since(oldest.last_write).unwrap_or_default();
            let reason = if total > limits.max_bytes {
                "size"
            } else if age > limits.max_age {
                "age"
            } else {
                break;
            };
            if let Err(e) = std::fs::remove_file(&oldest.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(segment = %oldest.path.display(), error = %e,
                        "cannot delete an old journal segment; retention stops here for now");
                    break;
                }
            }
            info!(segment = %oldest.path.display(), reason, first_seq = oldest.first_seq,
                last_seq = oldest.last_seq.unwrap_or(0), bytes = oldest.len,
                "alert journal segment dropped by retention");
            total -= oldest.len;
            self.segments.remove(0);
        }
    }
}

fn sync_loop(shared: &SyncShared, every: Duration) {
    let mut failing = false;
    let mut high_water_failing = false;
    loop {
        let stop = {
            let guard = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = shared
                .wake
                .wait_timeout_while(guard, every, |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            *guard
        };
        if shared.fsync_segment && shared.dirty.swap(false, Ordering::AcqRel) {
            let file = shared
                .file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(file) = file {
                match file.sync_data() {
                    Ok(()) if failing => {
                        failing = false;
                        info!("alert journal fsync recovered");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        error!(error = %e, "alert journal fsync failing; alerts stay in the page cache");
                    }
                    Err(_) => {}
                }
            }
        }
        // After the records it covers (written above or before): the mark never claims a
        // seq that a restart could find neither in a segment nor as a gap.
        let next = shared.next_seq.load(Ordering::Acquire);
        if let Some(dir) = &shared.dir {
            match shared.write_high_water(next) {
                Ok(()) => {
                    if high_water_failing {
                        high_water_failing = false;
                        info!("alert journal high-water mark written again");
                    }
                }
                Err(e) if !high_water_failing => {
                    high_water_failing = true;
                    error!(error = %e, dir = %dir.display(),
                        "cannot write the alert journal's high-water mark; a restart after \
                         damage to the newest records could reuse their seq");
                }
                Err(_) => {}
            }
        }
        if stop {
            return;
        }
    }
}

impl SyncShared {
    /// Writes the high-water mark if `next_seq` is past the one on disk (it never goes
    /// back). One writer at a time.
    fn write_high_water(&self, next_seq: u64) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut written = self
            .high_water_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if next_seq <= *written {
            return Ok(());
        }
        write_high_water(dir, next_seq, self.durable)?;
        *written = next_seq;
        Ok(())
    }
}

/// The high-water mark in `dir`, if one was written and reads back.
fn read_high_water(dir: &Path) -> Option<u64> {
    let path = dir.join(HIGH_WATER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the alert journal's high-water mark; using the segments alone");
            return None;
        }
    };
    match text.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            warn!(path = %path.display(), content = %text.trim(),
                "the alert journal's high-water mark is not a number; using the segments alone");
            None
        }
    }
}

/// Writes the high-water mark atomically (temporary file, rename).
fn write_high_water(dir: &Path, next_seq: u64, durable: bool) -> std::io::Result<()> {
    let path = dir.join(HIGH_WATER_FILE);
    let tmp = dir.join(format!("{HIGH_WATER_FILE}.tmp"));
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{next_seq}\n").as_bytes())?;
        if durable {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, &path)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes an existing journal file readable by its owner only.
fn make_private(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The journal as an alert sink: the stage appends each alert, which also publishes it to
/// live subscribers.
pub struct JournalSink {
    journal: Arc<Journal>,
}

impl JournalSink {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self { journal }
    }
}

impl AlertSink for JournalSink {
    fn name(&self) -> &'static str {
        "journal"
    }

    fn write(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.journal.append(alert).map_err(|e| match e {
            JournalError::Io { path, source } => SinkError::Io {
                sink: "journal",
                path,
                source,
            },
            other => SinkError::Other {
                sink: "journal",
                message: other.to_string(),
            },
        })
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.journal.close().map_err(|e| SinkError::Other {
            sink: "journal",
            message: e.to_string(),
        })
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Without an explicit close the fsync thread would wait forever. Its last round
        // writes the high-water mark; waiting for it is one short file write.
        *self.sync.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.sync.wake.notify_all();
        if let Some(t) = self
            .sync_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}
