//! The verified image of each container, as the verify stage needs it.
//!
//! Owns the map from (containerd namespace, image reference) to the image's state and
//! index, asking `image::ImageIndexer` once per image (concurrent execs of a new image
//! wait for the same run). Failures that say nothing about the image (containerd down,
//! image not found) are remembered only briefly, then retried; verdicts are kept.

use super::verdict::{ImageRecord, ImageState};
use crate::containers::ContainerInfo;
use crate::image::{
    ContainerdStore, ImageIndexer, ImageVerdict, IndexerConfig, LayerIndex, Progress,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::{info, warn};

/// How long a failure to index (not a verdict) is remembered before the next try.
pub const IMAGE_RETRY: Duration = Duration::from_secs(5);
/// Images remembered at once; beyond it the oldest entry is dropped (and re-indexed from
/// the warm layer cache if it is needed again).
pub const MAX_IMAGES: usize = 256;

#[derive(Clone, Debug)]
pub struct ImageEntry {
    pub state: ImageState,
    pub index: Option<Arc<LayerIndex>>,
    pub manifest: Option<String>,
    at: Instant,
}

impl ImageEntry {
    fn unavailable(reason: String) -> Self {
        Self {
            state: ImageState::Unavailable { reason },
            index: None,
            manifest: None,
            at: Instant::now(),
        }
    }

    /// What the image records at `path` (symlinks resolved inside the image).
    pub fn record(&self, path: &str) -> ImageRecord {
        let Some(index) = &self.index else {
            return ImageRecord::Missing;
        };
        match index.lookup(path) {
            Some(e) => match &e.sha256 {
                Some(d) => ImageRecord::File {
                    sha256: d.hex(),
                    layer: e.layer.to_string(),
                },
                None => ImageRecord::NotAFile,
            },
            None => ImageRecord::Missing,
        }
    }
}

type Slot = Arc<OnceCell<ImageEntry>>;
type ImageKey = (String, String);

/// The remembered images and their insertion order (for the bound).
#[derive(Default)]
struct Slots {
    map: HashMap<ImageKey, Slot>,
    order: Vec<ImageKey>,
}

pub struct ImageCatalog {
    socket: PathBuf,
    config: IndexerConfig,
    indexers: tokio::sync::Mutex<HashMap<String, ImageIndexer<ContainerdStore>>>,
    slots: Mutex<Slots>,
}

impl ImageCatalog {
    pub fn new(socket: impl Into<PathBuf>, config: IndexerConfig) -> Self {
        Self {
            socket: socket.into(),
            config,
            indexers: tokio::sync::Mutex::new(HashMap::new()),
            slots: Mutex::new(Slots::default()),
        }
    }

    fn slot(&self, key: ImageKey) -> Slot {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Slots { map, order } = &mut *guard;
        if let Some(slot) = map.get(&key) {
            let stale = slot.get().is_some_and(|e| {
                matches!(e.state, ImageState::Unavailable { .. }) && e.at.elapsed() > IMAGE_RETRY
            });
            if !stale {
                return slot.clone();
            }
        } else {
            order.push(key.clone());
            if order.len() > MAX_IMAGES {
                let old = order.remove(0);
                map.remove(&old);
            }
        }
        let slot: Slot = Arc::new(OnceCell::new());
        map.insert(key, slot.clone());
        slot
    }

    /// The image state of `container`, indexing it on first use.
    pub async fn for_container(&self, container: &ContainerInfo) -> ImageEntry {
        let Some(reference) = container.image.clone() else {
            return ImageEntry::unavailable("the container has no image reference".into());
        };
        let key = (container.namespace.clone(), reference.clone());
        let slot = self.slot(key);
        slot.get_or_init(|| self.index(container.namespace.clone(), reference))
            .await
            .clone()
    }

    async fn indexer(&self, namespace: &str) -> Result<ImageIndexer<ContainerdStore>, String> {
        let mut indexers = self.indexers.lock().await;
        if let Some(i) = indexers.get(namespace) {
            return Ok(i.clone());
        }
        let store = ContainerdStore::connect(&self.socket, namespace)
            .await
            .map_err(|e| e.to_string())?;
        let indexer = ImageIndexer::new(store, self.config.clone()).map_err(|e| e.to_string())?;
        indexers.insert(namespace.to_string(), indexer.clone());
        Ok(indexer)
    }

    async fn index(&self, namespace: String, reference: String) -> ImageEntry {
        let started = Instant::now();
        let indexer = match self.indexer(&namespace).await {
            Ok(i) => i,
            Err(e) => return ImageEntry::unavailable(format!("containerd: {e}")),
        };
        let target = match indexer.store().resolve(&reference).await {
            Ok((_, target)) => target,
            Err(e) => {
                // The connection may be stale after a containerd restart: reconnect next time.
                self.indexers.lock().await.remove(&namespace);
                return ImageEntry::unavailable(format!("image {reference} in {namespace}: {e}"));
            }
        };
        match indexer.index(&target, Progress::new()).await {
            Ok(report) => {
                let manifest = report.manifest.map(|d| d.to_string());
                match report.verdict {
                    ImageVerdict::Verified(index) => {
                        info!(image = %reference, namespace = %namespace, files = index.len(),
                            layers = report.layers_total, from_cache = report.layers_from_cache,
                            ms = started.elapsed().as_millis() as u64, "image verified");
                        ImageEntry {
                            state: ImageState::Verified,
                            index: Some(index),
                            manifest,
                            at: Instant::now(),
                        }
                    }
                    ImageVerdict::Untrusted { reason } => {
                        warn!(image = %reference, namespace = %namespace, reason = %reason,
                            "image untrusted");
                        ImageEntry {
                            state: ImageState::Untrusted {
                                reason: reason.to_string(),
                            },
                            index: None,
                            manifest,
                            at: Instant::now(),
                        }
                    }
                }
            }
            Err(e) => ImageEntry::unavailable(format!("indexing {reference}: {e}")),
        }
    }
}
