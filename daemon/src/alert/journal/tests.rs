//! The journal under crash damage, retention and resumption: what a subscriber gets back
//! must be every alert once, or an explicit gap, never a silent hole.

use super::*;
use crate::alert::{AlertKind, AlertStage};
use std::os::unix::fs::FileExt;

use crate::fixtures::alert;

/// No in-memory tail: reads go to the segment files (the memory tail has its own tests).
fn limits() -> JournalLimits {
    JournalLimits {
        fsync: FsyncPolicy::Never,
        recent_alerts: 0,
        ..JournalLimits::default()
    }
}

fn small_segments() -> JournalLimits {
    JournalLimits {
        segment_bytes: 2048,
        ..limits()
    }
}

fn append_range(j: &Journal, seqs: impl IntoIterator<Item = u64>) {
    for s in seqs {
        j.append(&alert(s)).unwrap();
    }
}

/// Everything from `from` on, as compact items: `A(seq)` or `G(first, last, reason)`.
#[derive(Debug, PartialEq)]
enum It {
    A(u64),
    G(u64, u64, GapReason),
}

fn read_all(j: &Journal, from: u64) -> Vec<It> {
    let mut r = JournalReader::new(from);
    let mut out = Vec::new();
    loop {
        let batch = j.read(&mut r, 7);
        if batch.is_empty() {
            return out;
        }
        for e in batch {
            out.push(match e {
                Entry::Alert(a) => It::A(a.seq),
                Entry::Gap {
                    first_seq,
                    last_seq,
                    reason,
                } => It::G(first_seq, last_seq, reason),
            });
        }
    }
}

fn alerts(range: std::ops::RangeInclusive<u64>) -> Vec<It> {
    range.map(It::A).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (j, next) = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(next, 1);
    append_range(&j, 1..=100);
    assert!(segment_files(dir.path()).len() > 5, "rotated by size");
    assert_eq!(read_all(&j, 1), alerts(1..=100));
    assert_eq!(read_all(&j, 57), alerts(57..=100));
    assert_eq!(read_all(&j, 101), vec![]);
    let full = {
        let mut r = JournalReader::new(40);
        match &j.read(&mut r, 1)[0] {
            Entry::Alert(a) => Alert::clone(a),
            e => panic!("{e:?}"),
        }
    };
    assert_eq!(full, alert(40), "the record decodes to the alert written");
    let s = j.stats();
    assert_eq!((s.first_seq, s.last_seq, s.next_seq), (1, 100, 101));
}

#[test]
fn reopen_continues_the_sequence_and_keeps_old_alerts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
        append_range(&j, 1..=30);
        j.close().unwrap();
    }
    let (j, next) = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(next, 31);
    append_range(&j, 31..=40);
    assert_eq!(read_all(&j, 1), alerts(1..=40));
    let err = j.append(&alert(35)).unwrap_err();
    assert!(
        matches!(err, JournalError::OutOfOrder { seq: 35, .. }),
        "{err}"
    );
}

#[test]
fn a_torn_tail_is_cut_and_the_sequence_continues_after_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=10);
    }
    // A crash in the middle of writing record 10, before the high-water mark covered it:
    // only part of it reached the file, and it was never published.
    std::fs::write(dir.path().join(HIGH_WATER_FILE), "10\n").unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 10);
    assert_eq!(read_all(&j, 1), alerts(1..=9));
    let cut_len = std::fs::metadata(&seg).unwrap().len();
    assert!(cut_len < len - 20, "the partial record was truncated away");
    assert!(
        !dir.path().join(QUARANTINE_DIR).exists(),
        "a torn tail is cut, not quarantined"
    );
    append_range(&j, 10..=12);
    assert_eq!(read_all(&j, 1), alerts(1..=12));
}

#[test]
fn a_cut_tail_the_high_water_mark_covers_is_a_gap_and_its_seqs_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=10);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 11, "10 was numbered (and maybe seen) before");
    let mut want = alerts(1..=9);
    want.push(It::G(10, 10, GapReason::Lost));
    assert_eq!(read_all(&j, 1), want);
    append_range(&j, 11..=12);
    want.extend(alerts(11..=12));
    assert_eq!(read_all(&j, 1), want);
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=5);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Preallocated zeros (a filesystem that extended the file before the data landed).
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0u8; 4096], len).unwrap();
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 6);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(read_all(&j, 1), alerts(1..=5));
}

