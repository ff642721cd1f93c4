//! layerguard: checks that what runs in a container is what its image layers recorded.
//!
//! Stages, in the order data flows: [`sensor`] (kernel events) -> [`containers`] (identity)
//! -> verify and baseline (judgement) -> alert (sinks) -> respond. [`config`] is the one
//! typed configuration; [`run`] wires the stages for `layerguard run`.

pub mod alert;
pub mod config;
pub mod containers;
pub mod image;
pub mod logging;
pub mod run;
pub mod sensor;
pub mod verify;
