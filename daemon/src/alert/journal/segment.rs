//! One segment file: its format (header, framed records), the scan that recovers it at
//! open, and reading records out of it by sequence number.
//!
//! Owns the bytes on disk. Pure functions of a file and offsets: what is committed, and
//! which segment to read, is the journal's business.

use super::{io, Alert, Entry, GapReason, JournalError, JournalReader, OpenSegment};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::warn;

/// First bytes of every segment; the digits are the format version.
pub const MAGIC: &[u8; 8] = b"LGJRNL01";
pub(super) const FRAME_HEADER: usize = 16;
/// An alert's JSON is a few hundred bytes; argv is bounded by the sensor. Anything larger
/// in a frame header is corruption, not an alert.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Distance between sparse index entries: a lookup reads at most this much extra.
pub const SPARSE_EVERY_BYTES: u64 = 64 * 1024;
/// Bytes read per `pread` when scanning records.
const READ_CHUNK: usize = 256 * 1024;
pub(super) const SEGMENT_SUFFIX: &str = ".seg";

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    /// Bytes of complete records (and the header): readers never look past it.
    pub(super) len: u64,
    pub(super) last_seq: Option<u64>,
    /// (seq, offset) of a record every [`SPARSE_EVERY_BYTES`]; the first record always.
    pub(super) sparse: Vec<(u64, u64)>,
    pub(super) last_write: SystemTime,
}

impl Segment {
    pub(super) fn file_name(first_seq: u64) -> String {
        format!("{first_seq:020}{SEGMENT_SUFFIX}")
    }

    /// Where to start scanning for `seq`: the last indexed record at or before it.
    pub(super) fn offset_for(&self, seq: u64) -> u64 {
        let i = self.sparse.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            MAGIC.len() as u64
        } else {
            self.sparse[i - 1].1
        }
    }

    pub(super) fn index(&mut self, seq: u64, offset: u64) {
        let due = self
            .sparse
            .last()
            .is_none_or(|&(_, o)| offset - o >= SPARSE_EVERY_BYTES);
        if due {
            self.sparse.push((seq, offset));
        }
    }
}

/// The frame of one alert.
pub(super) fn encode(alert: &Alert) -> Result<Vec<u8>, JournalError> {
    let payload = serde_json::to_vec(alert).map_err(|source| JournalError::Encode {
        seq: alert.seq,
        source,
    })?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err(JournalError::TooLarge {
            seq: alert.seq,
            size: payload.len(),
        });
    }
    let seq = alert.seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq);
    crc.update(&payload);
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc.finalize().to_le_bytes());
    frame.extend_from_slice(&seq);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// A frame parsed from a buffer.
pub(super) enum Frame<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// The buffer ends inside the frame (read more, or it is a torn tail).
    Incomplete {
        need: usize,
    },
    Corrupt(String),
}

pub(super) fn parse_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER {
        return Frame::Incomplete { need: FRAME_HEADER };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD_BYTES {
        return Frame::Corrupt(format!("record length {len} out of range"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Frame::Incomplete {
            need: FRAME_HEADER + len,
        };
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[8..FRAME_HEADER + len]);
    if h.finalize() != crc {
        return Frame::Corrupt("checksum mismatch".into());
    }
    Frame::Record {
        seq: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        payload: &buf[FRAME_HEADER..FRAME_HEADER + len],
        len: FRAME_HEADER + len,
    }
}

/// Scans a segment at open and cuts whatever follows its last valid record. Returns
/// `None` when the file was removed (nothing valid in it, and not the newest).
pub(super) fn recover_segment(
    path: &Path,
    first_seq: u64,
    after_seq: u64,
    newest: bool,
) -> Result<Option<Segment>, JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    let size = meta.len();
    let last_write = meta.modified().unwrap_or_else(|_| SystemTime::now());
    let mut seg = Segment {
        first_seq,
        path: path.to_path_buf(),
        len: MAGIC.len() as u64,
        last_seq: None,
        sparse: Vec::new(),
        last_write,
    };
    let mut magic = [0u8; 8];
    let header_ok = file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC;
    let mut problem: Option<String> = None;
    if !header_ok {
        problem = Some("missing or unknown segment header".into());
    } else {
        let mut last = after_seq.max(first_seq.saturating_sub(1));
        let mut offset = MAGIC.len() as u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = offset;
        'scan: loop {
            let consumed = (offset - buf_start) as usize;
            let pending = &buf[consumed..];
            match parse_frame(pending) {
                Frame::Record { seq, len, .. } => {
                    if seq <= last {
                        problem = Some(format!("seq {seq} does not follow {last}"));
                        break 'scan;
                    }
                    seg.index(seq, offset);
                    seg.last_seq = Some(seq);
                    last = seq;
                    offset += len as u64;
                }
                Frame::Incomplete { need } => {
                    if offset + need as u64 > size {
                        if offset < size {
                            problem = Some("torn record at the end".into());
                        }
                        break 'scan;
                    }
                    let want = need.max(READ_CHUNK).min((size - offset) as usize);
                    buf.resize(want, 0);
                    if let Err(e) = file.read_exact_at(&mut buf, offset) {
                        problem = Some(format!("read error: {e}"));
                        break 'scan;
                    }
                    buf_start = offset;
                }
                Frame::Corrupt(why) => {
                    problem = Some(why);
                    break 'scan;
                }
            }
        }
        seg.len = offset;
    }
    if let Some(why) = problem {
        let cut = size.saturating_sub(seg.len);
        warn!(segment = %path.display(), offset = seg.len, bytes_cut = cut, problem = %why,
            last_valid_seq = seg.last_seq.unwrap_or(0),
            "alert journal: cut a torn or corrupt tail (alerts in it are reported to readers as lost)");
        if seg.last_seq.is_none() && !newest {
            std::fs::remove_file(path).map_err(io(path))?;
            return Ok(None);
        }
        if header_ok {
            file.set_len(seg.len).map_err(io(path))?;
        } else {
            file.set_len(0).map_err(io(path))?;
            file.write_all_at(MAGIC, 0).map_err(io(path))?;
        }
        file.sync_all().map_err(io(path))?;
    }
    Ok(Some(seg))
}

