//! Which exec inspection runs next: per-container fairness for the reads the verify stage
//! does on a container's behalf.
//!
//! Owns only the bookkeeping (pure, no I/O, no clock of its own): jobs wait per container
//! and are taken round-robin; at most `max_active` inspections run at once across the node
//! and at most `per_container` threads are busy for any one container. An inspection that
//! passes its deadline stops counting against the node-wide limit (its thread may still be
//! blocked in the kernel) but keeps counting against its container until the thread
//! returns, so a container whose files block every read can only ever hold its own slots:
//! four hostile FIFOs or a hung FUSE mount never stop the judging of anybody else.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Why a job could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// Threads of this container still busy (some may be blocked past their deadline).
    pub busy: usize,
    pub waiting: usize,
}

pub struct FairQueue<K, J> {
    waiting: HashMap<K, VecDeque<(Instant, J)>>,
    /// Containers with waiting jobs, in turn order.
    turn: VecDeque<K>,
    /// Threads busy per container: running, or past their deadline and not yet returned.
    busy: HashMap<K, usize>,
    /// Inspections running within their deadline, node-wide.
    active: usize,
    max_active: usize,
    per_container: usize,
    max_waiting_per_container: usize,
    max_waiting_total: usize,
    waiting_total: usize,
}

impl<K: Clone + Eq + Hash, J> FairQueue<K, J> {
    pub fn new(
        max_active: usize,
        per_container: usize,
        max_waiting_per_container: usize,
        max_waiting_total: usize,
    ) -> Self {
        Self {
            waiting: HashMap::new(),
            turn: VecDeque::new(),
            busy: HashMap::new(),
            active: 0,
            max_active: max_active.max(1),
            per_container: per_container.max(1),
            max_waiting_per_container: max_waiting_per_container.max(1),
            max_waiting_total: max_waiting_total.max(1),
            waiting_total: 0,
        }
    }

    /// Queues a job for `key`, or gives it back when that container already has the most
    /// jobs waiting that it may, or the node does.
    pub fn push(&mut self, key: K, job: J, now: Instant) -> Result<(), (J, Full)> {
        let queue = self.waiting.entry(key.clone()).or_default();
        if queue.len() >= self.max_waiting_per_container
            || self.waiting_total >= self.max_waiting_total
        {
            let full = Full {
                busy: self.busy.get(&key).copied().unwrap_or(0),
                waiting: queue.len(),
            };
            if queue.is_empty() {
                self.waiting.remove(&key);
            }
            return Err((job, full));
        }
        if queue.is_empty() {
            self.turn.push_back(key);
        }
        queue.push_back((now, job));
        self.waiting_total += 1;
        Ok(())
    }

    /// The next job to start, if a slot is free: containers take turns, and one at its
    /// own limit is passed over.
    pub fn take_next(&mut self) -> Option<(K, J)> {
        if self.active >= self.max_active {
            return None;
        }
        for _ in 0..self.turn.len() {
            let key = self.turn.pop_front()?;
            let busy = self.busy.get(&key).copied().unwrap_or(0);
            if busy >= self.per_container {
                self.turn.push_back(key);
                continue;
            }
            let queue = self
                .waiting
                .get_mut(&key)
                .expect("a key in turn has a queue");
            let (_, job) = queue.pop_front().expect("a key in turn has a waiting job");
            if queue.is_empty() {
                self.waiting.remove(&key);
            } else {
                self.turn.push_back(key.clone());
            }
            self.waiting_total -= 1;
            *self.busy.entry(key.clone()).or_default() += 1;
            self.active += 1;
            return Some((key, job));
        }
        None
    }

