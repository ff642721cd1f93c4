//! Content hashes of executed files, and the bounded cache that makes the second exec of
//! a file cost no I/O.
//!
//! Owns the cache. The key is the *real* inode (overlayfs upper or lower file) with its
//! ctime and size: the overlay inode number survives copy-up, so keying on it would reuse
//! a hash after the content changed. Any write changes ctime, so a changed file misses.
//! Hashing is blocking I/O: callers run it on the blocking pool, never on a runtime worker.

use crate::image::digest::{Digest, Hasher};
use std::collections::{HashMap, VecDeque};
use std::io::Read;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentKey {
    pub dev: u64,
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub size: u64,
}

/// Insertion-ordered and bounded: the oldest entries go first. Exec'd files are few and
/// hot, so recency beyond insertion order buys little.
pub struct HashCache {
    capacity: usize,
    map: HashMap<ContentKey, Digest>,
    order: VecDeque<ContentKey>,
}

impl HashCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &ContentKey) -> Option<Digest> {
        self.map.get(key).copied()
    }

    pub fn insert(&mut self, key: ContentKey, sha256: Digest) {
        if self.map.insert(key, sha256).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

const READ_CHUNK: usize = 256 * 1024;

/// Why [`digest_of`] stopped.
#[derive(Debug)]
pub enum HashError {
    /// More than the limit (the size grew while it was read).
    TooLarge {
        limit: u64,
    },
    /// The deadline passed after `read` bytes.
    Deadline {
        read: u64,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "larger than the {limit}-byte hashing limit"),
            Self::Deadline { read } => write!(f, "stopped at the deadline after {read} bytes"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The sha256 of everything `r` yields, refusing more than `limit` bytes and, with a
/// `deadline`, stopping there (checked between chunks: a read that blocks in the kernel is
/// the caller's deadline to enforce).
pub fn digest_of(
    mut r: impl Read,
    limit: u64,
    deadline: Option<std::time::Instant>,
) -> Result<Digest, HashError> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return Err(HashError::Deadline { read: total });
        }
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Io(e)),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(HashError::TooLarge { limit });
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> ContentKey {
        ContentKey {
            dev: 1,
            ino,
            ctime_sec: 5,
            ctime_nsec: 0,
            size: 10,
        }
    }

    #[test]
    fn hashes_match_sha256sum() {
        // sha256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            digest_of(&b"abc"[..], 10, None).unwrap().hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            digest_of(&b"abcdef"[..], 3, None),
            Err(HashError::TooLarge { limit: 3 })
        ));
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            digest_of(&b"abc"[..], 10, Some(later)).unwrap(),
            Digest::of(b"abc")
        );
        let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
        assert!(matches!(
            digest_of(&b"abc"[..], 10, Some(past)),
            Err(HashError::Deadline { read: 0 })
        ));
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = HashCache::new(2);
        let d = |b: &[u8]| Digest::of(b);
        c.insert(key(1), d(b"a"));
        c.insert(key(2), d(b"b"));
        c.insert(key(3), d(b"c"));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&key(1)), None);
        assert_eq!(c.get(&key(3)), Some(d(b"c")));
        // A changed ctime is another key: the content may differ.
        let mut k = key(3);
        k.ctime_nsec = 1;
        assert_eq!(c.get(&k), None);
    }
}
