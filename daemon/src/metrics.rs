//! Counters the pipeline stages update and the API reads (`StatusService.Get`,
//! `ContainerService.List`): events seen and lost, hash cache hits and misses, verdicts per
//! container, subscribers (alert counts are the journal's).
//!
//! Owns the numbers only. Updating one is a relaxed atomic add (or, for the per-container
//! verdicts, a short uncontended lock), cheap enough for the exec path; nothing here
//! blocks, allocates per event, or does I/O. The per-container map is bounded: the
//! containers stage calls [`Metrics::forget_container`] when a container leaves its table,
//! and beyond [`MAX_TRACKED_CONTAINERS`] new containers are counted only in the totals.

use crate::identity::ContainerKey;
use crate::sensor::EventKind;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Containers whose verdicts are tracked at once. Far above any node's container count;
/// it only stops a leak (a forgotten `forget_container`) from growing without bound.
pub const MAX_TRACKED_CONTAINERS: usize = 65_536;
/// The events/s figure averages over this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How often [`Metrics::sample`] should be called (the API server does).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A monotonically increasing (or, with `set`, mirrored) count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (live subscribers).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        // Never wraps below zero, even if a caller decrements once too often.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// One counter per sensor event kind (`enum lg_event_kind`): a new kind is counted with
/// no new field.
#[derive(Debug, Default)]
pub struct ByKind([Counter; EventKind::ALL.len()]);

impl ByKind {
    pub fn get(&self, kind: EventKind) -> &Counter {
        let i = EventKind::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("every kind is in EventKind::ALL");
        &self.0[i]
    }

    /// (kind, count) for every kind.
    pub fn counts(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL.iter().map(|&k| (k, self.get(k).get()))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

/// What became of one checked exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The file that ran is the one the verified image recorded.
    Verified,
    /// An alert was raised.
    Alerted,
    /// Could not be checked (unreadable, too large, image not indexable).
    Unverifiable,
    /// Not checked by configuration (an allow rule).
    Skipped,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerdictCounts {
    pub verified: u64,
    pub alerted: u64,
    pub unverifiable: u64,
    pub skipped: u64,
    /// What verification of the container's image concluded, as of the last exec whose
    /// verdict needed the image (`verified`, `untrusted`, `unverifiable`); none before.
    pub image: Option<&'static str>,
}

impl VerdictCounts {
    fn add(&mut self, v: Verdict, image: Option<&'static str>) {
        if image.is_some() {
            self.image = image;
        }
        match v {
            Verdict::Verified => self.verified += 1,
            Verdict::Alerted => self.alerted += 1,
            Verdict::Unverifiable => self.unverifiable += 1,
            Verdict::Skipped => self.skipped += 1,
        }
    }
}

/// Buckets of the exec-to-alert histogram, in seconds (a cached verdict is well under a
/// millisecond, a first-seen one a few, one behind a slow read up to
/// `verify.inspect_timeout_ms`).
const EXEC_TO_ALERT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Every counter of the daemon. One instance, shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    pub started_at: SystemTime,
    /// Sensor events received, by kind.
    pub events: ByKind,
    /// Lost in the kernel (ring buffer full), by kind.
    pub lost_kernel: ByKind,
    /// Ring buffer records that did not decode.
    pub undecodable: Counter,
    /// Dropped in a queue inside the daemon.
    pub lost_queue: Counter,
    /// Content hash cache lookups.
    pub hash_cache_hits: Counter,
    pub hash_cache_misses: Counter,
    /// Live Subscribe streams.
    pub subscribers: Gauge,
    /// Subscribers switched from live to journal catch-up because they fell behind.
    pub subscriber_lags: Counter,
    /// Verdicts of containers beyond [`MAX_TRACKED_CONTAINERS`], and of execs outside
    /// any container.
    pub verdicts_untracked: Counter,
    /// The files analyzer's figures, `None` when it does not run.
    pub files: Option<FileMetrics>,
    verdicts: Mutex<VerdictBook>,
    signatures: Mutex<SignatureBook>,
    /// Alerts published, by (kind, severity).
    alerts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// From an exec (the kernel's event) to its alert being published, for alerts about
    /// an exec.
    pub exec_to_alert: prometheus_client::metrics::histogram::Histogram,
    /// Responses to containers, by (action, result).
    responses: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Baselines by state, as the baseline stage counted them at its last tick.
    baseline_states: Mutex<BTreeMap<&'static str, u64>>,
    /// The webhooks' figures, one per `[[alerts.webhook]]`.
    pub webhooks: Mutex<Vec<std::sync::Arc<WebhookStatus>>>,
    rate: Mutex<RateWindow>,
}

/// The signature state of each container's image (as of its first exec), and how many
/// containers had each state.
#[derive(Debug, Default)]
struct SignatureBook {
    per_container: HashMap<ContainerKey, ContainerSignature>,
    totals: BTreeMap<&'static str, u64>,
}

/// What the trust stage concluded for one container's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSignature {
    /// `signed`, `unsigned`, `signature_invalid`, `key_revoked`, `key_expired`,
    /// `not_required`, `unverifiable`.
    pub state: &'static str,
    /// The key, when signed.
    pub key: Option<String>,
}

