//! One layer blob, streamed once: verify its digest, decompress it (bounded), verify the
//! uncompressed digest, and turn its tar into the list of changes it makes to the filesystem.
//!
//! Owns: the reader chain `blob -> blob digest -> decompressor -> diff_id digest -> bomb guard
//! -> tar walker`, the compression sniffing, the decompression-bomb bounds, and whiteout
//! recognition (`.wh.name`, `.wh..wh..opq`). Runs on a blocking thread; memory is a few
//! buffers whatever the layer's size. It does not compare the diff_id with the image config
//! (the indexer does, so a cached layer is checked the same way) and does not merge layers.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::content::ContentError;
use super::digest::{Digest, HashingReader, Observed, VerifyingReader};
use super::path::{join, split_parent};
use super::tar::{TarEntry, TarError, TarLimits, TarWalker};

/// Reads from the decompressor are this large; matches the tar walker's data buffer.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// AUFS bookkeeping names (`.wh..wh.plnk`, ...): skipped, as containerd skips them.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// Bounds on what a layer may cost us.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Uncompressed bytes of one layer, in total.
    pub max_uncompressed_bytes: u64,
    /// Uncompressed/compressed ratio allowed once past `ratio_floor_bytes`. Deflate cannot
    /// exceed about 1032:1; zstd can reach far higher, which is what this catches.
    pub max_expansion_ratio: u64,
    pub ratio_floor_bytes: u64,
    /// zstd window (log2 bytes): the decoder's memory is about this large. 27 (128 MiB) is
    /// zstd's own default limit; a frame asking for more is refused.
    pub zstd_window_log_max: u32,
    pub tar: TarLimits,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_uncompressed_bytes: 64 * 1024 * 1024 * 1024,
            max_expansion_ratio: 4096,
            ratio_floor_bytes: 1024 * 1024 * 1024,
            zstd_window_log_max: 27,
            tar: TarLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// By magic number, as containerd's `DecompressStream` does.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// One filesystem change a layer makes, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(TarEntry),
    /// Removes this path (and everything under it) as lower layers left it.
    Whiteout(String),
    /// Hides everything lower layers put inside this directory.
    Opaque(String),
}

/// Everything the index needs from one layer: what it verified to and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFiles {
    pub blob: Digest,
    pub diff_id: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub changes: Vec<Change>,
}

