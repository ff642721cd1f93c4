//! The outputs SOC tools already read, end to end with the real daemon and real receivers:
//! a Falcosidekick-compatible webhook (a receiver here applying Falcosidekick's own
//! acceptance checks, stopped for 30 s and the daemon SIGKILLed meanwhile) and Prometheus
//! (Debian's `prometheus` server scraping the daemon, queried through its HTTP API).
//!
//! User story: an operator points layerguard at the Falcosidekick and the Prometheus the
//! cluster already runs and loses no alert when either side restarts.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use layerguard_tests::container::Container;
use layerguard_tests::node::{run_ok, TestNode};
use serde_json::Value;

const NS: &str = "lg-outputs";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Falcosidekick's checks of a POST body: it answers 400 unless `priority` is one of
/// Falco's eight names, `rule` is not empty, `time` parses and `output_fields` is not empty.
fn falcosidekick_accepts(v: &Value) -> Result<(), String> {
    const PRIORITIES: [&str; 8] = [
        "Emergency",
        "Alert",
        "Critical",
        "Error",
        "Warning",
        "Notice",
        "Informational",
        "Debug",
    ];
    let p = v["priority"].as_str().unwrap_or_default();
    if !PRIORITIES.contains(&p) {
        return Err(format!("priority {p:?} is not one of Falco's"));
    }
    if v["rule"].as_str().unwrap_or_default().is_empty() {
        return Err("empty rule".into());
    }
    if v["output_fields"].as_object().is_none_or(|o| o.is_empty()) {
        return Err("empty output_fields".into());
    }
    // RFC 3339 in UTC with nanoseconds, as Falco writes it: 2026-12-02T00:43:19.123456789Z.
    let t = v["time"].as_str().unwrap_or_default();
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() == 30
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..29)
        && b[29] == b'Z';
    if !shape {
        return Err(format!(
            "time {t:?} does not parse as RFC 3339 nanoseconds UTC"
        ));
    }
    Ok(())
}

/// A started receiver: its stop flag, accept thread and open connections.
type Running = (
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
    Arc<Mutex<Vec<TcpStream>>>,
);

/// An HTTP receiver on a fixed port that answers like Falcosidekick (200, or 400 for a
/// body its checks refuse) and keeps every accepted body. `stop` closes the port and every
/// connection; `start` opens it again.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<Vec<String>>>,
    running: Option<Running>,
}

