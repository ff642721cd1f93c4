//! `layerguard run`: wires the stages together and owns the daemon's lifetime.
//!
//! Data flows one way over bounded channels: kernel -> sensor -> containers -> process
//! -> analyzers (verify, files, trust, baseline) -> alert (log, file, journal sinks; the API serves the journal). This module only builds
//! the stages, starts them, and shuts them down in order on SIGINT/SIGTERM so that nothing
//! in flight is lost.

use crate::alert::file::FileSink;
use crate::alert::journal::{Journal, JournalError, JournalLimits, JournalSink};
use crate::alert::log::LogSink;
use crate::alert::{AlertSink, AlertStage, AlertStats};
use crate::api::{ApiError, ApiServer, ApiSources, LiveDirectory, NodeInfo};
use crate::config::{AlertsConfig, Config, ConfigSource, JournalConfig, PipelineScheduling};
use crate::containerd::Containerd;
use crate::containers::{ContainersStage, StageStats};
use crate::files::{FilesStage, FilesStats};
use crate::image::IndexerConfig;
use crate::logging;
use crate::metrics::Metrics;
use crate::process::{Analyzer, ProcessStage, Wants};
use crate::sensor::{Pace, Sensor, SensorError};
use crate::trust::TrustStage;
use crate::verify::images::ImageCatalog;
use crate::verify::{VerifyStage, VerifyStats};
use serde::Serialize;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing::info;

