//! The connections' deadlines (CONNECT, keepalive, partial packet) ordered by time, so that the
//! tick looks only at the connections whose deadline has come instead of passing over every
//! connection (at 10,000 idle connections that pass cost 10-17 ms of CPU a second,
//! docs/BENCHMARKS.md). An entry is a point in time at which a connection must be looked at,
//! not a promise that it expires then: the shard checks the connection against its state when
//! the entry comes due and puts it back at the later time if the client was heard from since.
//! So a packet needs no update of the queue, and the only entries added after the accept are a
//! connection's keepalive (once, at CONNACK) and its packet deadline (when a partial packet
//! begins and none is queued).
//!
//! At most one entry of each kind is queued per connection (`Conn::keepalive_queued` and
//! `Conn::packet_queued` say whether one is); the entries of closed connections are dropped
//! when they come due, or all at once when they outnumber the live ones (`compact`).

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

/// Bits of an entry's word that hold its kind; connection ids come from a counter and never
/// reach the top two bits.
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

/// A min-heap of (time, connection and kind): 24 bytes an entry.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    /// Queues a look at `conn` at `at`.
    pub fn push(&mut self, at: Instant, conn: ConnId, kind: Deadline) {
        debug_assert!(
            conn >> (u64::BITS - KIND_BITS) == 0,
            "connection id too large"
        );
        self.heap
            .push(Reverse((at, (conn << KIND_BITS) | kind.code())));
    }

    /// The next entry whose time is before `now`, earliest first (ties by connection id, so the
    /// same events give the same order).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId, Deadline)> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at >= now {
            return None;
        }
        let Reverse((at, word)) = self.heap.pop()?;
        let kind = Deadline::from_code(word & ((1 << KIND_BITS) - 1));
        Some((at, word >> KIND_BITS, kind))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries of connections that are gone once they outnumber what the live ones
    /// can hold (three each): a shard with churn but long keepalives would otherwise keep the
    /// entries of closed connections until their time. Amortised O(1) per closed connection.
    pub fn compact(&mut self, live: usize, is_live: impl Fn(ConnId) -> bool) {
        const SLACK: usize = 1024;
        if self.heap.len() <= live.saturating_mul(3).saturating_add(SLACK) {
            return;
        }
        self.heap
            .retain(|Reverse((_, word))| is_live(word >> KIND_BITS));
        self.heap.shrink_to(self.heap.len().saturating_mul(2));
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
        deadlines.push(at(300), 7, Deadline::KeepAlive);
        deadlines.push(at(100), 9, Deadline::Connect);
        deadlines.push(at(100), 3, Deadline::Packet);
        deadlines.push(at(200), 5, Deadline::Packet);
        assert_eq!(deadlines.pop_due(at(100)), None, "not before its time");
        assert_eq!(
            deadlines.pop_due(at(250)),
            Some((at(100), 3, Deadline::Packet))
        );
        assert_eq!(
            deadlines.pop_due(at(250)),
            Some((at(100), 9, Deadline::Connect))
        );
        assert_eq!(
            deadlines.pop_due(at(250)),
            Some((at(200), 5, Deadline::Packet))
        );
        assert_eq!(deadlines.pop_due(at(250)), None);
        assert_eq!(deadlines.len(), 1);
        let far = (1u64 << 61) + 11;
        deadlines.push(at(50), far, Deadline::KeepAlive);
        assert_eq!(
            deadlines.pop_due(at(400)),
            Some((at(50), far, Deadline::KeepAlive))
        );
        assert_eq!(
            deadlines.pop_due(at(400)),
            Some((at(300), 7, Deadline::KeepAlive))
        );
    }

    #[test]
    fn the_entries_of_closed_connections_are_dropped_once_they_outnumber_the_live_ones() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        for conn in 0..5_000u64 {
            deadlines.push(t0 + Duration::from_secs(90), conn, Deadline::KeepAlive);
        }
        // 10 live connections: 5,000 entries are over 3 x 10 + 1,024, only the live stay.
        let live = |conn: u64| conn.is_multiple_of(500);
        deadlines.compact(10, live);
        assert_eq!(deadlines.len(), 10);
        // Under the bound nothing is looked at.
        for conn in 5_000..5_500u64 {
            deadlines.push(t0, conn, Deadline::Packet);
        }
        deadlines.compact(10, live);
        assert_eq!(deadlines.len(), 510);
    }
}
