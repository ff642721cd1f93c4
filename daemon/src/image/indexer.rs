//! The chain of trust, end to end: target descriptor -> index (this node's platform) ->
//! manifest -> config -> each layer blob -> each uncompressed layer against the config's
//! diff_ids, then the merged `LayerIndex`.
//!
//! Owns: reaching the verdict (`Verified` or `Untrusted` with a precise reason; the types
//! are `verdict`'s), the layer cache's use, deduplication of concurrent requests (per image
//! and per layer), and keeping all CPU work off the async workers (`spawn_blocking`). Store
//! failures are errors, not verdicts: a daemon that cannot reach containerd has learned
//! nothing about the image.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use super::cache::{EvictionReport, LayerCache, DEFAULT_CACHE_BUDGET_BYTES};
use super::content::{ContentError, ContentStore};
use super::digest::Digest;
use super::index::{IndexStats, LayerIndex, MergeError};
use super::layer::{scan_layer, LayerError, LayerFiles, ScanLimits};
use super::oci::{
    parse_config, parse_index, parse_manifest, select_manifest, Descriptor, MediaKind, OciError,
    Platform, MAX_METADATA_BLOB_BYTES,
};
use super::progress::Progress;
pub use super::verdict::{ImageVerdict, IndexError, IndexReport, Untrusted};

/// Indexes nested in indexes beyond this depth are refused (real images use one level).
pub const MAX_INDEX_DEPTH: usize = 4;

/// How an image is indexed.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// Holds the layer cache (`<state_dir>/layers`).
    pub state_dir: PathBuf,
    /// The platform whose manifest an index is resolved to.
    pub platform: Platform,
    /// Bounds on what a layer may make the indexer read and keep.
    pub limits: ScanLimits,
    /// The layer cache is evicted down to this size.
    pub cache_budget_bytes: u64,
    /// Use cached layers (keyed by blob digest, verified when cached) without re-reading the
    /// blob: the daemon's fast path. When false every blob is re-read and re-verified, and the
    /// cache is refreshed.
    pub trust_layer_cache: bool,
    /// Layers read at once.
    pub parallel_layers: usize,
}

impl IndexerConfig {
    /// The defaults, with the layer cache under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            platform: Platform::host(),
            limits: ScanLimits::default(),
            cache_budget_bytes: DEFAULT_CACHE_BUDGET_BYTES,
            trust_layer_cache: true,
            parallel_layers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        }
    }
}

/// Internal: a run ends in a verdict or an error.
enum Failure {
    Untrusted(Untrusted),
    Error(IndexError),
}

impl From<Untrusted> for Failure {
    fn from(u: Untrusted) -> Self {
        Self::Untrusted(u)
    }
}

impl From<IndexError> for Failure {
    fn from(e: IndexError) -> Self {
        Self::Error(e)
    }
}

impl From<OciError> for Failure {
    fn from(e: OciError) -> Self {
        Self::Untrusted(Untrusted::Malformed {
            detail: e.to_string(),
        })
    }
}

fn task_failed(e: tokio::task::JoinError) -> Failure {
    Failure::Error(IndexError::Task(e.to_string()))
}

/// Turns an image into its verified index. Cheap to clone; clones share the cache and the
/// in-flight tables.
pub struct ImageIndexer<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for ImageIndexer<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

type Shared<T> = Arc<OnceCell<T>>;

struct Inner<S> {
    store: S,
    cache: LayerCache,
    config: IndexerConfig,
    images: InFlight<(Digest, bool), Result<IndexReport, IndexError>>,
    /// Keyed by blob and trust mode: a full re-verification never settles for a cache hit.
    layers: InFlight<(Digest, bool), LayerOutcome>,
    layer_permits: Semaphore,
}

/// Requests for the same key share one computation while it runs.
struct InFlight<K, V> {
    cells: Mutex<HashMap<K, Shared<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> InFlight<K, V> {
    fn new() -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
        }
    }

    async fn run<F: std::future::Future<Output = V>>(
        &self,
        key: K,
        compute: impl FnOnce() -> F,
    ) -> V {
        let cell = Arc::clone(
            self.cells
                .lock()
                .expect("in-flight lock")
                .entry(key.clone())
                .or_default(),
        );
        let value = cell.get_or_init(compute).await.clone();
        // Finished: later requests start afresh (the layer cache makes that cheap).
        let mut cells = self.cells.lock().expect("in-flight lock");
        if cells.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            cells.remove(&key);
        }
        value
    }
}