    /// An inspection ended or passed its deadline: its node-wide slot is free.
    pub fn release(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// The thread of an inspection for `key` returned: its container slot is free.
    pub fn returned(&mut self, key: &K) {
        if let Some(n) = self.busy.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(key);
            }
        }
    }

    /// Takes the jobs that have waited longer than `max_wait` (their container's threads
    /// are blocked), oldest first, with how many threads of that container are busy.
    pub fn expire(&mut self, now: Instant, max_wait: Duration) -> Vec<(K, J, usize)> {
        let mut out = Vec::new();
        let keys: Vec<K> = self.waiting.keys().cloned().collect();
        for key in keys {
            let queue = self.waiting.get_mut(&key).expect("listed above");
            while queue
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > max_wait)
            {
                let (_, job) = queue.pop_front().expect("checked above");
                self.waiting_total -= 1;
                out.push((key.clone(), job, self.busy.get(&key).copied().unwrap_or(0)));
            }
            if queue.is_empty() {
                self.waiting.remove(&key);
                self.turn.retain(|k| *k != key);
            }
        }
        out
    }

    pub fn waiting(&self) -> usize {
        self.waiting_total
    }

    #[cfg(test)]
    /// Threads busy for `key` (including those blocked past their deadline).
    pub fn busy(&self, key: &K) -> usize {
        self.busy.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_take_turns() {
        let now = Instant::now();
        let mut q = FairQueue::new(1, 1, 100, 100);
        for i in 0..3 {
            q.push("a", i, now).unwrap();
        }
        q.push("b", 10, now).unwrap();
        let (k, j) = q.take_next().unwrap();
        assert_eq!((k, j), ("a", 0));
        assert!(q.take_next().is_none(), "one slot node-wide");
        q.release();
        q.returned(&"a");
        assert_eq!(
            q.take_next().unwrap(),
            ("b", 10),
            "b's turn, not a's second job"
        );
        q.release();
        q.returned(&"b");
        assert_eq!(q.take_next().unwrap(), ("a", 1));
    }

    #[test]
    fn a_blocked_container_holds_only_its_own_slots() {
        let now = Instant::now();
        let mut q = FairQueue::new(4, 2, 8, 100);
        // Five FIFOs in container a: two threads start and block.
        for i in 0..5 {
            q.push("a", i, now).unwrap();
        }
        assert_eq!(q.take_next().unwrap().0, "a");
        assert_eq!(q.take_next().unwrap().0, "a");
        assert!(q.take_next().is_none(), "a is at its limit");
        // Their deadline passes: the node-wide slots come back, the threads stay busy.
        q.release();
        q.release();
        assert_eq!(q.busy(&"a"), 2);
        // Another container is judged at once.
        q.push("b", 100, now).unwrap();
        assert_eq!(q.take_next().unwrap(), ("b", 100));
        // a's waiting jobs expire instead of waiting forever.
        let later = now + Duration::from_secs(10);
        let expired = q.expire(later, Duration::from_secs(5));
        assert_eq!(expired.len(), 3);
        assert!(expired.iter().all(|(k, _, busy)| *k == "a" && *busy == 2));
        assert_eq!(q.waiting(), 0);
        // When a's threads return, it gets slots again.
        q.returned(&"a");
        q.push("a", 9, later).unwrap();
        assert_eq!(q.take_next().unwrap(), ("a", 9));
    }

    #[test]
    fn each_container_waits_in_a_bounded_queue() {
        let now = Instant::now();
        let mut q = FairQueue::new(1, 1, 2, 4);
        q.push("a", 1, now).unwrap();
        q.push("a", 2, now).unwrap();
        let (job, full) = q.push("a", 3, now).unwrap_err();
        assert_eq!(job, 3);
        assert_eq!(full.waiting, 2);
        q.push("b", 4, now).unwrap();
        q.push("c", 5, now).unwrap();
        assert_eq!(q.waiting(), 4);
        // The node-wide bound: even a container with nothing waiting is refused.
        let (job, full) = q.push("d", 6, now).unwrap_err();
        assert_eq!((job, full.waiting), (6, 0));
        assert_eq!(q.waiting(), 4);
    }
}
