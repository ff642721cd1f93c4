//! Entry points for `bench/` and offline checks: scan one blob file, or index an OCI image
//! layout directory, with the same code paths the daemon uses against containerd.
//!
//! Owns: reading an OCI layout's `index.json` to find the target. Nothing here is used by the
//! daemon itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::content::DirStore;
use super::digest::Digest;
use super::indexer::{ImageIndexer, IndexError, IndexReport, IndexerConfig};
use super::layer::{scan_layer, LayerError, ScanLimits};
use super::oci::Descriptor;
use super::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("OCI layout {path}: {detail}")]
    Layout { path: PathBuf, detail: String },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one cold layer scan did.
#[derive(Debug, Clone, Copy)]
pub struct ScanStats {
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub changes: usize,
    pub elapsed: Duration,
}

/// Scans a layer blob file on the calling thread (blocking): blob digest, decompression,
/// diff_id and per-file hashes, exactly as the indexer does. `digest` is what the blob must
/// hash to.
pub fn scan_blob_file(path: &Path, digest: Digest) -> Result<ScanStats, BenchError> {
    let io = |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let started = Instant::now();
    let files = scan_layer(
        file,
        digest,
        size,
        &ScanLimits::default(),
        Arc::default(),
        |_| {},
    )?;
    Ok(ScanStats {
        compressed_bytes: files.compressed_size,
        uncompressed_bytes: files.uncompressed_size,
        changes: files.changes.len(),
        elapsed: started.elapsed(),
    })
}

/// The target descriptor of an OCI layout: the `index.json` entry whose
/// `org.opencontainers.image.ref.name` or `io.containerd.image.name` annotation is `name`, or
/// the first entry when `name` is `None`.
pub fn oci_layout_target(layout: &Path, name: Option<&str>) -> Result<Descriptor, BenchError> {
    let index_path = layout.join("index.json");
    let layout_error = |detail: String| BenchError::Layout {
        path: layout.to_path_buf(),
        detail,
    };
    let text = std::fs::read(&index_path).map_err(|source| BenchError::Io {
        path: index_path.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| layout_error(e.to_string()))?;
    let manifests = json["manifests"]
        .as_array()
        .ok_or_else(|| layout_error("index.json has no manifests".into()))?;
    let entry = manifests
        .iter()
        .find(|m| {
            name.is_none_or(|name| {
                let annotations = &m["annotations"];
                annotations["org.opencontainers.image.ref.name"] == name
                    || annotations["io.containerd.image.name"] == name
            })
        })
        .ok_or_else(|| layout_error(format!("no manifest named {name:?}")))?;
    Ok(Descriptor {
        media_type: entry["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: Digest::parse(entry["digest"].as_str().unwrap_or_default())
            .map_err(|e| layout_error(e.to_string()))?,
        size: entry["size"]
            .as_u64()
            .ok_or_else(|| layout_error("manifest entry has no size".into()))?,
        platform: None,
    })
}

/// Indexes an image from an OCI layout directory with the layer cache in `state_dir`. With
/// `trust_cache` a second call measures the warm path the daemon takes.
pub async fn index_oci_layout(
    layout: &Path,
    name: Option<&str>,
    state_dir: &Path,
    trust_cache: bool,
) -> Result<IndexReport, BenchError> {
    let target = oci_layout_target(layout, name)?;
    let mut config = IndexerConfig::new(state_dir);
    config.trust_layer_cache = trust_cache;
    let indexer = ImageIndexer::new(DirStore::new(layout.join("blobs")), config)?;
    Ok(indexer.index(&target, Progress::new()).await?)
}
