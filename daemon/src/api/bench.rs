//! Benchmarks of the alert path through the API (ignored tests; run in release):
//!
//! ```text
//! cargo test --release -p layerguard --lib api::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - `fanout_throughput`: alerts/s delivered to each of 10 subscribers over the unix
//!   socket, journal on (batched fsync, on disk), publisher as fast as it can.
//! - `added_latency`: per alert, the time from the log line being written to a subscriber
//!   receiving it over gRPC, at a paced rate (the gRPC path's cost on top of the log).
//!
//! The server runs on a 2-worker runtime like the daemon's; the subscribers run on their
//! own runtime, standing in for client processes on the same 2 cores.

use super::containers::NoContainers;
use super::{ApiServer, ApiSources, NodeInfo};
use crate::alert::journal::{FsyncPolicy, Journal, JournalLimits, JournalSink};
use crate::alert::{AlertDraft, AlertKind, AlertSink, AlertStage, SinkError};
use crate::config::ApiConfig;
use crate::fixtures::full_alert;
use crate::metrics::Metrics;
use layerguard_proto::v1 as pb;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 10;

struct Daemon {
    socket: PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), super::ApiError>>,
}

/// The API server on its own thread, as in the daemon (whose main thread runs the
/// runtime): a current-thread runtime only makes progress inside `block_on`.
struct Server {
    socket: PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(dir: &Path, journal: Arc<Journal>) -> Self {
        let dir = dir.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            server_runtime().block_on(async move {
                let d = start_daemon(&dir, journal).await;
                tx.send((d.socket.clone(), d.shutdown.clone())).unwrap();
                d.task.await.unwrap().unwrap();
            })
        });
        let (socket, shutdown) = rx.recv().unwrap();
        Self {
            socket,
            shutdown,
            thread,
        }
    }

    fn stop(self) {
        let _ = self.shutdown.send(true);
        self.thread.join().unwrap();
    }
}

async fn start_daemon(dir: &Path, journal: Arc<Journal>) -> Daemon {
    let config = ApiConfig {
        socket: dir.join("lg.sock"),
        ..ApiConfig::default()
    };
    let sources = ApiSources {
        reports: tokio::sync::mpsc::channel(16).0,
        baseline: None,
        responder: crate::respond::Responder::new(crate::containerd::Containerd::new(
            "/nonexistent/containerd.sock",
            crate::containerd::Timeouts::default(),
        )),
        containers: Arc::new(NoContainers),
        metrics: Arc::new(Metrics::new()),
        node: NodeInfo::default(),
    };
    let server = ApiServer::bind(&config, journal, sources).await.unwrap();
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    Daemon {
        socket: config.socket,
        shutdown,
        task: tokio::spawn(server.run(rx)),
    }
}

async fn subscribe_unix(
    socket: &Path,
    resume_after_seq: Option<u64>,
) -> tonic::Streaming<pb::SubscribeResponse> {
    let channel =
        crate::api::client::connect(&crate::api::client::Target::Unix(socket.to_path_buf()))
            .await
            .unwrap();
    pb::alert_service_client::AlertServiceClient::new(channel)
        .subscribe(pb::SubscribeRequest {
            filter: None,
            resume_after_seq,
        })
        .await
        .unwrap()
        .into_inner()
}

fn draft() -> AlertDraft {
    let a = full_alert(0);
    AlertDraft {
        severity: None,
        kind: AlertKind::ExecNotInImage,
        summary: a.summary,
        container: a.container,
        process: a.process,
        evidence: a.evidence,
        loss: None,
    }
}

/// Stands in for the log sink: the same JSON line, to /dev/null, and notes when each
/// alert's line was written.
struct TimedLogSink {
    out: std::fs::File,
    base: Instant,
    written: Arc<Vec<AtomicU64>>,
}

