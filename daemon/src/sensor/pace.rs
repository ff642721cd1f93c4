//! How promptly the event pipeline's thread runs when the kernel wakes it.
//!
//! Owns that thread's scheduling policy. The two costs the kernel side balances (see
//! `exec_flags` in ebpf/sensor.bpf.c) meet here again. On a quiet machine an exec should be
//! judged at once, even while every CPU is busy with something else: as a normal or batch
//! thread, the woken pipeline waited for the running task's slice to end (up to ~3 ms).
//! Under an exec storm the daemon must not interrupt the workload at each drain. So, with
//! the default [`PipelineScheduling::Adaptive`]:
//! - quiet: SCHED_FIFO at the lowest real-time priority (1); a wake-up preempts any normal
//!   task. Latency bench, cached exec, the daemon's part (kernel event to alert), p99 of
//!   200: 2.0-3.0 ms as SCHED_BATCH, 1.9-2.1 ms with an EEVDF slice request of 100 us,
//!   0.25-0.3 ms as SCHED_FIFO. The thread drains, attributes, judges cached execs and
//!   writes alerts; hashing and indexing run on the blocking pool, whose threads do not
//!   inherit the real-time policy (reset on fork) and run as SCHED_BATCH.
//! - storm (the kernel marks the execs it counts into one, and does not wake the daemon for
//!   them): SCHED_BATCH until the kernel can no longer count a new exec into that storm, so
//!   the timer's drains do not preempt the workload. A thread that cannot become real-time
//!   (no CAP_SYS_NICE, an RT cgroup without budget) stays normal when quiet, with one
//!   warning.
//!
//! "Quiet" means no exec storm: forks and exits (drained every `drain_interval_ms` while
//! they flow) and execs below the storm rate are handled at real-time priority too; that is
//! a short drain per interval. A real-time thread is outside nice, CPU weights and quotas
//! (the unit's `Nice=5` applies to the other threads), and where the kernel has RT group
//! scheduling, cgroup v2 will not enable the cpu controller over a real-time thread outside
//! the root group: `sensor.scheduling = "batch"` avoids all of that.

use super::event::SensorEvent;
use super::wire;
use crate::clock::MonoNs;
use crate::config::PipelineScheduling;
use tracing::{debug, warn};

/// After the last exec the kernel marked as part of a storm, a new exec may still fall into
/// one for this long: the window it is in, and the next, which looks back at it.
const STORM_TAIL_NS: MonoNs = 2 * wire::STORM_WINDOW_MS * 1_000_000;

