//! Single-shard synchronisation: `Rc`-based, no atomics. Waiters that give up (their future is
//! dropped) remove themselves, so a long-lived primitive does not collect dead wakers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Registered wakers with stable slots, so a dropped waiter can take its own out.
#[derive(Default)]
struct Waiters {
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Waiters {
    /// Stores `waker` in `slot` (allocating one if `None`) and returns the slot.
    fn register(&self, slot: Option<usize>, waker: &Waker) -> usize {
        let mut slots = self.slots.borrow_mut();
        let index = match slot {
            Some(index) => index,
            None => match self.free.borrow_mut().pop() {
                Some(index) => index,
                None => {
                    slots.push(None);
                    slots.len() - 1
                }
            },
        };
        if let Some(entry) = slots.get_mut(index) {
            match entry {
                Some(existing) if existing.will_wake(waker) => {}
                _ => *entry = Some(waker.clone()),
            }
        }
        index
    }

    fn remove(&self, slot: usize) {
        if let Some(entry) = self.slots.borrow_mut().get_mut(slot) {
            *entry = None;
            self.free.borrow_mut().push(slot);
        }
    }

    /// Wakes one registered waiter (it keeps its slot until it is polled or dropped).
    fn wake_one(&self) {
        let waker = self.slots.borrow_mut().iter_mut().find_map(Option::take);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Wakes one waiting task. A `notify_one` with nobody waiting is kept as a single permit for the
/// next `notified().await`, so a notification sent before the wait is not lost.
#[derive(Default)]
pub struct Notify {
    permit: Cell<bool>,
    waiters: Waiters,
}

impl Notify {
    pub fn new() -> Notify {
        Notify::default()
    }

    pub fn notify_one(&self) {
        self.permit.set(true);
        self.waiters.wake_one();
    }

    /// Resolves once a permit is available, consuming it.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            slot: None,
        }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.permit.replace(false) {
            if let Some(slot) = self.slot.take() {
                self.notify.waiters.remove(slot);
            }
            return Poll::Ready(());
        }
        let slot = self.notify.waiters.register(self.slot, cx.waker());
        self.slot = Some(slot);
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.notify.waiters.remove(slot);
        }
    }
}

/// Wakes every task waiting when `notify_all` is called, keeping no permit: for a condition each
/// waiter checks again for itself (room in a shared allowance), where waking only one could wake
/// one that still does not fit while another would.
#[derive(Default)]
pub struct Signal {
    generation: Cell<u64>,
    waiters: Waiters,
}

impl Signal {
    pub fn new() -> Signal {
        Signal::default()
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.waiters.wake_all();
    }

    /// Resolves at the next `notify_all`.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            generation: self.generation.get(),
            slot: None,
        }
    }
}

pub struct SignalWait<'a> {
    signal: &'a Signal,
    generation: u64,
    slot: Option<usize>,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.generation {
            if let Some(slot) = self.slot.take() {
                self.signal.waiters.remove(slot);
            }
            return Poll::Ready(());
        }
        let slot = self.signal.waiters.register(self.slot, cx.waker());
        self.slot = Some(slot);
        Poll::Pending
    }
}

impl Drop for SignalWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.signal.waiters.remove(slot);
        }
    }
}

/// A one-way switch: once set, every present and future waiter resolves. Used for "go" and
/// "shutdown has begun" on a shard.
#[derive(Default)]
pub(crate) struct Latch {
    set: Cell<bool>,
    waiters: Waiters,
}

impl Latch {
    pub(crate) fn set(&self) {
        if !self.set.replace(true) {
            self.waiters.wake_all();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    pub(crate) fn wait(&self) -> LatchWait<'_> {
        LatchWait {
            latch: self,
            slot: None,
        }
    }
}

pub(crate) struct LatchWait<'a> {
    latch: &'a Latch,
    slot: Option<usize>,
}

impl Future for LatchWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.set.get() {
            return Poll::Ready(());
        }
        let slot = self.latch.waiters.register(self.slot, cx.waker());
        self.slot = Some(slot);
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.latch.waiters.remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn notify_before_wait_is_kept_as_one_permit() {
        let notify = Notify::new();
        notify.notify_one();
        notify.notify_one();
        block_on(notify.notified());
        assert!(
            block_on(poll_once(notify.notified())).is_none(),
            "only one permit is stored"
        );
    }

    #[test]
    fn dropped_waiters_free_their_slots() {
        let notify = Notify::new();
        for _ in 0..100 {
            let mut wait = Box::pin(notify.notified());
            assert!(block_on(poll_once(wait.as_mut())).is_none());
        }
        assert_eq!(notify.waiters.slots.borrow().len(), 1);
        let latch = Latch::default();
        let mut wait = Box::pin(latch.wait());
        assert!(block_on(poll_once(wait.as_mut())).is_none());
        latch.set();
        assert!(block_on(poll_once(wait.as_mut())).is_some());
        assert!(latch.is_set());
    }
}
