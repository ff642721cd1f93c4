//! Image integrity: turns an image in containerd's content store into a verified, merged index
//! `path -> { sha256, size, mode, kind, layer }`, or an `Untrusted` verdict that says which
//! blob failed and how.
//!
//! Mirrors containerd's split: a content store hands out blobs by digest (`content`,
//! `containerd`), everything is verified on read (`digest`), formats are parsed strictly
//! (`oci`, `tar`), each layer is streamed once into its change list (`layer`), change lists
//! are cached on disk by layer digest (`cache`), and layers are merged with overlay semantics
//! into the index the exec checks use (`index`). `indexer` runs the chain of trust
//! (`layerguard image verify` is a client of it, in the binary).
//!
//! This module must never touch the host filesystem on an image's behalf: paths are strings
//! resolved inside the index, and nothing is extracted.

pub(crate) mod cache;
pub(crate) mod containerd;
pub(crate) mod content;
pub(crate) mod digest;
pub(crate) mod index;
pub(crate) mod indexer;
pub(crate) mod layer;
pub(crate) mod oci;
pub(crate) mod path;
pub(crate) mod progress;
pub(crate) mod tar;
mod verdict;

#[cfg(test)]
mod chain_tests;

// What `layerguard image verify` (in the binary) uses.
pub use containerd::ContainerdStore;
pub use digest::Digest;
pub use index::{EntryKind, FileEntry, LayerIndex};
pub use indexer::{ImageIndexer, ImageVerdict, IndexError, IndexReport, IndexerConfig, Untrusted};
pub use progress::Progress;