/// Why the daemon stopped, or would not start: one sentence for the journal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sensor could not load or run (not root, no BTF, a program the kernel refused).
    #[error(transparent)]
    Sensor(#[from] SensorError),
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state directory holds a store in a format this binary does not read, or its
    /// migration failed.
    #[error(transparent)]
    StateFormat(#[from] crate::statedir::StateDirError),
    /// A stage's task failed (panicked).
    #[error("a pipeline stage failed: {0}")]
    Stage(String),
    /// The thread of the per-event stages could not start.
    #[error("cannot start the event pipeline's thread: {0}")]
    PipelineThread(#[source] std::io::Error),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The API could not be bound or served.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The metrics port could not be bound.
    #[error("cannot listen on metrics.listen {listen}: {source}")]
    Metrics {
        /// The address.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A webhook could not be set up (its headers file, its cursor directory).
    #[error("{0}")]
    Webhook(String),
    /// A `[[trust.keys]]` file could not be read.
    #[error("{0}")]
    TrustKeys(String),
}

#[derive(Serialize)]
struct Ready<'a> {
    version: &'static str,
    node_name: &'a str,
    programs: Vec<String>,
    file_hooks: String,
    file_hook_roles: Vec<crate::sensor::hooks::RoleHooks>,
    kernel_hooks_refused: Vec<String>,
    kernel: &'a crate::sensor::KernelFeatures,
    host_mnt_ns: u32,
    monitor_host: bool,
}

/// Runs the daemon until SIGINT or SIGTERM, then stops every stage in order: the sensor
/// drains the ring buffer and detaches, each later stage ends when its input closes, so
/// every event the kernel delivered is judged and alerted.
pub async fn run(config: Config, source: ConfigSource) -> Result<(), RunError> {
    // Privileges and BTF first: a non-root user should hear that, not a state-dir error.
    crate::sensor::preflight::check().map_err(SensorError::from)?;
    std::fs::create_dir_all(&config.state_dir).map_err(|source| RunError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    // Before any store opens (and before the sensor loads): a store in a format this
    // binary does not read stops the start here, naming it.
    crate::statedir::prepare(&config.state_dir)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| RunError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| RunError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|source| RunError::Signal {
        signal: "SIGHUP",
        source,
    })?;

    let file_programs = file_programs(&config);
    let mut sensor = Sensor::load(&config.sensor, file_programs.as_ref())?;
    let file_feedback = sensor.file_feedback()?;
    let containerd = Containerd::new(&config.containerd_socket, config.containerd.timeouts());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (webhook_stop, webhook_stop_rx) = watch::channel(false);
    let (event_tx, event_rx) = mpsc::channel(config.sensor.event_queue);
    // The same capacity after the containers stage: it adds no burst of its own.
    let (attributed_tx, attributed_rx) = mpsc::channel(config.sensor.event_queue);

    let metrics = Arc::new(if config.files.enabled {
        Metrics::new().with_files()
    } else {
        Metrics::new()
    });
    let containers =
        ContainersStage::new(&config.containers, containerd.clone(), sensor.host_mnt_ns())
            .with_metrics(metrics.clone());
    let containers_table = containers.directory();

    // Keys are read before "ready": a missing key file stops the start.
    let trust = match config.trust.enabled {
        true => Some(
            TrustStage::new(
                &config.trust,
                containerd.clone(),
                metrics.clone(),
                tokio::runtime::Handle::current(),
            )
            .map_err(|e| RunError::TrustKeys(e.to_string()))?,
        ),
        false => None,
    };
    let (trust, trust_handle) = trust.unzip();
    let catalog = Arc::new(ImageCatalog::new(
        containerd.clone(),
        IndexerConfig::new(&config.state_dir),
    ));
    // The baselines load before the API serves them.
    let mut baseline = config.baseline.enabled.then(|| {
        crate::baseline::BaselineStage::new(
            &config.baseline,
            &config.state_dir.join("baselines"),
            catalog.clone(),
            metrics.clone(),
        )
    });
    let baseline_handle = baseline.as_ref().map(|(_, _, _, handle, _)| handle.clone());
    // The journal seeds the alert sequence, and the API is bound before "ready" so that a
    // taken socket or bad TLS files stop the start, not a running daemon.
    let (journal, first_seq) = if config.journal.enabled {
        Journal::open(
            &config.state_dir.join("journal"),
            journal_limits(&config.journal, config.api.subscriber_queue),
        )?
    } else {
        (Journal::disabled(1, config.api.subscriber_queue), 1)
    };
    // The metrics port is bound before "ready" too.
    let metrics_listener = match config.metrics.address() {
        Ok(Some(addr)) => {
            Some(
                crate::prometheus::bind(addr)
                    .await
                    .map_err(|source| RunError::Metrics {
                        listen: config.metrics.listen.clone(),
                        source,
                    })?,
            )
        }
        _ => None,
    };
    // Webhooks resume from their cursors (or start at this run's first alert).
    let mut webhooks = Vec::new();
    for w in &config.alerts.webhook {
        let hook = crate::webhook::Webhook::new(w, journal.clone(), &config.state_dir, first_seq)
            .map_err(RunError::Webhook)?;
        metrics
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook.status());
        webhooks.push(hook);
    }
    // Response alerts (by policy or by hand) reach the alert stage here.
    let (reports_tx, reports_rx) = mpsc::channel(1024);
    let api = if config.api.enabled {
        let sources = ApiSources {
            responder: crate::respond::Responder::new(containerd.clone()),
            containers: Arc::new(LiveDirectory(containers.directory())),
            metrics: metrics.clone(),
            reports: reports_tx.clone(),
            baseline: baseline_handle,
            node: NodeInfo {
                node_name: config.node_name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                kernel: sensor.features().clone(),
                programs: sensor.programs(),
                file_hooks: sensor.file_hooks(),
                file_hook_roles: sensor.file_hook_roles(),
                kernel_hooks_refused: sensor.kernel_hooks_refused(),
            },
        };
        Some(ApiServer::bind(&config.api, journal.clone(), sources).await?)
    } else {
        None
    };

    logging::record(
        "INFO",
        "layerguard",
        "layerguard ready",
        &Ready {
            version: env!("CARGO_PKG_VERSION"),
            node_name: &config.node_name,
            programs: sensor.programs(),
            file_hooks: sensor.file_hooks(),
            file_hook_roles: sensor.file_hook_roles(),
            kernel_hooks_refused: sensor.kernel_hooks_refused(),
            kernel: sensor.features(),
            host_mnt_ns: sensor.host_mnt_ns(),
            monitor_host: config.sensor.monitor_host,
        },
    );

    let (verified_tx, alert_drafts) = mpsc::channel(config.alerts.queue);
    let process = ProcessStage::new(config.process.table_entries, sensor.host_mnt_ns());
    let mut verify = VerifyStage::new(&config.verify, catalog.clone(), metrics.clone());
    let mut files = config.files.enabled.then(|| {
        FilesStage::new(
            &config.files,
            catalog,
            config.verify.max_file_bytes,
            config.verify.allow.clone(),
            file_feedback,
            metrics.clone(),
        )
    });
    let mut baseline_stage = None;
    if let Some((stage, input, feed, _, commands)) = baseline.take() {
        verify = verify.with_baseline(feed.clone());
        files = files.map(|f| f.with_baseline(feed));
        let stage = stage.with_containers(containers_table.clone());
        baseline_stage = Some((stage, input, commands));
    }
    // The analyzers, each behind its own channel of the process stage's batches (a drain
    // each: the same bound in events as the channels before it).
    let analyzer_queue = (config.sensor.event_queue / crate::process::EVENT_BATCH).max(2);
    let (to_verify, verify_rx) = mpsc::channel(analyzer_queue);
    let (to_files, files_rx) = mpsc::channel(analyzer_queue);
    let (to_trust, trust_rx) = mpsc::channel(analyzer_queue);
    let mut analyzers = vec![Analyzer {
        tx: to_verify,
        wants: Wants::Everything,
    }];
    if trust.is_some() {
        analyzers.push(Analyzer {
            tx: to_trust,
            wants: Wants::ContainerExecs,
        });
    }
    if files.is_some() {
        analyzers.push(Analyzer {
            tx: to_files,
            wants: Wants::Files,
        });
    }
    let mut sinks = alert_sinks(&config.alerts);
    sinks.push(Box::new(crate::metrics::MetricsSink(metrics.clone())));
    // Last: the journal publishes to live subscribers after the log line is out.
    let journal_for_outputs = journal.clone();
    sinks.push(Box::new(JournalSink::new(journal)));
    // After the journal: a response answers an alert already kept.
    let respond = (!config.respond.policy.is_empty()).then(|| {
        let (tx, rx) = mpsc::channel(crate::respond::stage::QUEUE);
        sinks.push(Box::new(crate::respond::stage::RespondSink::new(tx)));
        let stage = crate::respond::stage::RespondStage::new(
            &config.respond,
            crate::respond::Responder::new(containerd.clone()),
            metrics.clone(),
        );
        (stage, rx)
    });
    let alerts = AlertStage::new(&config.node_name, first_seq, sinks);

    let api_task = api.map(|api| tokio::spawn(api.run(shutdown_rx.clone())));
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(crate::prometheus::serve(
            listener,
            crate::prometheus::Sources {
                metrics: metrics.clone(),
                journal: journal_for_outputs.clone(),
                baseline: config.baseline.enabled,
                node: config.node_name.clone(),
            },
            shutdown_rx.clone(),
        ))
    });
    let webhook_tasks: Vec<_> = webhooks
        .into_iter()
        .map(|w| tokio::spawn(w.run(webhook_stop_rx.clone())))
        .collect();
    let pipeline = PipelineThread::start(config.sensor.scheduling)?;
    let pace = Pace::new(config.sensor.scheduling, pipeline.tid);
    let sensor_task = pipeline.spawn(sensor.run(event_tx, shutdown_rx.clone(), pace));
    let containers_task = pipeline.spawn(containers.run(event_rx, attributed_tx, shutdown_rx));
    let process_task = pipeline.spawn(process.run(attributed_rx, analyzers));
    let files_task = files.map(|f| pipeline.spawn(f.run(files_rx, verified_tx.clone())));
    // On the pipeline thread too: an exec's outcome reaches it without waking a thread
    // (its saves run on the blocking pool).
    let baseline_task = baseline_stage.map(|(stage, input, commands)| {
        pipeline.spawn(stage.run(input, commands, verified_tx.clone()))
    });
    // Its judgements run as tasks on the pipeline thread too: containerd reads are async.
    let trust_task = trust.map(|t| pipeline.spawn(t.run(trust_rx, verified_tx.clone())));
    let verify_task = pipeline.spawn(verify.run(verify_rx, verified_tx));
    let alert_task = pipeline.spawn(alerts.run(alert_drafts, reports_rx));
    let respond_task = respond.map(|(stage, rx)| tokio::spawn(stage.run(rx, reports_tx.clone())));
    drop(reports_tx);

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!(signal = "SIGTERM", "shutting down"); break }
            _ = sigint.recv() => { info!(signal = "SIGINT", "shutting down"); break }
            _ = sighup.recv() => reload_trust(&source, &config, trust_handle.as_ref()),
        }
    }
    let _ = shutdown_tx.send(true);
    // The sensor drains what is left and detaches; each later stage ends when its input
    // channel closes, so every event the kernel delivered is still judged and alerted.
    let stage = |name: &'static str| {
        move |e: tokio::task::JoinError| RunError::Stage(format!("{name} task: {e}"))
    };
    let sensor_result = sensor_task.await.map_err(stage("sensor"))?;
    let containers = containers_task.await.map_err(stage("containers"))?;
    let processes = process_task.await.map_err(stage("process"))?;
    let verify = verify_task.await.map_err(stage("verify"))?;
    let files = match files_task {
        Some(t) => Some(t.await.map_err(stage("files"))?),
        None => None,
    };
    let trust = match trust_task {
        Some(t) => Some(t.await.map_err(stage("trust"))?),
        None => None,
    };
    let baseline = match baseline_task {
        Some(t) => Some(t.await.map_err(stage("baseline"))?),
        None => None,
    };
    let alerts = alert_task.await.map_err(stage("alert"))?;
    if let Some(t) = respond_task {
        // Its input closed with the alert stage; an action in flight may finish.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
    }
    // Webhooks stop after the last alert is journaled; what they have not delivered yet is
    // delivered after the next start (their cursors are saved).
    let _ = webhook_stop.send(true);
    for t in webhook_tasks {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    pipeline.stop();
    if let Some(task) = api_task {
        task.await.map_err(stage("api"))??;
    }
    sensor_result?;
    logging::record(
        "INFO",
        "layerguard",
        "layerguard stopped",
        &Stopped {
            containers,
            processes,
            verify,
            files,
            baseline,
            trust,
            alerts,
        },
    );
    Ok(())
}

