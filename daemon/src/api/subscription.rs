//! One subscriber's position in the alert sequence: catch-up from the journal, then live
//! from the broadcast, back to catch-up when it falls behind, without duplicates or silent
//! holes.
//!
//! Owns the switching logic; it knows nothing of gRPC (the alert service turns each
//! [`Event`] into a response). Invariant: alerts are delivered in strictly increasing seq
//! order and every seq from the start position on is either delivered (if it matches the
//! filter), filtered out, or covered by a [`Event::Gap`].

use super::filter::AlertFilter;
use crate::alert::journal::{Entry, GapReason, Journal, JournalReader};
use crate::alert::Alert;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Journal records read per blocking call during catch-up: large enough to amortise the
/// thread hop, small enough to keep the first alerts flowing quickly.
pub const CATCHUP_BATCH: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Alert(Arc<Alert>),
    /// `first_seq..=last_seq` will never be delivered; `missed` counts them unfiltered.
    Gap {
        first_seq: u64,
        last_seq: u64,
        reason: GapReason,
    },
    /// The live queue overflowed by `missed` alerts; delivery continues from the journal
    /// at `resume_from_seq`.
    Lag {
        missed: u64,
        resume_from_seq: u64,
    },
}

pub struct Subscription {
    journal: Arc<Journal>,
    filter: AlertFilter,
    /// Its `next_seq` is the next seq to deliver or skip, in either mode.
    reader: JournalReader,
    /// Always subscribed: alerts from `catch_up_until` on come from here.
    live: broadcast::Receiver<Arc<Alert>>,
    /// While set, alerts below it are read from the journal first.
    catch_up_until: Option<u64>,
    /// The first alert taken off `live` after a lag, delivered once the journal has
    /// filled in what the lag skipped.
    held: Option<Arc<Alert>>,
    pending: VecDeque<Event>,
    metrics: Arc<Metrics>,
}

impl Subscription {
    /// `resume_after`: `None` for live alerts only; `Some(n)` for every alert after `n`.
    /// Subscribes to the live stream before returning, so nothing published afterwards is
    /// missed.
    pub fn new(
        journal: Arc<Journal>,
        filter: AlertFilter,
        resume_after: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (live, live_from) = journal.subscribe();
        // A position at or past the end (a reset journal) cannot be resumed: go live.
        let start = resume_after
            .map_or(live_from, |n| n.saturating_add(1))
            .min(live_from);
        Self {
            journal,
            filter,
            reader: JournalReader::new(start),
            live,
            catch_up_until: (start < live_from).then_some(live_from),
            held: None,
            pending: VecDeque::new(),
            metrics,
        }
    }

    /// The next seq this subscription will deliver or skip.
    pub fn position(&self) -> u64 {
        self.reader.next_seq()
    }

