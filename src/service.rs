//! The service manager's view of the broker: systemd's notify protocol (`sd_notify(3)`) through
//! the `sd-notify` crate.
//!
//! - `READY=1` (with `STATUS=`) once every shard serves, that is once every listener socket of
//!   every shard is bound and its accept loop runs.
//! - `STATUS=` about every [`STATUS_EVERY`]: shards and open connections, for `systemctl status`.
//! - `WATCHDOG=1` only while every shard's loop is turning. Each shard's tick (every 250 ms)
//!   advances its own heartbeat; the supervisor thread wakes every half `WatchdogSec` and sends
//!   `WATCHDOG=1` only when every heartbeat moved since its last look. A shard stuck in a busy
//!   loop or a blocking call stops its heartbeat, the notifications stop, and systemd restarts
//!   the service (`Restart=on-failure`).
//! - `STOPPING=1` when graceful shutdown begins (the first shard to see it says so).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every notification is a
//! no-op and no thread is started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::metrics::SnapshotBoard;

/// How often `STATUS=` is refreshed when no watchdog asks for more often.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The shortest time between two looks at the heartbeats: two shard ticks.
const PERIOD_MIN: Duration = Duration::from_millis(500);

/// What the shards tell the service manager: their heartbeats and the start of shutdown.
#[derive(Debug)]
pub struct Service {
    /// One tick counter per possible shard; shard `i` advances `heartbeats[i]`.
    heartbeats: Box<[AtomicU64]>,
    stopping: AtomicBool,
}

