//! Content hashes of executed files, and the bounded cache that makes the second exec of
//! a file cost no I/O.
//!
//! Owns the cache. The key is the *real* inode (overlayfs upper or lower file) with its
//! ctime and size: the overlay inode number survives copy-up, so keying on it would reuse
//! a hash after the content changed. Any write changes ctime, so a changed file misses.
//! Hashing is blocking I/O: callers run it on the blocking pool, never on a runtime worker.

use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

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
    map: HashMap<ContentKey, String>,
    order: VecDeque<ContentKey>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl HashCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &ContentKey) -> Option<String> {
        let hit = self.map.get(key).cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    pub fn insert(&mut self, key: ContentKey, sha256: String) {
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

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

const READ_CHUNK: usize = 256 * 1024;

/// Why [`sha256_hex_until`] stopped.
#[derive(Debug)]
pub enum HashError {
    /// More than the limit: the size grew while it was read.
    TooLarge,
    /// The deadline passed after `read` bytes.
    Deadline {
        read: u64,
    },
    Io(std::io::Error),
}

/// sha256 hex of everything `r` yields, refusing more than `limit` bytes and stopping at
/// `deadline` (checked between chunks: a read that blocks in the kernel is the caller's
/// deadline to enforce).
pub fn sha256_hex_until(
    mut r: impl Read,
    limit: u64,
    deadline: std::time::Instant,
) -> Result<String, HashError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        if std::time::Instant::now() > deadline {
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
            return Err(HashError::TooLarge);
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// sha256 hex of everything `r` yields, refusing more than `limit` bytes.
pub fn sha256_hex(mut r: impl Read, limit: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(std::io::Error::other(format!(
                "larger than the {limit}-byte hashing limit"
            )));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
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
            sha256_hex(&b"abc"[..], 10).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_hex(&b"abcdef"[..], 3).is_err());
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            sha256_hex_until(&b"abc"[..], 10, later).unwrap(),
            sha256_hex(&b"abc"[..], 10).unwrap()
        );
        assert!(matches!(
            sha256_hex_until(&b"abcdef"[..], 3, later),
            Err(HashError::TooLarge)
        ));
        let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
        assert!(matches!(
            sha256_hex_until(&b"abc"[..], 10, past),
            Err(HashError::Deadline { read: 0 })
        ));
    }

    #[test]
    fn cache_is_bounded_and_counts() {
        let mut c = HashCache::new(2);
        c.insert(key(1), "a".into());
        c.insert(key(2), "b".into());
        c.insert(key(3), "c".into());
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&key(1)), None);
        assert_eq!(c.get(&key(3)).as_deref(), Some("c"));
        assert_eq!(c.hits.load(Ordering::Relaxed), 1);
        assert_eq!(c.misses.load(Ordering::Relaxed), 1);
        // A changed ctime is another key: the content may differ.
        let mut k = key(3);
        k.ctime_nsec = 1;
        assert_eq!(c.get(&k), None);
    }
}
