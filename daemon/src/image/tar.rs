//! A streaming tar reader that hashes every regular file as it passes.
//!
//! Owns: the tar format (v7, ustar, star prefixes, GNU long names `L`/`K`, base-256 numbers,
//! PAX `x` records for path, linkpath and size) and the hostile-input rules at that level:
//! bounded metadata, bounded entry sizes and counts, canonical member names, no sparse files.
//! It mirrors Go's `archive/tar` where formats are ambiguous (header-only types carry no data,
//! a GNU long name wins over a PAX path, a `\0` type with a trailing `/` is a directory),
//! because that is the reader containerd unpacks layers with.
//!
//! It must not interpret layered-filesystem semantics (whiteouts, overrides): `layer` and
//! `merge` do. Memory use is one block plus one data buffer, whatever the archive's size.

use std::io::{self, Read};

use super::digest::{Digest, Hasher};
use super::path::{normalize_member, PathError, MAX_PATH_BYTES};

const BLOCK: usize = 512;
/// Data is hashed in chunks of this size; big enough that per-read overhead disappears.
const DATA_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct TarLimits {
    /// PAX and GNU long-name records larger than this are refused rather than buffered.
    pub max_metadata_bytes: u64,
    /// Headers (real entries plus metadata headers) per archive. The change list is held
    /// in memory (about 100 bytes an entry), so this bounds a layer's memory; the largest
    /// real images have a few hundred thousand files.
    pub max_entries: u64,
    /// Declared data size of any one entry.
    pub max_entry_bytes: u64,
}

impl Default for TarLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 1024 * 1024,
            max_entries: 1_000_000,
            max_entry_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

