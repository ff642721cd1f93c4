//! Where blobs come from: the `ContentStore` trait, the chunk stream a blob arrives as, and the
//! bridge from that async stream to a blocking `Read` for the layer walker.
//!
//! Owns: opening a blob by digest and nothing else. A store never verifies: every byte it hands
//! out is checked by the caller against the digest that named it, so a store can be as dumb as
//! a directory. Implementations: `MemoryStore` here (tests); containerd's in `containerd`.

use std::future::Future;
use std::io::{self, Read};
#[cfg(test)]
use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    sync::{Arc, RwLock},
};

use tokio::sync::mpsc;

use super::digest::Digest;

/// Chunks buffered between the async producer and the blocking consumer. With 1 MiB chunks
/// (containerd's Content.Read) this bounds in-flight data to a few MiB per open blob.
pub const CHUNK_QUEUE_DEPTH: usize = 4;
/// Chunk size of the in-memory test store, the same as containerd's.
#[cfg(test)]
pub const LOCAL_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },
    #[error("image {reference:?} is not in namespace {namespace:?}")]
    ImageNotFound {
        reference: String,
        namespace: String,
    },
    #[error("image {reference:?} has an invalid target: {detail}")]
    BadImageRecord { reference: String, detail: String },
    #[error("content store unavailable: {message}")]
    Unavailable { message: String },
    #[error("reading blob {digest} failed: {message}")]
    Read { digest: Digest, message: String },
    #[error("blob {digest} is larger than the {limit}-byte limit for its kind")]
    TooLarge { digest: Digest, limit: u64 },
}

/// A blob being streamed: chunks in order, ending when the channel closes. An error chunk is
/// final.
pub struct Blob {
    digest: Digest,
    chunks: mpsc::Receiver<Result<Vec<u8>, ContentError>>,
}

impl Blob {
    /// A blob fed by `chunks`; the producer closes the channel at the end.
    pub fn from_channel(
        digest: Digest,
        chunks: mpsc::Receiver<Result<Vec<u8>, ContentError>>,
    ) -> Self {
        Self { digest, chunks }
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Reads a small blob whole, from async code. `limit` bounds what a hostile store can make
    /// us buffer; the caller still verifies the digest.
    pub async fn read_to_vec(mut self, limit: u64) -> Result<Vec<u8>, ContentError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunks.recv().await {
            let chunk = chunk?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(ContentError::TooLarge {
                    digest: self.digest,
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A blocking reader over the chunks. Only for blocking threads (`spawn_blocking`): it
    /// parks the thread while waiting for the next chunk.
    pub fn into_reader(self) -> BlobReader {
        BlobReader {
            chunks: self.chunks,
            current: Vec::new(),
            position: 0,
            failed: None,
        }
    }
}

/// Blocking `Read` over a blob's chunk stream. Errors are sticky and carry the `ContentError`
/// inside the `io::Error`, so the layer walker can tell a store failure from a bad image.
pub struct BlobReader {
    chunks: mpsc::Receiver<Result<Vec<u8>, ContentError>>,
    current: Vec<u8>,
    position: usize,
    failed: Option<ContentError>,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(e) = &self.failed {
                return Err(io::Error::other(e.clone()));
            }
            if self.position < self.current.len() {
                let n = buf.len().min(self.current.len() - self.position);
                buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
                self.position += n;
                return Ok(n);
            }
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Some(Err(e)) => self.failed = Some(e),
            }
        }
    }
}

/// Anything that can stream a blob by digest.
pub trait ContentStore: Send + Sync + 'static {
    /// Starts streaming the blob. Not-found should be reported here when the store knows it
    /// up front; later failures arrive as an error chunk.
    fn open(&self, digest: Digest) -> impl Future<Output = Result<Blob, ContentError>> + Send;
}

/// Streams `read` on a blocking thread in `LOCAL_CHUNK_BYTES` chunks.
#[cfg(test)]
fn spawn_reader_blob(digest: Digest, mut read: impl Read + Send + 'static) -> Blob {
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE_DEPTH);
    tokio::task::spawn_blocking(move || loop {
        let mut chunk = vec![0u8; LOCAL_CHUNK_BYTES];
        let mut filled = 0;
        let result = loop {
            match read.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(ContentError::Read {
                digest,
                message: e.to_string(),
            }));
            return;
        }
        if filled == 0 {
            return;
        }
        chunk.truncate(filled);
        if tx.blocking_send(Ok(chunk)).is_err() {
            return; // reader went away
        }
    });
    Blob::from_channel(digest, rx)
}

/// Blobs held in memory, for tests. Blobs can be replaced to simulate on-disk tampering.
#[cfg(test)]
#[derive(Default, Clone)]
pub struct MemoryStore {
    blobs: Arc<RwLock<HashMap<Digest, Arc<Vec<u8>>>>>,
    opens: Arc<AtomicUsize>,
}

#[cfg(test)]
impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `data` under its own digest and returns it.
    pub fn put(&self, data: Vec<u8>) -> Digest {
        let digest = Digest::of(&data);
        self.put_as(digest, data);
        digest
    }

    /// Stores `data` under any digest (simulates a corrupted store).
    pub fn put_as(&self, digest: Digest, data: Vec<u8>) {
        self.blobs
            .write()
            .expect("memory store lock")
            .insert(digest, Arc::new(data));
    }

    /// How many times `open` was called, to prove deduplication and cache hits.
    pub fn open_count(&self) -> usize {
        self.opens.load(Ordering::Relaxed)
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Vec<u8>>> {
        self.blobs
            .read()
            .expect("memory store lock")
            .get(digest)
            .cloned()
    }
}

#[cfg(test)]
impl ContentStore for MemoryStore {
    async fn open(&self, digest: Digest) -> Result<Blob, ContentError> {
        self.opens.fetch_add(1, Ordering::Relaxed);
        let data = self.get(&digest).ok_or(ContentError::NotFound { digest })?;
        Ok(spawn_reader_blob(digest, io::Cursor::new(ArcBytes(data))))
    }
}

#[cfg(test)]
struct ArcBytes(Arc<Vec<u8>>);

#[cfg(test)]
impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_streams_blobs_in_chunks() {
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..3 * LOCAL_CHUNK_BYTES + 7).map(|i| i as u8).collect();
        let digest = store.put(data.clone());
        let blob = store.open(digest).await.unwrap();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            blob.into_reader().read_to_end(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert_eq!(read, data);

        let small = store.open(digest).await.unwrap();
        assert!(matches!(
            small.read_to_vec(10).await,
            Err(ContentError::TooLarge { limit: 10, .. })
        ));
        assert!(matches!(
            store.open(Digest::of(b"missing")).await,
            Err(ContentError::NotFound { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_errors_are_sticky_and_typed() {
        let (tx, rx) = mpsc::channel(2);
        let digest = Digest::of(b"x");
        tx.send(Ok(b"abc".to_vec())).await.unwrap();
        tx.send(Err(ContentError::Unavailable {
            message: "gone".into(),
        }))
        .await
        .unwrap();
        drop(tx);
        let (first, second) = tokio::task::spawn_blocking(move || {
            let mut r = Blob::from_channel(digest, rx).into_reader();
            let mut buf = [0u8; 10];
            let n = r.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"abc");
            (r.read(&mut buf).unwrap_err(), r.read(&mut buf).unwrap_err())
        })
        .await
        .unwrap();
        for e in [first, second] {
            assert!(e.get_ref().unwrap().is::<ContentError>());
        }
    }
}