/// Byte offset of the record with `seq` in a segment (walks the frames).
fn offset_of(seg: &Path, seq: u64) -> u64 {
    let data = std::fs::read(seg).unwrap();
    let mut pos = MAGIC.len();
    while pos < data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let s = u64::from_le_bytes(data[pos + 8..pos + 16].try_into().unwrap());
        if s == seq {
            return pos as u64;
        }
        pos += 16 + len;
    }
    panic!("seq {seq} not in {}", seg.display());
}

fn flip_byte(seg: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x55], at).unwrap();
}

fn quarantined(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join(QUARANTINE_DIR)) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_bad_checksum_in_the_middle_of_the_newest_segment_loses_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=10);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let before = std::fs::read(&seg).unwrap();
    let fifth = offset_of(&seg, 5);
    flip_byte(&seg, fifth + 16 + 10);
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 11, "the sequence never goes back");
    let mut want = alerts(1..=4);
    want.push(It::G(5, 5, GapReason::Lost));
    want.extend(alerts(6..=10));
    assert_eq!(read_all(&j, 1), want);
    // The damaged file is kept as found, and the segment holds the intact records.
    let q = quarantined(dir.path());
    assert_eq!(q.len(), 1, "{q:?}");
    let copy = std::fs::read(&q[0]).unwrap();
    assert_eq!(copy.len(), before.len());
    assert_ne!(copy, before, "the copy is the damaged file");
    // Appending goes on after the rewrite, and a reopen reads the same.
    append_range(&j, 11..=12);
    drop(j);
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 13);
    want.extend(alerts(11..=12));
    assert_eq!(read_all(&j, 1), want);
    assert_eq!(
        quarantined(dir.path()).len(),
        1,
        "nothing new to quarantine"
    );
}

#[test]
fn a_damaged_length_is_resynchronised_past() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=10);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    // The length's high byte: the frame now claims to run past the end of the file,
    // which looks like a torn tail until the intact records after it are found.
    flip_byte(&seg, offset_of(&seg, 3) + 3);
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 11);
    let mut want = alerts(1..=2);
    want.push(It::G(3, 3, GapReason::Lost));
    want.extend(alerts(4..=10));
    assert_eq!(read_all(&j, 1), want);
}

#[test]
fn a_bad_checksum_in_an_older_segment_becomes_a_gap_and_later_segments_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
        append_range(&j, 1..=60);
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let victim = &files[1];
    let first: u64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bad = first + 1;
    flip_byte(victim, offset_of(victim, bad) + 3);
    let (j, next) = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(next, 61);
    let mut want = alerts(1..=first);
    want.push(It::G(bad, bad, GapReason::Lost));
    want.extend(alerts(bad + 1..=60));
    assert_eq!(read_all(&j, 1), want);
    // Resuming inside the lost range starts with the gap, then goes on.
    let got = read_all(&j, bad);
    assert_eq!(got[0], It::G(bad, bad, GapReason::Lost));
    assert_eq!(got[1], It::A(bad + 1));
}

#[test]
fn damage_found_while_reading_is_skipped_too() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), limits()).unwrap();
    append_range(&j, 1..=10);
    let seg = segment_files(dir.path()).pop().unwrap();
    flip_byte(&seg, offset_of(&seg, 4) + 16 + 5);
    let mut want = alerts(1..=3);
    want.push(It::G(4, 4, GapReason::Lost));
    want.extend(alerts(5..=10));
    assert_eq!(read_all(&j, 1), want);
}

