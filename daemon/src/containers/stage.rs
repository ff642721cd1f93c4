//! The stage's async loop: sensor events in, attributed events out, containerd updates
//! and timers in between.
//!
//! Owns only scheduling: which input is served first, when the pending deadline and the
//! table sweep fire, when stats are logged. Every decision is the [`Resolver`]'s. It never
//! holds a sensor event longer than the resolver says, and it blocks the sensor channel
//! only while the next stage's channel is full (the same backpressure the sensor applies).

use super::resolver::{ProcessTree, Resolver, StageStats, Update};
use super::table::LiveContainer;
use super::ContainerEvent;
use crate::clock;
use crate::logging;
use crate::metrics::Metrics;
use crate::sensor::SensorEvent;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::MissedTickBehavior;

/// Sensor events taken from the channel per wake-up; amortizes the select over a burst.
pub const EVENT_BATCH: usize = 256;
/// How often containers and mappings past their grace period are dropped. The grace
/// period is seconds long; a second of slack in when memory is returned is fine.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The live containers as last published: a shared snapshot, replaced (not edited) when
/// the table changes, so readers never hold up the stage.
pub type ContainerList = Arc<Vec<LiveContainer>>;

pub struct Channels {
    pub events: mpsc::Receiver<SensorEvent>,
    pub updates: mpsc::Receiver<Update>,
    pub out: mpsc::Sender<ContainerEvent>,
    pub poke: Arc<Notify>,
    /// Where the table's live containers are published for readers outside the stage.
    pub directory: watch::Sender<ContainerList>,
    /// Event and loss counts for the API; containers that leave are forgotten there.
    pub metrics: Arc<Metrics>,
}

/// Runs until the sensor's channel closes (or the next stage is gone), then lets every
/// waiting event go on, unresolved if it must, and returns the final stats.
pub async fn drive<P: ProcessTree>(
    mut resolver: Resolver<P>,
    mut ch: Channels,
    stats_interval: Duration,
) -> StageStats {
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    let mut emitted: Vec<ContainerEvent> = Vec::with_capacity(EVENT_BATCH);
    // One timer for the pending queue's next deadline, re-armed only when it changes, so
    // the per-event path registers no timers.
    let deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(deadline);
    let mut armed: Option<clock::MonoNs> = None;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats =
        tokio::time::interval_at(tokio::time::Instant::now() + stats_interval, stats_interval);
    stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut updates_open = true;
    let mut published = None;

    loop {
        // Containers change seldom (starts, exits); events never change the table, so
        // this is one integer compare per batch.
        let revision = resolver.table().revision();
        if published != Some(revision) {
            published = Some(revision);
            let live = Arc::new(resolver.table().live());
            let before = ch.directory.send_replace(Arc::clone(&live));
            let still: HashSet<(&str, &str)> = live
                .iter()
                .map(|l| (l.info.namespace.as_str(), l.info.id.as_str()))
                .collect();
            for gone in before.iter().map(|b| &b.info) {
                if !still.contains(&(gone.namespace.as_str(), gone.id.as_str())) {
                    ch.metrics.forget_container(&gone.key());
                }
            }
        }
        let want = resolver.next_deadline();
        if want != armed {
            if let Some(d) = want {
                deadline.as_mut().reset(clock::to_instant(d));
            }
            armed = want;
        }
        tokio::select! {
            // What containerd says goes first: an event and the task start that explains
            // it may both be ready, and the event should then not wait at all.
            biased;
            update = ch.updates.recv(), if updates_open => match update {
                Some(u) => resolver.on_update(u, clock::now(), &mut emitted),
                None => updates_open = false,
            },
            _ = &mut deadline, if armed.is_some() => {
                resolver.on_deadline(clock::now(), &mut emitted);
                armed = None;
            }
            _ = sweep.tick() => resolver.sweep(clock::now()),
            _ = stats.tick() => {
                let stats = resolver.stats();
                logging::record("INFO", "layerguard::containers", "containers stats", &stats);
            }
            n = ch.events.recv_many(&mut batch, EVENT_BATCH) => {
                if n == 0 {
                    break;
                }
                let now = clock::now();
                let mut poke = false;
                for event in batch.drain(..) {
                    count(&ch.metrics, &event);
                    poke |= resolver.on_event(event, now, &mut emitted);
                }
                if poke {
                    ch.poke.notify_one();
                }
            }
        }
        for event in emitted.drain(..) {
            if ch.out.send(event).await.is_err() {
                return resolver.stats();
            }
        }
    }
    resolver.finish(clock::now(), &mut emitted);
    for event in emitted.drain(..) {
        if ch.out.send(event).await.is_err() {
            break;
        }
    }
    resolver.stats()
}

