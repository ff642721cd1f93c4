//! Reading the files the analyzer judges, on the blocking pool: waiting for a writer to
//! finish, hashing, telling code from data, and finding a process's mapping of an inode.
//!
//! Owns the I/O and nothing else; what the results mean is `judge`'s. Every function
//! here is bounded: sizes by `verify.max_file_bytes`, waits by `files.max_wait_ms`.

use crate::image::digest::Digest;
use crate::procfs::{self, MapsLine};
use crate::verify::hash::{digest_of, HashError};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// A file's content as far as a verdict needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// `None` when the file is over the limit.
    pub digest: Option<Digest>,
    pub elf: bool,
    pub size: u64,
    pub ino: u64,
    /// Still changing when `max_wait` ran out: hashed as it was then.
    pub still_changing: bool,
}

/// What says a file changed: size, mtime and inode.
pub type Fingerprint = (u64, i64, i64, u64);

fn fingerprint(m: &std::fs::Metadata) -> Fingerprint {
    (m.size(), m.mtime(), m.mtime_nsec(), m.ino())
}

/// The fingerprint of `path`, not following a symlink (`lstat` is cheap and cannot block
/// on a layer directory: it is the host's own filesystem).
pub fn fingerprint_of(path: &Path) -> io::Result<Fingerprint> {
    Ok(fingerprint(&std::fs::symlink_metadata(path)?))
}

/// Waits, on the runtime (not on a blocking thread: those are SCHED_BATCH and wake late),
/// until `path` has kept its fingerprint for `settle` (the writer is done), at most
/// `max_wait`. Returns the fingerprint, and true when it was still changing then.
pub async fn settle(
    path: &Path,
    settle: Duration,
    max_wait: Duration,
) -> io::Result<(Fingerprint, bool)> {
    let started = Instant::now();
    let mut last = fingerprint_of(path)?;
    loop {
        tokio::time::sleep(settle).await;
        let now = fingerprint_of(path)?;
        if now == last {
            return Ok((now, false));
        }
        last = now;
        if started.elapsed() >= max_wait {
            return Ok((now, true));
        }
    }
}

/// The content of `rel` beneath `dir` (see [`content`]), and whether the file's
/// fingerprint moved from `seen` by the time it was read: then the digest may mix versions.
pub fn content_since(
    dir: &Path,
    rel: &str,
    limit: u64,
    seen: Fingerprint,
) -> io::Result<(Content, bool)> {
    let c = content(open_in_layer(dir, rel)?, limit, false)?;
    let moved = fingerprint_of(&dir.join(rel.trim_start_matches('/')))? != seen;
    Ok((c, moved))
}

/// Opens the regular file `rel` beneath the layer directory `dir`, following no symlink
/// and running no FIFO's or device's open (a container may swap the path for one between
/// the event and the read).
pub fn open_in_layer(dir: &Path, rel: &str) -> io::Result<File> {
    use crate::verify::verdict::Unreadable;
    match crate::verify::target::open_regular_beneath(dir, rel) {
        Ok(opened) => Ok(opened.file),
        Err(Unreadable::Missing(m)) => Err(io::Error::new(io::ErrorKind::NotFound, m)),
        Err(other) => Err(io::Error::other(other.to_string())),
    }
}

/// The content of `f`: whether it is ELF, and its digest (with `code_only`, files that are
/// not ELF are not hashed at all: a mapped data file says nothing). Hashed by verify's
/// [`digest_of`], within `limit`.
pub fn content(mut f: File, limit: u64, code_only: bool) -> io::Result<Content> {
    let meta = f.metadata()?;
    let mut out = Content {
        size: meta.size(),
        ino: meta.ino(),
        ..Content::default()
    };
    let mut magic = Vec::with_capacity(ELF_MAGIC.len());
    (&mut f)
        .take(ELF_MAGIC.len() as u64)
        .read_to_end(&mut magic)?;
    out.elf = magic == ELF_MAGIC;
    // The size says it: a 2 GB sparse file is not read up to the limit first.
    if out.size > limit || (code_only && !out.elf) {
        return Ok(out);
    }
    match digest_of(io::Cursor::new(magic).chain(f), limit, None) {
        Ok(d) => out.digest = Some(d),
        // It grew past the limit while it was read: no digest, as for a larger file.
        Err(HashError::TooLarge { .. }) => {}
        Err(HashError::Io(e)) => return Err(e),
        Err(e @ HashError::Deadline { .. }) => return Err(io::Error::other(e.to_string())),
    }
    Ok(out)
}