#[test]
fn a_segment_with_a_bad_header_is_dropped_unless_it_is_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
        append_range(&j, 1..=30);
    }
    let files = segment_files(dir.path());
    std::fs::write(&files[0], b"not a journal").unwrap();
    let second_first: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let newest = files.last().unwrap();
    let newest_first: u64 = newest
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(newest, b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX").unwrap();
    let (j, next) = Journal::open(dir.path(), small_segments()).unwrap();
    assert!(!files[0].exists());
    assert!(newest.exists(), "the newest segment is kept (empty)");
    assert_eq!(quarantined(dir.path()).len(), 2);
    // The high-water mark keeps the sequence: what the newest held is a gap, never reused.
    assert_eq!(next, 31);
    let got = read_all(&j, 1);
    assert_eq!(
        got[0],
        It::G(1, second_first - 1, GapReason::Retention),
        "{got:?}"
    );
    assert_eq!(
        *got.last().unwrap(),
        It::G(newest_first, 30, GapReason::Lost)
    );
    append_range(&j, 31..=33);
    assert_eq!(read_all(&j, 31), alerts(31..=33));
}

#[test]
fn a_flipped_header_byte_keeps_the_records_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=5);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    flip_byte(&seg, 2);
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 6);
    assert_eq!(read_all(&j, 1), alerts(1..=5));
    assert_eq!(&std::fs::read(&seg).unwrap()[..8], MAGIC);
}

#[test]
fn journal_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), limits()).unwrap();
        append_range(&j, 1..=3);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&seg), 0o600);
    assert_eq!(mode(&dir.path().join(HIGH_WATER_FILE)), 0o600);
    // An older daemon's 0644 segment is made private at open.
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(mode(&seg), 0o600);
}

#[test]
fn retention_by_size_drops_whole_old_segments_and_readers_get_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let lim = JournalLimits {
        max_bytes: 8 * 1024,
        ..small_segments()
    };
    let (j, _) = Journal::open(dir.path(), lim.clone()).unwrap();
    append_range(&j, 1..=200);
    let s = j.stats();
    assert!(s.bytes <= 8 * 1024 + 2048, "{s:?}");
    assert!(s.first_seq > 1 && s.last_seq == 200, "{s:?}");
    let got = read_all(&j, 1);
    assert_eq!(got[0], It::G(1, s.first_seq - 1, GapReason::Retention));
    assert_eq!(got[1..], alerts(s.first_seq..=200)[..]);
    // A reader already past the retention point sees no gap.
    assert_eq!(read_all(&j, s.first_seq + 1), alerts(s.first_seq + 1..=200));
    // Reopening applies the same bound and keeps the sequence.
    drop(j);
    let (j, next) = Journal::open(dir.path(), lim).unwrap();
    assert_eq!(next, 201);
    assert_eq!(j.stats().first_seq, s.first_seq);
}

#[test]
fn retention_by_age_keeps_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
        append_range(&j, 1..=40);
    }
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    for f in segment_files(dir.path()) {
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let lim = JournalLimits {
        max_age: Duration::from_secs(3600),
        ..small_segments()
    };
    let (j, next) = Journal::open(dir.path(), lim).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the newest is kept"
    );
    assert_eq!(next, 41, "the sequence survives");
    let s = j.stats();
    assert_eq!(s.last_seq, 40);
    let got = read_all(&j, 1);
    assert_eq!(got[0], It::G(1, s.first_seq - 1, GapReason::Retention));
}

#[test]
fn skipped_sequence_numbers_are_gaps_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), limits()).unwrap();
    // 3 and 4 were published but their appends failed (e.g. a full disk).
    append_range(&j, [1, 2, 5, 6]);
    assert_eq!(
        read_all(&j, 1),
        vec![
            It::A(1),
            It::A(2),
            It::G(3, 4, GapReason::Lost),
            It::A(5),
            It::A(6)
        ]
    );
}

#[test]
fn a_failed_append_still_publishes_live_and_leaves_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), limits()).unwrap();
    append_range(&j, 1..=2);
    let (mut rx, from) = j.subscribe();
    assert_eq!(from, 3);
    let mut huge = alert(3);
    huge.summary = "x".repeat(MAX_RECORD_BYTES + 1);
    assert!(matches!(
        j.append(&huge).unwrap_err(),
        JournalError::TooLarge { seq: 3, .. }
    ));
    append_range(&j, 4..=4);
    assert_eq!(rx.try_recv().unwrap().seq, 3);
    assert_eq!(rx.try_recv().unwrap().seq, 4);
    assert_eq!(
        read_all(&j, 1),
        vec![It::A(1), It::A(2), It::G(3, 3, GapReason::Lost), It::A(4)]
    );
}

