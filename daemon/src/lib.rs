//! layerguard: checks that what runs in a container is what its image layers recorded.
//!
//! Stages, in the order data flows (each owns its state; bounded channels between them):
//! `sensor` (kernel events) -> `containers` (which container) -> `process` (the process
//! tracker) -> analyzers (`verify` judges execs, `files` writes and executable mappings,
//! `trust` each container's image signature;
//! `baseline` learns what each workload does from their outcomes) -> [`alert`] (sinks: log, file, journal)
//! -> `respond` (pause, release, kill). [`api`] serves the gRPC API; [`image`] is the OCI
//! content and layer-index library `verify` asks; [`containerd`] the one containerd
//! client. [`config`] is the one typed configuration; [`run`] wires the stages for
//! `layerguard run`; `statedir` checks and migrates the state directory's formats before
//! any store opens. Leaf modules every stage may use: `clock`, `identity`, `procfs`,
//! `metrics`.
//!
//! What is public is what the `layerguard` binary (the daemon's command line and its CLI
//! client) uses; the stages themselves are the crate's own.
#![warn(missing_docs)]

pub mod alert;
pub mod api;
pub(crate) mod baseline;
pub mod check;
pub(crate) mod clock;
pub mod config;
pub mod containerd;
pub(crate) mod containers;
pub(crate) mod files;
#[cfg(test)]
mod fixtures;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub(crate) mod identity;
pub mod image;
#[cfg(test)]
mod layering;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod prometheus;
pub(crate) mod respond;
pub mod run;
pub(crate) mod sensor;
pub(crate) mod statedir;
pub(crate) mod trust;
pub(crate) mod verify;
pub(crate) mod webhook;

/// Image signature checks against `[trust]`, for `layerguard image verify`.
pub mod signatures {
    pub use crate::trust::judge::{Judgement, SignatureReport, SignatureState};
    pub use crate::trust::verify_image;
}
