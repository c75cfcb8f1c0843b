//! The connect-rate limit of one shard (`limits.connect_rate_per_shard_max`): a token bucket that
//! holds 10 ms worth of connections (at least one) and refills continuously.
//!
//! The bucket is small on purpose: a flood is accepted at an even pace, a few connections per
//! millisecond, instead of a second's worth at once. Each accepted connection costs the shard its
//! CONNECT handling; thousands at once would queue the shard's established connections behind
//! them for hundreds of milliseconds.
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

/// How many seconds' worth of connections the bucket holds.
const BURST_SECS: f64 = 0.01;

#[derive(Debug, Clone)]
pub struct ConnectRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl ConnectRate {
    /// A full bucket: `BURST_SECS` worth of `per_sec`, at least one token.
    pub fn new(per_sec: u32, now: Instant) -> ConnectRate {
        let per_sec = f64::from(per_sec.max(1));
        let burst = (per_sec * BURST_SECS).max(1.0);
        ConnectRate {
            per_sec,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token for one accept, or says how long to wait before the next one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
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
    fn a_burst_of_10_ms_then_the_rate() {
        let start = Instant::now();
        let mut rate = ConnectRate::new(10_000, start);
        for _ in 0..100 {
            assert_eq!(rate.take(start), Ok(()));
        }
        let wait = rate.take(start).unwrap_err();
        assert!(wait <= Duration::from_micros(100) && wait >= Duration::from_micros(99));
        let later = start + Duration::from_millis(1);
        let taken = (0..1000).take_while(|_| rate.take(later).is_ok()).count();
        assert_eq!(taken, 10, "1 ms refills 10 of 10,000 per second");
        // Idle time refills the bucket, never beyond 10 ms worth.
        let idle = later + Duration::from_secs(5);
        let taken = (0..1000).take_while(|_| rate.take(idle).is_ok()).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn a_low_rate_still_allows_one_at_a_time() {
        let start = Instant::now();
        let mut rate = ConnectRate::new(10, start);
        assert_eq!(rate.take(start), Ok(()));
        let wait = rate.take(start).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait >= Duration::from_millis(99));
        assert_eq!(rate.take(start + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut rate = ConnectRate::new(1, start);
        assert_eq!(rate.take(start), Ok(()));
        assert!(rate.take(start - Duration::from_millis(500)).is_err());
    }
}
