//! One segment file: its format (header, framed records), the window that scans frames,
//! and reading records out of it by sequence number. Recovering a damaged segment at open
//! is `recover`'s.
//!
//! Owns the bytes on disk. Pure functions of a file and offsets: what is committed, and
//! which segment to read, is the journal's business.

use super::{Alert, Entry, GapReason, JournalError, JournalReader, OpenSegment};
use std::fs::File;
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

/// A sliding read window over a file, for scans that look at one frame at a time.
pub(super) struct Window<'f> {
    file: &'f File,
    size: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Window<'f> {
    pub(super) fn new(file: &'f File, size: u64) -> Self {
        Self {
            file,
            size,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// `len` bytes at `offset`, or `None` past the end of the file.
    fn bytes(&mut self, offset: u64, len: usize) -> std::io::Result<Option<&[u8]>> {
        if offset + len as u64 > self.size {
            return Ok(None);
        }
        let inside =
            offset >= self.start && offset + len as u64 <= self.start + self.buf.len() as u64;
        if !inside {
            let want = len.max(READ_CHUNK).min((self.size - offset) as usize);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// The frame at `offset`.
    pub(super) fn frame(&mut self, offset: u64) -> std::io::Result<Scanned> {
        let Some(header) = self.bytes(offset, FRAME_HEADER)? else {
            return Ok(if offset < self.size {
                Scanned::Torn
            } else {
                Scanned::End
            });
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_RECORD_BYTES {
            return Ok(Scanned::Corrupt(format!(
                "record length {len} out of range"
            )));
        }
        let Some(whole) = self.bytes(offset, FRAME_HEADER + len)? else {
            return Ok(Scanned::Torn);
        };
        Ok(match parse_frame(whole) {
            Frame::Record { seq, len, .. } => Scanned::Record { seq, len },
            Frame::Corrupt(why) => Scanned::Corrupt(why),
            Frame::Incomplete { .. } => Scanned::Torn,
        })
    }

    /// The offset of the first whole, checksummed frame after `from` whose seq follows
    /// `after_seq`, if any: where the records after a damaged one start again. A frame
    /// header is 16 bytes of length, CRC and seq, so a false match needs a 32-bit checksum
    /// to agree by chance.
    pub(super) fn resync(&mut self, from: u64, after_seq: u64) -> std::io::Result<Option<u64>> {
        let mut at = from;
        while at + FRAME_HEADER as u64 <= self.size {
            let Some(header) = self.bytes(at, FRAME_HEADER)? else {
                return Ok(None);
            };
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
            let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let plausible = len > 0
                && len <= MAX_RECORD_BYTES as u64
                && at + FRAME_HEADER as u64 + len <= self.size
                && seq > after_seq;
            if plausible {
                if let Scanned::Record { .. } = self.frame(at)? {
                    return Ok(Some(at));
                }
            }
            at += 1;
        }
        Ok(None)
    }
}

/// What a scan finds at an offset.
pub(super) enum Scanned {
    Record {
        seq: u64,
        len: usize,
    },
    /// The file ends inside a frame.
    Torn,
    Corrupt(String),
    End,
}

/// The offset of the next intact frame after a damaged one at `from` in the committed
/// part of a segment, for a reader that meets damage done since the journal was opened.
pub(super) fn resync_reader(
    file: &File,
    from: u64,
    committed: u64,
    after_seq: u64,
) -> std::io::Result<Option<u64>> {
    Window::new(file, committed).resync(from + 1, after_seq)
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
            // The chunk is used up: read the next one, or stop at the committed end. (Parsing
            // the empty rest gave `Incomplete`, which at the end read as a frame crossing
            // it: a false "unreadable" error and a reposition after every read to the end.)
            if pos == buf.len() {
                break;
            }
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
                    // Damaged since the journal was opened: go on at the next intact
                    // record (the seqs in between become a gap), else give up here.
                    let after = reader.next_seq.saturating_sub(1);
                    match resync_reader(&open.file, open.offset, snap.committed, after) {
                        Ok(Some(at)) => {
                            warn!(segment = %snap.path.display(), offset = open.offset,
                                problem = %reason, resumed_at = at,
                                "alert journal record damaged; readers skip it");
                            open.offset = at;
                            break;
                        }
                        _ => {
                            return Err(ReadProblem {
                                offset: open.offset,
                                reason,
                            })
                        }
                    }
                }
            }
        }
    }
    Ok(SegmentEnd::Committed)
}

/// Decodes every record in `[start, end)` of a segment, skipping damaged ones.
pub(super) fn read_block(path: &Path, start: u64, end: u64) -> std::io::Result<Vec<Alert>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    file.read_exact_at(&mut buf, start)?;
    let mut out = Vec::new();
    let mut pos = 0;
    let mut last = 0u64;
    while pos < buf.len() {
        match parse_frame(&buf[pos..]) {
            Frame::Record { payload, len, seq } => {
                if let Ok(a) = serde_json::from_slice::<Alert>(payload) {
                    out.push(a);
                }
                last = seq;
                pos += len;
            }
            _ => {
                let from = start + pos as u64;
                match resync_reader(&file, from, end, last)? {
                    Some(at) => pos = (at - start) as usize,
                    None => break,
                }
            }
        }
    }
    Ok(out)
}
