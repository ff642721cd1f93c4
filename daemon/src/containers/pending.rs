//! Events that arrived before containerd told us about their container.
//!
//! Owns the bounded queue and its two ways out: an event leaves as soon as a lookup
//! resolves it (the caller retries whenever the table learns something), or, unresolved,
//! when its deadline passes or the queue overflows. Nothing is dropped silently. Pure:
//! times are arguments (CLOCK_MONOTONIC ns); it must not do lookups itself.

use crate::clock::MonoNs;
use std::collections::VecDeque;
use std::time::Duration;

/// One waiting item and what it can be looked up by.
#[derive(Debug)]
pub struct Waiting<T> {
    pub item: T,
    pub mnt_ns: u32,
    /// Its own pid, its parent's and further ancestors', nearest first.
    pub pids: Vec<u32>,
    /// When the event happened (the sensor's timestamp).
    pub event_at: MonoNs,
    /// When it started waiting.
    pub since: MonoNs,
    deadline: MonoNs,
}

impl<T> Waiting<T> {
    /// How long it waited by `now`, in whole milliseconds.
    pub fn waited_ms(&self, now: MonoNs) -> u64 {
        now.saturating_sub(self.since) / 1_000_000
    }
}

#[derive(Debug)]
pub struct PendingQueue<T> {
    items: VecDeque<Waiting<T>>,
    capacity: usize,
    timeout: MonoNs,
}

impl<T> PendingQueue<T> {
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            timeout: crate::clock::nanos(timeout),
        }
    }

    /// Queues `item`. When the queue is full the oldest item comes back out: the caller
    /// must pass it on as unresolved.
    pub fn push(
        &mut self,
        item: T,
        mnt_ns: u32,
        pids: Vec<u32>,
        event_at: MonoNs,
        now: MonoNs,
    ) -> Option<Waiting<T>> {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(Waiting {
            item,
            mnt_ns,
            pids,
            event_at,
            since: now,
            deadline: now.saturating_add(self.timeout),
        });
        evicted
    }

    /// Takes out, in arrival order, every item `lookup(mnt_ns, pids, event_at)` resolves.
    pub fn take_resolved<R>(
        &mut self,
        mut lookup: impl FnMut(u32, &[u32], MonoNs) -> Option<R>,
    ) -> Vec<(Waiting<T>, R)> {
        if self.items.is_empty() {
            return Vec::new();
        }
        let mut resolved = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for w in self.items.drain(..) {
            match lookup(w.mnt_ns, &w.pids, w.event_at) {
                Some(r) => resolved.push((w, r)),
                None => kept.push_back(w),
            }
        }
        self.items = kept;
        resolved
    }

    /// Takes out every item whose deadline has passed. The timeout is the same for all, so
    /// deadlines grow with arrival order and expired items are all at the front.
    pub fn take_expired(&mut self, now: MonoNs) -> Vec<Waiting<T>> {
        let n = self.items.iter().take_while(|w| w.deadline <= now).count();
        self.items.drain(..n).collect()
    }

    /// Takes out everything (at shutdown).
    pub fn take_all(&mut self) -> Vec<Waiting<T>> {
        self.items.drain(..).collect()
    }

    pub fn next_deadline(&self) -> Option<MonoNs> {
        self.items.front().map(|w| w.deadline)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: MonoNs = 1_000_000;
    const TIMEOUT: Duration = Duration::from_millis(1000);
    const T0: MonoNs = 5_000 * MS;

    #[test]
    fn resolves_in_arrival_order_and_keeps_the_rest() {
        let mut q = PendingQueue::new(10, TIMEOUT);
        q.push("a", 1, vec![10], T0 - MS, T0);
        q.push("b", 2, vec![20], T0 - MS, T0);
        q.push("c", 1, vec![11], T0, T0);
        let out = q.take_resolved(|ns, _, _| (ns == 1).then_some("ctr"));
        let items: Vec<_> = out.iter().map(|(w, r)| (w.item, *r)).collect();
        assert_eq!(items, vec![("a", "ctr"), ("c", "ctr")]);
        assert_eq!(q.len(), 1);
        // Lookups by pid see the whole ancestry, and the event's own time.
        let out =
            q.take_resolved(|_, pids, at| (pids.contains(&20) && at == T0 - MS).then_some(()));
        assert_eq!(out.len(), 1);
        assert!(q.is_empty());
        assert!(q.take_resolved(|_, _, _| Some(())).is_empty());
    }

    #[test]
    fn expires_only_what_is_due() {
        let mut q = PendingQueue::new(10, TIMEOUT);
        q.push(1, 1, vec![], T0, T0);
        q.push(2, 1, vec![], T0, T0 + 500 * MS);
        assert_eq!(q.next_deadline(), Some(T0 + 1000 * MS));
        assert!(q.take_expired(T0 + 999 * MS).is_empty());
        let out = q.take_expired(T0 + 1000 * MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item, 1);
        assert_eq!(out[0].waited_ms(T0 + 1000 * MS), 1000);
        assert_eq!(q.next_deadline(), Some(T0 + 1500 * MS));
        assert_eq!(q.take_expired(T0 + 5000 * MS).len(), 1);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn overflow_releases_the_oldest() {
        let mut q = PendingQueue::new(2, TIMEOUT);
        assert!(q.push(1, 1, vec![], T0, T0).is_none());
        assert!(q.push(2, 1, vec![], T0, T0).is_none());
        let evicted = q.push(3, 1, vec![], T0, T0).unwrap();
        assert_eq!(evicted.item, 1);
        assert_eq!(q.len(), 2);
        let rest: Vec<_> = q.take_all().into_iter().map(|w| w.item).collect();
        assert_eq!(rest, vec![2, 3]);
    }
}