pub(super) struct Snapshot {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    pub(super) committed: u64,
    pub(super) start: u64,
    /// The first seq of the next segment, or the read's end: nothing at or past it is
    /// read from this segment, and anything missing before it is a gap.
    pub(super) next_first: u64,
}

pub(super) enum SegmentEnd {
    /// `max` entries were produced.
    Budget,
    /// Every committed record of the segment was read.
    Committed,
    /// A record at or past `next_first` (the read's limit) was reached; not consumed.
    Limit,
    /// The file was deleted (retention) before it could be opened.
    Vanished,
}

pub(super) struct ReadProblem {
    pub(super) offset: u64,
    pub(super) reason: String,
}

pub(super) fn read_segment(
    reader: &mut JournalReader,
    snap: &Snapshot,
    max: usize,
    out: &mut Vec<Entry>,
) -> Result<SegmentEnd, ReadProblem> {
    let reposition = !matches!(&reader.open,
        Some(o) if o.first_seq == snap.first_seq && o.at_seq == reader.next_seq);
    if reposition {
        let file = match File::open(&snap.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SegmentEnd::Vanished),
            Err(e) => {
                return Err(ReadProblem {
                    offset: 0,
                    reason: e.to_string(),
                })
            }
        };
        reader.open = Some(OpenSegment {
            first_seq: snap.first_seq,
            file,
            offset: snap.start,
            at_seq: reader.next_seq,
        });
    }
    let open = reader.open.as_mut().expect("opened above");
    let mut produced = 0usize;
    let mut buf: Vec<u8> = Vec::new();
    while open.offset < snap.committed {
        let want = ((snap.committed - open.offset) as usize).min(READ_CHUNK);
        buf.resize(want, 0);
        open.file
            .read_exact_at(&mut buf, open.offset)
            .map_err(|e| ReadProblem {
                offset: open.offset,
                reason: e.to_string(),
            })?;
        let mut pos = 0usize;
        loop {
            match parse_frame(&buf[pos..]) {
                Frame::Record { seq, payload, len } => {
                    if seq >= snap.next_first {
                        // Past what this read may cover (the caller's limit).
                        return Ok(SegmentEnd::Limit);
                    }
                    if seq >= reader.next_seq {
                        if seq > reader.next_seq {
                            out.push(Entry::Gap {
                                first_seq: reader.next_seq,
                                last_seq: seq - 1,
                                reason: GapReason::Lost,
                            });
                            produced += 1;
                        }
                        match serde_json::from_slice::<Alert>(payload) {
                            Ok(alert) => out.push(Entry::Alert(std::sync::Arc::new(alert))),
                            Err(e) => {
                                warn!(seq, error = %e, "alert journal record does not decode; reported as lost");
                                out.push(Entry::Gap {
                                    first_seq: seq,
                                    last_seq: seq,
                                    reason: GapReason::Lost,
                                });
                            }
                        }
                        produced += 1;
                        reader.next_seq = seq + 1;
                    }
                    pos += len;
                    open.offset += len as u64;
                    open.at_seq = reader.next_seq;
                    if produced >= max {
                        return Ok(SegmentEnd::Budget);
                    }
                }
                Frame::Incomplete { need } => {
                    if open.offset + need as u64 > snap.committed {
                        return Err(ReadProblem {
                            offset: open.offset,
                            reason: "record crosses the committed end".into(),
                        });
                    }
                    // Read the rest of this frame with the next chunk.
                    if pos == 0 && need > buf.len() {
                        buf.resize(need, 0);
                        open.file
                            .read_exact_at(&mut buf, open.offset)
                            .map_err(|e| ReadProblem {
                                offset: open.offset,
                                reason: e.to_string(),
                            })?;
                        continue;
                    }
                    break;
                }
                Frame::Corrupt(reason) => {
                    return Err(ReadProblem {
                        offset: open.offset,
                        reason,
                    })
                }
            }
        }
    }
    Ok(SegmentEnd::Committed)
}

/// Decodes every record in `[start, end)` of a segment.
pub(super) fn read_block(path: &Path, start: u64, end: u64) -> std::io::Result<Vec<Alert>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    file.read_exact_at(&mut buf, start)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while let Frame::Record { payload, len, .. } = parse_frame(&buf[pos..]) {
        if let Ok(a) = serde_json::from_slice::<Alert>(payload) {
            out.push(a);
        }
        pos += len;
    }
    Ok(out)
}
