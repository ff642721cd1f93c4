//! What the chain of trust concludes about an image, and the failures that say nothing
//! about it: the verdict, its reasons (each naming the blob and, where digests disagree,
//! both digests) and the report of a run. Types only; `indexer` reaches them.

use std::sync::Arc;

use super::cache::CacheError;
use super::content::ContentError;
use super::digest::Digest;
use super::index::{IndexStats, LayerIndex};
use super::indexer::MAX_INDEX_DEPTH;

/// Why an image is not trusted. Every variant names the blob (`what` says which: "layer 2
/// blob", "config", ...), and where digests disagree, both of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)] // the fields are named for what they hold; the messages say the rest
pub enum Untrusted {
    /// A blob's content is not what its digest names.
    #[error("{what} {digest}: digest mismatch: expected {expected}, actual {actual}")]
    DigestMismatch {
        what: String,
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// A blob is not the size its descriptor declares.
    #[error("{what} {digest}: size mismatch: expected {expected} bytes, actual {actual}")]
    SizeMismatch {
        what: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A metadata blob declares more than is plausible.
    #[error("{what} {digest}: declared size {size} exceeds the {limit}-byte limit")]
    BlobTooLarge {
        what: String,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    /// A blob the image names is not in the content store.
    #[error("{what} {digest} is missing from the content store")]
    BlobMissing { what: String, digest: Digest },
    /// A media type layerguard does not read.
    #[error("{what} {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        what: String,
        digest: Digest,
        media_type: String,
    },
    /// A manifest, index or config that does not parse.
    #[error("{detail}")]
    Malformed { detail: String },
    /// An index without a manifest for this node's platform.
    #[error("index {index}: no manifest for platform {platform}")]
    NoMatchingPlatform { index: Digest, platform: String },
    /// Indexes nested deeper than any real image.
    #[error("index {index}: indexes nested deeper than {MAX_INDEX_DEPTH}")]
    NestingTooDeep { index: Digest },
    /// The manifest's layers and the config's diff_ids do not pair up.
    #[error(
        "manifest {manifest} lists {layers} layers but config {config} lists {diff_ids} diff_ids"
    )]
    DiffIdCount {
        manifest: Digest,
        config: Digest,
        layers: usize,
        diff_ids: usize,
    },
    /// An uncompressed layer is not what the config's diff_id records.
    #[error("layer {layer_number} ({layer}): uncompressed digest mismatch: config diff_id expected {expected}, actual {actual}")]
    DiffIdMismatch {
        layer_number: usize,
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// A layer's tar stream is hostile or broken (the detail names the entry).
    #[error("layer {layer_number}: {detail}")]
    Layer {
        layer_number: usize,
        layer: Digest,
        detail: String,
    },
    /// Layers that cannot be merged (a path both a file and a directory, ...).
    #[error("{detail}")]
    Merge { layer: Digest, detail: String },
}

/// What verification of an image concluded.
#[derive(Debug, Clone)]
pub enum ImageVerdict {
    /// Every digest checked out: the merged index of its files.
    Verified(Arc<LayerIndex>),
    /// Something did not.
    Untrusted {
        /// What and where.
        reason: Untrusted,
    },
}

impl ImageVerdict {
    /// True for [`ImageVerdict::Verified`].
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified(_))
    }
}

/// The verdict plus what the run found on the way, for summaries and logs.
#[derive(Debug, Clone)]
pub struct IndexReport {
    /// The verdict.
    pub verdict: ImageVerdict,
    /// The image's target (an index or a manifest).
    pub target: Digest,
    /// The manifest chosen for this platform, once known.
    pub manifest: Option<Digest>,
    /// The image's config, once known.
    pub config: Option<Digest>,
    /// Layers the manifest lists.
    pub layers_total: usize,
    /// Layers whose blob and diff_id were verified (from the cache or read now).
    pub layers_verified: usize,
    /// Of those, layers taken from the layer cache.
    pub layers_from_cache: usize,
    /// What the index holds.
    pub stats: IndexStats,
}

/// Failures that say nothing about the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The content store failed (containerd down, a read error).
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The layer cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A blocking task of the run failed.
    #[error("indexing task failed: {0}")]
    Task(String),
}