/// What kind of filesystem object a member is, with link targets as written in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    File,
    Dir,
    /// Target kept verbatim (may be absolute or contain `..`): it is resolved inside the image
    /// at lookup time, never on the host.
    Symlink(String),
    /// Target is another member of the image, in canonical form.
    HardLink(String),
    CharDevice,
    BlockDevice,
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Canonical path (see `path`); `""` is the image root.
    pub path: String,
    pub kind: TarKind,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    /// Data size in bytes (0 for everything but regular files).
    pub size: u64,
    /// sha256 of the data, for regular files only.
    pub sha256: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarProblem {
    #[error("archive ends inside {0}")]
    Truncated(&'static str),
    #[error("header checksum does not match")]
    BadChecksum,
    #[error("header field `{0}` is not a valid number")]
    BadNumber(&'static str),
    #[error("header field `{0}` is negative")]
    Negative(&'static str),
    #[error("member name {0}")]
    BadName(PathError),
    #[error("hard link target {0}")]
    BadLinkTarget(PathError),
    #[error("link target is empty")]
    EmptyLinkTarget,
    #[error("symlink target is longer than {MAX_PATH_BYTES} bytes or contains NUL")]
    BadSymlinkTarget,
    #[error("metadata record of {size} bytes exceeds the {limit}-byte limit")]
    MetadataTooLarge { size: u64, limit: u64 },
    #[error("malformed PAX record: {0}")]
    BadPax(&'static str),
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    #[error("sparse files are not supported")]
    Sparse,
    #[error("zero block followed by data")]
    DataAfterEnd,
    #[error("more than {0} headers")]
    TooManyEntries(u64),
    #[error("declared size {size} exceeds the {limit}-byte limit")]
    EntryTooLarge { size: u64, limit: u64 },
    #[error("the image root is a {0}, not a directory")]
    RootNotDir(&'static str),
    #[error("read failed: {0}")]
    Read(String),
}

/// A tar problem with where it happened: the member name as far as it is known (lossy, for
/// people) and the byte offset of its header in the uncompressed stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?} (header at byte {offset}): {problem}")]
pub struct TarError {
    pub entry: String,
    pub offset: u64,
    pub problem: TarProblem,
}

/// Pulls entries one at a time from a blocking reader.
pub struct TarWalker<R> {
    reader: R,
    limits: TarLimits,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    headers_seen: u64,
    finished: bool,
    buffer: Vec<u8>,
}

/// Overrides gathered from metadata headers for the next real entry.
#[derive(Default)]
struct Pending {
    gnu_name: Option<Vec<u8>>,
    gnu_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.gnu_name.is_none()
            && self.gnu_link.is_none()
            && self.pax_path.is_none()
            && self.pax_link.is_none()
            && self.pax_size.is_none()
    }
}

impl<R: Read> TarWalker<R> {
    pub fn new(reader: R, limits: TarLimits) -> Self {
        Self {
            reader,
            limits,
            offset: 0,
            headers_seen: 0,
            finished: false,
            buffer: Vec::new(),
        }
    }

    /// Gives the reader back, e.g. to drain what follows the end-of-archive marker.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// The next real entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            let header_offset = self.offset;
            let fail = |entry: &[u8], problem| TarError {
                entry: String::from_utf8_lossy(entry).into_owned(),
                offset: header_offset,
                problem,
            };
            let mut block = [0u8; BLOCK];
            let got = self
                .fill(&mut block)
                .map_err(|e| fail(b"", TarProblem::Read(e.to_string())))?;
            if got == 0 {
                // A clean end without the zero blocks is accepted, as Go's reader does, unless
                // metadata headers promised an entry that never came.
                if !pending.is_empty() {
                    return Err(fail(
                        b"",
                        TarProblem::Truncated("metadata for a missing entry"),
                    ));
                }
                self.finished = true;
                return Ok(None);
            }
            if got < BLOCK {
                return Err(fail(b"", TarProblem::Truncated("a header")));
            }
            if block.iter().all(|&b| b == 0) {
                return self.end_of_archive(header_offset).map(|()| None);
            }

            self.headers_seen += 1;
            let raw_name = header_name(&block);
            if self.headers_seen > self.limits.max_entries {
                return Err(fail(
                    &raw_name,
                    TarProblem::TooManyEntries(self.limits.max_entries),
                ));
            }
            if !checksum_ok(&block) {
                return Err(fail(&raw_name, TarProblem::BadChecksum));
            }
            let header_size =
                parse_number(&block[124..136]).map_err(|p| fail(&raw_name, p.named("size")))?;
            let mode =
                parse_number(&block[100..108]).map_err(|p| fail(&raw_name, p.named("mode")))?;
            let typeflag = block[156];

            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    let data = self
                        .read_metadata(header_size)
                        .map_err(|p| fail(&raw_name, p))?;
                    match typeflag {
                        b'x' => parse_pax(&data, &mut pending).map_err(|p| fail(&raw_name, p))?,
                        // Global PAX headers are ignored, as containerd ignores them.
                        b'g' => {}
                        b'L' => pending.gnu_name = Some(until_nul(&data).to_vec()),
                        _ => pending.gnu_link = Some(until_nul(&data).to_vec()),
                    }
                    continue;
                }
                b'S' => return Err(fail(&raw_name, TarProblem::Sparse)),
                _ => {}
            }

            // Precedence as in Go: GNU long name, then PAX, then the header's own fields.
            let name = pending
                .gnu_name
                .take()
                .or(pending.pax_path.take())
                .unwrap_or(raw_name);
            let link = pending
                .gnu_link
                .take()
                .or(pending.pax_link.take())
                .unwrap_or_else(|| until_nul(&block[157..257]).to_vec());
            let size = pending.pax_size.take().unwrap_or(header_size);
            let fail = |problem| fail(&name, problem);
            if size > self.limits.max_entry_bytes {
                return Err(fail(TarProblem::EntryTooLarge {
                    size,
                    limit: self.limits.max_entry_bytes,
                }));
            }

            let path = normalize_member(&name).map_err(|e| fail(TarProblem::BadName(e)))?;
            let kind = match typeflag {
                b'0' | b'7' => TarKind::File,
                b'\0' if name.ends_with(b"/") => TarKind::Dir,
                b'\0' => TarKind::File,
                b'1' => TarKind::HardLink(hard_link_target(&link).map_err(fail)?),
                b'2' => TarKind::Symlink(symlink_target(&link).map_err(fail)?),
                b'3' => TarKind::CharDevice,
                b'4' => TarKind::BlockDevice,
                b'5' => TarKind::Dir,
                b'6' => TarKind::Fifo,
                other => return Err(fail(TarProblem::UnsupportedType(char::from(other)))),
            };
            if path.is_empty() && kind != TarKind::Dir {
                return Err(fail(TarProblem::RootNotDir(kind_name(&kind))));
            }

            // Header-only types carry no data whatever their size field says (Go does the same,
            // so the next header is where containerd will look for it too).
            let entry = if kind == TarKind::File {
                let sha256 = self
                    .hash_data(size)
                    .map_err(|e| fail(e.unwrap_or(TarProblem::Truncated("file data"))))?;
                TarEntry {
                    path,
                    kind,
                    mode: (mode & 0o7777) as u32,
                    size,
                    sha256: Some(sha256),
                }
            } else {
                TarEntry {
                    path,
                    kind,
                    mode: (mode & 0o7777) as u32,
                    size: 0,
                    sha256: None,
                }
            };
            return Ok(Some(entry));
        }
    }

    /// After one zero block: a second zero block or the end of the stream ends the archive;
    /// anything else is a corrupt archive hiding entries behind the marker.
    fn end_of_archive(&mut self, offset: u64) -> Result<(), TarError> {
        let mut block = [0u8; BLOCK];
        let got = self.fill(&mut block).map_err(|e| TarError {
            entry: String::new(),
            offset,
            problem: TarProblem::Read(e.to_string()),
        })?;
        if got != 0 && block[..got].iter().any(|&b| b != 0) {
            return Err(TarError {
                entry: String::new(),
                offset,
                problem: TarProblem::DataAfterEnd,
            });
        }
        self.finished = true;
        Ok(())
    }

    /// Reads as much of `buf` as the stream has; short only at end of stream.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }

    fn read_metadata(&mut self, size: u64) -> Result<Vec<u8>, TarProblem> {
        if size > self.limits.max_metadata_bytes {
            return Err(TarProblem::MetadataTooLarge {
                size,
                limit: self.limits.max_metadata_bytes,
            });
        }
        let mut data = vec![0u8; size as usize];
        let got = self
            .fill(&mut data)
            .map_err(|e| TarProblem::Read(e.to_string()))?;
        if got < data.len() {
            return Err(TarProblem::Truncated("a metadata record"));
        }
        self.skip_padding(size)?;
        Ok(data)
    }

    /// Hashes `size` bytes of file data and skips the padding after it. `None` means the
    /// archive ended early.
    fn hash_data(&mut self, size: u64) -> Result<Digest, Option<TarProblem>> {
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; DATA_BUFFER_BYTES];
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        let mut hasher = Hasher::new();
        let mut left = size;
        let result = loop {
            if left == 0 {
                break Ok(());
            }
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            match self.reader.read(&mut buffer[..want]) {
                Ok(0) => break Err(None),
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    left -= n as u64;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Some(TarProblem::Read(e.to_string()))),
            }
        };
        self.buffer = buffer;
        result?;
        self.skip_padding(size).map_err(Some)?;
        Ok(hasher.finish())
    }

    fn skip_padding(&mut self, size: u64) -> Result<(), TarProblem> {
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let mut pad = [0u8; BLOCK];
        let got = self
            .fill(&mut pad[..padding as usize])
            .map_err(|e| TarProblem::Read(e.to_string()))?;
        if got < padding as usize {
            return Err(TarProblem::Truncated("block padding"));
        }
        Ok(())
    }
}