/// What the file programs and the files analyzer did (see `FileIntegrity` in the proto).
#[derive(Debug, Default)]
pub struct FileMetrics {
    /// Copies of the kernel's cumulative counters, refreshed by the files analyzer.
    pub kernel_seen: Gauge,
    pub kernel_repeats: Gauge,
    pub kernel_clean_hits: Gauge,
    pub io_uring_requests: Gauge,
    pub kernel_data_writes: Gauge,
    pub kernel_syscalls: Gauge,
    pub kernel_hook_calls: Gauge,
    /// io_uring requests per container mount namespace (`lg_io_uring`), as last read.
    pub io_uring_by_mnt_ns: std::sync::Mutex<Vec<(u32, u64)>>,
    pub writes: Counter,
    pub mappings: Counter,
    /// Renames, links and unlinks (kernel or syscall hooks).
    pub names: Counter,
    pub inspected: Counter,
    pub marked_clean: Counter,
    pub unjudged: Counter,
    pub outside_layers: Counter,
}

/// Every exec verdict, counted once: per container (bounded), node-wide by class, and by
/// verdict name (`verified`, `modified`, ...).
#[derive(Debug, Default)]
struct VerdictBook {
    per_container: HashMap<ContainerKey, VerdictCounts>,
    totals: VerdictCounts,
    by_name: BTreeMap<&'static str, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started_at: SystemTime::now(),
            events: ByKind::default(),
            lost_kernel: ByKind::default(),
            undecodable: Counter::default(),
            lost_queue: Counter::default(),
            hash_cache_hits: Counter::default(),
            hash_cache_misses: Counter::default(),
            subscribers: Gauge::default(),
            subscriber_lags: Counter::default(),
            verdicts_untracked: Counter::default(),
            files: None,
            verdicts: Mutex::new(VerdictBook::default()),
            signatures: Mutex::new(SignatureBook::default()),
            alerts: Mutex::new(BTreeMap::new()),
            exec_to_alert: prometheus_client::metrics::histogram::Histogram::new(
                EXEC_TO_ALERT_BUCKETS,
            ),
            responses: Mutex::new(BTreeMap::new()),
            baseline_states: Mutex::new(BTreeMap::new()),
            webhooks: Mutex::new(Vec::new()),
            rate: Mutex::new(RateWindow::default()),
        }
    }

    /// With the files analyzer's figures.
    pub fn with_files(mut self) -> Self {
        self.files = Some(FileMetrics::default());
        self
    }

    /// Sensor events of every type.
    pub fn events_seen(&self) -> u64 {
        self.events.total()
    }

    /// hits / (hits + misses), 0 before the first lookup.
    pub fn hash_cache_hit_rate(&self) -> f64 {
        let hits = self.hash_cache_hits.get();
        let total = hits + self.hash_cache_misses.get();
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }

    /// Counts a verdict, named `name` (`verified`, `modified`, ...), of class `verdict`, for
    /// the container (`None`: an exec outside any container), and what its image's
    /// verification concluded if the verdict needed the image.
    pub fn record_verdict(
        &self,
        container: Option<&ContainerKey>,
        verdict: Verdict,
        image: Option<&'static str>,
        name: &'static str,
    ) {
        let mut book = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        book.totals.add(verdict, image);
        *book.by_name.entry(name).or_default() += 1;
        let Some(key) = container else {
            self.verdicts_untracked.inc();
            return;
        };
        if let Some(c) = book.per_container.get_mut(key) {
            c.add(verdict, image);
        } else if book.per_container.len() < MAX_TRACKED_CONTAINERS {
            let mut c = VerdictCounts::default();
            c.add(verdict, image);
            book.per_container.insert(key.clone(), c);
        } else {
            self.verdicts_untracked.inc();
        }
    }

    pub fn verdicts(&self, container: &ContainerKey) -> VerdictCounts {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_container
            .get(container)
            .copied()
            .unwrap_or_default()
    }

    /// Node-wide verdict counts by class.
    pub fn verdict_totals(&self) -> VerdictCounts {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .totals
    }

    /// Node-wide verdict counts by verdict name.
    pub fn verdicts_by_name(&self) -> BTreeMap<&'static str, u64> {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .clone()
    }

    /// The container left the table: its counts go.
    pub fn forget_container(&self, container: &ContainerKey) {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_container
            .remove(container);
        let mut book = self.signatures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gone) = book.per_container.remove(container) {
            if let Some(n) = book.totals.get_mut(gone.state) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Counts a published alert.
    pub fn record_alert(&self, kind: &'static str, severity: &'static str) {
        *self
            .alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, severity))
            .or_default() += 1;
    }

    /// Alerts published since start, by (kind, severity).
    pub fn alert_counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The baselines by state (the baseline stage, once a second).
    pub fn set_baseline_states(&self, states: BTreeMap<&'static str, u64>) {
        *self
            .baseline_states
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = states;
    }

    /// Baselines by state; empty when the baseline does not run.
    pub fn baseline_states(&self) -> BTreeMap<&'static str, u64> {
        self.baseline_states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a response (`pause`, `kill`, ...) and its result (`taken`, `failed`,
    /// `dry_run`, `rate_limited`, `never`).
    pub fn record_response(&self, action: &'static str, result: &'static str) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((action, result))
            .or_default() += 1;
    }

    /// Responses since start, by (action, result).
    pub fn response_counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the signature state of a container's image; counted once per container
    /// (a state judged again replaces the container's, and is counted under the new one).
    pub fn record_signature(&self, container: &ContainerKey, signature: ContainerSignature) {
        let mut book = self.signatures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = book.per_container.get(container).map(|s| s.state) {
            if let Some(n) = book.totals.get_mut(old) {
                *n = n.saturating_sub(1);
            }
        } else if book.per_container.len() >= MAX_TRACKED_CONTAINERS {
            return;
        }
        *book.totals.entry(signature.state).or_default() += 1;
        book.per_container.insert(container.clone(), signature);
    }

    /// The signature state of a container's image, if judged.
    pub fn signature(&self, container: &ContainerKey) -> Option<ContainerSignature> {
        self.signatures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_container
            .get(container)
            .cloned()
    }

    /// Containers in the table, by the signature state of their image.
    pub fn signature_totals(&self) -> BTreeMap<&'static str, u64> {
        self.signatures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .totals
            .clone()
    }

    #[cfg(test)]
    pub fn tracked_containers(&self) -> usize {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_container
            .len()
    }

    /// Records the current event count for the events/s figure; call every
    /// [`SAMPLE_EVERY`].
    pub fn sample(&self, now: Instant) {
        let seen = self.events_seen();
        self.rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now, seen);
    }

    /// Sensor events per second over the last [`RATE_WINDOW`] of samples.
    pub fn events_per_second(&self) -> f64 {
        self.rate.lock().unwrap_or_else(|e| e.into_inner()).rate()
    }
}

