//! Recovering a segment at open: intact records are kept whatever else is damaged, a
//! damaged file is copied into quarantine before it is rewritten, and a torn tail (a crash
//! mid-write) is cut in place.
//!
//! Owns the decisions about damage found at open; the frame format and the scanning
//! window are `segment`'s, and a reader meeting damage later resyncs there.

use super::segment::{Scanned, Segment, Window, MAGIC};
use super::{io, JournalError};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::warn;

/// What recovery found wrong in a segment.
#[derive(Default)]
struct Damage {
    /// Byte ranges that held no valid record, with why.
    bad: Vec<(u64, u64, String)>,
    /// The file ends inside a record (a write cut by a crash): the only damage that is
    /// simply cut, not quarantined.
    torn_at: Option<u64>,
    header: bool,
}

impl Damage {
    fn is_none(&self) -> bool {
        self.bad.is_empty() && self.torn_at.is_none() && !self.header
    }
}

/// Scans a segment at open. Intact records are never destroyed: a record that fails its
/// checksum (or a damaged header) is skipped, and scanning starts again at the next whole
/// record. A damaged segment is copied into `quarantine` as it was and rewritten with its
/// intact records only; a torn record at the very end (a crash mid-write) is cut in
/// place. Returns `None` when nothing valid was left in a segment that is not the newest
/// (the file is then removed, its copy kept in quarantine).
pub(super) fn recover_segment(
    path: &Path,
    first_seq: u64,
    after_seq: u64,
    newest: bool,
    quarantine: &Path,
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
    let mut damage = Damage::default();
    let mut magic = [0u8; 8];
    damage.header = !(file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC);
    // Intact frames: (offset, length).
    let mut good: Vec<(u64, usize)> = Vec::new();
    let mut window = Window::new(&file, size);
    let mut last = after_seq.max(first_seq.saturating_sub(1));
    let mut offset = MAGIC.len() as u64;
    if damage.header {
        match window.resync(0, last).map_err(io(path))? {
            Some(at) => {
                damage
                    .bad
                    .push((0, at, "missing or unknown segment header".into()));
                offset = at;
            }
            None => {
                damage
                    .bad
                    .push((0, size, "missing or unknown segment header".into()));
                offset = size;
            }
        }
    }
    loop {
        let why = match window.frame(offset).map_err(io(path))? {
            Scanned::End => break,
            Scanned::Record { seq, len } if seq > last => {
                good.push((offset, len));
                last = seq;
                offset += len as u64;
                continue;
            }
            Scanned::Record { seq, .. } => format!("seq {seq} does not follow {last}"),
            Scanned::Torn => "torn record at the end".to_string(),
            Scanned::Corrupt(why) => why,
        };
        match window.resync(offset + 1, last).map_err(io(path))? {
            Some(at) => {
                damage.bad.push((offset, at, why));
                offset = at;
            }
            None if why == "torn record at the end" => {
                damage.torn_at = Some(offset);
                break;
            }
            None => {
                damage.bad.push((offset, size, why));
                break;
            }
        }
    }
    drop(window);
    if !damage.is_none() {
        let lost_bytes: u64 = damage.bad.iter().map(|(a, b, _)| b - a).sum::<u64>()
            + damage.torn_at.map_or(0, |t| size - t);
        if damage.bad.is_empty() && !damage.header {
            // Only a torn tail: what a crash mid-write leaves. Cut it.
            let cut = damage
                .torn_at
                .expect("damage without bad ranges is a torn tail");
            warn!(segment = %path.display(), offset = cut, bytes_cut = size - cut,
                last_valid_seq = last,
                "alert journal: cut a torn record at the end (a write cut short by a crash)");
            file.set_len(cut).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        } else {
            let copy = quarantine_copy(path, quarantine)?;
            for (from, to, why) in &damage.bad {
                warn!(segment = %path.display(), from, to, problem = %why,
                    quarantined = %copy.display(),
                    "alert journal: skipped damaged bytes; the intact records after them are kept");
            }
            if good.is_empty() && !newest {
                std::fs::remove_file(path).map_err(io(path))?;
                warn!(segment = %path.display(), quarantined = %copy.display(), bytes = lost_bytes,
                    "alert journal: no intact record left in a segment; removed (its copy is kept)");
                return Ok(None);
            }
            rewrite(path, &file, &good)?;
        }
    }
    // The intact records now lie one after another behind the header.
    let file = File::open(path).map_err(io(path))?;
    let mut at = MAGIC.len() as u64;
    for (_, len) in &good {
        index_record(&mut seg, &file, at, path)?;
        at += *len as u64;
    }
    seg.len = at;
    Ok(Some(seg))
}

/// Adds the record at `offset` (known intact) to the segment's index.
fn index_record(
    seg: &mut Segment,
    file: &File,
    offset: u64,
    path: &Path,
) -> Result<(), JournalError> {
    let mut seq = [0u8; 8];
    file.read_exact_at(&mut seq, offset + 8).map_err(io(path))?;
    let seq = u64::from_le_bytes(seq);
    seg.index(seq, offset);
    seg.last_seq = Some(seq);
    Ok(())
}

/// Copies a damaged segment, as found, into the quarantine directory (mode 0600).
fn quarantine_copy(path: &Path, quarantine: &Path) -> Result<PathBuf, JournalError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(quarantine)
        .map_err(io(quarantine))?;
    let stamp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut copy = quarantine.join(format!("{name}.{stamp}"));
    let mut n = 1;
    while copy.exists() {
        copy = quarantine.join(format!("{name}.{stamp}.{n}"));
        n += 1;
    }
    std::fs::copy(path, &copy).map_err(io(&copy))?;
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io(&copy))?;
    Ok(copy)
}

/// Replaces a segment with its header and the intact frames `good` of `from`, atomically
/// (a crash during recovery leaves the damaged file, recovered again at the next start).
fn rewrite(path: &Path, from: &File, good: &[(u64, usize)]) -> Result<(), JournalError> {
    let tmp = path.with_extension("seg.rewrite");
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    use std::io::Write;
    out.write_all(MAGIC).map_err(io(&tmp))?;
    let mut buf = Vec::new();
    for &(offset, len) in good {
        buf.resize(len, 0);
        from.read_exact_at(&mut buf, offset).map_err(io(path))?;
        out.write_all(&buf).map_err(io(&tmp))?;
    }
    out.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}