fn kind_name(kind: &TarKind) -> &'static str {
    match kind {
        TarKind::File => "regular file",
        TarKind::Dir => "directory",
        TarKind::Symlink(_) => "symlink",
        TarKind::HardLink(_) => "hard link",
        TarKind::CharDevice => "character device",
        TarKind::BlockDevice => "block device",
        TarKind::Fifo => "fifo",
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(i) => &bytes[..i],
        None => bytes,
    }
}

/// The member name from the header alone: ustar joins `prefix/name`; star has a shorter
/// prefix; GNU and v7 headers have none (GNU keeps other data in that area).
fn header_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = until_nul(&block[0..100]);
    let magic = &block[257..263];
    let version = &block[263..265];
    let prefix = if magic == b"ustar\0" && version == b"00" {
        if &block[508..512] == b"tar\0" {
            until_nul(&block[345..476])
        } else {
            until_nul(&block[345..500])
        }
    } else {
        &[][..]
    };
    if prefix.is_empty() {
        name.to_vec()
    } else {
        let mut joined = prefix.to_vec();
        joined.push(b'/');
        joined.extend_from_slice(name);
        joined
    }
}

/// Accepts the unsigned sum (the standard) or the signed one (old Sun tars), as Go does.
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Ok(stored) = parse_number(&block[148..156]) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored as i64 == unsigned || stored as i64 == signed
}

