//! layerguard: checks that what runs in a container is what its image layers recorded.
//!
//! Stages, in the order data flows: [`sensor`] (kernel events) -> [`containers`] (identity)
//! -> [`verify`] (judgement) -> [`alert`] (sinks: log, file, journal) -> [`respond`]
//! (pause, release, kill). [`api`] serves the gRPC API and [`client`] is its CLI; [`image`]
//! is the OCI content and layer-index library `verify` asks. [`config`] is the one typed
//! configuration; [`run`] wires the stages for `layerguard run`.

pub mod alert;
pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod containerd;
pub mod containers;
#[cfg(test)]
mod fixtures;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod identity;
pub mod image;
#[cfg(test)]
mod layering;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod procfs;
pub mod respond;
pub mod run;
pub mod sensor;
pub mod verify;