/// SIGHUP: reads the config file again and replaces the trust section (keys, policies);
/// says what changed, or why nothing did. Other sections need a restart, and the log says
/// so when they differ.
fn reload_trust(
    source: &ConfigSource,
    running: &Config,
    trust: Option<&crate::trust::TrustHandle>,
) {
    let new = match source.load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the config does not load; the trust section in use stays");
            return;
        }
    };
    let Some(trust) = trust else {
        tracing::warn!(
            "SIGHUP: trust.enabled is false; nothing is reloaded (a restart applies the config)"
        );
        return;
    };
    match trust.reload(&new.trust) {
        Ok(changes) if changes.is_empty() => {
            info!(path = %source.path.display(), "SIGHUP: trust section reloaded, nothing changed")
        }
        Ok(changes) => info!(path = %source.path.display(), changes = %changes.join("; "),
            "SIGHUP: trust section reloaded; every image is judged again at its next container"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the trust section does not load; the one in use stays")
        }
    }
    let mut others = new;
    others.trust = running.trust.clone();
    if others != *running {
        tracing::warn!(
            "SIGHUP reloads only [trust]; the other changes in the config take effect at the next restart"
        );
    }
}

/// The file programs `config` asks the sensor for (`layerguard check` loads the same).
pub(crate) fn file_programs(config: &Config) -> Option<crate::sensor::FilePrograms> {
    config.files.enabled.then(|| crate::sensor::FilePrograms {
        watched: crate::files::judge::watched_dirs(
            &config.files,
            crate::sensor::wire::WATCH_NAME_LEN,
        ),
        syscall_hooks: config.files.syscall_hooks,
        kernel_hooks: config.files.kernel_hooks,
        learn_write_dirs: config.baseline.enabled,
    })
}