/// A numeric header problem before we know which field it was in.
enum NumberProblem {
    Invalid,
    Negative,
}

impl NumberProblem {
    fn named(self, field: &'static str) -> TarProblem {
        match self {
            Self::Invalid => TarProblem::BadNumber(field),
            Self::Negative => TarProblem::Negative(field),
        }
    }
}

/// Octal text padded with spaces/NULs, or GNU base-256 when the top bit of the first byte is
/// set. Values that do not fit in 63 bits are invalid.
fn parse_number(field: &[u8]) -> Result<u64, NumberProblem> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(NumberProblem::Negative);
            }
            let mut value: u64 = u64::from(first & 0x3f);
            for &b in &field[1..] {
                if value > (i64::MAX as u64) >> 8 {
                    return Err(NumberProblem::Invalid);
                }
                value = value << 8 | u64::from(b);
            }
            return Ok(value);
        }
    }
    let trimmed = trim(field, |b| b == b' ' || b == 0);
    let mut value: u64 = 0;
    for &b in trimmed {
        if !(b'0'..=b'7').contains(&b) {
            return Err(NumberProblem::Invalid);
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|&v| v <= i64::MAX as u64)
            .ok_or(NumberProblem::Invalid)?;
    }
    Ok(value)
}

fn trim(bytes: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let start = bytes.iter().position(|&b| !strip(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !strip(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// PAX records: `<length> <key>=<value>\n`, the length counting the whole record.
fn parse_pax(mut data: &[u8], pending: &mut Pending) -> Result<(), TarProblem> {
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(TarProblem::BadPax("no length"))?;
        let length: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(TarProblem::BadPax("bad length"))?;
        if length <= space + 1 || length > data.len() {
            return Err(TarProblem::BadPax("length out of range"));
        }
        let record = &data[space + 1..length];
        data = &data[length..];
        let record = record
            .strip_suffix(b"\n")
            .ok_or(TarProblem::BadPax("record does not end in newline"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TarProblem::BadPax("no `=`"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pending.pax_path = Some(value.to_vec()),
            b"linkpath" => pending.pax_link = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|&v| v <= i64::MAX as u64)
                    .ok_or(TarProblem::BadPax("bad size"))?;
                pending.pax_size = Some(size);
            }
            k if k.starts_with(b"GNU.sparse.") => return Err(TarProblem::Sparse),
            _ => {}
        }
    }
    Ok(())
}

fn hard_link_target(raw: &[u8]) -> Result<String, TarProblem> {
    if raw.is_empty() {
        return Err(TarProblem::EmptyLinkTarget);
    }
    let target = normalize_member(raw).map_err(TarProblem::BadLinkTarget)?;
    if target.is_empty() {
        return Err(TarProblem::EmptyLinkTarget);
    }
    Ok(target)
}

fn symlink_target(raw: &[u8]) -> Result<String, TarProblem> {
    if raw.is_empty() {
        return Err(TarProblem::EmptyLinkTarget);
    }
    if raw.len() > MAX_PATH_BYTES || raw.contains(&0) {
        return Err(TarProblem::BadSymlinkTarget);
    }
    String::from_utf8(raw.to_vec()).map_err(|_| TarProblem::BadLinkTarget(PathError::NotUtf8))
}

/// Builds tar archives byte by byte for tests, including malformed ones no tar tool writes.
#[cfg(test)]
pub mod build {
    const BLOCK: usize = 512;

    /// One header block with the given fields and a correct ustar checksum.
    pub fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000755");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        let size_text = format!("{size:011o}");
        if size_text.len() == 11 {
            h[124..135].copy_from_slice(size_text.as_bytes());
        } else {
            // Base-256 for sizes octal cannot hold.
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    /// Recomputes the checksum after a test edited header bytes.
    pub fn seal(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }

    /// An in-memory archive under construction.
    #[derive(Default, Clone)]
    pub struct TarBuilder {
        pub bytes: Vec<u8>,
    }

    impl TarBuilder {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn raw(&mut self, data: &[u8]) -> &mut Self {
            self.bytes.extend_from_slice(data);
            self
        }

        fn data(&mut self, data: &[u8]) {
            self.bytes.extend_from_slice(data);
            let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
            self.bytes.extend(std::iter::repeat_n(0u8, pad));
        }

        pub fn entry(
            &mut self,
            name: &str,
            typeflag: u8,
            mode: u32,
            data: &[u8],
            link: &str,
        ) -> &mut Self {
            let mut h = header(
                name.as_bytes(),
                typeflag,
                data.len() as u64,
                link.as_bytes(),
            );
            h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
            seal(&mut h);
            self.bytes.extend_from_slice(&h);
            self.data(data);
            self
        }

        pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
            self.entry(name, b'0', mode, data, "")
        }

        pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.entry(name, b'5', mode, b"", "")
        }

        pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, b'2', 0o777, b"", target)
        }

        pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, b'1', 0o644, b"", target)
        }

        /// A PAX extended header carrying `records` for the next entry.
        pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut body = Vec::new();
            for (key, value) in records {
                let core = key.len() + value.len() + 3; // ' ', '=', '\n'
                let mut len = core + 1;
                while len != core + len.to_string().len() {
                    len = core + len.to_string().len();
                }
                body.extend_from_slice(format!("{len} {key}=").as_bytes());
                body.extend_from_slice(value);
                body.push(b'\n');
            }
            let h = header(b"PaxHeaders/x", b'x', body.len() as u64, b"");
            self.bytes.extend_from_slice(&h);
            self.data(&body);
            self
        }

        /// A GNU long-name (`L`) or long-link (`K`) header for the next entry.
        pub fn gnu_long(&mut self, typeflag: u8, value: &[u8]) -> &mut Self {
            let mut body = value.to_vec();
            body.push(0);
            let h = header(b"././@LongLink", typeflag, body.len() as u64, b"");
            self.bytes.extend_from_slice(&h);
            self.data(&body);
            self
        }

        /// Appends the two zero blocks that end an archive.
        pub fn finish(&mut self) -> Vec<u8> {
            self.bytes.extend(std::iter::repeat_n(0u8, 2 * BLOCK));
            self.bytes.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn walk(bytes: &[u8]) -> Result<Vec<TarEntry>, TarError> {
        walk_with(bytes, TarLimits::default())
    }

    fn walk_with(bytes: &[u8], limits: TarLimits) -> Result<Vec<TarEntry>, TarError> {
        let mut walker = TarWalker::new(bytes, limits);
        let mut out = Vec::new();
        while let Some(e) = walker.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn reads_every_kind_and_hashes_files() {
        let tar = TarBuilder::new()
            .dir("./", 0o755)
            .dir("bin/", 0o755)
            .file("bin/tool", 0o4755, b"#!/bin/sh\necho hi\n")
            .symlink("bin/sh", "/bin/busybox")
            .hardlink("bin/tool2", "./bin/tool")
            .entry("dev/null", b'3', 0o666, b"", "")
            .entry("fifo", b'6', 0o644, b"", "")
            .finish();
        let entries = walk(&tar).unwrap();
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[0].path, "");
        assert_eq!(entries[2].path, "bin/tool");
        assert_eq!(entries[2].mode, 0o4755);
        assert_eq!(entries[2].sha256, Some(Digest::of(b"#!/bin/sh\necho hi\n")));
        assert_eq!(entries[3].kind, TarKind::Symlink("/bin/busybox".into()));
        assert_eq!(entries[4].kind, TarKind::HardLink("bin/tool".into()));
        assert_eq!(entries[5].kind, TarKind::CharDevice);
        assert_eq!(entries[6].kind, TarKind::Fifo);
    }

    #[test]
    fn long_names_from_pax_and_gnu() {
        let long = format!("{}/file", "d".repeat(150));
        let longer = format!("{}/other", "e".repeat(200));
        let target = "t".repeat(150);
        let tar = TarBuilder::new()
            .pax(&[("path", long.as_bytes()), ("mtime", b"1.5")])
            .file("short", 0o644, b"a")
            .gnu_long(b'L', longer.as_bytes())
            .gnu_long(b'K', target.as_bytes())
            .symlink("short2", "x")
            .finish();
        let entries = walk(&tar).unwrap();
        assert_eq!(entries[0].path, long);
        assert_eq!(entries[1].path, longer);
        assert_eq!(entries[1].kind, TarKind::Symlink(target));
    }

    #[test]
    fn gnu_long_name_wins_over_pax_path() {
        let tar = TarBuilder::new()
            .pax(&[("path", b"from-pax")])
            .gnu_long(b'L', b"from-gnu")
            .file("header", 0o644, b"")
            .finish();
        assert_eq!(walk(&tar).unwrap()[0].path, "from-gnu");
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let mut h = header(b"name", b'0', 0, b"");
        h[345..351].copy_from_slice(b"prefix");
        seal(&mut h);
        let tar = TarBuilder::new().raw(&h).finish();
        assert_eq!(walk(&tar).unwrap()[0].path, "prefix/name");
    }

    #[test]
    fn pax_size_and_base256_size() {
        // PAX size overrides the header's.
        let mut b = TarBuilder::new();
        b.pax(&[("size", b"3")]);
        let mut h = header(b"f", b'0', 0, b"");
        seal(&mut h);
        b.raw(&h).raw(b"abc").raw(&[0u8; 509]);
        let entries = walk(&b.finish()).unwrap();
        assert_eq!(entries[0].size, 3);
        assert_eq!(entries[0].sha256, Some(Digest::of(b"abc")));

        // A base-256 size far past what the stream holds: an absurd size is named as such.
        let h = header(b"huge", b'0', 1 << 40, b"");
        let err = walk_with(
            &TarBuilder::new().raw(&h).finish(),
            TarLimits {
                max_entry_bytes: 1 << 30,
                ..TarLimits::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.entry, "huge");
        assert!(
            matches!(err.problem, TarProblem::EntryTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn old_style_dir_and_header_only_types_skip_no_data() {
        let mut b = TarBuilder::new();
        b.entry("olddir/", 0, 0o755, b"", "");
        // A symlink whose size field claims data: the next block is still a header.
        let h = header(b"link", b'2', 600, b"target");
        b.raw(&h);
        b.file("after", 0o644, b"x");
        let entries = walk(&b.finish()).unwrap();
        assert_eq!(entries[0].kind, TarKind::Dir);
        assert_eq!(entries[1].size, 0);
        assert_eq!(entries[2].path, "after");
    }

    #[test]
    fn clean_eof_without_zero_blocks_and_single_zero_block_are_ends() {
        let mut b = TarBuilder::new();
        b.file("a", 0o644, b"1");
        assert_eq!(walk(&b.bytes).unwrap().len(), 1);
        let mut one_zero = b.bytes.clone();
        one_zero.extend([0u8; 512]);
        assert_eq!(walk(&one_zero).unwrap().len(), 1);
    }

    fn problem(bytes: &[u8]) -> TarError {
        walk(bytes).expect_err("hostile archive accepted")
    }

    #[test]
    fn hostile_names_are_refused_with_the_entry_named() {
        for (name, expected) in [
            ("../escape", PathError::DotDot),
            ("a/../../escape", PathError::DotDot),
            ("/etc/passwd", PathError::Absolute),
        ] {
            let tar = TarBuilder::new().file(name, 0o644, b"x").finish();
            let err = problem(&tar);
            assert_eq!(err.entry, name);
            assert_eq!(err.problem, TarProblem::BadName(expected));
        }
        let tar = TarBuilder::new()
            .pax(&[("path", b"a\0b")])
            .file("x", 0o644, b"")
            .finish();
        assert_eq!(problem(&tar).problem, TarProblem::BadName(PathError::Nul));
        let tar = TarBuilder::new().hardlink("h", "../../etc/shadow").finish();
        assert_eq!(
            problem(&tar).problem,
            TarProblem::BadLinkTarget(PathError::DotDot)
        );
        let tar = TarBuilder::new().hardlink("h", "/etc/shadow").finish();
        assert_eq!(
            problem(&tar).problem,
            TarProblem::BadLinkTarget(PathError::Absolute)
        );
        let tar = TarBuilder::new().symlink("s", "").finish();
        assert_eq!(problem(&tar).problem, TarProblem::EmptyLinkTarget);
        let tar = TarBuilder::new().file(".", 0o644, b"").finish();
        assert!(matches!(problem(&tar).problem, TarProblem::RootNotDir(_)));
    }

    #[test]
    fn corrupt_and_truncated_archives_are_refused() {
        let good = TarBuilder::new().file("f", 0o644, &[9u8; 1000]).finish();

        let mut bad_sum = good.clone();
        bad_sum[0] = b'g';
        assert_eq!(problem(&bad_sum).problem, TarProblem::BadChecksum);

        assert_eq!(
            problem(&good[..300]).problem,
            TarProblem::Truncated("a header")
        );
        assert_eq!(
            problem(&good[..900]).problem,
            TarProblem::Truncated("file data")
        );
        assert_eq!(
            problem(&good[..1520]).problem,
            TarProblem::Truncated("block padding")
        );

        let mut hidden = TarBuilder::new();
        hidden.raw(&[0u8; 512]);
        hidden.file("hidden", 0o644, b"");
        assert_eq!(problem(&hidden.bytes).problem, TarProblem::DataAfterEnd);

        let mut bad_size = header(b"f", b'0', 0, b"");
        bad_size[124..127].copy_from_slice(b"9x9");
        seal(&mut bad_size);
        assert_eq!(problem(&bad_size).problem, TarProblem::BadNumber("size"));

        let mut negative = header(b"f", b'0', 0, b"");
        negative[124] = 0xff;
        seal(&mut negative);
        assert_eq!(problem(&negative).problem, TarProblem::Negative("size"));

        let tar = TarBuilder::new().entry("v", b'V', 0o644, b"", "").finish();
        assert_eq!(problem(&tar).problem, TarProblem::UnsupportedType('V'));
        let tar = TarBuilder::new().entry("s", b'S', 0o644, b"", "").finish();
        assert_eq!(problem(&tar).problem, TarProblem::Sparse);
        let tar = TarBuilder::new()
            .pax(&[("GNU.sparse.major", b"1")])
            .file("s", 0o644, b"")
            .finish();
        assert_eq!(problem(&tar).problem, TarProblem::Sparse);

        let orphan = TarBuilder::new().pax(&[("path", b"x")]).bytes.clone();
        assert!(matches!(problem(&orphan).problem, TarProblem::Truncated(_)));
    }

    #[test]
    fn metadata_and_entry_counts_are_bounded() {
        let limits = TarLimits {
            max_metadata_bytes: 100,
            max_entries: 3,
            max_entry_bytes: 1 << 20,
        };
        let big = TarBuilder::new()
            .gnu_long(b'L', &[b'a'; 200])
            .file("x", 0o644, b"")
            .finish();
        assert!(matches!(
            walk_with(&big, limits).unwrap_err().problem,
            TarProblem::MetadataTooLarge { size: 201, .. }
        ));
        let mut many = TarBuilder::new();
        for i in 0..4 {
            many.file(&format!("f{i}"), 0o644, b"");
        }
        assert_eq!(
            walk_with(&many.finish(), limits).unwrap_err().problem,
            TarProblem::TooManyEntries(3)
        );
    }

    #[test]
    fn malformed_pax_records_are_refused() {
        for body in [
            &b"5 path=x\n"[..],
            b"99 path=x\n",
            b"x path=x\n",
            b"9 pathx\n",
            b"10 path=xx",
        ] {
            let mut b = TarBuilder::new();
            let h = header(b"p", b'x', body.len() as u64, b"");
            b.raw(&h).raw(body).raw(&vec![0u8; 512 - body.len()]);
            b.file("f", 0o644, b"");
            assert!(
                matches!(problem(&b.finish()).problem, TarProblem::BadPax(_)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn numbers() {
        assert!(matches!(parse_number(b"0000644\0"), Ok(0o644)));
        assert!(matches!(parse_number(b"  644 \0"), Ok(0o644)));
        assert!(matches!(parse_number(b"\0\0\0\0"), Ok(0)));
        assert!(matches!(
            parse_number(b"\x80\0\0\0\0\0\0\0\0\0\x01\x00"),
            Ok(256)
        ));
        assert!(matches!(
            parse_number(b"\xff\xff"),
            Err(NumberProblem::Negative)
        ));
        assert!(matches!(
            parse_number(b"\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            Err(NumberProblem::Invalid)
        ));
        assert!(matches!(
            parse_number(b"77777777777777777777777"),
            Err(NumberProblem::Invalid)
        ));
    }
}
