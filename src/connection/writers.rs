//! The shard's table of connection writers to wake: after a batch, `ShardShell` wakes the writer
//! of every connection the shard buffered bytes for. An entry is the waiting task's waker, inline
//! in the table (16 bytes beside the id): a connection costs no `Rc<Notify>` and no waker slot
//! of its own (about 180 bytes per idle connection before, docs/BENCHMARKS.md). A wake-up takes
//! the waker out, and the empty entry is the mark: one sent while nobody waits is kept for the
//! next wait, so it is not lost.

use std::future::{Future, poll_fn};
use std::task::{Context, Poll, Waker};

use crate::shard::{ConnId, ConnMap};

#[derive(Default)]
pub(crate) struct Writers {
    /// `None`: woken since the last wait returned. `Some`: not woken; the waiting task's waker,
    /// or a no-op one while nobody waits. One word pair per connection, no flag beside it.
    entries: ConnMap<Option<Waker>>,
}

impl Writers {
    /// Adds a connection's writer (not woken yet).
    pub fn insert(&mut self, conn: ConnId) {
        self.entries.insert(conn, Some(Waker::noop().clone()));
    }

    pub fn remove(&mut self, conn: ConnId) {
        self.entries.remove(&conn);
    }

    /// `conn` parked: its next wake-up goes to `waker`, which revives it (`parked`). A wake-up
    /// kept since the writer's last wait (its task had not run yet) wakes `waker` at once and
    /// stays kept, for the revived writer to look: a delivery that woke the writer between its
    /// last poll and the park is never lost, at the cost of a revival when there was nothing.
    pub fn park(&mut self, conn: ConnId, waker: Waker) {
        match self.entries.get_mut(&conn) {
            Some(None) => waker.wake(),
            Some(entry) => *entry = Some(waker),
            None => {}
        }
    }

    /// Wakes the writer of `conn`, or keeps the wake-up for its next wait.
    pub fn wake(&mut self, conn: ConnId) {
        if let Some(entry) = self.entries.get_mut(&conn)
            && let Some(waker) = entry.take()
        {
            waker.wake();
        }
    }

    /// `Ready` once the writer of `conn` was woken since the last `Ready`, or when it has no
    /// entry (the connection is gone: its writer finds out when it looks).
    pub fn poll_woken(&mut self, conn: ConnId, cx: &Context<'_>) -> Poll<()> {
        let Some(entry) = self.entries.get_mut(&conn) else {
            return Poll::Ready(());
        };
        match entry {
            None => {
                *entry = Some(Waker::noop().clone());
                Poll::Ready(())
            }
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                Poll::Pending
            }
        }
    }
}

/// Waits until the writer of `conn` is woken (`Writers::poll_woken`).
pub(crate) fn woken(
    writers: &std::cell::RefCell<Writers>,
    conn: ConnId,
) -> impl Future<Output = ()> + '_ {
    poll_fn(move |cx| writers.borrow_mut().poll_woken(conn, cx))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::Writers;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_wake_up_reaches_the_waiting_writer_or_waits_for_it() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let cx = Context::from_waker(&waker);
        let mut writers = Writers::default();
        writers.insert(7);
        // Nothing yet: the writer waits, and a wake-up wakes its task once.
        assert_eq!(writers.poll_woken(7, &cx), Poll::Pending);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Pending);
        writers.wake(7);
        writers.wake(7);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Ready(()));
        // Consumed: the next wait waits again.
        assert_eq!(writers.poll_woken(7, &cx), Poll::Pending);
        // A wake-up while it waits wakes it and is kept for its next poll.
        writers.wake(7);
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Ready(()));
        // Another connection's wake-up is not this one's; a removed connection's wait ends.
        writers.wake(8);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Pending);
        writers.remove(7);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Ready(()));
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_wake_up_kept_when_the_connection_parks_revives_it_at_once() {
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let cx = Context::from_waker(&task_waker);
        let parked = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let mut writers = Writers::default();
        writers.insert(7);
        assert_eq!(writers.poll_woken(7, &cx), Poll::Pending);
        // Woken, and the connection parks before its writer runs again.
        writers.wake(7);
        writers.park(7, Waker::from(Arc::clone(&parked)));
        assert_eq!(parked.0.load(Ordering::Relaxed), 1, "revived at once");
        // The revived writer finds the wake-up and looks for what there is to write.
        assert_eq!(writers.poll_woken(7, &cx), Poll::Ready(()));
        // Parked while waiting with nothing kept: only the next wake-up revives it.
        writers.park(7, Waker::from(Arc::clone(&parked)));
        assert_eq!(parked.0.load(Ordering::Relaxed), 1);
        writers.wake(7);
        assert_eq!(parked.0.load(Ordering::Relaxed), 2);
    }
}
