//! Tasks on the current shard. Every task spawned through this crate is counted while it lives,
//! so tests (and metrics) can check that connection tasks do not leak.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static LIVE_TASKS: Cell<usize> = const { Cell::new(0) };
}

/// Tasks spawned through this crate that have not finished (or been cancelled) on this shard.
pub fn live_tasks() -> usize {
    LIVE_TASKS.with(Cell::get)
}

/// Lets the shard's other ready tasks run before the caller goes on. A loop whose awaits all
/// complete at once (a socket that always has data waiting) never returns to the executor
/// otherwise, and starves every other task of its shard.
pub async fn yield_now() {
    futures_lite::future::yield_now().await;
}

/// A spawned task. Await it for its output; dropping it cancels the task; `detach` lets it run on.
#[must_use = "dropping a Task cancels it; call detach() to let it run"]
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    /// Lets the task run to completion on its own.
    pub fn detach(self) {
        drop(self.0.detach());
    }
}

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

struct Counted;

impl Counted {
    fn new() -> Counted {
        LIVE_TASKS.with(|live| live.set(live.get() + 1));
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE_TASKS.with(|live| live.set(live.get().saturating_sub(1)));
    }
}

/// A hand-written wrapper, not `async move { let _guard = guard; future.await }`: such a block
/// keeps both the captured future and the one it awaits, twice the future's size in every task.
fn counted<F: Future>(future: F) -> CountedFuture<F> {
    CountedFuture {
        future,
        _guard: Counted::new(),
    }
}

pin_project_lite::pin_project! {
    struct CountedFuture<F> {
        #[pin]
        future: F,
        _guard: Counted,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

/// Spawns on the current shard's default task queue.
///
/// # Panics
/// Outside a shard thread (the executor is thread-local).
pub fn spawn_local<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    Task(glommio::spawn_local(counted(future)))
}

/// Spawns into a task queue created by this shard.
pub(crate) fn spawn_into<T: 'static>(
    future: impl Future<Output = T> + 'static,
    queue: glommio::TaskQueueHandle,
) -> Task<T> {
    match glommio::spawn_local_into(counted(future), queue) {
        Ok(task) => Task(task),
        // Our own bug, not an input: the three queues are created at shard start and never removed.
        Err(error) => panic!("task queue {queue:?} missing: {error}"),
    }
}