/// A layer's verified change list and whether it came from the cache.
type LayerOutcome = Result<(Arc<LayerFiles>, bool), LayerFailure>;

/// A layer failure, before it is given a layer number.
#[derive(Debug, Clone)]
enum LayerFailure {
    Missing,
    Layer(LayerError),
    Error(IndexError),
}

impl<S: ContentStore> ImageIndexer<S> {
    /// An indexer reading `store`, keeping its layer cache under `config.state_dir`.
    pub fn new(store: S, config: IndexerConfig) -> Result<Self, IndexError> {
        let cache = LayerCache::open(&config.state_dir, config.cache_budget_bytes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                cache,
                layer_permits: Semaphore::new(config.parallel_layers.max(1)),
                config,
                images: InFlight::new(),
                layers: InFlight::new(),
            }),
        })
    }

    /// The content store it reads.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Its layer cache.
    pub fn cache(&self) -> &LayerCache {
        &self.inner.cache
    }

    /// How it indexes.
    pub fn config(&self) -> &IndexerConfig {
        &self.inner.config
    }

    /// Verifies and indexes the image whose target descriptor is `target`. Concurrent calls
    /// for the same target share one run (only the first caller's `progress` is updated).
    pub async fn index(
        &self,
        target: &Descriptor,
        progress: Arc<Progress>,
    ) -> Result<IndexReport, IndexError> {
        let key = (target.digest, self.inner.config.trust_layer_cache);
        let this = self.clone();
        let target = target.clone();
        self.inner
            .images
            .run(key, move || async move {
                this.index_uncached(target, progress).await
            })
            .await
    }

    /// Removes cached layers that no image uses, if the cache is over budget.
    pub async fn evict_unused(
        &self,
        in_use: std::collections::HashSet<Digest>,
    ) -> Result<EvictionReport, IndexError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.cache.evict(&in_use))
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?
            .map_err(IndexError::from)
    }

    async fn index_uncached(
        &self,
        target: Descriptor,
        progress: Arc<Progress>,
    ) -> Result<IndexReport, IndexError> {
        let mut report = IndexReport {
            verdict: ImageVerdict::Untrusted {
                reason: Untrusted::Malformed {
                    detail: String::new(),
                },
            },
            target: target.digest,
            manifest: None,
            config: None,
            layers_total: 0,
            layers_verified: 0,
            layers_from_cache: 0,
            stats: IndexStats::default(),
        };
        match self.verify_chain(&target, &progress, &mut report).await {
            Ok(index) => {
                report.stats = index.stats();
                report.verdict = ImageVerdict::Verified(index);
                Ok(report)
            }
            Err(Failure::Untrusted(reason)) => {
                report.verdict = ImageVerdict::Untrusted { reason };
                Ok(report)
            }
            Err(Failure::Error(e)) => Err(e),
        }
    }

    async fn verify_chain(
        &self,
        target: &Descriptor,
        progress: &Arc<Progress>,
        report: &mut IndexReport,
    ) -> Result<Arc<LayerIndex>, Failure> {
        let platform = &self.inner.config.platform;
        let mut desc = target.clone();
        let mut depth = 0;
        let manifest_bytes = loop {
            match MediaKind::of(&desc.media_type) {
                MediaKind::Index => {
                    let bytes = self.read_small("index", &desc).await?;
                    let index = parse_index(&bytes, &desc)?;
                    depth += 1;
                    if depth > MAX_INDEX_DEPTH {
                        return Err(Untrusted::NestingTooDeep { index: desc.digest }.into());
                    }
                    desc = select_manifest(&index, platform)
                        .ok_or_else(|| Untrusted::NoMatchingPlatform {
                            index: desc.digest,
                            platform: platform.to_string(),
                        })?
                        .clone();
                }
                MediaKind::Manifest => break self.read_small("manifest", &desc).await?,
                _ => {
                    return Err(Untrusted::UnsupportedMediaType {
                        what: "image target".into(),
                        digest: desc.digest,
                        media_type: desc.media_type,
                    }
                    .into())
                }
            }
        };
        report.manifest = Some(desc.digest);
        let manifest = parse_manifest(&manifest_bytes, &desc)?;

        if MediaKind::of(&manifest.config.media_type) != MediaKind::Config {
            return Err(Untrusted::UnsupportedMediaType {
                what: "config".into(),
                digest: manifest.config.digest,
                media_type: manifest.config.media_type,
            }
            .into());
        }
        report.config = Some(manifest.config.digest);
        let config_bytes = self.read_small("config", &manifest.config).await?;
        let config = parse_config(&config_bytes, manifest.config.digest)?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(Untrusted::DiffIdCount {
                manifest: desc.digest,
                config: manifest.config.digest,
                layers: manifest.layers.len(),
                diff_ids: config.diff_ids.len(),
            }
            .into());
        }
        for (i, layer) in manifest.layers.iter().enumerate() {
            if MediaKind::of(&layer.media_type) != MediaKind::Layer {
                return Err(Untrusted::UnsupportedMediaType {
                    what: format!("layer {}", i + 1),
                    digest: layer.digest,
                    media_type: layer.media_type.clone(),
                }
                .into());
            }
        }

        let total = manifest.layers.len();
        report.layers_total = total;
        progress.layers_total.store(total, Ordering::Relaxed);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let this = self.clone();
            let layer = layer.clone();
            let progress = Arc::clone(progress);
            tasks.spawn(async move { (i, this.layer_files(layer, progress).await) });
        }
        let mut layers: Vec<Option<Arc<LayerFiles>>> = vec![None; total];
        let mut first_failure: Option<(usize, Failure)> = None;
        while let Some(joined) = tasks.join_next().await {
            let (i, outcome) = joined.map_err(task_failed)?;
            let number = i + 1;
            let descriptor = &manifest.layers[i];
            let failure = match outcome {
                Ok((files, from_cache)) => {
                    if files.diff_id != config.diff_ids[i] {
                        // The blob verified, but it is not the layer the config describes.
                        Some(Failure::Untrusted(Untrusted::DiffIdMismatch {
                            layer_number: number,
                            layer: descriptor.digest,
                            expected: config.diff_ids[i],
                            actual: files.diff_id,
                        }))
                    } else {
                        report.layers_verified += 1;
                        report.layers_from_cache += usize::from(from_cache);
                        layers[i] = Some(files);
                        None
                    }
                }
                Err(failure) => Some(layer_failure(failure, number, descriptor)),
            };
            // Report the lowest failing layer, so the verdict does not depend on timing; an
            // operational error outranks any verdict.
            if let Some(failure) = failure {
                let replace = match (&first_failure, &failure) {
                    (None, _) => true,
                    (Some((_, Failure::Error(_))), _) => false,
                    (Some(_), Failure::Error(_)) => true,
                    (Some((j, _)), _) => i < *j,
                };
                if replace {
                    first_failure = Some((i, failure));
                }
            }
        }
        if let Some((_, failure)) = first_failure {
            return Err(failure);
        }

        let layers: Vec<Arc<LayerFiles>> = layers
            .into_iter()
            .map(|l| l.expect("every layer joined"))
            .collect();
        let index =
            tokio::task::spawn_blocking(move || LayerIndex::merge(layers.iter().map(|l| &**l)))
                .await
                .map_err(task_failed)?
                .map_err(|e: MergeError| Untrusted::Merge {
                    layer: e.layer,
                    detail: e.to_string(),
                })?;
        Ok(Arc::new(index))
    }

    /// Reads and verifies a manifest, index or config. They are small and bounded, so they are
    /// read whole on the async side.
    async fn read_small(&self, what: &str, desc: &Descriptor) -> Result<Vec<u8>, Failure> {
        if desc.size > MAX_METADATA_BLOB_BYTES {
            return Err(Untrusted::BlobTooLarge {
                what: what.into(),
                digest: desc.digest,
                size: desc.size,
                limit: MAX_METADATA_BLOB_BYTES,
            }
            .into());
        }
        let blob = match self.inner.store.open(desc.digest).await {
            Ok(blob) => blob,
            Err(ContentError::NotFound { digest }) => {
                return Err(Untrusted::BlobMissing {
                    what: what.into(),
                    digest,
                }
                .into())
            }
            Err(e) => return Err(IndexError::from(e).into()),
        };
        let bytes = match blob.read_to_vec(desc.size).await {
            Ok(bytes) => bytes,
            Err(ContentError::TooLarge { .. }) => {
                return Err(Untrusted::SizeMismatch {
                    what: what.into(),
                    digest: desc.digest,
                    expected: desc.size,
                    actual: desc.size + 1,
                }
                .into())
            }
            Err(e) => return Err(IndexError::from(e).into()),
        };
        if bytes.len() as u64 != desc.size {
            return Err(Untrusted::SizeMismatch {
                what: what.into(),
                digest: desc.digest,
                expected: desc.size,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(Untrusted::DigestMismatch {
                what: what.into(),
                digest: desc.digest,
                expected: desc.digest,
                actual,
            }
            .into());
        }
        Ok(bytes)
    }

    /// The verified change list of one layer blob, from the cache or by reading the blob.
    /// Returns whether it came from the cache. Shared by concurrent requests for the blob.
    async fn layer_files(&self, desc: Descriptor, progress: Arc<Progress>) -> LayerOutcome {
        let this = self.clone();
        self.inner
            .layers
            .run(
                (desc.digest, self.inner.config.trust_layer_cache),
                move || async move { this.layer_files_uncached(desc, progress).await },
            )
            .await
    }

    async fn layer_files_uncached(
        &self,
        desc: Descriptor,
        progress: Arc<Progress>,
    ) -> LayerOutcome {
        let task_error =
            |e: tokio::task::JoinError| LayerFailure::Error(IndexError::Task(e.to_string()));
        if self.inner.config.trust_layer_cache {
            let this = self.clone();
            let blob = desc.digest;
            let cached = tokio::task::spawn_blocking(move || this.inner.cache.load(&blob))
                .await
                .map_err(task_error)?;
            match cached {
                Ok(Some(files)) if files.compressed_size == desc.size => {
                    progress.layers_done.fetch_add(1, Ordering::Relaxed);
                    progress.layers_from_cache.fetch_add(1, Ordering::Relaxed);
                    return Ok((Arc::new(files), true));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "layer cache entry unusable; rebuilding it");
                    self.inner.cache.remove(&blob);
                }
            }
        }

        let _permit = self
            .inner
            .layer_permits
            .acquire()
            .await
            .map_err(|e| LayerFailure::Error(IndexError::Task(e.to_string())))?;
        let blob = match self.inner.store.open(desc.digest).await {
            Ok(blob) => blob,
            Err(ContentError::NotFound { .. }) => return Err(LayerFailure::Missing),
            Err(e) => return Err(LayerFailure::Error(e.into())),
        };
        let counter = progress.start_layer(desc.size);
        let limits = self.inner.config.limits;
        let this = self.clone();
        let walker_progress = Arc::clone(&progress);
        let walker_counter = Arc::clone(&counter);
        let scanned = tokio::task::spawn_blocking(move || {
            let files = scan_layer(
                blob.into_reader(),
                desc.digest,
                desc.size,
                &limits,
                walker_counter,
                |_| {
                    walker_progress.entries_seen.fetch_add(1, Ordering::Relaxed);
                },
            )?;
            if let Err(e) = this.inner.cache.store(&files) {
                // The verdict stands without the cache; the next run reads the blob again.
                tracing::warn!(error = %e, "could not write layer cache entry");
            }
            Ok::<_, LayerError>(files)
        })
        .await;
        progress.finish_layer(&counter);
        let files = scanned.map_err(task_error)?.map_err(|e| {
            if e.is_operational() {
                LayerFailure::Error(IndexError::Content(ContentError::Unavailable {
                    message: e.to_string(),
                }))
            } else {
                // The blob no longer verifies: forget what it verified to before, so the
                // cached fast path stops trusting it too.
                self.inner.cache.remove(&desc.digest);
                LayerFailure::Layer(e)
            }
        })?;
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok((Arc::new(files), false))
    }
}

fn layer_failure(failure: LayerFailure, number: usize, desc: &Descriptor) -> Failure {
    let what = format!("layer {number} blob");
    match failure {
        LayerFailure::Missing => Failure::Untrusted(Untrusted::BlobMissing {
            what,
            digest: desc.digest,
        }),
        LayerFailure::Error(e) => Failure::Error(e),
        LayerFailure::Layer(LayerError::DigestMismatch { expected, actual }) => {
            Failure::Untrusted(Untrusted::DigestMismatch {
                what,
                digest: desc.digest,
                expected,
                actual,
            })
        }
        LayerFailure::Layer(LayerError::SizeMismatch {
            expected, actual, ..
        }) => Failure::Untrusted(Untrusted::SizeMismatch {
            what,
            digest: desc.digest,
            expected,
            actual,
        }),
        LayerFailure::Layer(other) => Failure::Untrusted(Untrusted::Layer {
            layer_number: number,
            layer: desc.digest,
            detail: other.to_string(),
        }),
    }
}