impl Service {
    pub fn new(shards_max: usize) -> Arc<Service> {
        Arc::new(Service {
            heartbeats: (0..shards_max).map(|_| AtomicU64::new(0)).collect(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Shard `shard`'s loop turned (called from its tick).
    pub fn beat(&self, shard: usize) {
        if let Some(heartbeat) = self.heartbeats.get(shard) {
            heartbeat.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The heartbeats of the first `shards` shards, in order.
    fn heartbeats(&self, shards: usize) -> Vec<u64> {
        self.heartbeats
            .iter()
            .take(shards)
            .map(|heartbeat| heartbeat.load(Ordering::Relaxed))
            .collect()
    }

    /// Graceful shutdown began: `STOPPING=1`, once, and no `WATCHDOG=1` after it.
    pub fn stopping(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            notify(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: publishing wills, closing connections"),
            ]);
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Sends to the service manager; without one (`NOTIFY_SOCKET` unset) does nothing. A failed send
/// is logged, never fatal: the broker serves clients whether or not systemd listens.
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The `WATCHDOG_USEC` systemd set for this process, if any.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Which of the shards did not turn between two looks at their heartbeats.
pub fn stalled_shards(before: &[u64], now: &[u64]) -> Vec<usize> {
    before
        .iter()
        .zip(now)
        .enumerate()
        .filter(|(_, (before, now))| before == now)
        .map(|(shard, _)| shard)
        .collect()
}

/// The thread that keeps the service manager informed while the broker runs; stopped and joined
/// when dropped.
pub struct Supervisor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Says `READY=1` and, under systemd, starts the thread for `STATUS=` and `WATCHDOG=1`.
    /// Call once every shard serves. `listening` names the listener addresses for `STATUS=`.
    pub fn start(
        service: Arc<Service>,
        shards: usize,
        board: Arc<SnapshotBoard>,
        listening: String,
    ) -> Supervisor {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Supervisor::idle();
        }
        notify(&[
            NotifyState::Ready,
            NotifyState::Status(&status(shards, &board, &listening)),
        ]);
        let watchdog = watchdog_interval();
        // systemd's advice: notify at half the interval, so one late wake-up is not a restart;
        // but look no more often than two shard ticks, or a healthy shard would seem stalled.
        let period = watchdog
            .map_or(STATUS_EVERY, |interval| (interval / 2).min(STATUS_EVERY))
            .max(PERIOD_MIN);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(String::from("ringmq-notify"))
            .spawn(move || {
                let status = || status(shards, &board, &listening);
                supervise(
                    &service,
                    shards,
                    &status,
                    watchdog.is_some(),
                    period,
                    &stopped,
                );
            })
            .map_err(|error| tracing::warn!(%error, "service notify thread not started"))
            .ok();
        Supervisor {
            stop: Some(stop),
            thread,
        }
    }
}

impl Supervisor {
    /// Tells the service manager nothing.
    pub fn idle() -> Supervisor {
        Supervisor {
            stop: None,
            thread: None,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn supervise(
    service: &Service,
    shards: usize,
    status: &dyn Fn() -> String,
    watchdog: bool,
    period: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    let mut before = service.heartbeats(shards);
    let mut since_status = Duration::ZERO;
    // A message or a closed channel both mean stop.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
        if service.is_stopping() {
            return;
        }
        let now = service.heartbeats(shards);
        let stalled = stalled_shards(&before, &now);
        before = now;
        since_status += period;
        let refresh = since_status >= STATUS_EVERY;
        if refresh {
            since_status = Duration::ZERO;
        }
        if !stalled.is_empty() {
            tracing::error!(
                ?stalled,
                "shard loop not turning for {period:?}: watchdog notification withheld"
            );
            continue;
        }
        match (watchdog, refresh) {
            (true, true) => notify(&[NotifyState::Watchdog, NotifyState::Status(&status())]),
            (true, false) => notify(&[NotifyState::Watchdog]),
            (false, true) => notify(&[NotifyState::Status(&status())]),
            (false, false) => {}
        }
    }
}

/// What `systemctl status` shows after "Status:".
fn status(shards: usize, board: &SnapshotBoard, listening: &str) -> String {
    let connections = board.merged().counts.connections;
    format!("serving: {shards} shards, {connections} connections; listening on {listening}")
}

/// A test hook, in debug builds only (and not named `RINGMQ_`, which would be a config
/// override): `TEST_STALL_SHARD=SHARD:AFTER_MS:FOR_MS` blocks
/// shard SHARD's thread for FOR_MS milliseconds at its first tick AFTER_MS after it started, as
/// a shard stuck in a loop would. The watchdog test uses it.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestStall {
    after: Duration,
    stall: Duration,
    started: std::time::Instant,
    done: bool,
}

#[cfg(debug_assertions)]
impl TestStall {
    pub(crate) fn from_env(shard: usize) -> Option<TestStall> {
        let spec = std::env::var("TEST_STALL_SHARD").ok()?;
        let mut parts = spec.split(':').map(str::parse::<u64>);
        let (Some(Ok(target)), Some(Ok(after)), Some(Ok(stall))) =
            (parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(%spec, "TEST_STALL_SHARD is not SHARD:AFTER_MS:FOR_MS");
            return None;
        };
        (usize::try_from(target).ok() == Some(shard)).then(|| TestStall {
            after: Duration::from_millis(after),
            stall: Duration::from_millis(stall),
            started: std::time::Instant::now(),
            done: false,
        })
    }

    /// Blocks the calling (shard) thread once, when its time has come.
    pub(crate) fn at_tick(&mut self) {
        if !self.done && self.started.elapsed() >= self.after {
            self.done = true;
            tracing::warn!(stall = ?self.stall, "TEST_STALL_SHARD: blocking this shard");
            std::thread::sleep(self.stall);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_whose_heartbeat_did_not_move_is_stalled() {
        let check = |before: &[u64], now: &[u64], expected: &[usize]| {
            assert_eq!(
                stalled_shards(before, now),
                expected,
                "{before:?} -> {now:?}"
            );
        };
        check(&[1, 5, 9], &[2, 6, 10], &[]);
        check(&[1, 5, 9], &[2, 5, 10], &[1]);
        check(&[0, 0], &[0, 0], &[0, 1]);
        check(&[], &[], &[]);
    }

    #[test]
    fn heartbeats_count_per_shard_and_ignore_unknown_shards() {
        let service = Service::new(3);
        service.beat(0);
        service.beat(2);
        service.beat(2);
        service.beat(7);
        assert_eq!(service.heartbeats(3), [1, 0, 2]);
        assert_eq!(service.heartbeats(2), [1, 0]);
    }

    #[test]
    fn stopping_is_said_once() {
        let service = Service::new(1);
        assert!(!service.is_stopping());
        service.stopping();
        service.stopping();
        assert!(service.is_stopping());
    }
}