/// The thread the per-event stages (sensor, containers, process, the analyzers) and the
/// alert stage run on: a current-thread runtime of their own. Every event passes them, batch
/// by batch; on one thread a batch goes through them without waking another thread. On
/// the shared 2-worker runtime tokio woke the second worker to steal the next stage's
/// task about once per batch, and a thread wake-up costs about 20 us of CPU on the 2-core
/// VMs we target (measured in the exec storm of `make bench`: 0.11 -> 0.08 daemon thread
/// wake-ups per exec). Blocking work (hashing, indexing) still goes to the blocking pool;
/// the API stays on the main runtime.
/// The alert stage is here too: on the main runtime each alert waited for a parked worker
/// to wake (~150 us of the cached exec-to-alert median, measured with timestamps per
/// stage). A slow sink stalls this thread, but it stalled verify as much before, through
/// the bounded alert channel.
/// The sensor sets the thread's scheduling policy as it goes (see `sensor::pace`).
struct PipelineThread {
    /// The thread's kernel id, for its scheduling policy.
    tid: libc::pid_t,
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl PipelineThread {
    fn start(scheduling: PipelineScheduling) -> Result<Self, RunError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Only the blocking pool's threads start here (hashing, indexing): throughput
            // work that should not preempt the workload.
            .thread_name("lg-blocking")
            .on_thread_start(move || {
                if scheduling != PipelineScheduling::Normal {
                    crate::sensor::pace::make_this_thread_batch();
                }
            })
            .build()
            .map_err(RunError::PipelineThread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lg-pipeline".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                // Tasks on a current-thread runtime only run while it is blocked on.
                let _ = runtime.block_on(stopped);
                // An image index still being built on the blocking pool must not hold
                // up the exit.
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            })
            .map_err(RunError::PipelineThread)?;
        let tid = tid_rx.recv().map_err(|_| {
            RunError::PipelineThread(std::io::Error::other("the thread ended at its start"))
        })?;
        Ok(Self {
            tid,
            handle,
            stop,
            thread,
        })
    }

    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// After its stages have ended: lets the thread return and waits for it.
    fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the event pipeline's thread panicked");
        }
    }
}