/// A scheduling policy of the pipeline thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// SCHED_FIFO, priority 1, reset on fork.
    Prompt,
    Batch,
    Normal,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Prompt => "SCHED_FIFO",
            Policy::Batch => "SCHED_BATCH",
            Policy::Normal => "SCHED_OTHER",
        }
    }

    fn wanted(scheduling: PipelineScheduling, storm: bool, prompt_refused: bool) -> Self {
        match scheduling {
            PipelineScheduling::Batch => Policy::Batch,
            PipelineScheduling::Normal => Policy::Normal,
            PipelineScheduling::Adaptive if storm => Policy::Batch,
            PipelineScheduling::Adaptive if prompt_refused => Policy::Normal,
            PipelineScheduling::Adaptive => Policy::Prompt,
        }
    }

    fn apply(self, tid: libc::pid_t) -> std::io::Result<()> {
        let (policy, priority) = match self {
            Policy::Prompt => (libc::SCHED_FIFO, 1),
            Policy::Batch => (libc::SCHED_BATCH, 0),
            Policy::Normal => (libc::SCHED_OTHER, 0),
        };
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // Threads the pipeline starts (the blocking pool) must not inherit the real-time
        // policy. Set with every policy: clearing the flag needs CAP_SYS_NICE, which a
        // thread made real-time through RLIMIT_RTPRIO alone does not have.
        let policy = policy | libc::SCHED_RESET_ON_FORK;
        // SAFETY: `param` is a valid sched_param; a stale tid only makes the call fail.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Makes the calling thread (a hashing or indexing thread of the pipeline) SCHED_BATCH:
/// same CPU share, but its wake-ups do not preempt the task running on that CPU. Measured
/// on the whole daemon in the exec bench (3 runs of 12 rounds each way): on/off 1.025 ->
/// 1.017.
pub fn make_this_thread_batch() {
    // Tid 0: the calling thread.
    if let Err(e) = Policy::Batch.apply(0) {
        warn!(error = %e, "cannot make a hashing thread SCHED_BATCH; it keeps the normal policy");
    }
}

/// The pipeline thread's pace, driven by the sensor's drains.
pub struct Pace {
    scheduling: PipelineScheduling,
    /// The pipeline thread (a kernel thread id).
    thread: libc::pid_t,
    applied: Option<Policy>,
    /// Until when (CLOCK_MONOTONIC) the kernel may count a new exec into a storm.
    storm_until: MonoNs,
    prompt_refused: bool,
    /// A switch other than to real-time failed (warned once; retried at the next drain).
    switch_refused: bool,
    /// Since when the applied policy holds.
    applied_at: MonoNs,
    usage: PaceUsage,
}

/// How the pipeline thread was scheduled over the sensor's life (reported when it stops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaceUsage {
    /// Policy changes.
    pub switches: u64,
    /// Milliseconds spent real-time (SCHED_FIFO) and SCHED_BATCH.
    pub prompt_ms: u64,
    pub batch_ms: u64,
}

impl Pace {
    pub fn new(scheduling: PipelineScheduling, thread: libc::pid_t) -> Self {
        Self {
            scheduling,
            thread,
            applied: None,
            storm_until: 0,
            prompt_refused: false,
            switch_refused: false,
            applied_at: 0,
            usage: PaceUsage::default(),
        }
    }

    /// The policy time so far, up to `now`.
    pub fn usage(&self, now: MonoNs) -> PaceUsage {
        let mut usage = self.usage;
        let held_ms = now.saturating_sub(self.applied_at) / 1_000_000;
        match self.applied {
            Some(Policy::Prompt) => usage.prompt_ms += held_ms,
            Some(Policy::Batch) => usage.batch_ms += held_ms,
            _ => {}
        }
        usage
    }

    /// Notes an event drained at `now`: storm-marked execs extend the storm. From the
    /// record's own time for the kernel's sake, but never from before the drain: a
    /// pipeline running behind a storm is still in it, and must not turn real-time
    /// to work off its backlog.
    pub fn saw(&mut self, event: &SensorEvent, now: MonoNs) {
        if let Some(e) = match event {
            SensorEvent::Observed(o) => o.as_exec(),
            SensorEvent::Lost(_) => None,
        } {
            if e.storm {
                let from = e.process.ktime_ns.max(now);
                self.storm_until = self.storm_until.max(from.saturating_add(STORM_TAIL_NS));
            }
        }
    }

    /// Whether the kernel may still hold back the wake-up for a new exec: then only the
    /// daemon's own timer delivers it.
    pub fn in_storm(&self, now: MonoNs) -> bool {
        now < self.storm_until
    }