impl Receiver {
    fn new() -> Self {
        let mut r = Receiver {
            port: free_port(),
            bodies: Arc::default(),
            refused: Arc::default(),
            running: None,
        };
        r.start();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the receiver");
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (bodies, refused, stop2, open2) = (
            self.bodies.clone(),
            self.refused.clone(),
            stop.clone(),
            open.clone(),
        );
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                open2.lock().unwrap().push(stream.try_clone().unwrap());
                let (bodies, refused) = (bodies.clone(), refused.clone());
                std::thread::spawn(move || serve(stream, &bodies, &refused));
            }
        });
        self.running = Some((stop, thread, open));
    }

    fn stop(&mut self) {
        if let Some((stop, thread, open)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = thread.join();
            for s in open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// seqs of the accepted bodies, in the order they came.
    fn seqs(&self) -> Vec<u64> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["output_fields"]["layerguard.seq"].as_u64().unwrap())
            .collect()
    }

    /// Waits until every seq `1..=last` was received.
    fn wait_all(&self, last: u64, within: Duration) {
        let start = Instant::now();
        loop {
            let got: BTreeSet<u64> = self.seqs().into_iter().collect();
            if (1..=last).all(|s| got.contains(&s)) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "the receiver has {got:?}, not every seq up to {last}; refused: {:?}",
                self.refused.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 connection, keep-alive, `POST` with a Content-Length body.
fn serve(stream: TcpStream, bodies: &Mutex<Vec<Value>>, refused: &Mutex<Vec<String>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = match serde_json::from_slice::<Value>(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| falcosidekick_accepts(&v).map(|()| v))
        {
            Ok(v) => {
                bodies.lock().unwrap().push(v);
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
            }
            Err(e) => {
                refused.lock().unwrap().push(e.clone());
                format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{e}",
                    e.len()
                )
            }
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Runs `n` dropped binaries in `c` (each an alert or two).
fn drop_binaries(c: &Container, tag: &str, n: usize) {
    for i in 0..n {
        let path = format!("/tmp/{tag}{i}");
        run_ok(c, &["cp", "/bin/busybox", &path]);
        run_ok(c, &["sh", "-c", &format!("{path} true; true")]);
    }
}

/// The last seq the daemon published, once it reached `at_least` and then stopped growing
/// for a moment (the first exec of a new image waits for its index).
fn settled_last_seq(node: &TestNode, at_least: u64) -> u64 {
    let start = Instant::now();
    let mut last = 0;
    loop {
        let now = node.status()["last_alert_seq"].as_u64().unwrap();
        if now >= at_least && now == last {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon published {now} alerts, expected at least {at_least}:\n{}",
            node.daemon().dump_string(30)
        );
        last = now;
        std::thread::sleep(Duration::from_millis(700));
    }
}

#[test]
fn a_falcosidekick_receiver_gets_every_alert_in_order_through_its_outage_and_a_daemon_crash() {
    let mut receiver = Receiver::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("layerguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[alerts.webhook]]\nurl = \"{}\"\nformat = \"falco\"\nmin_severity = \"info\"\n",
            receiver.url()
        ),
    )
    .unwrap();
    let mut node = TestNode::builder(NS)
        .args(&["--config", config.to_str().unwrap()])
        .build();
    let c = node.container();

    drop_binaries(&c, "a", 4);
    let last = settled_last_seq(&node, 4);
    receiver.wait_all(last, Duration::from_secs(20));

    // The receiver is down for 30 s while alerts keep coming: status says it is behind and
    // failing, and nothing is lost once it is back.
    receiver.stop();
    drop_binaries(&c, "b", 4);
    let down_until = Instant::now() + Duration::from_secs(30);
    let behind = settled_last_seq(&node, last + 4);
    let status = node.status();
    let hook = &status["webhooks"][0];
    assert_eq!(hook["url"], receiver.url().as_str(), "{status}");
    assert!(hook["lag"].as_u64().unwrap() >= 1, "{status}");
    std::thread::sleep(down_until.saturating_duration_since(Instant::now()));
    let status = node.status();
    assert!(
        status["webhooks"][0]["failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
    receiver.start();
    receiver.wait_all(behind, Duration::from_secs(30));

    // A SIGKILLed daemon resumes from its cursor.
    drop_binaries(&c, "c", 2);
    std::thread::sleep(Duration::from_millis(300));
    node.crash_and_restart();
    drop_binaries(&c, "d", 2);
    let last = settled_last_seq(&node, behind + 4);
    receiver.wait_all(last, Duration::from_secs(30));

    let seqs = receiver.seqs();
    let mut first_seen = Vec::new();
    for s in &seqs {
        if !first_seen.contains(s) {
            first_seen.push(*s);
        }
    }
    let mut sorted = first_seen.clone();
    sorted.sort();
    assert_eq!(first_seen, sorted, "delivered in seq order: {seqs:?}");
    assert_eq!(sorted, (1..=last).collect::<Vec<_>>(), "every alert");
    // At least once: a crash may re-post the one alert in flight.
    assert!(seqs.len() as u64 <= last + 2, "duplicates: {seqs:?}");
    assert!(receiver.refused.lock().unwrap().is_empty());
    let bodies = receiver.bodies.lock().unwrap();
    let drop = bodies
        .iter()
        .find(|b| b["output_fields"]["layerguard.kind"] == "exec_not_in_image")
        .expect("an exec_not_in_image alert");
    let f = &drop["output_fields"];
    assert_eq!(drop["source"], "layerguard");
    assert_eq!(drop["priority"], "Error");
    assert_eq!(f["container.id"], c.id());
    assert!(
        f["proc.exepath"].as_str().unwrap().starts_with("/tmp/"),
        "{drop}"
    );
    assert!(f["layerguard.actual_sha256"].is_string(), "{drop}");
    assert!(!f["layerguard.alert_id"].as_str().unwrap().is_empty());
}

/// Debian's Prometheus on loopback, scraping one target every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: layerguard\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let binary = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("prometheus is installed (make test-deps installs Debian's package)");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query's single sample, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: (head, body).
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

fn falco_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn prometheus_scrapes_the_daemon_and_counts_its_alerts() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.jsonl");
    let listen = format!("127.0.0.1:{port}");
    let node = TestNode::builder(NS)
        .args(&[
            "--set",
            &format!("metrics.listen=\"{listen}\""),
            "--alert-log",
            log.to_str().unwrap(),
            "--set",
            "alerts.file_format=\"falco\"",
        ])
        .build();
    let c = node.container();
    drop_binaries(&c, "p", 3);
    let alerts = settled_last_seq(&node, 3);

    // The endpoint itself: OpenMetrics text.
    let (head, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    for name in [
        "layerguard_build_info",
        "layerguard_events_total",
        "layerguard_alerts_total",
        "layerguard_verdicts_total",
        "layerguard_exec_to_alert_seconds_bucket",
        "layerguard_journal_bytes",
        "layerguard_baselines",
        "layerguard_container_signatures",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");

    // A real Prometheus scrapes it, and its query API has the alert count.
    let prometheus = Prometheus::start(&listen);
    let start = Instant::now();
    loop {
        if prometheus.query("sum(layerguard_alerts_total)") == Some(alerts as f64) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus never reported {alerts} alerts (last: {:?}):\n{}",
            prometheus.query("sum(layerguard_alerts_total)"),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let by_kind = prometheus
        .query("sum(layerguard_alerts_total{kind=\"exec_not_in_image\"})")
        .unwrap();
    assert!(by_kind >= 3.0, "{by_kind}");

    // The JSONL file in Falco's format: every line passes Falcosidekick's checks.
    let lines = falco_lines(&log);
    assert_eq!(lines.len() as u64, alerts);
    for l in &lines {
        falcosidekick_accepts(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}