/// The journal's limits from `[journal]`, with the live queue from `[api]
/// subscriber_queue`.
fn journal_limits(journal: &JournalConfig, subscriber_queue: usize) -> JournalLimits {
    use crate::alert::journal::{FsyncPolicy, RECENT_PER_LIVE_SLOT};
    use crate::config::FsyncMode;
    JournalLimits {
        segment_bytes: journal.segment_bytes,
        max_bytes: journal.max_bytes,
        max_age: journal.max_age(),
        fsync: match journal.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Batched => FsyncPolicy::Batched(journal.fsync_interval()),
            FsyncMode::Never => FsyncPolicy::Never,
        },
        live_queue: subscriber_queue,
        recent_alerts: subscriber_queue * RECENT_PER_LIVE_SLOT,
    }
}

fn alert_sinks(config: &AlertsConfig) -> Vec<Box<dyn AlertSink>> {
    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    if config.log {
        sinks.push(Box::new(LogSink));
    }
    if let Some(path) = &config.file {
        sinks.push(Box::new(
            FileSink::new(path, config.file_max_bytes, config.file_keep)
                .with_format(config.file_format),
        ));
    }
    sinks
}

#[derive(Serialize)]
struct Stopped {
    /// The containers table at the end, and how events were attributed over the run.
    containers: StageStats,
    /// Processes in the tracker's table at the end.
    processes: usize,
    verify: VerifyStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<FilesStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<crate::baseline::BaselineStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trust: Option<crate::trust::TrustStats>,
    alerts: AlertStats,
}