/// How a live process maps an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Some mapping of it is executable.
    pub exec: bool,
    /// A mapping to read it through (`/proc/PID/map_files/...`), when it has one.
    pub file: Option<PathBuf>,
}

/// `None` when the process is gone; `Some` with `file: None` when it does not map `ino`.
pub fn mapping_of(tgid: u32, ino: u64) -> Option<Mapping> {
    let lines: Vec<MapsLine> = procfs::maps(tgid)?;
    let of_ino: Vec<&MapsLine> = lines.iter().filter(|l| l.ino == ino).collect();
    Some(Mapping {
        exec: of_ino.iter().any(|l| l.exec),
        file: of_ino
            .iter()
            .find(|l| l.exec)
            .or(of_ino.first())
            .map(|l| PathBuf::from(format!("/proc/{tgid}/map_files/{}", l.range))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn content_tells_code_from_data_and_hashes_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("lib.so");
        std::fs::write(&elf, b"\x7fELF rest of it").unwrap();
        let c = content(File::open(&elf).unwrap(), 1 << 20, true).unwrap();
        assert!(c.elf);
        assert_eq!(c.digest, Some(Digest::of(b"\x7fELF rest of it")));
        let data = dir.path().join("data");
        std::fs::write(&data, b"just text").unwrap();
        let c = content(File::open(&data).unwrap(), 1 << 20, true).unwrap();
        assert!(!c.elf);
        assert_eq!(c.digest, None, "data is not hashed for a mapping");
        let c = content(File::open(&data).unwrap(), 4, false).unwrap();
        assert_eq!(c.digest, None, "over the limit");
        // Over the limit by its size: not read past its magic.
        let big = dir.path().join("big");
        let f = File::create(&big).unwrap();
        f.set_len(1 << 40).unwrap();
        let c = content(File::open(&big).unwrap(), 1 << 20, false).unwrap();
        assert_eq!((c.digest, c.size), (None, 1 << 40));
    }

    #[tokio::test]
    async fn a_file_settles_once_its_writer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        f.write_all(b"part").unwrap();
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    std::thread::sleep(Duration::from_millis(4));
                    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(b"more").unwrap();
                }
            })
        };
        let (seen, still) = settle(&p, Duration::from_millis(20), Duration::from_secs(5))
            .await
            .unwrap();
        writer.join().unwrap();
        assert!(!still);
        let (c, moved) = content_since(dir.path(), "f", 1 << 20, seen).unwrap();
        assert!(!moved);
        assert_eq!(c.digest, Some(Digest::of(b"partmoremoremoremoremore")));
        std::fs::write(&p, b"other").unwrap();
        assert!(
            content_since(dir.path(), "f", 1 << 20, seen).unwrap().1,
            "moved"
        );
    }

    #[test]
    fn layer_files_are_read_without_following_symlinks_or_opening_fifos() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(open_in_layer(dir.path(), "/real").is_ok());
        assert!(open_in_layer(dir.path(), "/link").is_err(), "a symlink out");
        assert!(
            open_in_layer(dir.path(), "/fifo").is_err(),
            "a FIFO, refused at once"
        );
        assert_eq!(
            open_in_layer(dir.path(), "/gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn this_process_maps_its_own_executable() {
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        let m = mapping_of(std::process::id(), exe.ino()).unwrap();
        assert!(m.exec);
        assert!(m.file.is_some());
        assert_eq!(
            mapping_of(std::process::id(), u64::MAX).unwrap(),
            Mapping {
                exec: false,
                file: None
            }
        );
    }
}