impl LayerFiles {
    pub fn file_count(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| matches!(c, Change::Add(_)))
            .count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// The store failed us; says nothing about the image.
    #[error("reading layer blob {blob} from the content store failed: {message}")]
    Content { blob: Digest, message: String },
    #[error(
        "layer blob {blob}: size mismatch: descriptor says {expected} bytes, store gave {actual}"
    )]
    SizeMismatch {
        blob: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("layer blob digest mismatch: expected {expected}, actual {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("layer {blob}: entry {entry:?}: decompression bomb: {uncompressed} bytes from {compressed} compressed exceeds the limit ({limit})")]
    Bomb {
        blob: Digest,
        /// The entry being read when the bound was hit.
        entry: String,
        uncompressed: u64,
        compressed: u64,
        limit: String,
    },
    #[error("layer {blob} ({compression:?}): cannot start decompression: {message}")]
    Decompress {
        blob: Digest,
        compression: Compression,
        message: String,
    },
    #[error("layer {blob} ({compression:?}): {error}")]
    Tar {
        blob: Digest,
        compression: Compression,
        error: TarError,
    },
    #[error("layer {blob}: entry {entry:?}: whiteout names no file")]
    BadWhiteout { blob: Digest, entry: String },
}

impl LayerError {
    /// True when the failure is the store's, not the image's.
    pub fn is_operational(&self) -> bool {
        matches!(self, Self::Content { .. })
    }
}

/// Scans a whole blob held in memory as the layer it claims to be (its own digest and
/// size, default limits): for tests and the fuzzer, which make their blobs themselves.
#[cfg(test)]
pub fn scan_in_memory(blob: &[u8]) -> Result<LayerFiles, LayerError> {
    scan_layer(
        blob,
        Digest::of(blob),
        blob.len() as u64,
        &ScanLimits::default(),
        Arc::default(),
        |_| {},
    )
}

/// Streams one layer blob and returns its verified changes.
///
/// `expected` is the layer's descriptor (digest and size); `bytes_read` is updated live with
/// the compressed bytes consumed. The blob's own digest is checked even when the archive is
/// corrupt, and a mismatch wins: a flipped byte is reported as a digest mismatch, not as
/// whatever parse error it caused.
pub fn scan_layer<R: Read>(
    blob: R,
    expected_digest: Digest,
    expected_size: u64,
    limits: &ScanLimits,
    bytes_read: Arc<AtomicU64>,
    mut on_entry: impl FnMut(&TarEntry),
) -> Result<LayerFiles, LayerError> {
    let mut raw = VerifyingReader::new(blob, expected_size, Arc::clone(&bytes_read));
    let mut compression = Compression::None;
    let parsed = parse_stream(
        &mut raw,
        expected_digest,
        limits,
        &bytes_read,
        &mut compression,
        &mut on_entry,
    );
    let seen = raw.drain().map_err(|e| LayerError::Content {
        blob: expected_digest,
        message: content_error_text(&e),
    })?;
    if seen.size != expected_size {
        return Err(LayerError::SizeMismatch {
            blob: expected_digest,
            expected: expected_size,
            actual: seen.size,
        });
    }
    if seen.digest != expected_digest {
        return Err(LayerError::DigestMismatch {
            expected: expected_digest,
            actual: seen.digest,
        });
    }
    let (changes, uncompressed) = parsed?;
    Ok(LayerFiles {
        blob: expected_digest,
        diff_id: uncompressed.digest,
        compressed_size: seen.size,
        uncompressed_size: uncompressed.size,
        changes,
    })
}

fn content_error_text(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ContentError>())
    {
        Some(content) => content.to_string(),
        None => e.to_string(),
    }
}

fn parse_stream<R: Read>(
    raw: &mut R,
    blob: Digest,
    limits: &ScanLimits,
    compressed_read: &Arc<AtomicU64>,
    compression: &mut Compression,
    on_entry: &mut impl FnMut(&TarEntry),
) -> Result<(Vec<Change>, Observed), LayerError> {
    let mut buffered = BufReader::with_capacity(STREAM_BUFFER_BYTES, raw);
    // An empty or unreadable blob sniffs as uncompressed; its errors surface below or at drain.
    *compression = Compression::sniff(buffered.fill_buf().unwrap_or(&[]));
    let compression = *compression;
    let decompress_failed = |e: io::Error| LayerError::Decompress {
        blob,
        compression,
        message: e.to_string(),
    };
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(buffered).map_err(decompress_failed)?;
            decoder
                .window_log_max(limits.zstd_window_log_max)
                .map_err(decompress_failed)?;
            Box::new(decoder)
        }
    };
    let guard = BombGuard {
        inner: HashingReader::new(decoder),
        compressed_read: Arc::clone(compressed_read),
        limits: *limits,
        tripped: None,
    };
    let mut walker = TarWalker::new(guard, limits.tar);
    let mut changes = Vec::new();
    let tar_failed = |guard: &BombGuard<_>, error: TarError| match guard.tripped.clone() {
        Some(bomb) => bomb.into_error(blob, error.entry),
        None => LayerError::Tar {
            blob,
            compression,
            error,
        },
    };
    loop {
        match walker.next_entry() {
            Ok(Some(entry)) => {
                on_entry(&entry);
                if let Some(change) = classify(entry, blob)? {
                    changes.push(change);
                }
            }
            Ok(None) => break,
            Err(error) => return Err(tar_failed(&walker.into_inner(), error)),
        }
    }
    // What follows the end-of-archive marker is still part of the diff_id.
    let mut guard = walker.into_inner();
    if let Err(e) = io::copy(&mut guard, &mut io::sink()) {
        let error = TarError {
            entry: String::new(),
            offset: guard.inner.bytes_read(),
            problem: super::tar::TarProblem::Read(e.to_string()),
        };
        return Err(tar_failed(&guard, error));
    }
    Ok((changes, guard.inner.finish()))
}

