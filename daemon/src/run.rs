//! `layerguard run`: wires the stages together and owns the daemon's lifetime.
//!
//! Data flows one way over bounded channels: kernel -> sensor -> (containers -> verify ->
//! alert, as they arrive) . This module only builds the stages, starts them, and shuts
//! them down in order on SIGINT/SIGTERM so that nothing in flight is lost.

use crate::config::Config;
use crate::logging;
use crate::sensor::{ExecEvent, LossCounts, Sensor, SensorError, SensorEvent};
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a pipeline stage failed: {0}")]
    Stage(String),
}

#[derive(Serialize)]
struct Ready<'a> {
    version: &'static str,
    node_name: &'a str,
    programs: Vec<String>,
    kernel: &'a crate::sensor::KernelFeatures,
    host_mnt_ns: u32,
    monitor_host: bool,
}

pub async fn run(config: Config) -> Result<(), RunError> {
    // Privileges and BTF first: a non-root user should hear that, not a state-dir error.
    crate::sensor::preflight::check().map_err(SensorError::from)?;
    std::fs::create_dir_all(&config.state_dir).map_err(|source| RunError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| RunError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| RunError::Signal {
        signal: "SIGINT",
        source,
    })?;

    let sensor = Sensor::load(&config.sensor)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (event_tx, event_rx) = mpsc::channel(config.sensor.event_queue);

    logging::record(
        "INFO",
        "layerguard",
        "layerguard ready",
        &Ready {
            version: env!("CARGO_PKG_VERSION"),
            node_name: &config.node_name,
            programs: sensor.programs(),
            kernel: sensor.features(),
            host_mnt_ns: sensor.host_mnt_ns(),
            monitor_host: config.sensor.monitor_host,
        },
    );

    let sensor_task = tokio::spawn(sensor.run(event_tx, shutdown_rx));
    let consumer_task = tokio::spawn(log_events(event_rx));

    tokio::select! {
        _ = sigterm.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = sigint.recv() => info!(signal = "SIGINT", "shutting down"),
    }
    let _ = shutdown_tx.send(true);
    // The sensor drains what is left and detaches; the consumer ends when its channel
    // closes, so every event the kernel delivered is still handled.
    let sensor_result = sensor_task
        .await
        .map_err(|e| RunError::Stage(format!("sensor task: {e}")))?;
    consumer_task
        .await
        .map_err(|e| RunError::Stage(format!("event consumer task: {e}")))?;
    sensor_result?;
    info!("layerguard stopped");
    Ok(())
}

/// Until the judging stages exist, every exec event is logged as a record.
async fn log_events(mut rx: mpsc::Receiver<SensorEvent>) {
    while let Some(event) = rx.recv().await {
        match event {
            SensorEvent::Exec(exec) => log_exec(&exec),
            SensorEvent::Lost(lost) => log_loss(&lost),
            SensorEvent::Fork(_) | SensorEvent::Exit(_) => {}
        }
    }
}

fn log_exec(exec: &ExecEvent) {
    logging::record("INFO", "layerguard::exec", "exec", exec);
}

fn log_loss(lost: &LossCounts) {
    warn!(
        exec = lost.exec,
        fork = lost.fork,
        exit = lost.exit,
        undecodable = lost.undecodable,
        "sensor events lost"
    );
    logging::record("WARN", "layerguard::sensor", "sensor_events_lost", lost);
}
