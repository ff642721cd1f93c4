//! The on-disk layer cache: one file per verified layer, named by the layer blob's digest,
//! holding the layer's diff_id and its change list. Shared base layers are thus walked once for
//! every image on the node.
//!
//! Owns: the file format (magic, length-prefixed body, sha256 of the body), atomic writes
//! (temp file, fsync, rename, fsync of the directory), corruption detection, and eviction of
//! layers no image uses once the cache is over its byte budget. A cache file is a hint that
//! saves work; any doubt about it (bad magic, bad checksum, wrong key) makes it a miss, and the
//! caller rebuilds it from the content store.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::digest::{Digest, Hasher};
use super::layer::{Change, LayerFiles};
use super::tar::{TarEntry, TarKind};

/// Format tag; bump the digit when the layout changes so old files read as misses.
const MAGIC: &[u8; 8] = b"LGLAYER1";
/// The format of `<state_dir>/layers` as a directory, recorded in `<state_dir>/FORMAT` by
/// `statedir` (each file carries [`MAGIC`] too, so a stray file of another format is a
/// miss). A cache: `statedir` drops a directory of another format and it is rebuilt.
pub const STORE_FORMAT: u32 = 1;
const CHECKSUM_BYTES: usize = 32;
const FILE_SUFFIX: &str = ".layer";
const TEMP_MARKER: &str = ".tmp.";
/// Default byte budget of the cache directory.
pub const DEFAULT_CACHE_BUDGET_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("layer cache {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("layer cache file {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: &'static str },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> CacheError + '_ {
    move |e| CacheError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    pub layers: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvictionReport {
    pub removed: usize,
    pub bytes_freed: u64,
    pub bytes_left: u64,
}

pub struct LayerCache {
    dir: PathBuf,
    budget_bytes: u64,
}

/// Distinguishes concurrent temp files of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LayerCache {
    /// Opens (creating) `<state_dir>/layers` and removes temp files a crash left behind.
    pub fn open(state_dir: &Path, budget_bytes: u64) -> Result<Self, CacheError> {
        let dir = state_dir.join("layers");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let cache = Self { dir, budget_bytes };
        for entry in fs::read_dir(&cache.dir).map_err(io_error(&cache.dir))? {
            let entry = entry.map_err(io_error(&cache.dir))?;
            if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, blob: &Digest) -> PathBuf {
        self.dir.join(format!("{}{FILE_SUFFIX}", blob.hex()))
    }

    /// The cached layer, `Ok(None)` when absent, `Err(Corrupt)` when the file cannot be trusted
    /// (the caller deletes and rebuilds it).
    pub fn load(&self, blob: &Digest) -> Result<Option<LayerFiles>, CacheError> {
        let path = self.path_of(blob);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let corrupt = |detail| CacheError::Corrupt {
            path: path.clone(),
            detail,
        };
        let files = decode(&bytes).map_err(corrupt)?;
        if files.blob != *blob {
            return Err(corrupt("file holds another layer"));
        }
        // Recently used layers are evicted last.
        if let Ok(file) = File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(Some(files))
    }

    /// Writes the layer atomically: readers see the old file or the whole new one, never a
    /// torn write, even across a crash.
    pub fn store(&self, files: &LayerFiles) -> Result<(), CacheError> {
        let path = self.path_of(&files.blob);
        let temp = self.dir.join(format!(
            "{}{TEMP_MARKER}{}.{}",
            files.blob.hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&encode(files))?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map_err(io_error(&path))
    }

    pub fn remove(&self, blob: &Digest) {
        let _ = fs::remove_file(self.path_of(blob));
    }

    /// Cached layers on disk, as (blob, bytes, last use).
    fn list(&self) -> Result<Vec<(Digest, u64, SystemTime)>, CacheError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(FILE_SUFFIX)) else {
                continue;
            };
            let Ok(blob) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue; // removed meanwhile
            };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((blob, meta.len(), used));
        }
        Ok(out)
    }

    pub fn usage(&self) -> Result<CacheUsage, CacheError> {
        let list = self.list()?;
        Ok(CacheUsage {
            layers: list.len(),
            bytes: list.iter().map(|(_, bytes, _)| bytes).sum(),
        })
    }

    pub fn over_budget(&self) -> Result<bool, CacheError> {
        Ok(self.usage()?.bytes > self.budget_bytes)
    }

    /// When over budget, removes least recently used layers that are not in `in_use` until the
    /// cache fits. Layers in use are never evicted, even if they alone exceed the budget.
    pub fn evict(&self, in_use: &HashSet<Digest>) -> Result<EvictionReport, CacheError> {
        let mut list = self.list()?;
        let mut total: u64 = list.iter().map(|(_, bytes, _)| bytes).sum();
        let mut report = EvictionReport::default();
        if total > self.budget_bytes {
            list.sort_by_key(|(_, _, used)| *used);
            for (blob, bytes, _) in list {
                if total <= self.budget_bytes {
                    break;
                }
                if in_use.contains(&blob) {
                    continue;
                }
                self.remove(&blob);
                total -= bytes;
                report.removed += 1;
                report.bytes_freed += bytes;
            }
        }
        report.bytes_left = total;
        Ok(report)
    }
}