/// (time, cumulative count) samples covering about [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct RateWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    fn push(&mut self, now: Instant, count: u64) {
        self.samples.push_back((now, count));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| now.duration_since(t) > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                c1.saturating_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// What one webhook did, shared with status and metrics.
#[derive(Debug, Default)]
pub struct WebhookStatus {
    pub url: String,
    /// Alerts the receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// POSTs that failed (connection, timeout, 5xx, 408, 429) and were retried.
    pub failures: AtomicU64,
    /// Alerts the receiver refused with a 4xx, skipped.
    pub rejected: AtomicU64,
    /// Alerts below `min_severity`, not posted.
    pub filtered: AtomicU64,
    /// Alerts the journal no longer had (retention, damage) when delivery reached them.
    pub lost: AtomicU64,
    /// The next seq to deliver.
    pub next_seq: AtomicU64,
    /// The last failure, for status.
    pub last_error: Mutex<Option<String>>,
}

impl WebhookStatus {
    /// Alerts published but not yet delivered (or skipped).
    pub fn lag(&self, journal_next_seq: u64) -> u64 {
        journal_next_seq.saturating_sub(self.next_seq.load(Ordering::Relaxed))
    }
}

/// Counts every alert by kind and severity, and the time from an exec to its alert, for
/// the Prometheus endpoint. Never fails.
pub(crate) struct MetricsSink(pub std::sync::Arc<Metrics>);

