//! Timers on the current shard (the executor's timer wheel, no thread per timer).

use std::future::Future;
use std::time::Duration;

/// The deadline of `timeout` passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Waits `duration` on the current shard.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` for at most `duration`. The future is polled before the timer, so one that is
/// ready at the deadline wins.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Result<T, Elapsed> {
    futures_lite::future::or(async { Ok(future.await) }, async {
        sleep(duration).await;
        Err(Elapsed)
    })
    .await
}
