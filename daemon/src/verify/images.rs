//! The verified image of each container, as the verify stage needs it.
//!
//! Owns the map from (containerd namespace, image reference) to the image's state and
//! index, asking `image::ImageIndexer` once per image (concurrent execs of a new image
//! wait for the same run). Failures that say nothing about the image (containerd down,
//! image not found) are remembered only briefly, then retried; verdicts are kept.

use super::verdict::{ImageRecord, ImageState};
use crate::containerd::Containerd;
use crate::identity::ContainerInfo;
use crate::image::digest::Digest;
use crate::image::{
    ContainerdStore, ImageIndexer, ImageVerdict, IndexerConfig, LayerIndex, Progress,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

impl crate::baseline::ImageFiles for ImageCatalog {
    fn index_of<'a>(
        &'a self,
        container: &'a ContainerInfo,
    ) -> futures_util::future::BoxFuture<'a, Option<Arc<LayerIndex>>> {
        Box::pin(async move {
            let image = self.for_container(container).await;
            match image.state {
                ImageState::Verified => image.index.clone(),
                _ => None,
            }
        })
    }
}
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
    /// A failure to index that is old enough to try again.
    fn due_for_retry(&self) -> bool {
        matches!(self.state, ImageState::Unavailable { .. }) && self.at.elapsed() > IMAGE_RETRY
    }

    fn unavailable(reason: String) -> Self {
        Self {
            state: ImageState::Unavailable { reason },
            index: None,
            manifest: None,
            at: Instant::now(),
        }
    }

    /// True when the image is verified and records exactly this content at `path`: the
    /// common verdict, decided without building any evidence.
    pub fn has_content(&self, path: &str, content: &Digest) -> bool {
        if self.state != ImageState::Verified {
            return false;
        }
        self.index
            .as_ref()
            .and_then(|i| i.lookup(path))
            .and_then(|e| e.sha256.as_ref())
            .is_some_and(|digest| digest == content)
    }

    /// What the image records at `path` (symlinks resolved inside the image).
    pub fn record(&self, path: &str) -> ImageRecord {
        let Some(index) = &self.index else {
            return ImageRecord::Missing;
        };
        match index.lookup(path) {
            Some(e) => match &e.sha256 {
                Some(d) => ImageRecord::File {
                    sha256: *d,
                    layer: e.layer,
                },
                None => ImageRecord::NotAFile,
            },
            None => ImageRecord::Missing,
        }
    }
}

type Slot = Arc<OnceCell<Arc<ImageEntry>>>;
type ImageKey = (String, String);

/// The remembered images and their insertion order (for the bound). Keyed by namespace,
/// then reference, so that the per-exec lookup borrows both instead of allocating a key.
#[derive(Default)]
struct Slots {
    map: HashMap<String, HashMap<String, Slot>>,
    order: Vec<ImageKey>,
}

impl Slots {
    fn get(&self, namespace: &str, reference: &str) -> Option<&Slot> {
        self.map.get(namespace)?.get(reference)
    }

    fn remove(&mut self, (namespace, reference): &ImageKey) {
        if let Some(refs) = self.map.get_mut(namespace) {
            refs.remove(reference);
            if refs.is_empty() {
                self.map.remove(namespace);
            }
        }
    }
}

pub struct ImageCatalog {
    containerd: Containerd,
    config: IndexerConfig,
    indexers: tokio::sync::Mutex<HashMap<String, ImageIndexer<ContainerdStore>>>,
    slots: Mutex<Slots>,
}

impl ImageCatalog {
    pub fn new(containerd: Containerd, config: IndexerConfig) -> Self {
        Self {
            containerd,
            config,
            indexers: tokio::sync::Mutex::new(HashMap::new()),
            slots: Mutex::new(Slots::default()),
        }
    }

    fn slot(&self, key: ImageKey) -> Slot {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slots = &mut *guard;
        if let Some(slot) = slots.get(&key.0, &key.1) {
            if !slot.get().is_some_and(|e| e.due_for_retry()) {
                return slot.clone();
            }
        } else {
            slots.order.push(key.clone());
            if slots.order.len() > MAX_IMAGES {
                let old = slots.order.remove(0);
                slots.remove(&old);
            }
        }
        let slot: Slot = Arc::new(OnceCell::new());
        let (namespace, reference) = key;
        slots
            .map
            .entry(namespace)
            .or_default()
            .insert(reference, slot.clone());
        slot
    }

    /// The image state of `container`, indexing it on first use.
    pub async fn for_container(&self, container: &ContainerInfo) -> Arc<ImageEntry> {
        let Some(reference) = container.image.clone() else {
            return Arc::new(ImageEntry::unavailable(
                "the container has no image reference".into(),
            ));
        };
        let key = (container.namespace.clone(), reference.clone());
        let slot = self.slot(key);
        slot.get_or_init(|| async {
            Arc::new(self.index(container.namespace.clone(), reference).await)
        })
        .await
        .clone()
    }