impl crate::alert::AlertSink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn write(&mut self, alert: &crate::alert::Alert) -> Result<(), crate::alert::SinkError> {
        self.0
            .record_alert(alert.kind.as_str(), alert.severity.as_str());
        // Response alerts carry their trigger's process: they are no exec's alert.
        let about_an_exec = !matches!(
            alert.kind,
            crate::alert::AlertKind::ResponseTaken | crate::alert::AlertKind::ResponseFailed
        );
        let exec = alert
            .process
            .as_ref()
            .filter(|_| about_an_exec)
            .and_then(|p| p.exec_time.as_deref());
        if let Some(Ok(exec)) = exec.map(humantime::parse_rfc3339) {
            if let Ok(published) = humantime::parse_rfc3339(&alert.time) {
                if let Ok(d) = published.duration_since(exec) {
                    self.0.exec_to_alert.observe(d.as_secs_f64());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_the_hit_rate_is_a_fraction() {
        let m = Metrics::new();
        assert_eq!(m.hash_cache_hit_rate(), 0.0);
        m.hash_cache_hits.add(3);
        m.hash_cache_misses.inc();
        assert_eq!(m.hash_cache_hit_rate(), 0.75);
        m.events.get(EventKind::Exec).add(2);
        m.events.get(EventKind::Exit).inc();
        assert_eq!(m.events_seen(), 3);
        m.subscribers.inc();
        m.subscribers.dec();
        m.subscribers.dec();
        assert_eq!(m.subscribers.get(), 0, "a gauge does not wrap");
    }

    #[test]
    fn verdicts_are_per_container_and_bounded() {
        let m = Metrics::new();
        let a = ContainerKey::new("default", "a");
        m.record_verdict(Some(&a), Verdict::Verified, Some("verified"), "verified");
        m.record_verdict(Some(&a), Verdict::Alerted, None, "modified");
        m.record_verdict(None, Verdict::Alerted, None, "not_in_image");
        assert_eq!(
            m.verdicts(&a),
            VerdictCounts {
                verified: 1,
                alerted: 1,
                image: Some("verified"),
                ..VerdictCounts::default()
            }
        );
        assert_eq!(m.verdicts_untracked.get(), 1);
        assert_eq!(m.verdict_totals().alerted, 2);
        assert_eq!(m.verdicts_by_name()["modified"], 1);
        m.forget_container(&a);
        assert_eq!(m.verdicts(&a), VerdictCounts::default());
        assert_eq!(m.tracked_containers(), 0);
    }

    #[test]
    fn events_per_second_averages_over_the_window() {
        let m = Metrics::new();
        let t0 = Instant::now();
        m.sample(t0);
        assert_eq!(m.events_per_second(), 0.0);
        m.events.get(EventKind::Exec).add(500);
        m.sample(t0 + Duration::from_secs(5));
        assert_eq!(m.events_per_second(), 100.0);
        // Old samples leave the window.
        m.events.get(EventKind::Exec).add(100);
        m.sample(t0 + Duration::from_secs(20));
        m.events.get(EventKind::Exec).add(100);
        m.sample(t0 + Duration::from_secs(21));
        assert_eq!(m.events_per_second(), 100.0);
    }
}
