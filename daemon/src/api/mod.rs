//! The gRPC API (`layerguard.v1`): alerts (live stream with resume, and listing from the
//! journal), containers, status, plus the standard health and reflection services, on a
//! unix socket and, only with mutual TLS, on TCP.
//!
//! Parts: [`transport`] (listeners, TLS, peers), [`auth`] (access table and the layer
//! that enforces it), [`alert_server`] / [`alerts`] / [`subscription`] / [`filter`] /
//! [`wire`] (AlertService: routing, handlers, catch-up and live switching, filters, alerts
//! encoded once for all streams), [`containers`] (ContainerService and the
//! [`ContainerDirectory`] the containers stage implements), [`status`] (StatusService),
//! [`response`] (ResponseService: pause, release, kill; responder role), [`convert`]
//! (model <-> wire).
//!
//! This module serves what other stages keep; it must not hold pipeline state, and
//! nothing it does may slow the pipeline: alerts reach it through the journal's broadcast,
//! which never waits for a subscriber.
//!
//! Wiring (in `run`): open the journal, give the alert stage a
//! [`JournalSink`](crate::alert::journal::JournalSink), then [`ApiServer::bind`] before
//! announcing readiness and spawn [`ApiServer::run`] with the shutdown signal.

pub(crate) mod alert_server;
pub(crate) mod alerts;
pub(crate) mod auth;
pub(crate) mod baseline;
pub mod client;
pub(crate) mod containers;
pub(crate) mod convert;
pub(crate) mod filter;
pub(crate) mod response;
pub(crate) mod status;
pub(crate) mod subscription;
pub(crate) mod transport;
pub(crate) mod wire;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

pub use alerts::REFUSED_AT_SEQ;
pub(crate) use auth::AccessTable;
pub(crate) use containers::{ContainerDirectory, LiveDirectory};
pub use convert::system_time;
pub use filter::AlertFilter;
pub(crate) use status::NodeInfo;

use crate::alert::journal::Journal;
use crate::config::ApiConfig;
use crate::metrics::{Metrics, SAMPLE_EVERY};
use layerguard_proto::v1 as pb;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// HTTP/2 pings on idle connections: a client behind a NAT that vanished is noticed and
/// its stream task freed.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the API could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The unix socket could not be set up.
    #[error("API socket {path}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A live daemon answers on the socket.
    #[error("API socket {path} is served by another process (is another layerguard running?)")]
    SocketInUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("API socket path {path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// `api.socket_group` names no group, or the socket cannot be given it.
    #[error("API socket group {group:?}: {problem}")]
    Group {
        /// The group as configured.
        group: String,
        /// What is wrong.
        problem: String,
    },
    /// The TCP port could not be bound.
    #[error("API TCP listener {addr}: {source}")]
    Tcp {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file is unreadable or invalid.
    #[error("API TLS {path}: {problem}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS settings are unusable together.
    #[error("API TLS: {0}")]
    TlsConfig(String),
    /// The reflection service could not be built.
    #[error("API reflection service: {0}")]
    Reflection(String),
    /// The server failed.
    #[error("API server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the API reads from the rest of the daemon.
#[derive(Clone)]
pub(crate) struct ApiSources {
    pub containers: Arc<dyn ContainerDirectory>,
    /// Carries out ResponseService calls.
    pub responder: crate::respond::Responder,
    pub metrics: Arc<Metrics>,
    /// Where a response by hand is reported as an alert (`response_taken`/`_failed`).
    pub reports: tokio::sync::mpsc::Sender<crate::alert::AlertDraft>,
    /// Serves BaselineService, when the baseline runs.
    pub baseline: Option<crate::baseline::Handle>,
    pub node: NodeInfo,
}

/// The API with its listeners bound (so that bind errors stop the daemon at start, before
/// it says it is ready), not yet serving.
pub(crate) struct ApiServer {
    listeners: transport::Listeners,
    journal: Arc<Journal>,
    sources: ApiSources,
    table: AccessTable,
    max_subscribers: usize,
}

impl ApiServer {
    pub async fn bind(
        config: &ApiConfig,
        journal: Arc<Journal>,
        sources: ApiSources,
    ) -> Result<Self, ApiError> {
        let listeners = transport::Listeners::bind(config).await?;
        info!(socket = %config.socket.display(), mode = format!("{:o}", config.socket_mode),
            group = config.socket_group.as_deref().unwrap_or(""),
            tcp = listeners.tcp_addr().map(|a| a.to_string()).unwrap_or_default(),
            "API listening");
        Ok(Self {
            listeners,
            journal,
            sources,
            table: AccessTable::production(),
            max_subscribers: config.max_subscribers,
        })
    }

    #[cfg(test)]
    /// Replaces the access table (tests use it to mark a method responder-only).
    pub fn with_access_table(mut self, table: AccessTable) -> Self {
        self.table = table;
        self
    }

    #[cfg(test)]
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.listeners.tcp_addr()
    }

    /// Serves until `shutdown` turns true; open streams end with UNAVAILABLE and the
    /// socket file is removed.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in pb::SERVICES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            b.register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .map_err(|e| ApiError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(|e| ApiError::Reflection(e.to_string()))?;

        let metrics = self.sources.metrics.clone();
        let alerts = alerts::AlertApi::new(
            self.journal.clone(),
            metrics.clone(),
            self.max_subscribers,
            shutdown.clone(),
        );
        let containers =
            containers::ContainerApi::new(self.sources.containers.clone(), metrics.clone());
        let status = status::StatusApi {
            node: self.sources.node.clone(),
            metrics: metrics.clone(),
            journal: self.journal.clone(),
            containers: self.sources.containers.clone(),
        };

        let response = response::ResponseApi::new(
            self.sources.responder.clone(),
            self.sources.metrics.clone(),
            self.sources.reports.clone(),
        );
        let baselines = baseline::BaselineApi::new(self.sources.baseline.clone());

        let sampler = tokio::spawn(sample_metrics(metrics, shutdown.clone()));
        let (incoming, socket_file) = self.listeners.accept(shutdown.clone());
        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
        let mut stop = shutdown.clone();
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(auth::AuthLayer::new(self.table))
            .add_service(alert_server::AlertServer::new(alerts))
            .add_service(pb::container_service_server::ContainerServiceServer::new(
                containers,
            ))
            .add_service(pb::status_service_server::StatusServiceServer::new(status))
            .add_service(pb::response_service_server::ResponseServiceServer::new(
                response,
            ))
            .add_service(pb::baseline_service_server::BaselineServiceServer::new(
                baselines,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
                for name in pb::SERVICES {
                    health
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
            })
            .await;
        sampler.abort();
        drop(socket_file);
        info!("API stopped");
        result.map_err(ApiError::from)
    }
}

async fn sample_metrics(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            now = tick.tick() => metrics.sample(now.into_std()),
        }
    }
}