#[test]
fn a_sequential_reader_interleaved_with_appends_sees_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
    let mut r = JournalReader::new(1);
    let mut seen = Vec::new();
    for round in 0..20u64 {
        append_range(&j, round * 5 + 1..=round * 5 + 5);
        for e in j.read(&mut r, 3) {
            match e {
                Entry::Alert(a) => seen.push(a.seq),
                g => panic!("{g:?}"),
            }
        }
    }
    loop {
        let batch = j.read(&mut r, 64);
        if batch.is_empty() {
            break;
        }
        for e in batch {
            if let Entry::Alert(a) = e {
                seen.push(a.seq);
            }
        }
    }
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    assert_eq!(r.next_seq(), 101);
}

#[test]
fn scan_back_lists_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small_segments()).unwrap();
    append_range(&j, 1..=50);
    let mut pages = Vec::new();
    let mut before = u64::MAX;
    loop {
        let mut page = Vec::new();
        let r = j.scan_back(before, 10_000, |a| {
            page.push(a.seq);
            page.len() < 7
        });
        pages.push(page);
        match r {
            ScanBack::More { before: b } => before = b,
            ScanBack::Done => break,
        }
    }
    let all: Vec<u64> = pages.concat();
    assert_eq!(all, (1..=50).rev().collect::<Vec<_>>());
    assert!(pages[0].len() == 7);
    // A scan budget stops early with a position to continue from, without duplicates.
    let mut seen = Vec::new();
    let r = j.scan_back(u64::MAX, 1, |a| {
        seen.push(a.seq);
        true
    });
    let ScanBack::More { before } = r else {
        panic!("{r:?}")
    };
    assert_eq!(*seen.last().unwrap(), before);
    assert_eq!(seen[0], 50);
}

#[test]
fn a_disabled_journal_streams_live_and_reports_everything_older_as_a_gap() {
    let j = Journal::disabled(1, 16);
    let (mut rx, _) = j.subscribe();
    append_range(&j, 1..=3);
    assert_eq!(rx.try_recv().unwrap().seq, 1);
    assert_eq!(read_all(&j, 1), vec![It::G(1, 3, GapReason::Disabled)]);
    assert!(!j.stats().enabled);
}

#[test]
fn the_live_queue_is_bounded_and_an_overflowing_receiver_learns_how_much_it_missed() {
    let j = Journal::disabled(1, 4);
    let (mut rx, _) = j.subscribe();
    append_range(&j, 1..=10);
    match rx.try_recv() {
        Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 6),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap().seq, 7);
}

#[tokio::test]
async fn the_stage_seeded_from_the_journal_continues_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, next) = Journal::open(dir.path(), limits()).unwrap();
        let mut stage = AlertStage::new("n", next, vec![Box::new(JournalSink::new(j.clone()))]);
        for _ in 0..3 {
            let a = stage.stamp(crate::fixtures::draft(AlertKind::ExecModified));
            stage.publish(&a);
        }
    }
    let (j, next) = Journal::open(dir.path(), limits()).unwrap();
    assert_eq!(next, 4);
    assert_eq!(read_all(&j, 1), alerts(1..=3));
}

#[test]
fn batched_fsync_runs_and_close_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let lim = JournalLimits {
        fsync: FsyncPolicy::Batched(Duration::from_millis(5)),
        ..limits()
    };
    let (j, _) = Journal::open(dir.path(), lim).unwrap();
    append_range(&j, 1..=3);
    std::thread::sleep(Duration::from_millis(30));
    assert!(!j.sync.dirty.load(Ordering::Acquire), "the sync thread ran");
    j.close().unwrap();
    assert!(j.sync_thread.lock().unwrap().is_none());
    append_range(&j, 4..=4);
    assert_eq!(read_all(&j, 1), alerts(1..=4));
}

