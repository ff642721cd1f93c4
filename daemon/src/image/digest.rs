//! Content addresses: the `Digest` newtype and the readers that verify a stream against one.
//!
//! Owns: parsing and printing `sha256:<64 lowercase hex>`, hashing, and `VerifyingReader`,
//! which counts and hashes every byte that passes through it so the caller can check size
//! and digest once the stream is drained. It must not decide what a mismatch means for an
//! image: that is the indexer's verdict.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

/// The only algorithm we accept. Anything else (sha512, blake3, ...) is rejected rather than
/// silently trusted, because we could not verify it.
pub const SHA256_PREFIX: &str = "sha256:";
const SHA256_HEX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {input:?} is not sha256:<64 lowercase hex>: {problem}")]
    Invalid {
        input: String,
        problem: &'static str,
    },
}

/// A sha256 content address. Stored as raw bytes so comparisons are cheap and two spellings of
/// one digest cannot exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// From the 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `sha256:<64 lowercase hex>`. Uppercase hex is rejected as the OCI spec does, so a
    /// digest string maps to exactly one value.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let invalid = |problem| DigestError::Invalid {
            input: input.chars().take(100).collect(),
            problem,
        };
        let hex = input
            .strip_prefix(SHA256_PREFIX)
            .ok_or_else(|| invalid("algorithm is not sha256"))?;
        if hex.len() != SHA256_HEX_LEN {
            return Err(invalid("encoded part is not 64 characters"));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| invalid("not lowercase hex"))?;
            let lo = hex_value(pair[1]).ok_or_else(|| invalid("not lowercase hex"))?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(Self(bytes))
    }

    /// The digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(data);
        hasher.finish()
    }

    /// The 64 hex characters without the algorithm prefix (used for file names).
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(SHA256_HEX_LEN);
        for byte in self.0 {
            out.push(HEX_DIGITS[usize::from(byte >> 4)] as char);
            out.push(HEX_DIGITS[usize::from(byte & 0xf)] as char);
        }
        out
    }

    /// True when `hex` is exactly [`Digest::hex`] of this digest; compares without
    /// building that string (the verify stage asks once per exec).
    pub fn is_hex(&self, hex: &str) -> bool {
        let hex = hex.as_bytes();
        hex.len() == SHA256_HEX_LEN
            && self.0.iter().zip(hex.chunks_exact(2)).all(|(byte, pair)| {
                pair[0] == HEX_DIGITS[usize::from(byte >> 4)]
                    && pair[1] == HEX_DIGITS[usize::from(byte & 0xf)]
            })
    }

    /// `sha256:` and the first 12 hex characters, for progress lines only.
    pub fn short(&self) -> String {
        let hex = self.hex();
        format!("{SHA256_PREFIX}{}", &hex[..12])
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 producing a `Digest`.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// What a `VerifyingReader` saw once drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub size: u64,
    pub digest: Digest,
}

/// Hashes and counts everything read through it. Reading past `max_bytes` fails, so a store
/// that streams more than the descriptor promised cannot make us read forever.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
    max_bytes: u64,
    /// Shared with progress reporting and the decompression-bomb guard.
    counter: Arc<AtomicU64>,
}

impl<R: Read> VerifyingReader<R> {
    /// `counter` receives a live count of the bytes read so far, for progress reporting and
    /// the decompression-bomb guard on other threads or further up the reader chain.
    pub fn new(inner: R, max_bytes: u64, counter: Arc<AtomicU64>) -> Self {
        counter.store(0, Ordering::Relaxed);
        Self {
            inner,
            hasher: Hasher::new(),
            read: 0,
            max_bytes,
            counter,
        }
    }

    /// Reads the rest of the stream into the hash (up to `max_bytes + 1`, enough to prove an
    /// overrun) and returns what was seen. Called whether or not parsing succeeded, so a corrupt
    /// blob is reported as a digest mismatch rather than as whatever parse error it caused.
    pub fn drain(mut self) -> io::Result<Observed> {
        let mut buf = vec![0u8; DRAIN_BUFFER_BYTES];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_overrun(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(Observed {
            size: self.read,
            digest: self.hasher.finish(),
        })
    }
}

const DRAIN_BUFFER_BYTES: usize = 256 * 1024;

/// Marker carried inside the `io::Error` a `VerifyingReader` returns on overrun.
#[derive(Debug, thiserror::Error)]
#[error("stream is longer than its descriptor's {max_bytes} bytes")]
pub struct Overrun {
    pub max_bytes: u64,
}

fn is_overrun(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Overrun>())
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read > self.max_bytes {
            return Err(io::Error::other(Overrun {
                max_bytes: self.max_bytes,
            }));
        }
        // Never ask for more than one byte past the limit: that byte proves the overrun.
        let allowed = (self.max_bytes - self.read).saturating_add(1);
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.counter.store(self.read, Ordering::Relaxed);
        if self.read > self.max_bytes {
            // Hash the extra byte anyway (the digest is reported), then fail the caller.
            return Err(io::Error::other(Overrun {
                max_bytes: self.max_bytes,
            }));
        }
        Ok(n)
    }
}

/// Hashes and counts a stream without limits, for the uncompressed layer (its diff_id). The
/// size bound on uncompressed data is the bomb guard's job, which knows the compressed size.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
            read: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    pub fn finish(self) -> Observed {
        Observed {
            size: self.read,
            digest: self.hasher.finish(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn is_hex_accepts_exactly_the_lowercase_hex() {
        let d = Digest::of(b"");
        assert!(d.is_hex(&d.hex()));
        assert!(d.is_hex(&EMPTY["sha256:".len()..]));
        assert!(!d.is_hex(&d.hex().to_uppercase()));
        assert!(!d.is_hex(&d.hex()[..63]));
        assert!(!d.is_hex(&Digest::of(b"x").hex()));
        assert!(!d.is_hex(""));
    }

    #[test]
    fn parses_and_prints_round_trip() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn rejects_anything_but_lowercase_sha256() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\u{e9}",
        ] {
            assert!(Digest::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }

    #[test]
    fn verifying_reader_reports_size_and_digest_after_drain() {
        let data = vec![7u8; 1_000_000];
        let mut r = VerifyingReader::new(&data[..], data.len() as u64, Arc::default());
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        let seen = r.drain().unwrap();
        assert_eq!(seen.size, data.len() as u64);
        assert_eq!(seen.digest, Digest::of(&data));
    }

    #[test]
    fn verifying_reader_stops_one_byte_past_the_limit() {
        let data = [1u8; 100];
        let mut r = VerifyingReader::new(&data[..], 10, Arc::default());
        let mut buf = vec![0u8; 100];
        assert_eq!(r.read(&mut buf).unwrap_err().kind(), io::ErrorKind::Other);
        let seen = r.drain().unwrap();
        assert_eq!(seen.size, 11);
    }
}