impl AlertSink for TimedLogSink {
    fn name(&self) -> &'static str {
        "log"
    }
    fn write(&mut self, alert: &crate::alert::Alert) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(alert).unwrap();
        line.push(b'\n');
        self.out.write_all(&line).unwrap();
        if let Some(slot) = self.written.get(alert.seq as usize) {
            slot.store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Waits until every subscriber is subscribed (a blocking barrier inside the tasks would
/// stall the client runtime's two workers).
fn wait_ready(ready: &AtomicU64) {
    while ready.load(Ordering::SeqCst) < SUBSCRIBERS as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The daemon's runtime: two workers, or one thread with
/// `LAYERGUARD_BENCH_CURRENT_THREAD=1` (to see what a current-thread daemon delivers).
fn server_runtime() -> tokio::runtime::Runtime {
    if std::env::var_os("LAYERGUARD_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        client_runtime()
    }
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Calls `publish` `n` times at `rate` per second (0: as fast as possible), in bursts
/// every half millisecond as execs arrive in practice, sleeping in between (a spinning
/// publisher would take one of the two cores from the server).
fn paced(rate: u64, n: u64, mut publish: impl FnMut()) {
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        let due = if rate == 0 {
            n
        } else {
            (t0.elapsed().as_nanos() as u64 * rate / 1_000_000_000 + 1).min(n)
        };
        while sent < due {
            publish();
            sent += 1;
        }
        if rate != 0 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Publishes `n` alerts at `rate` to 10 subscribers; returns (publish rate, delivered
/// rate of the slowest subscriber, lag notices).
/// What a client that only looks at positions decodes of a `SubscribeResponse`: prost
/// skips every other field without allocating.
#[derive(Clone, PartialEq, prost::Message)]
struct SeqOnly {
    #[prost(message, optional, tag = "1")]
    alert: Option<SeqOnlyAlert>,
    #[prost(message, optional, tag = "3")]
    lag: Option<SeqOnlyAlert>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SeqOnlyAlert {
    #[prost(uint64, tag = "1")]
    seq: u64,
}

/// One subscriber reading `n` alerts, checking each seq comes once and in order; returns
/// when it got the last, and how many lag notices it saw. `full`: decode whole alerts
/// (a SIEM client); else only their seq.
async fn consume(
    socket: PathBuf,
    ready: Arc<AtomicU64>,
    first: u64,
    n: u64,
    full: bool,
) -> (Instant, u64) {
    let (mut alerts, mut lags) = (0u64, 0u64);
    let mut last = first - 1;
    if full {
        let mut stream = subscribe_unix(&socket, None).await;
        ready.fetch_add(1, Ordering::SeqCst);
        while alerts < n {
            match stream.message().await.unwrap().unwrap().event.unwrap() {
                pb::subscribe_response::Event::Alert(a) => {
                    assert_eq!(a.seq, last + 1);
                    last = a.seq;
                    alerts += 1;
                }
                pb::subscribe_response::Event::Lag(_) => lags += 1,
                e => panic!("{e:?}"),
            }
        }
    } else {
        let channel =
            crate::api::client::connect(&crate::api::client::Target::Unix(socket.clone()))
                .await
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<pb::SubscribeRequest, SeqOnly>::default();
        let mut stream = grpc
            .server_streaming(
                tonic::Request::new(pb::SubscribeRequest::default()),
                http::uri::PathAndQuery::from_static(super::alert_server::SUBSCRIBE),
                codec,
            )
            .await
            .unwrap()
            .into_inner();
        ready.fetch_add(1, Ordering::SeqCst);
        while alerts < n {
            let m = stream.message().await.unwrap().unwrap();
            match (m.alert, m.lag) {
                (Some(a), _) => {
                    assert_eq!(a.seq, last + 1);
                    last = a.seq;
                    alerts += 1;
                }
                (None, Some(_)) => lags += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    (Instant::now(), lags)
}

fn fanout(rate: u64, n: u64, full: bool) -> (f64, f64, u64) {
    let dir = tempfile::Builder::new()
        .prefix("lg-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (journal, first) = Journal::open(
        &dir.path().join("journal"),
        JournalLimits {
            fsync: FsyncPolicy::Batched(Duration::from_millis(100)),
            ..JournalLimits::default()
        },
    )
    .unwrap();
    let daemon = Server::start(dir.path(), journal.clone());
    let socket = daemon.socket.clone();
    let clients = client_runtime();
    let ready = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..SUBSCRIBERS {
        handles.push(clients.spawn(consume(socket.clone(), ready.clone(), first, n, full)));
    }
    wait_ready(&ready);
    let t0 = Instant::now();
    let mut stage = AlertStage::new("bench", first, vec![Box::new(JournalSink::new(journal))]);
    paced(rate, n, || {
        let a = stage.stamp(draft());
        stage.publish(&a);
    });
    let published = t0.elapsed();
    let results: Vec<(Instant, u64)> = handles
        .into_iter()
        .map(|h| clients.block_on(h).unwrap())
        .collect();
    let slowest = results
        .iter()
        .map(|(t, _)| t.duration_since(t0))
        .max()
        .unwrap();
    let lags: u64 = results.iter().map(|(_, l)| l).sum();
    daemon.stop();
    (
        n as f64 / published.as_secs_f64(),
        n as f64 / slowest.as_secs_f64(),
        lags,
    )
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn fanout_throughput() {
    println!(
        "fanout: journal on (batched fsync, on disk), {SUBSCRIBERS} subscribers over the unix socket, \
         each checking every seq arrives once and in order"
    );
    for (rate, n, full) in [
        (20_000, 100_000, true),
        (20_000, 100_000, false),
        (30_000, 150_000, false),
        (0, 200_000, false),
    ] {
        let (published, delivered, lags) = fanout(rate, n, full);
        let offered = if rate == 0 {
            "as fast as possible".to_string()
        } else {
            format!("{rate}/s")
        };
        let clients = if full {
            "clients decode whole alerts"
        } else {
            "clients decode seq only"
        };
        println!(
            "  offered {offered}, {clients}: published {published:.0}/s, delivered to each subscriber \
             {delivered:.0}/s (slowest of {SUBSCRIBERS}), lag notices {lags}"
        );
    }
}

/// Per alert received by any of the 10 subscribers: nanoseconds from its log line being
/// written to its arrival, sorted.
fn latency(rate: u64, n: u64) -> Vec<u64> {
    let dir = tempfile::Builder::new()
        .prefix("lg-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (journal, first) = Journal::open(
        &dir.path().join("journal"),
        JournalLimits {
            fsync: FsyncPolicy::Batched(Duration::from_millis(100)),
            ..JournalLimits::default()
        },
    )
    .unwrap();
    let daemon = Server::start(dir.path(), journal.clone());
    let base = Instant::now();
    let written: Arc<Vec<AtomicU64>> =
        Arc::new((0..=n + first).map(|_| AtomicU64::new(0)).collect());
    let clients = client_runtime();
    let ready = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let socket = daemon.socket.clone();
        let ready = ready.clone();
        handles.push(clients.spawn(async move {
            let mut stream = subscribe_unix(&socket, None).await;
            ready.fetch_add(1, Ordering::SeqCst);
            let mut received = Vec::with_capacity(n as usize);
            while (received.len() as u64) < n {
                if let pb::subscribe_response::Event::Alert(a) =
                    stream.message().await.unwrap().unwrap().event.unwrap()
                {
                    received.push((a.seq, base.elapsed().as_nanos() as u64));
                }
            }
            received
        }));
    }
    wait_ready(&ready);
    let log = TimedLogSink {
        out: std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap(),
        base,
        written: written.clone(),
    };
    let mut stage = AlertStage::new(
        "bench",
        first,
        vec![Box::new(log), Box::new(JournalSink::new(journal))],
    );
    paced(rate, n, || {
        let a = stage.stamp(draft());
        stage.publish(&a);
    });
    let mut added: Vec<u64> = Vec::new();
    for h in handles {
        for (seq, at) in clients.block_on(h).unwrap() {
            let logged = written[seq as usize].load(Ordering::Relaxed);
            added.push(at.saturating_sub(logged));
        }
    }
    added.sort_unstable();
    daemon.stop();
    added
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn added_latency() {
    let us = |n: u64| n as f64 / 1000.0;
    println!(
        "added latency: log line written -> received over gRPC by each of {SUBSCRIBERS} subscribers"
    );
    for (rate, n) in [(1_000, 10_000), (5_000, 25_000)] {
        let added = latency(rate, n);
        println!(
            "  {rate} alerts/s: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            us(percentile(&added, 0.50)),
            us(percentile(&added, 0.90)),
            us(percentile(&added, 0.99)),
            us(*added.last().unwrap())
        );
    }
}