/// Turns whiteout names into changes. The root entry (`./`) changes nothing.
fn classify(entry: TarEntry, blob: Digest) -> Result<Option<Change>, LayerError> {
    if entry.path.is_empty() {
        return Ok(None);
    }
    let (parent, base) = split_parent(&entry.path);
    if base == OPAQUE_MARKER {
        return Ok(Some(Change::Opaque(parent.to_string())));
    }
    if base.starts_with(AUFS_META_PREFIX) {
        return Ok(None);
    }
    if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
        // `.wh.` alone, `.wh..` and `.wh...` would name the directory itself or its parent.
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(LayerError::BadWhiteout {
                blob,
                entry: entry.path,
            });
        }
        return Ok(Some(Change::Whiteout(join(parent, hidden))));
    }
    Ok(Some(Change::Add(entry)))
}

#[derive(Debug, Clone)]
struct Bomb {
    uncompressed: u64,
    compressed: u64,
    limit: String,
}

impl Bomb {
    fn into_error(self, blob: Digest, entry: String) -> LayerError {
        LayerError::Bomb {
            blob,
            entry,
            uncompressed: self.uncompressed,
            compressed: self.compressed,
            limit: self.limit,
        }
    }
}

/// Fails the stream once the uncompressed output passes the absolute bound or the ratio bound.
struct BombGuard<R> {
    inner: HashingReader<R>,
    compressed_read: Arc<AtomicU64>,
    limits: ScanLimits,
    tripped: Option<Bomb>,
}

