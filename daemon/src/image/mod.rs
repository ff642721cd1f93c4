//! Image integrity: turns an image in containerd's content store into a verified, merged index
//! `path -> { sha256, size, mode, kind, layer }`, or an `Untrusted` verdict that says which
//! blob failed and how.
//!
//! Mirrors containerd's split: a content store hands out blobs by digest (`content`,
//! `containerd`), everything is verified on read (`digest`), formats are parsed strictly
//! (`oci`, `tar`), each layer is streamed once into its change list (`layer`), change lists
//! are cached on disk by layer digest (`cache`), and layers are merged with overlay semantics
//! into the index the exec checks use (`index`). `indexer` runs the chain of trust;
//! `cli` is `layerguard image verify`.
//!
//! This module must never touch the host filesystem on an image's behalf: paths are strings
//! resolved inside the index, and nothing is extracted.

pub mod bench;
pub mod cache;
pub mod cli;
pub mod containerd;
pub mod content;
pub mod digest;
pub mod index;
pub mod indexer;
pub mod layer;
pub mod oci;
pub mod path;
pub mod progress;
pub mod tar;

#[cfg(test)]
mod chain_tests;

pub use cli::{verify_command, VerifyArgs};
pub use containerd::ContainerdStore;
pub use content::{ContentError, ContentStore, DirStore, MemoryStore};
pub use digest::Digest;
pub use index::{EntryKind, FileEntry, LayerIndex, LookupError};
pub use indexer::{ImageIndexer, ImageVerdict, IndexError, IndexReport, IndexerConfig, Untrusted};
pub use oci::{Descriptor, Platform};
pub use progress::Progress;