fn count(metrics: &Metrics, event: &SensorEvent) {
    match event {
        SensorEvent::Observed(o) => metrics.events.get(o.kind()).inc(),
        SensorEvent::Lost(lost) => {
            for (&kind, &n) in &lost.kernel {
                metrics.lost_kernel.get(kind).add(n);
            }
            metrics.undecodable.add(lost.undecodable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContainersConfig;
    use crate::containers::resolver::ProcessTree;
    use crate::identity::Attribution;
    use crate::identity::ContainerKey;

    struct NoTree;
    impl ProcessTree for NoTree {
        fn ancestry(&self, pid: u32) -> Vec<u32> {
            vec![pid]
        }
    }

    const TIMEOUT_MS: u64 = 100;

    fn exit(tgid: u32, mnt_ns: u32) -> SensorEvent {
        crate::fixtures::exit_at(tgid, mnt_ns, clock::now())
    }

    struct Rig {
        events: mpsc::Sender<SensorEvent>,
        updates: mpsc::Sender<Update>,
        out: mpsc::Receiver<ContainerEvent>,
        task: tokio::task::JoinHandle<StageStats>,
    }

    fn rig() -> Rig {
        let config = ContainersConfig {
            pending_timeout_ms: TIMEOUT_MS,
            ..ContainersConfig::default()
        };
        let (events, events_rx) = mpsc::channel(16);
        let (updates, updates_rx) = mpsc::channel(16);
        let (out_tx, out) = mpsc::channel(16);
        let channels = Channels {
            events: events_rx,
            updates: updates_rx,
            out: out_tx,
            poke: Arc::new(Notify::new()),
            directory: watch::channel(ContainerList::default()).0,
            metrics: Arc::new(Metrics::new()),
        };
        let resolver = Resolver::new(&config, 1, NoTree);
        let task = tokio::spawn(drive(resolver, channels, Duration::from_secs(3600)));
        Rig {
            events,
            updates,
            out,
            task,
        }
    }

    fn attribution(e: ContainerEvent) -> Attribution {
        match e {
            ContainerEvent::Observed(_, a) => a,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn waiting_event_is_released_by_the_task_start_before_its_deadline() {
        let mut r = rig();
        let sent = std::time::Instant::now();
        r.events.send(exit(10, 77)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        r.updates
            .send(Update::TaskStarted {
                key: ContainerKey::new("default", "c"),
                pid: 10,
                mnt_ns: Some(77),
                started_at: None,
            })
            .await
            .unwrap();
        let a = attribution(r.out.recv().await.unwrap());
        assert_eq!(a.container().unwrap().id, "c");
        assert!(sent.elapsed() < Duration::from_millis(TIMEOUT_MS));
        drop(r.events);
        let stats = r.task.await.unwrap();
        assert_eq!(stats.events.container, 1);
        assert_eq!(stats.events.waited, 1);
    }

    #[tokio::test]
    async fn unknown_event_goes_on_unresolved_at_its_deadline() {
        let mut r = rig();
        let sent = std::time::Instant::now();
        r.events.send(exit(10, 77)).await.unwrap();
        let a = attribution(r.out.recv().await.unwrap());
        assert!(matches!(a, Attribution::Unresolved(_)), "{a:?}");
        assert!(sent.elapsed() >= Duration::from_millis(TIMEOUT_MS));
        // The timer re-arms for the next one.
        r.events.send(exit(11, 78)).await.unwrap();
        let a = attribution(r.out.recv().await.unwrap());
        assert!(matches!(a, Attribution::Unresolved(_)), "{a:?}");
    }

    #[tokio::test]
    async fn closing_the_sensor_channel_flushes_what_waits() {
        let mut r = rig();
        r.events.send(exit(10, 77)).await.unwrap();
        r.events.send(exit(11, 1)).await.unwrap();
        drop(r.events);
        let host = attribution(r.out.recv().await.unwrap());
        assert!(matches!(host, Attribution::Host));
        let waited = attribution(r.out.recv().await.unwrap());
        let Attribution::Unresolved(reason) = waited else {
            panic!("{waited:?}")
        };
        assert_eq!(reason.as_str(), "daemon shutting down");
        assert!(r.out.recv().await.is_none());
        let stats = r.task.await.unwrap();
        assert_eq!((stats.events.host, stats.events.unresolved), (1, 1));
    }
}
