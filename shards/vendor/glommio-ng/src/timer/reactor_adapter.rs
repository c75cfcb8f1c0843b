// Copyright 2024 Glommio Project Authors. Licensed under Apache-2.0.

//! The reactor's timers.
//!
//! ringmq patch: the release kept timers in a 1 ms timing wheel and found the next deadline by
//! scanning every registered timer on each turn of the run loop (with a timer polled often, see
//! `Timer::poll`, that scan dominated a load-generator thread's profile). Here timers sit in a
//! `BTreeMap` ordered by deadline: the next deadline is the first key, insert and remove are
//! O(log n), and a timer fires at its deadline.

use super::timer_id::TimerId;
use ahash::AHashMap;
use std::collections::BTreeMap;
use std::task::Waker;
use std::time::{Duration, Instant};

pub(crate) struct ReactorTimers {
    /// Timers by (deadline, id): the first entry is the next to fire.
    by_deadline: BTreeMap<(Instant, u64), Waker>,
    /// Each live timer's deadline, to find its entry on removal.
    deadline_of: AHashMap<u64, Instant>,
    /// Ids are never reused (a 64-bit count, split over `TimerId`'s index and generation), so a
    /// stale id cannot remove another timer.
    next_id: u64,
}

impl ReactorTimers {
    pub(crate) fn new() -> Self {
        Self {
            by_deadline: BTreeMap::new(),
            deadline_of: AHashMap::new(),
            next_id: 0,
        }
    }

    /// Registers a timer that wakes `waker` at `expires_at`.
    pub(crate) fn insert(&mut self, expires_at: Instant, waker: Waker) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.deadline_of.insert(id, expires_at);
        self.by_deadline.insert((expires_at, id), waker);
        TimerId::new(id as u32, (id >> 32) as u32)
    }

    /// Removes a timer; false when it had fired or was removed already.
    pub(crate) fn remove(&mut self, id: TimerId) -> bool {
        let id = key(id);
        match self.deadline_of.remove(&id) {
            Some(deadline) => self.by_deadline.remove(&(deadline, id)).is_some(),
            None => false,
        }
    }

    pub(crate) fn exists(&self, id: TimerId) -> bool {
        self.deadline_of.contains_key(&key(id))
    }

    /// Wakes every timer whose deadline has passed; returns the time until the next deadline and
    /// how many timers woke.
    pub(crate) fn process_timers(&mut self) -> (Option<Duration>, usize) {
        // ringmq patch: no clock reading when no timer is registered.
        if self.by_deadline.is_empty() {
            return (None, 0);
        }
        let now = Instant::now();
        // Collect before waking: a waker may insert or remove timers.
        let mut expired = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, id), waker) = entry.remove_entry();
            self.deadline_of.remove(&id);
            expired.push(waker);
        }
        let woke = expired.len();
        for waker in expired {
            waker.wake();
        }
        let next = self
            .by_deadline
            .first_key_value()
            .map(|((deadline, _), _)| deadline.saturating_duration_since(now));
        (next, woke)
    }

    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.deadline_of.len()
    }

    #[allow(dead_code)]
    pub(crate) fn is_empty(&self) -> bool {
        self.deadline_of.is_empty()
    }
}

fn key(id: TimerId) -> u64 {
    (u64::from(id.generation()) << 32) | u64::from(id.index())
}

impl Default for ReactorTimers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Helper: a waker that does nothing when woken.
    fn dummy_waker() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn test_insert_and_process() {
        let mut timers = ReactorTimers::new();
        let now = Instant::now();

        // Insert a timer and get ID
        let _id = timers.insert(now + Duration::from_millis(100), dummy_waker());
        assert_eq!(timers.len(), 1);

        // Process before expiry - should not wake
        let (next, woke) = timers.process_timers();
        assert_eq!(woke, 0);
        assert!(next.is_some());
        assert_eq!(timers.len(), 1);

        // Wait and process after expiry
        std::thread::sleep(Duration::from_millis(150));
        let (_, woke) = timers.process_timers();
        assert_eq!(woke, 1);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn test_remove() {
        let mut timers = ReactorTimers::new();
        let now = Instant::now();

        // Insert and get ID
        let id = timers.insert(now + Duration::from_millis(100), dummy_waker());
        assert_eq!(timers.len(), 1);

        // Remove the timer using ID
        assert!(timers.remove(id));
        assert_eq!(timers.len(), 0);

        // Try to remove again with same ID - should return false
        assert!(!timers.remove(id));
    }

    #[test]
    fn test_exists() {
        let mut timers = ReactorTimers::new();
        let now = Instant::now();

        // Insert and get ID
        let id = timers.insert(now + Duration::from_millis(100), dummy_waker());

        // Should exist with correct ID
        assert!(timers.exists(id));

        // Remove and check it no longer exists
        timers.remove(id);
        assert!(!timers.exists(id));
    }

    #[test]
    fn test_multiple_timers() {
        let mut timers = ReactorTimers::new();
        let now = Instant::now();

        // Insert multiple timers
        let id1 = timers.insert(now + Duration::from_millis(100), dummy_waker());
        let id2 = timers.insert(now + Duration::from_millis(200), dummy_waker());
        let id3 = timers.insert(now + Duration::from_millis(300), dummy_waker());

        assert_eq!(timers.len(), 3);

        // Remove one timer
        assert!(timers.remove(id2));
        assert_eq!(timers.len(), 2);

        // Verify correct timers remain
        assert!(timers.exists(id1));
        assert!(!timers.exists(id2));
        assert!(timers.exists(id3));
    }

    #[test]
    fn test_fires_at_its_deadline_not_a_tick_later() {
        let mut timers = ReactorTimers::new();
        let deadline = Instant::now() + Duration::from_micros(300);
        timers.insert(deadline, dummy_waker());
        let (next, woke) = timers.process_timers();
        assert_eq!(woke, 0);
        assert!(next.is_some_and(|d| d <= Duration::from_micros(300)));
        while Instant::now() < deadline {}
        let (next, woke) = timers.process_timers();
        assert_eq!(woke, 1);
        assert_eq!(next, None);
    }
}
