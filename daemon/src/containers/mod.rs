//! The containers stage: between the sensor and everything that judges events, it says
//! which container (containerd namespace, id, image, manifest digest, pod) each event
//! came from.
//!
//! Owns a live table of the node's containers, fed by containerd's API (all namespaces,
//! listed at connect and followed through the event stream), and the mapping from a
//! sensor event's mount namespace (or, failing that, its pid ancestry) to a container.
//! Events are never dropped here: one whose container containerd has not reported yet
//! waits in a bounded queue for a short time and then goes on marked unresolved, with the
//! reason. It must not judge events, and containerd being down must not stop it.
//!
//! Parts: [`table`] and [`pending`] (pure
//! state), [`resolver`] (pure decisions), [`stage`] (the async loop), [`watcher`]
//! (containerd I/O; the platform pick in an image index is `image::oci`'s).
//! Every lookup is done in the sensor's time base ([`crate::clock`]).

pub mod events;
pub mod pending;
pub mod resolver;
pub mod stage;
pub mod table;
pub mod watcher;

pub use resolver::StageStats;
pub use stage::ContainerList;

use crate::config::ContainersConfig;
use crate::containerd::Containerd;
use crate::identity::Attribution;
use crate::metrics::Metrics;
use crate::sensor::{LossCounts, Observation, SensorEvent};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Notify};
use tracing::error;

/// Updates from the watcher waiting for the stage. A resync is one message, so this only
/// needs to absorb a burst of container starts.
pub const UPDATE_QUEUE: usize = 1024;

/// A sensor event with the container it came from.
#[derive(Clone, Debug)]
pub enum ContainerEvent {
    Observed(Observation, Attribution),
    /// Sensor losses pass through untouched (they belong to no process).
    Lost(LossCounts),
}

/// The stage, configured and not yet running.
pub struct ContainersStage {
    config: ContainersConfig,
    containerd: Containerd,
    host_mnt_ns: u32,
    directory: watch::Sender<ContainerList>,
    metrics: Arc<Metrics>,
}

impl ContainersStage {
    /// `host_mnt_ns` is the sensor's idea of the host mount namespace: events from it are
    /// attributed to the host without a lookup.
    pub fn new(config: &ContainersConfig, containerd: Containerd, host_mnt_ns: u32) -> Self {
        Self {
            config: config.clone(),
            containerd,
            host_mnt_ns,
            directory: watch::channel(ContainerList::default()).0,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts events and losses into `metrics` (the API's status) instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The live containers, republished whenever the table changes (for the API).
    pub fn directory(&self) -> watch::Receiver<ContainerList> {
        self.directory.subscribe()
    }

    /// Attributes every event from `events` and sends it to `out`, until `events` closes
    /// (the sensor stopped). Watches containerd meanwhile; `shutdown` stops the watcher.
    pub async fn run(
        self,
        events: mpsc::Receiver<SensorEvent>,
        out: mpsc::Sender<ContainerEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> StageStats {
        let (updates_tx, updates) = mpsc::channel(UPDATE_QUEUE);
        let poke = Arc::new(Notify::new());
        let watcher = watcher::Watcher {
            containerd: self.containerd,
            backoff: watcher::Backoff::new(
                self.config.reconnect_min(),
                self.config.reconnect_max(),
            ),
            platform: crate::image::oci::Platform::host(),
            updates: updates_tx,
            poke: Arc::clone(&poke),
            shutdown,
        };
        let watcher = tokio::spawn(watcher.run());
        let resolver = resolver::Resolver::new(&self.config, self.host_mnt_ns, resolver::ProcTree);
        let channels = stage::Channels {
            events,
            updates,
            out,
            poke,
            directory: self.directory,
            metrics: self.metrics,
        };
        let stats = stage::drive(resolver, channels, self.config.stats_interval()).await;
        watcher.abort();
        if let Err(e) = watcher.await {
            if e.is_panic() {
                error!(error = %e, "containerd watcher panicked");
            }
        }
        stats
    }
}
