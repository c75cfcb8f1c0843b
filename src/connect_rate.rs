//! The connect-rate limit of one shard (`limits.connect_rate_per_shard_max`): a token bucket that
//! holds one second's worth of connections and refills continuously.
//!
//! Over the limit the shard delays `accept` rather than accepting and closing. The connections
//! not yet accepted wait in the kernel's listen backlog (bounded by `backlog` and somaxconn); when
//! it is full the kernel drops SYNs and clients retry with TCP's own exponential backoff. Accepting
//! and closing at once would cost a file descriptor, a task and a few syscalls per refused
//! connection, and would make clients reconnect at once, which feeds the flood. Connections that
//! are accepted are then served at full speed, and existing connections are not slowed: the
//! accept loop is one task among the shard's others.
//!
//! Pure: time comes in as an argument, so it is unit-tested without a clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ConnectRate {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl ConnectRate {
    /// A full bucket of `per_sec` tokens.
    pub fn new(per_sec: u32, now: Instant) -> ConnectRate {
        let per_sec = f64::from(per_sec.max(1));
        ConnectRate {
            per_sec,
            tokens: per_sec,
            at: now,
        }
    }

    /// Takes a token for one accept, or says how long to wait before the next one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::from_secs_f64(missing / self.per_sec).max(Duration::from_micros(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let start = Instant::now();
        let mut rate = ConnectRate::new(100, start);
        for _ in 0..100 {
            assert_eq!(rate.take(start), Ok(()));
        }
        let wait = rate.take(start).unwrap_err();
        assert!(wait <= Duration::from_millis(10) && wait >= Duration::from_millis(9));
        let later = start + Duration::from_millis(10);
        assert_eq!(rate.take(later), Ok(()));
        assert!(rate.take(later).is_err());
        // An idle second refills the bucket, never beyond one second's worth.
        let idle = later + Duration::from_secs(5);
        let taken = (0..1000).take_while(|_| rate.take(idle).is_ok()).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut rate = ConnectRate::new(1, start);
        assert_eq!(rate.take(start), Ok(()));
        assert!(rate.take(start - Duration::from_millis(500)).is_err());
    }
}