    /// The next event; `None` once the journal is gone (the daemon is stopping).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if let Some(until) = self.catch_up_until {
                if self.reader.next_seq() < until && self.catch_up(until).await? {
                    continue;
                }
                self.catch_up_until = None;
                if let Some(alert) = self.held.take() {
                    if let Some(e) = self.accept_live(alert) {
                        return Some(e);
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(alert) => {
                    if let Some(e) = self.accept_live(alert) {
                        return Some(e);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.subscriber_lags.inc();
                    let resume_from_seq = self.reader.next_seq();
                    // The receiver now points at the oldest alert still queued: the
                    // journal fills in everything before it.
                    match self.live.try_recv() {
                        Ok(first) => {
                            self.catch_up_until = Some(first.seq);
                            self.held = Some(first);
                        }
                        Err(_) => {
                            let (live, live_from) = self.journal.subscribe();
                            self.live = live;
                            self.catch_up_until = Some(live_from);
                        }
                    }
                    return Some(Event::Lag {
                        missed,
                        resume_from_seq,
                    });
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Dedups by seq and filters an alert from the live receiver.
    fn accept_live(&mut self, alert: Arc<Alert>) -> Option<Event> {
        let next = self.reader.next_seq();
        if alert.seq < next {
            return None; // already delivered from the journal
        }
        if alert.seq > next {
            // Only a lag skips alerts, and a lag catches up first; if it happens anyway,
            // fill the hole from the journal before this alert.
            self.catch_up_until = Some(alert.seq);
            self.held = Some(alert);
            return None;
        }
        self.reader.skip_to(alert.seq + 1);
        self.filter.matches(&alert).then_some(Event::Alert(alert))
    }

    /// Reads one batch (below `until`) from the journal into `pending`. `Some(false)` when
    /// there was nothing left to read; `None` if the blocking read could not run (the
    /// runtime is shutting down).
    async fn catch_up(&mut self, until: u64) -> Option<bool> {
        let journal = self.journal.clone();
        let mut reader = std::mem::replace(&mut self.reader, JournalReader::new(0));
        let (reader, batch) = tokio::task::spawn_blocking(move || {
            let batch = journal.read_until(&mut reader, CATCHUP_BATCH, until);
            (reader, batch)
        })
        .await
        .ok()?;
        self.reader = reader;
        if batch.is_empty() {
            return Some(false);
        }
        for entry in batch {
            match entry {
                Entry::Alert(a) => {
                    if self.filter.matches(&a) {
                        self.pending.push_back(Event::Alert(a));
                    }
                }
                Entry::Gap {
                    first_seq,
                    last_seq,
                    reason,
                } => self.pending.push_back(Event::Gap {
                    first_seq,
                    last_seq,
                    reason,
                }),
            }
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::journal::{FsyncPolicy, JournalLimits};
    use std::time::Duration;

    fn alert(seq: u64, container: &str) -> Alert {
        let mut a = crate::fixtures::alert(seq);
        a.container.as_mut().expect("the fixture has one").id = container.into();
        a
    }

    fn journal(dir: &std::path::Path, live_queue: usize) -> Arc<Journal> {
        Journal::open(
            dir,
            JournalLimits {
                segment_bytes: 4096,
                fsync: FsyncPolicy::Never,
                live_queue,
                // Catch-up from the files here; the API tests use the memory tail.
                recent_alerts: 0,
                ..JournalLimits::default()
            },
        )
        .unwrap()
        .0
    }

    fn sub(j: &Arc<Journal>, filter: AlertFilter, after: Option<u64>) -> Subscription {
        Subscription::new(j.clone(), filter, after, Arc::new(Metrics::new()))
    }

    async fn next(s: &mut Subscription) -> Event {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
    }

    fn seq(e: &Event) -> u64 {
        match e {
            Event::Alert(a) => a.seq,
            other => panic!("expected an alert, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn live_only_gets_what_is_published_after_subscribing() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 64);
        j.append(&alert(1, "a")).unwrap();
        let mut s = sub(&j, AlertFilter::default(), None);
        j.append(&alert(2, "a")).unwrap();
        assert_eq!(seq(&next(&mut s).await), 2);
    }

    #[tokio::test]
    async fn resume_reads_the_journal_then_goes_live_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 64);
        for i in 1..=600 {
            j.append(&alert(i, "a")).unwrap();
        }
        let mut s = sub(&j, AlertFilter::default(), Some(10));
        let mut got = Vec::new();
        for _ in 0..300 {
            got.push(seq(&next(&mut s).await));
        }
        // Published while the subscriber is still catching up: more than its live queue
        // holds, so it is also told it lagged, and still gets each alert exactly once.
        for i in 601..=700 {
            j.append(&alert(i, "a")).unwrap();
        }
        let mut lags = 0;
        while got.last() != Some(&700) {
            match next(&mut s).await {
                Event::Lag { .. } => lags += 1,
                e => got.push(seq(&e)),
            }
        }
        assert_eq!(got, (11..=700).collect::<Vec<_>>());
        assert_eq!(lags, 1);
        assert!(s.catch_up_until.is_none(), "back on the live stream");
        j.append(&alert(701, "a")).unwrap();
        assert_eq!(seq(&next(&mut s).await), 701);
    }

    #[tokio::test]
    async fn the_filter_applies_to_journal_and_live_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 64);
        for i in 1..=10 {
            j.append(&alert(i, if i % 2 == 0 { "even" } else { "odd" }))
                .unwrap();
        }
        let f = AlertFilter {
            container_ids: vec!["even".into()],
            ..AlertFilter::default()
        };
        let mut s = sub(&j, f, Some(0));
        for want in [2, 4, 6, 8, 10] {
            assert_eq!(seq(&next(&mut s).await), want);
        }
        j.append(&alert(11, "odd")).unwrap();
        j.append(&alert(12, "even")).unwrap();
        assert_eq!(seq(&next(&mut s).await), 12);
        assert_eq!(s.position(), 13);
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_a_lag_notice_and_then_every_alert_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 16);
        let mut s = sub(&j, AlertFilter::default(), None);
        for i in 1..=100 {
            j.append(&alert(i, "a")).unwrap();
        }
        match next(&mut s).await {
            Event::Lag {
                missed,
                resume_from_seq,
            } => {
                assert_eq!(missed, 84);
                assert_eq!(resume_from_seq, 1);
            }
            other => panic!("{other:?}"),
        }
        let mut got = Vec::new();
        while got.len() < 100 {
            got.push(seq(&next(&mut s).await));
        }
        assert_eq!(got, (1..=100).collect::<Vec<_>>());
        assert_eq!(s.metrics.subscriber_lags.get(), 1);
    }

    #[tokio::test]
    async fn resuming_from_before_retention_starts_with_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(
            dir.path(),
            JournalLimits {
                segment_bytes: 2048,
                max_bytes: 4096,
                fsync: FsyncPolicy::Never,
                ..JournalLimits::default()
            },
        )
        .unwrap();
        for i in 1..=100 {
            j.append(&alert(i, "a")).unwrap();
        }
        let first = j.stats().first_seq;
        assert!(first > 5);
        let mut s = sub(&j, AlertFilter::default(), Some(5));
        assert_eq!(
            next(&mut s).await,
            Event::Gap {
                first_seq: 6,
                last_seq: first - 1,
                reason: GapReason::Retention
            }
        );
        assert_eq!(seq(&next(&mut s).await), first);
    }

    #[tokio::test]
    async fn a_position_past_the_end_of_a_reset_journal_goes_live() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 16);
        j.append(&alert(1, "a")).unwrap();
        let mut s = sub(&j, AlertFilter::default(), Some(500));
        assert_eq!(s.position(), 2);
        j.append(&alert(2, "a")).unwrap();
        assert_eq!(seq(&next(&mut s).await), 2);
    }

    #[tokio::test]
    async fn a_disabled_journal_reports_the_requested_history_as_a_gap() {
        let j = Journal::disabled(1, 16);
        j.append(&alert(1, "a")).unwrap();
        j.append(&alert(2, "a")).unwrap();
        let mut s = sub(&j, AlertFilter::default(), Some(0));
        assert_eq!(
            next(&mut s).await,
            Event::Gap {
                first_seq: 1,
                last_seq: 2,
                reason: GapReason::Disabled
            }
        );
        j.append(&alert(3, "a")).unwrap();
        assert_eq!(seq(&next(&mut s).await), 3);
    }
}
