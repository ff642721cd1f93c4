//! `/metrics`: the daemon's figures in the OpenMetrics text format, for a Prometheus server
//! to scrape, on `metrics.listen` (off by default).
//!
//! Owns the metric names, their labels and the HTTP endpoint. Every scrape builds its
//! families afresh from the daemon's counters ([`crate::metrics`], the journal's stats), so nothing here is counted twice and nothing on the pipeline's path waits
//! for a scrape. Labels are bounded sets (kinds, severities, states, actions, webhook
//! URLs); no label names a pod or a container (cardinality).

use crate::alert::journal::Journal;
use crate::metrics::Metrics;
use crate::sensor::EventKind;
use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// OpenMetrics' content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub journal: Arc<Journal>,
    /// The baseline runs (its states are reported).
    pub baseline: bool,
    pub node: String,
}

fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        family
            .get_or_create(&labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

fn one(v: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), v)]
}

/// The text of one scrape.
pub fn render(s: &Sources) -> String {
    let m = &s.metrics;
    let mut r = Registry::default();
    r.register(
        "layerguard_build",
        "The daemon's version and node",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("node", s.node.clone()),
        ]),
    );
    counter_family(
        &mut r,
        "layerguard_events",
        "Sensor events received, by kind",
        EventKind::ALL
            .iter()
            .map(|k| (vec![("kind", k.name().to_string())], m.events.get(*k).get())),
    );
    let mut lost: Vec<(Labels, u64)> = EventKind::ALL
        .iter()
        .map(|k| {
            (
                vec![("kind", k.name().to_string()), ("where", "kernel".into())],
                m.lost_kernel.get(*k).get(),
            )
        })
        .collect();
    lost.push((
        vec![("kind", "any".into()), ("where", "queue".into())],
        m.lost_queue.get(),
    ));
    lost.push((
        vec![("kind", "any".into()), ("where", "undecodable".into())],
        m.undecodable.get(),
    ));
    counter_family(
        &mut r,
        "layerguard_events_lost",
        "Events lost, by kind and where",
        lost,
    );
    counter_family(
        &mut r,
        "layerguard_verdicts",
        "Exec verdicts, by verdict",
        m.verdicts_by_name()
            .into_iter()
            .map(|(v, n)| (vec![("verdict", v.to_string())], n)),
    );
    counter_family(
        &mut r,
        "layerguard_alerts",
        "Alerts published since the daemon started, by kind and severity",
        m.alert_counts().into_iter().map(|((kind, severity), n)| {
            (
                vec![
                    ("kind", kind.to_string()),
                    ("severity", severity.to_string()),
                ],
                n,
            )
        }),
    );
    counter_family(
        &mut r,
        "layerguard_hash_cache_hits",
        "Content hash cache hits",
        one(m.hash_cache_hits.get()),
    );
    counter_family(
        &mut r,
        "layerguard_hash_cache_misses",
        "Content hash cache misses",
        one(m.hash_cache_misses.get()),
    );
    let images = m.verdict_totals();
    gauge_family(
        &mut r,
        "layerguard_container_signatures",
        "Containers in the table, by the signature state of their image",
        m.signature_totals()
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n)),
    );
    counter_family(
        &mut r,
        "layerguard_exec_checks",
        "Exec checks by outcome class (verified, alerted, unverifiable, skipped)",
        [
            ("verified", images.verified),
            ("alerted", images.alerted),
            ("unverifiable", images.unverifiable),
            ("skipped", images.skipped),
        ]
        .into_iter()
        .map(|(c, n)| (vec![("outcome", c.to_string())], n)),
    );
    if s.baseline {
        // Counted by the baseline stage each second: a scrape must not copy the baselines.
        gauge_family(
            &mut r,
            "layerguard_baselines",
            "Behaviour baselines, by state",
            m.baseline_states()
                .into_iter()
                .map(|(state, n)| (vec![("state", state.to_string())], n)),
        );
    }
    counter_family(
        &mut r,
        "layerguard_responses",
        "Responses to containers, by action and result",
        m.response_counts()
            .into_iter()
            .map(|((action, result), n)| {
                (
                    vec![
                        ("action", action.to_string()),
                        ("result", result.to_string()),
                    ],
                    n,
                )
            }),
    );
    let journal = s.journal.stats();
    let webhooks = m.webhooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let per_webhook = |f: &dyn Fn(&crate::metrics::WebhookStatus) -> u64| {
        webhooks
            .iter()
            .map(|w| (vec![("url", w.url.clone())], f(w)))
            .collect::<Vec<_>>()
    };
    counter_family(
        &mut r,
        "layerguard_webhook_delivered",
        "Alerts a webhook receiver accepted",
        per_webhook(&|w| w.delivered.load(Ordering::Relaxed)),
    );
    counter_family(
        &mut r,
        "layerguard_webhook_failures",
        "Failed webhook POSTs (retried)",
        per_webhook(&|w| w.failures.load(Ordering::Relaxed)),
    );
    counter_family(
        &mut r,
        "layerguard_webhook_rejected",
        "Alerts a webhook receiver refused (4xx), skipped",
        per_webhook(&|w| w.rejected.load(Ordering::Relaxed)),
    );
    counter_family(
        &mut r,
        "layerguard_webhook_lost",
        "Alerts the journal no longer had when a webhook's delivery reached them",
        per_webhook(&|w| w.lost.load(Ordering::Relaxed)),
    );
    counter_family(
        &mut r,
        "layerguard_webhook_filtered",
        "Alerts below a webhook's min_severity, not posted",
        per_webhook(&|w| w.filtered.load(Ordering::Relaxed)),
    );
    gauge_family(
        &mut r,
        "layerguard_webhook_lag_alerts",
        "Alerts published and not yet delivered to a webhook",
        per_webhook(&|w| w.lag(journal.next_seq)),
    );
    gauge_family(
        &mut r,
        "layerguard_journal_bytes",
        "Size of the alert journal on disk",
        one(journal.bytes),
    );
    gauge_family(
        &mut r,
        "layerguard_subscribers",
        "Live AlertService.Subscribe streams",
        one(m.subscribers.get()),
    );
    r.register(
        "layerguard_exec_to_alert_seconds",
        "From an exec (the kernel's event) to its alert being published",
        m.exec_to_alert.clone(),
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        warn!(error = %e, "cannot encode the metrics");
    }
    out
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().ok();
    info!(listen = ?addr, "metrics endpoint serving /metrics");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let sources = sources.clone();
                    async move {
                        let response = if req.uri().path() == "/metrics"
                            && req.method() == hyper::Method::GET
                        {
                            hyper::Response::builder()
                                .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                                .body(Full::new(Bytes::from(render(&sources))))
                        } else {
                            hyper::Response::builder()
                                .status(hyper::StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(
                                    b"only GET /metrics is served\n",
                                )))
                        };
                        response
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// Binds `addr` (before the daemon says ready, so a taken port stops the start).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await
}