// Body layout (little endian): blob[32] diff_id[32] compressed u64 uncompressed u64 count u64,
// then per change: tag u8, path (u32 len + bytes), and for Add: mode u32, size u64, then
// sha256[32] for files or a target (u32 len + bytes) for links.
const TAG_FILE: u8 = 0;
const TAG_DIR: u8 = 1;
const TAG_SYMLINK: u8 = 2;
const TAG_HARDLINK: u8 = 3;
const TAG_CHAR: u8 = 4;
const TAG_BLOCK: u8 = 5;
const TAG_FIFO: u8 = 6;
const TAG_WHITEOUT: u8 = 7;
const TAG_OPAQUE: u8 = 8;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn encode(files: &LayerFiles) -> Vec<u8> {
    let mut body = Vec::with_capacity(128 + files.changes.len() * 80);
    body.extend_from_slice(files.blob.as_bytes());
    body.extend_from_slice(files.diff_id.as_bytes());
    body.extend_from_slice(&files.compressed_size.to_le_bytes());
    body.extend_from_slice(&files.uncompressed_size.to_le_bytes());
    body.extend_from_slice(&(files.changes.len() as u64).to_le_bytes());
    for change in &files.changes {
        match change {
            Change::Whiteout(path) => {
                body.push(TAG_WHITEOUT);
                put_str(&mut body, path);
            }
            Change::Opaque(path) => {
                body.push(TAG_OPAQUE);
                put_str(&mut body, path);
            }
            Change::Add(entry) => {
                let tag = match entry.kind {
                    TarKind::File => TAG_FILE,
                    TarKind::Dir => TAG_DIR,
                    TarKind::Symlink(_) => TAG_SYMLINK,
                    TarKind::HardLink(_) => TAG_HARDLINK,
                    TarKind::CharDevice => TAG_CHAR,
                    TarKind::BlockDevice => TAG_BLOCK,
                    TarKind::Fifo => TAG_FIFO,
                };
                body.push(tag);
                put_str(&mut body, &entry.path);
                body.extend_from_slice(&entry.mode.to_le_bytes());
                body.extend_from_slice(&entry.size.to_le_bytes());
                match &entry.kind {
                    TarKind::File => {
                        let sha = entry.sha256.unwrap_or(Digest::from_bytes([0; 32]));
                        body.extend_from_slice(sha.as_bytes());
                    }
                    TarKind::Symlink(target) | TarKind::HardLink(target) => {
                        put_str(&mut body, target);
                    }
                    _ => {}
                }
            }
        }
    }
    let mut hasher = Hasher::new();
    hasher.update(&body);
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + body.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(hasher.finish().as_bytes());
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("record runs past the end");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn digest(&mut self) -> Result<Digest, &'static str> {
        Ok(Digest::from_bytes(
            self.take(32)?.try_into().expect("32 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, &'static str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| "path is not UTF-8")
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<LayerFiles, &'static str> {
    let mut outer = Cursor(bytes);
    if outer.take(MAGIC.len()).map_err(|_| "too short")? != MAGIC {
        return Err("bad magic or format version");
    }
    let body_len =
        usize::try_from(outer.u64().map_err(|_| "too short")?).map_err(|_| "bad length")?;
    let body = outer.take(body_len).map_err(|_| "truncated")?;
    let stored = outer
        .take(CHECKSUM_BYTES)
        .map_err(|_| "truncated checksum")?;
    if !outer.0.is_empty() {
        return Err("trailing bytes");
    }
    if Digest::of(body).as_bytes() != stored {
        return Err("checksum mismatch");
    }
    let mut c = Cursor(body);
    let blob = c.digest()?;
    let diff_id = c.digest()?;
    let compressed_size = c.u64()?;
    let uncompressed_size = c.u64()?;
    let count = c.u64()?;
    // Every change takes at least 5 bytes; refuse counts the body cannot hold before allocating.
    if count > (c.0.len() / 5) as u64 {
        return Err("change count exceeds the body");
    }
    let mut changes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = c.u8()?;
        let path = c.string()?;
        let change = match tag {
            TAG_WHITEOUT => Change::Whiteout(path),
            TAG_OPAQUE => Change::Opaque(path),
            TAG_FILE..=TAG_FIFO => {
                let mode = c.u32()?;
                let size = c.u64()?;
                let (kind, sha256) = match tag {
                    TAG_FILE => (TarKind::File, Some(c.digest()?)),
                    TAG_DIR => (TarKind::Dir, None),
                    TAG_SYMLINK => (TarKind::Symlink(c.string()?), None),
                    TAG_HARDLINK => (TarKind::HardLink(c.string()?), None),
                    TAG_CHAR => (TarKind::CharDevice, None),
                    TAG_BLOCK => (TarKind::BlockDevice, None),
                    _ => (TarKind::Fifo, None),
                };
                Change::Add(TarEntry {
                    path,
                    kind,
                    mode,
                    size,
                    sha256,
                })
            }
            _ => return Err("unknown change tag"),
        };
        changes.push(change);
    }
    if !c.0.is_empty() {
        return Err("bytes after the last change");
    }
    Ok(LayerFiles {
        blob,
        diff_id,
        compressed_size,
        uncompressed_size,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(blob_seed: &[u8]) -> LayerFiles {
        LayerFiles {
            blob: Digest::of(blob_seed),
            diff_id: Digest::of(b"diff"),
            compressed_size: 10,
            uncompressed_size: 20,
            changes: vec![
                Change::Add(TarEntry {
                    path: "bin/sh".into(),
                    kind: TarKind::File,
                    mode: 0o755,
                    size: 3,
                    sha256: Some(Digest::of(b"abc")),
                }),
                Change::Add(TarEntry {
                    path: "bin".into(),
                    kind: TarKind::Dir,
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                }),
                Change::Add(TarEntry {
                    path: "l".into(),
                    kind: TarKind::Symlink("/bin/sh".into()),
                    mode: 0o777,
                    size: 0,
                    sha256: None,
                }),
                Change::Add(TarEntry {
                    path: "h".into(),
                    kind: TarKind::HardLink("bin/sh".into()),
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                }),
                Change::Add(TarEntry {
                    path: "dev/null".into(),
                    kind: TarKind::CharDevice,
                    mode: 0o666,
                    size: 0,
                    sha256: None,
                }),
                Change::Whiteout("etc/motd".into()),
                Change::Opaque("var".into()),
            ],
        }
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path(), DEFAULT_CACHE_BUDGET_BYTES).unwrap();
        let files = sample(b"one");
        assert_eq!(cache.load(&files.blob).unwrap(), None);
        cache.store(&files).unwrap();
        assert_eq!(cache.load(&files.blob).unwrap(), Some(files.clone()));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{}{FILE_SUFFIX}", files.blob.hex())]);
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        let encoded = encode(&sample(b"x"));
        for i in 0..encoded.len() {
            let mut bad = encoded.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        for len in 0..encoded.len() {
            assert!(decode(&encoded[..len]).is_err(), "truncation to {len}");
        }
    }

    #[test]
    fn corrupt_or_misplaced_files_are_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path(), DEFAULT_CACHE_BUDGET_BYTES).unwrap();
        let files = sample(b"one");
        cache.store(&files).unwrap();
        let path = cache.path_of(&files.blob);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            cache.load(&files.blob),
            Err(CacheError::Corrupt {
                detail: "checksum mismatch",
                ..
            })
        ));
        // A valid file copied under another layer's name.
        let other = sample(b"two");
        fs::write(cache.path_of(&other.blob), encode(&files)).unwrap();
        assert!(matches!(
            cache.load(&other.blob),
            Err(CacheError::Corrupt {
                detail: "file holds another layer",
                ..
            })
        ));
    }

    #[test]
    fn stale_temp_files_are_cleaned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let layers = dir.path().join("layers");
        fs::create_dir_all(&layers).unwrap();
        fs::write(layers.join("abc.tmp.1.2"), b"half a write").unwrap();
        let cache = LayerCache::open(dir.path(), DEFAULT_CACHE_BUDGET_BYTES).unwrap();
        assert_eq!(cache.usage().unwrap().layers, 0);
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    }

    #[test]
    fn eviction_spares_layers_in_use_and_prefers_the_least_recent() {
        let dir = tempfile::tempdir().unwrap();
        let one = sample(b"1");
        let size = encode(&one).len() as u64;
        // Room for two layers.
        let cache = LayerCache::open(dir.path(), 2 * size).unwrap();
        let layers: Vec<LayerFiles> = (0..4u8).map(|i| sample(&[i])).collect();
        for (i, layer) in layers.iter().enumerate() {
            cache.store(layer).unwrap();
            let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            File::options()
                .write(true)
                .open(cache.path_of(&layer.blob))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        assert!(cache.over_budget().unwrap());
        // Layer 0 is oldest but in use; 1 and 2 go.
        let in_use: HashSet<Digest> = [layers[0].blob].into();
        let report = cache.evict(&in_use).unwrap();
        assert_eq!(report.removed, 2);
        assert_eq!(report.bytes_left, 2 * size);
        assert!(cache.load(&layers[0].blob).unwrap().is_some());
        assert!(cache.load(&layers[1].blob).unwrap().is_none());
        assert!(cache.load(&layers[2].blob).unwrap().is_none());
        assert!(cache.load(&layers[3].blob).unwrap().is_some());
    }
}