    /// The image state of `container` if it is known and current, without waiting: the
    /// verify stage's hot path, which must not block on an index run or a retry.
    pub fn ready(&self, container: &ContainerInfo) -> Option<Arc<ImageEntry>> {
        let reference = container.image.as_deref()?;
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let entry = guard.get(&container.namespace, reference)?.get()?;
        (!entry.due_for_retry()).then(|| entry.clone())
    }

    async fn indexer(&self, namespace: &str) -> Result<ImageIndexer<ContainerdStore>, String> {
        let mut indexers = self.indexers.lock().await;
        if let Some(i) = indexers.get(namespace) {
            return Ok(i.clone());
        }
        let store = ContainerdStore::connect(&self.containerd, namespace)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;
    use crate::image::layer::scan_in_memory;
    use crate::image::tar::build::TarBuilder;
    use crate::verify::verdict::{judge, ExecVerdict, FileFacts};

    fn entry(state: ImageState) -> ImageEntry {
        let tar = TarBuilder::new()
            .dir("bin", 0o755)
            .file("bin/tool", 0o755, b"tool v1")
            .symlink("bin/alias", "tool")
            .finish();
        let layer = scan_in_memory(&tar).unwrap();
        ImageEntry {
            state,
            index: Some(Arc::new(LayerIndex::merge([&layer]).unwrap())),
            manifest: None,
            at: Instant::now(),
        }
    }

    /// The shortcut must say "verified" exactly when the full judgement would.
    #[test]
    fn has_content_agrees_with_the_full_verdict() {
        let v1 = Digest::of(b"tool v1");
        let v2 = Digest::of(b"tool v2");
        let states = [
            ImageState::Verified,
            ImageState::Untrusted { reason: "r".into() },
            ImageState::Unavailable { reason: "r".into() },
        ];
        for state in states {
            let image = entry(state);
            for path in ["/bin/tool", "/bin/alias", "/bin", "/bin/none", "/tmp/x"] {
                for actual in [&v1, &v2] {
                    let facts = FileFacts {
                        path: path.into(),
                        actual: Ok(*actual),
                        memfd: false,
                        deleted: false,
                        upper_layer: false,
                        runtime: false,
                    };
                    let full = judge(&facts, &image.state, &image.record(path));
                    assert_eq!(
                        image.has_content(path, actual),
                        full == ExecVerdict::Verified,
                        "{path} {:?} {full:?}",
                        image.state
                    );
                }
            }
        }
        assert!(entry(ImageState::Verified).has_content("/bin/alias", &v1));
        assert!(!entry(ImageState::Verified).has_content("/bin/tool", &v2));
    }

    #[test]
    fn ready_answers_from_filled_current_slots_only() {
        let catalog = ImageCatalog::new(
            Containerd::new("/nonexistent.sock", Default::default()),
            IndexerConfig::new("/nonexistent"),
        );
        let container = |ns: &str, image: &str| ContainerInfo {
            namespace: ns.into(),
            image: Some(image.into()),
            ..ContainerInfo::default()
        };
        let a = container("ns1", "img:1");
        assert!(catalog.ready(&a).is_none());
        let slot = catalog.slot(("ns1".into(), "img:1".into()));
        assert!(catalog.ready(&a).is_none(), "not indexed yet");
        slot.set(Arc::new(entry(ImageState::Verified))).unwrap();
        assert!(catalog.ready(&a).is_some());
        assert!(catalog.ready(&container("ns2", "img:1")).is_none());
        assert!(catalog.ready(&container("ns1", "img:2")).is_none());
        let mut no_image = a.clone();
        no_image.image = None;
        assert!(catalog.ready(&no_image).is_none());

        // A failure to index is answered only until it is due for a retry.
        let mut failed = ImageEntry::unavailable("containerd down".into());
        let b = container("ns1", "img:3");
        let slot = catalog.slot(("ns1".into(), "img:3".into()));
        slot.set(Arc::new(failed.clone())).unwrap();
        assert!(catalog.ready(&b).is_some());
        failed.at = Instant::now() - IMAGE_RETRY - Duration::from_secs(1);
        let slot = catalog.slot(("ns1".into(), "img:4".into()));
        slot.set(Arc::new(failed)).unwrap();
        assert!(catalog.ready(&container("ns1", "img:4")).is_none());

        // The bound drops the oldest image.
        for i in 0..MAX_IMAGES {
            catalog.slot(("other".into(), format!("img:{i}")));
        }
        assert!(catalog.ready(&a).is_none(), "evicted");
    }
}
