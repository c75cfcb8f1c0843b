//! Bytes waiting to be written to clients, counted against `limits.write_buffer_bytes_per_shard_max`.
//!
//! A connection's deliveries are encoded into its write buffer (`Conn::out`) and counted in
//! `Conn::out_counted` and the shard's `write_bytes` as they are appended; whatever else the
//! buffer holds (acks, CONNACK, SUBACK) is counted when the writer takes the buffer. A taken
//! buffer stays counted until its write completes or fails (`written`). A delivery is encoded
//! only if the connection stays within its fair share (the cap divided by
//! `connections_per_shard_max`) or the shard stays within the cap. A connection's share is
//! checked against its buffer only, so it may hold a share there and one in the write under
//! way: all connections together hold at most three times the cap, whatever their clients
//! read. A connection refused for room waits, its messages in its outbox under the outbox
//! limits, and is pumped again when a write completes and the shard is back under the cap. Refusals count once per wait in
//! `ringmq_limits_reached_total{reason="write_bytes"}`.

use std::time::Instant;

use bytes::BytesMut;

use super::unsent::UnsentRun;
use super::{ConnId, Shard};

impl Shard {
    /// The writer takes what is buffered for `conn` (the shard appends to the rest of the
    /// allocation while it is on the wire; an empty buffer larger than `idle_bytes_max` is let
    /// go) with the deliveries in it, and whether the connection is closing. The bytes stay
    /// counted until [`Shard::written`].
    pub fn take_out(
        &mut self,
        conn: ConnId,
        unsent: &mut Vec<UnsentRun>,
        idle_bytes_max: usize,
    ) -> Option<(BytesMut, bool)> {
        let state = self.conns.get_mut(&conn)?;
        let out = state.out.split();
        if out.is_empty() && state.out.capacity() > idle_bytes_max {
            state.out = BytesMut::new();
        }
        state.unsent.take(unsent);
        self.write_bytes += out.len().saturating_sub(state.out_counted as usize);
        state.out_counted = 0;
        Some((out, state.is_closing()))
    }

    /// A taken buffer of `bytes` was written (or its write failed): no longer held.
    pub fn written(&mut self, bytes: usize) {
        self.write_bytes = self.write_bytes.saturating_sub(bytes);
    }

    /// A write of `bytes` was abandoned (its writer dropped mid-write): no longer held, and the
    /// connections that waited for room are pumped (their writers are woken with the shard's
    /// next batch).
    pub fn write_abandoned(&mut self, bytes: usize, now: Instant) {
        self.written(bytes);
        self.pump_write_waiting(now);
    }

    /// Whether `Event::Drained` for `conn` (a write of it completed) may do anything: deliveries
    /// wait in its session's outbox, or connections wait for room under the shard's cap. When
    /// neither, the event would change nothing, and the shell does not hand it over (at a
    /// moderate load, where every message is written alone, that is nearly every write).
    pub fn drain_pending(&self, conn: ConnId) -> bool {
        if !self.write_waiting.is_empty() {
            return true;
        }
        let Some(state) = self.conns.get(&conn) else {
            return false;
        };
        let super::Phase::Active { session } = state.phase else {
            return false;
        };
        self.sessions
            .get(session)
            .is_some_and(|session| session.state.next_size().is_some())
    }

    /// Bytes of the shard's write buffers and writes under way.
    pub fn write_bytes(&self) -> usize {
        self.write_bytes
    }

    /// Pumps the connections that waited for room, now that a write completed or a connection
    /// with bytes counted closed, while the shard is under its cap. Each is pumped once; one
    /// refused again waits again.
    pub(super) fn pump_write_waiting(&mut self, now: Instant) {
        if self.write_waiting.is_empty()
            || self.write_bytes >= self.settings.write_buffer_bytes_per_shard_max
        {
            return;
        }
        let waiting = std::mem::take(&mut self.write_waiting);
        for conn_id in &waiting {
            if let Some(conn) = self.conns.get_mut(conn_id) {
                conn.write_waiting = false;
                self.pump_conn(*conn_id, now);
            }
        }
        // Keep the allocation if nothing was added meanwhile.
        if self.write_waiting.is_empty() {
            let mut waiting = waiting;
            waiting.clear();
            self.write_waiting = waiting;
        }
    }
}

/// Whether a delivery of `size` bytes may be encoded for a connection holding `counted` bytes
/// of deliveries, with the shard holding `shard` bytes: within the connection's fair share, or
/// within the shard's cap.
pub(super) fn write_room(
    counted: usize,
    shard: usize,
    size: usize,
    share: usize,
    cap: usize,
) -> bool {
    counted + size <= share || shard + size <= cap
}

#[cfg(test)]
mod tests {
    use super::write_room;

    #[test]
    fn a_delivery_fits_the_share_or_the_cap() {
        // Under its share: always, even with the shard over its cap.
        assert!(write_room(1_000, 10_000, 1_000, 2_000, 5_000));
        // Over its share: only while the shard has room.
        assert!(!write_room(1_500, 4_500, 1_000, 2_000, 5_000));
        assert!(write_room(1_500, 4_000, 1_000, 2_000, 5_000));
        // A delivery larger than the share only while the shard has room for it.
        assert!(!write_room(0, 4_500, 3_000, 2_000, 5_000));
    }
}