impl<R: Read> Read for BombGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(bomb) = &self.tripped {
            return Err(io::Error::other(format!(
                "decompression bomb ({})",
                bomb.limit
            )));
        }
        let n = self.inner.read(buf)?;
        let uncompressed = self.inner.bytes_read();
        let compressed = self.compressed_read.load(Ordering::Relaxed).max(1);
        let limit = if uncompressed > self.limits.max_uncompressed_bytes {
            Some(format!("{} bytes", self.limits.max_uncompressed_bytes))
        } else if uncompressed > self.limits.ratio_floor_bytes
            && uncompressed / compressed > self.limits.max_expansion_ratio
        {
            Some(format!("ratio {}:1", self.limits.max_expansion_ratio))
        } else {
            None
        };
        if let Some(limit) = limit {
            self.tripped = Some(Bomb {
                uncompressed,
                compressed,
                limit: limit.clone(),
            });
            return Err(io::Error::other(format!("decompression bomb ({limit})")));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tar::build::TarBuilder;
    use super::super::tar::{TarKind, TarProblem};
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn scan(blob: &[u8], limits: &ScanLimits) -> Result<LayerFiles, LayerError> {
        scan_layer(
            blob,
            Digest::of(blob),
            blob.len() as u64,
            limits,
            Arc::default(),
            |_| {},
        )
    }

    fn sample_tar() -> Vec<u8> {
        TarBuilder::new()
            .dir("./", 0o755)
            .dir("etc", 0o755)
            .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
            .file("etc/.wh.motd", 0o644, b"")
            .file("var/.wh..wh..opq", 0o644, b"")
            .file("var/.wh..wh.plnk", 0o644, b"")
            .finish()
    }

    #[test]
    fn uncompressed_gzip_and_zstd_give_the_same_changes_and_diff_id() {
        let tar = sample_tar();
        let plain = scan(&tar, &ScanLimits::default()).unwrap();
        let gz = scan(&gzip(&tar), &ScanLimits::default()).unwrap();
        let zst = scan(
            &zstd::encode_all(&tar[..], 3).unwrap(),
            &ScanLimits::default(),
        )
        .unwrap();
        assert_eq!(plain.diff_id, Digest::of(&tar));
        assert_eq!(gz.diff_id, plain.diff_id);
        assert_eq!(zst.diff_id, plain.diff_id);
        assert_eq!(gz.changes, plain.changes);
        assert_eq!(zst.changes, plain.changes);
        assert_eq!(plain.uncompressed_size, tar.len() as u64);
        assert_eq!(
            plain.changes[2..],
            [
                Change::Whiteout("etc/motd".into()),
                Change::Opaque("var".into())
            ]
        );
        assert!(matches!(&plain.changes[0], Change::Add(e) if e.kind == TarKind::Dir));
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let tar = sample_tar();
        let (a, b) = tar.split_at(1024);
        let mut blob = gzip(a);
        blob.extend(gzip(b));
        assert_eq!(
            scan(&blob, &ScanLimits::default()).unwrap().diff_id,
            Digest::of(&tar)
        );
    }

    #[test]
    fn trailing_bytes_after_the_archive_count_in_the_diff_id() {
        let mut tar = sample_tar();
        tar.extend([0u8; 4096]);
        assert_eq!(
            scan(&tar, &ScanLimits::default()).unwrap().diff_id,
            Digest::of(&tar)
        );
    }

    #[test]
    fn flipped_byte_is_reported_as_digest_mismatch_not_as_corruption() {
        let blob = gzip(&sample_tar());
        let mut flipped = blob.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01;
        let err = scan_layer(
            &flipped[..],
            Digest::of(&blob),
            blob.len() as u64,
            &ScanLimits::default(),
            Arc::default(),
            |_| {},
        )
        .unwrap_err();
        assert_eq!(
            err,
            LayerError::DigestMismatch {
                expected: Digest::of(&blob),
                actual: Digest::of(&flipped),
            }
        );
    }

    #[test]
    fn wrong_size_is_reported() {
        let blob = sample_tar();
        let err = scan_layer(
            &blob[..],
            Digest::of(&blob),
            blob.len() as u64 - 1,
            &ScanLimits::default(),
            Arc::default(),
            |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(err, LayerError::SizeMismatch { actual, .. } if actual == blob.len() as u64)
        );
    }

    #[test]
    fn corrupt_gzip_with_matching_digest_names_the_layer() {
        let mut blob = gzip(&sample_tar());
        let len = blob.len();
        blob[len - 5] ^= 0xff; // the CRC/size trailer
        let err = scan(&blob, &ScanLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::Tar {
                    compression: Compression::Gzip,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&Digest::of(&blob).to_string()));
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let blob = gzip(&sample_tar());
        let cut = &blob[..blob.len() / 2];
        let err = scan(cut, &ScanLimits::default()).unwrap_err();
        assert!(matches!(err, LayerError::Tar { .. }), "{err}");
    }

    #[test]
    fn decompression_bombs_are_bounded() {
        // 64 MiB of zeros in one file: gzip squeezes it about 1000:1.
        let zeros = vec![0u8; 64 << 20];
        let tar = TarBuilder::new().file("zeros", 0o644, &zeros).finish();
        let bomb = gzip(&tar);
        let limits = ScanLimits {
            max_uncompressed_bytes: 16 << 20,
            ..ScanLimits::default()
        };
        let err = scan(&bomb, &limits).unwrap_err();
        assert!(matches!(err, LayerError::Bomb { .. }), "{err}");

        let ratio = ScanLimits {
            max_expansion_ratio: 100,
            ratio_floor_bytes: 1 << 20,
            ..ScanLimits::default()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let err = scan(&zst, &ratio).unwrap_err();
        assert!(
            matches!(&err, LayerError::Bomb { limit, .. } if limit.starts_with("ratio")),
            "{err}"
        );
    }

    #[test]
    fn whiteouts_naming_nothing_are_hostile() {
        for name in ["a/.wh.", "a/.wh..", "a/.wh..."] {
            let tar = TarBuilder::new().file(name, 0o644, b"").finish();
            let err = scan(&tar, &ScanLimits::default()).unwrap_err();
            assert!(
                matches!(err, LayerError::BadWhiteout { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn tar_errors_keep_the_entry_name() {
        let tar = TarBuilder::new()
            .file("../../etc/passwd", 0o644, b"x")
            .finish();
        match scan(&tar, &ScanLimits::default()).unwrap_err() {
            LayerError::Tar { error, .. } => {
                assert_eq!(error.entry, "../../etc/passwd");
                assert!(matches!(error.problem, TarProblem::BadName(_)));
            }
            other => panic!("{other}"),
        }
    }
}