/// The same history, read from the in-memory tail and from the files, gives the same
/// entries: alerts, a failed append as a gap, retention as a gap.
#[test]
fn the_memory_tail_reads_exactly_like_the_disk() {
    let history = |recent_alerts: usize| {
        let dir = tempfile::tempdir().unwrap();
        let lim = JournalLimits {
            max_bytes: 8 * 1024,
            recent_alerts,
            ..small_segments()
        };
        let (j, _) = Journal::open(dir.path(), lim).unwrap();
        append_range(&j, 1..=150);
        let mut huge = alert(151);
        huge.summary = "x".repeat(MAX_RECORD_BYTES + 1);
        assert!(j.append(&huge).is_err());
        append_range(&j, 152..=160);
        (read_all(&j, 1), read_all(&j, 140), j.stats().first_seq)
    };
    let disk = history(0);
    let memory = history(64);
    assert_eq!(memory, disk);
    let (from_start, from_140, first) = disk;
    assert_eq!(from_start[0], It::G(1, first - 1, GapReason::Retention));
    assert!(from_140.contains(&It::G(151, 151, GapReason::Lost)));
    assert_eq!(*from_140.last().unwrap(), It::A(160));
}

#[test]
fn the_memory_tail_is_bounded_and_falls_back_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lim = JournalLimits {
        recent_alerts: 10,
        ..small_segments()
    };
    let (j, _) = Journal::open(dir.path(), lim).unwrap();
    append_range(&j, 1..=100);
    assert_eq!(j.lock().recent.len(), 10);
    assert_eq!(j.lock().recent.front().unwrap().seq, 91);
    // From before the tail: the files; within it: memory; both complete and in order.
    assert_eq!(read_all(&j, 50), alerts(50..=100));
    assert_eq!(read_all(&j, 95), alerts(95..=100));
}

/// What the VM test saw after two restarts: a reader that waits at the end of a reopened
/// journal gets each later alert once, with no read error.
#[test]
fn a_reader_waiting_at_the_end_of_a_reopened_journal_gets_the_next_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let fsynced = || JournalLimits {
        fsync: FsyncPolicy::Batched(std::time::Duration::from_millis(100)),
        ..JournalLimits::default()
    };
    {
        let (j, _) = Journal::open(dir.path(), fsynced()).unwrap();
        append_range(&j, 1..=1);
        j.close().unwrap();
    }
    for _ in 0..2 {
        let (j, next) = Journal::open(dir.path(), fsynced()).unwrap();
        assert_eq!(next, 2);
        j.close().unwrap();
    }
    let (j, _) = Journal::open(dir.path(), fsynced()).unwrap();
    let mut r = JournalReader::new(2);
    assert!(j.read(&mut r, 10).is_empty());
    for seq in 2..=4 {
        j.append(&alert(seq)).unwrap();
        assert_eq!(
            alert_seqs(j.read(&mut r, 10)),
            vec![seq],
            "after append {seq}"
        );
    }
}

/// Reading a segment file up to its committed end is the normal end of a read, not damage:
/// the reader keeps its place (before, it logged "record crosses the committed end" and
/// dropped its file, seen after every daemon restart in the VM test).
#[test]
fn reading_to_the_committed_end_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), limits()).unwrap();
    append_range(&j, 1..=3);
    let mut r = JournalReader::new(1);
    assert_eq!(alert_seqs(j.read(&mut r, 100)), vec![1, 2, 3]);
    assert!(
        r.open.is_some(),
        "the reader lost its place at the end of the segment"
    );
    append_range(&j, 4..=4);
    assert_eq!(j.read(&mut r, 100).len(), 1);
    assert!(r.open.is_some());
}

/// The seqs of a batch that must hold alerts only.
fn alert_seqs(batch: Vec<Entry>) -> Vec<u64> {
    batch
        .into_iter()
        .map(|e| match e {
            Entry::Alert(a) => a.seq,
            Entry::Gap { first_seq, .. } => panic!("a gap at {first_seq}"),
        })
        .collect()
}
