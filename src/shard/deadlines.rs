//! The connections' deadlines (CONNECT, keepalive, partial packet) ordered by time, so that the
//! tick looks only at the connections whose deadline has come instead of passing over every
//! connection (at 10,000 idle connections that pass cost 10-17 ms of CPU a second,
//! docs/BENCHMARKS.md). An entry is a point in time at which a connection must be looked at,
//! not a promise that it expires then: the shard checks the connection against its state when
//! the entry comes due and puts it back at the later time if the client was heard from since.
//! So a packet needs no update of the queue.
//!
//! An idle connection has one entry: its CONNECT deadline's, which becomes its keepalive's when
//! it comes due after CONNACK (a keepalive that ends before the CONNECT deadline would is
//! queued at CONNACK). At most one entry of each kind is queued per connection
//! (`Conn::keepalive_queued` and `Conn::packet_queued` say whether one is); the entries of
//! closed connections are dropped when they come due, or all at once when the queue holds more
//! than three entries per live connection and 1,024 besides (`compact`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::ConnId;

/// What an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// The CONNECT deadline (`mqtt.connect_timeout_ms`) from the accept, until CONNACK.
    Connect,
    /// One and a half times the keepalive since the client was last heard from.
    KeepAlive,
    /// The partial packet's deadline (`limits.packet_timeout_ms`) from its first byte.
    Packet,
}

/// Bits of an entry's time word that hold its kind.
const KIND_BITS: u32 = 2;

impl Deadline {
    fn code(self) -> u64 {
        match self {
            Deadline::Connect => 0,
            Deadline::KeepAlive => 1,
            Deadline::Packet => 2,
        }
    }

    fn from_code(code: u64) -> Deadline {
        match code {
            0 => Deadline::Connect,
            1 => Deadline::KeepAlive,
            _ => Deadline::Packet,
        }
    }
}

/// A min-heap of (time in whole milliseconds with the kind, connection): 16 bytes an entry.
/// Times are counted from the first `now` the queue was given and rounded up, so an entry never
/// comes due before its time (at most a millisecond after it); a time before that start counts
/// as the start, which is later too.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(u64, ConnId)>>,
    start: Option<Instant>,
}

impl Deadlines {
    /// Queues a look at `conn` at `at`; `now` is the time of the event that queues it.
    pub fn push(&mut self, now: Instant, at: Instant, conn: ConnId, kind: Deadline) {
        let start = *self.start.get_or_insert(now);
        let nanos = at.saturating_duration_since(start).as_nanos();
        let millis = u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX >> KIND_BITS);
        let word = (millis.min(u64::MAX >> KIND_BITS) << KIND_BITS) | kind.code();
        self.heap.push(Reverse((word, conn)));
    }

    /// The next entry whose time is before `now`, earliest first (ties by kind and connection
    /// id, so the same events give the same order).
    pub fn pop_due(&mut self, now: Instant) -> Option<(ConnId, Deadline)> {
        let start = self.start?;
        let Reverse((word, _)) = self.heap.peek()?;
        let at_nanos = u128::from(word >> KIND_BITS) * 1_000_000;
        if at_nanos >= now.saturating_duration_since(start).as_nanos() {
            return None;
        }
        let Reverse((word, conn)) = self.heap.pop()?;
        Some((conn, Deadline::from_code(word & ((1 << KIND_BITS) - 1))))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries of connections that are gone once they outnumber what the live ones
    /// can hold (three each): a shard with churn but long keepalives would otherwise keep the
    /// entries of closed connections until their time. Amortised O(1) per closed connection;
    /// the room of a queue that has shrunk to a quarter is given back.
    pub fn compact(&mut self, live: usize, is_live: impl Fn(ConnId) -> bool) {
        const SLACK: usize = 1024;
        if self.heap.len() > live.saturating_mul(3).saturating_add(SLACK) {
            self.heap.retain(|Reverse((_, conn))| is_live(*conn));
        }
        if self.heap.capacity() > self.heap.len().saturating_mul(4).max(SLACK) {
            self.heap.shrink_to(self.heap.len().saturating_mul(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Deadline, Deadlines};

    #[test]
    fn entries_come_due_in_time_order_and_not_before() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut deadlines = Deadlines::default();
        assert_eq!(deadlines.pop_due(at(1_000)), None, "empty");
        deadlines.push(t0, at(300), 7, Deadline::KeepAlive);
        deadlines.push(t0, at(100), 9, Deadline::Connect);
        deadlines.push(t0, at(100), 3, Deadline::Packet);
        // Rounded up to the next millisecond: not due at 200.2 ms, due after 201 ms.
        deadlines.push(
            t0,
            at(200) + Duration::from_micros(400),
            5,
            Deadline::Packet,
        );
        assert_eq!(deadlines.pop_due(at(100)), None, "not before its time");
        assert_eq!(deadlines.pop_due(at(101)), Some((9, Deadline::Connect)));
        assert_eq!(deadlines.pop_due(at(101)), Some((3, Deadline::Packet)));
        assert_eq!(
            deadlines.pop_due(at(200) + Duration::from_micros(500)),
            None
        );
        assert_eq!(deadlines.pop_due(at(250)), Some((5, Deadline::Packet)));
        assert_eq!(deadlines.pop_due(at(250)), None);
        assert_eq!(deadlines.len(), 1);
        // A time before the start counts as the start.
        deadlines.push(
            at(400),
            t0 - Duration::from_millis(5),
            11,
            Deadline::KeepAlive,
        );
        assert_eq!(deadlines.pop_due(t0), None);
        assert_eq!(deadlines.pop_due(at(1)), Some((11, Deadline::KeepAlive)));
        assert_eq!(deadlines.pop_due(at(400)), Some((7, Deadline::KeepAlive)));
    }

    #[test]
    fn the_entries_of_closed_connections_are_dropped_once_they_outnumber_what_the_live_ones_hold() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        for conn in 0..5_000u64 {
            deadlines.push(t0, t0 + Duration::from_secs(90), conn, Deadline::KeepAlive);
        }
        // 10 live connections: 5,000 entries are over 3 x 10 + 1,024, only the live stay.
        let live = |conn: u64| conn.is_multiple_of(500);
        deadlines.compact(10, live);
        assert_eq!(deadlines.len(), 10);
        // Under the bound nothing is looked at.
        for conn in 5_000..5_500u64 {
            deadlines.push(t0, t0, conn, Deadline::Packet);
        }
        deadlines.compact(10, live);
        assert_eq!(deadlines.len(), 510);
    }
}
