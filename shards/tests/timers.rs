//! Goal: a timer costs one registration however often it is polled, never wakes its task after
//! it is gone, and never ends early.
//!
//! glommio-ng 0.12.0 registered a sleep once more on every poll that found it not yet due (a
//! sleep raced against another future, as `shards::time::timeout` does, is polled each time the
//! other future wakes) and dropped only the last registration. The rest stayed in the reactor,
//! each in the scan that finds the next deadline, and fired later, waking the task while it
//! waited on something else. `shards/vendor/README.md` describes the fix.

use shards::{CpuSet, RuntimeConfig, ShardContext, ShardCount, Topology};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Counts how often the wrapped future is polled.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Rc<Cell<u32>>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

/// Pending `left` times, waking its task each time, then ready.
struct WakesItself {
    left: u32,
}

impl Future for WakesItself {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What the shard saw.
struct Seen {
    /// Polls of a 50 ms sleep awaited right after a 5 ms timeout that lost its race after 500
    /// polls: 2 when nothing else wakes the task.
    polls_of_next_sleep: u32,
    /// Short sleeps that ended before their duration.
    early: u32,
}

async fn exercise_timers(context: ShardContext<()>, seen: mpsc::Sender<Seen>) {
    // The timeout's sleep is polled 500 times before the other future wins.
    let raced = shards::time::timeout(Duration::from_millis(5), WakesItself { left: 500 }).await;
    assert!(raced.is_ok(), "the self-waking future finishes first");
    let polls = Rc::new(Cell::new(0));
    CountPolls {
        inner: Box::pin(shards::time::sleep(Duration::from_millis(50))),
        polls: polls.clone(),
    }
    .await;

    let mut early = 0;
    for round in 0..40u64 {
        // 150 to 540 µs: most deadlines fall between two millisecond ticks.
        let wanted = Duration::from_micros(150 + round * 10);
        let start = Instant::now();
        shards::time::sleep(wanted).await;
        if start.elapsed() < wanted {
            early += 1;
        }
    }
    let _ = seen.send(Seen {
        polls_of_next_sleep: polls.get(),
        early,
    });
    context.shutdown_requested().await;
}

#[test]
fn a_raced_timer_holds_one_registration_and_never_ends_early() {
    let (seen_tx, seen) = mpsc::channel();
    let config = RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(2),
            cpus: CpuSet::All,
            pin: false,
        },
        name: String::from("timers"),
        ..RuntimeConfig::default()
    };
    let runtime = shards::start::<(), _, _>(config, move |context| {
        exercise_timers(context, seen_tx.clone())
    })
    .expect("start");
    for _ in 0..2 {
        let shard = seen
            .recv_timeout(Duration::from_secs(60))
            .expect("each shard finishes within 60 s");
        assert_eq!(
            shard.polls_of_next_sleep, 2,
            "a sleep was woken before it was due: registrations of the earlier, finished \
             timeout were left behind and fired"
        );
        assert_eq!(shard.early, 0, "a sleep ended before its duration");
    }
    runtime.handle().shutdown();
    runtime.join().expect("clean stop");
}