    /// Sets the thread's policy for the wait until the next drain.
    pub fn settle(&mut self, now: MonoNs) {
        let want = Policy::wanted(self.scheduling, self.in_storm(now), self.prompt_refused);
        if self.applied == Some(want) {
            return;
        }
        match want.apply(self.thread) {
            Ok(()) => {
                debug!(policy = want.name(), "event pipeline scheduling");
                self.usage = self.usage(now);
                self.usage.switches += 1;
                self.applied = Some(want);
                self.applied_at = now;
            }
            Err(e) if want == Policy::Prompt => {
                warn!(
                    error = %e,
                    "cannot give the event pipeline real-time priority (SCHED_FIFO 1, needs \
                     CAP_SYS_NICE and, with RT group scheduling, an RT budget in its cgroup); \
                     it runs as a normal thread when the machine is quiet, so an alert may \
                     wait for a busy CPU's scheduler slice"
                );
                self.prompt_refused = true;
                self.settle(now);
            }
            Err(e) => {
                // The policy it has stays; one warning, not one per drain.
                if !self.switch_refused {
                    warn!(error = %e, policy = want.name(), "cannot set the event pipeline's scheduling");
                    self.switch_refused = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::event::decode;

    /// An exec as the kernel sends it (decoded from a wire record).
    fn exec(ktime_ns: MonoNs, storm: bool) -> SensorEvent {
        let record =
            crate::sensor::event::tests::exec_record_with("/bin/x", None, &[], None, b"x\0", |w| {
                w.hdr.ktime_ns = ktime_ns;
                if storm {
                    w.flags |= wire::EXEC_STORM;
                }
            });
        decode(&record).expect("a valid exec record")
    }

    #[test]
    fn a_storm_lasts_two_windows_after_its_last_marked_exec() {
        let mut pace = Pace::new(PipelineScheduling::Adaptive, 0);
        assert!(!pace.in_storm(1));
        pace.saw(&exec(1_000, false), 1_000);
        assert!(!pace.in_storm(2_000), "an unmarked exec is no storm");
        pace.saw(&exec(5_000_000, true), 5_000_000);
        pace.saw(&exec(1_000, true), 1_000); // an older record does not shorten it
        pace.saw(&crate::fixtures::fork_at(1, 0, 0, 6_000_000), 6_000_000);
        assert!(pace.in_storm(5_000_000 + STORM_TAIL_NS - 1));
        assert!(!pace.in_storm(5_000_000 + STORM_TAIL_NS));
        assert_eq!(STORM_TAIL_NS, 100_000_000);
        // Drained long after the kernel stamped it: the storm runs from the drain.
        let late = 5_000_000 + 10 * STORM_TAIL_NS;
        pace.saw(&exec(5_000_000, true), late);
        assert!(pace.in_storm(late + STORM_TAIL_NS - 1));
    }

    #[test]
    fn adaptive_is_prompt_when_quiet_and_batch_in_a_storm() {
        use PipelineScheduling::*;
        assert_eq!(Policy::wanted(Adaptive, false, false), Policy::Prompt);
        assert_eq!(Policy::wanted(Adaptive, true, false), Policy::Batch);
        assert_eq!(Policy::wanted(Adaptive, false, true), Policy::Normal);
        assert_eq!(Policy::wanted(Adaptive, true, true), Policy::Batch);
        for storm in [false, true] {
            assert_eq!(Policy::wanted(Batch, storm, false), Policy::Batch);
            assert_eq!(Policy::wanted(Normal, storm, false), Policy::Normal);
        }
    }

    #[test]
    fn policies_apply_to_a_real_thread_and_fall_back_when_refused() {
        // The calling thread: tid 0 means "the caller" to sched_setscheduler.
        let tid = 0;
        let mut pace = Pace::new(PipelineScheduling::Adaptive, tid);
        pace.settle(0);
        let policy = || unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
        if pace.prompt_refused {
            assert_eq!(policy(), libc::SCHED_OTHER);
        } else {
            assert_eq!(policy(), libc::SCHED_FIFO);
        }
        pace.saw(&exec(10, true), 20);
        pace.settle(20);
        assert_eq!(policy(), libc::SCHED_BATCH);
        pace.settle(20 + STORM_TAIL_NS);
        assert_ne!(policy(), libc::SCHED_BATCH);
        let usage = pace.usage(20 + STORM_TAIL_NS + 2_000_000);
        assert_eq!(usage.switches, 3);
        assert_eq!(usage.batch_ms, STORM_TAIL_NS / 1_000_000);
        if !pace.prompt_refused {
            assert_eq!(usage.prompt_ms, 2);
        }
        // Leave the test thread as it was found.
        Policy::Normal.apply(0).unwrap();
    }
}
