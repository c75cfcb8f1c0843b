//! The shard-wide allowance for bytes of partly read packets (`limits.
//! partial_packet_bytes_per_shard_max`). A packet that one read does not complete is assembled
//! in a buffer of the connection's own (`read_into`); that buffer's capacity is reserved here
//! before it is allocated and given back when the connection has no partial packet left. When
//! the allowance is spent, a connection that needs more waits without reading (its bytes stay
//! in the kernel, and TCP's window stops its client), so what all partial packets of a shard
//! hold is bounded whatever the number of connections sending them.
//!
//! Buffers over `LARGE_PARTIAL_PACKET_BYTES` may take only three quarters of the allowance: when
//! large packets (the expensive ones) have spent it, the connections assembling them are the
//! ones that stop, and clients sending small packets keep being read. A connection that holds
//! its reservation keeps reading to the end of its packet, so nothing waits for itself; a
//! client that stalls in the middle of a packet is closed by `limits.packet_timeout_ms` (the
//! shard's tick checks it), which gives its reservation back.

use std::cell::Cell;

use shards::sync::Signal;

use crate::config::LARGE_PARTIAL_PACKET_BYTES;

/// The shard's allowance: bytes reserved by all its connections, and the most they may reserve.
pub(crate) struct PartialBytes {
    held: Cell<usize>,
    max: usize,
    /// Wakes the connections waiting for room when some is given back.
    released: Signal,
}

impl PartialBytes {
    pub(crate) fn new(max: u64) -> PartialBytes {
        PartialBytes {
            held: Cell::new(0),
            max: usize::try_from(max).unwrap_or(usize::MAX),
            released: Signal::new(),
        }
    }

    /// Resolves when some reservation is given back.
    pub(super) fn released(&self) -> shards::sync::SignalWait<'_> {
        self.released.wait()
    }

    /// Bytes reserved by all connections of the shard.
    pub(crate) fn held(&self) -> usize {
        self.held.get()
    }

    /// What a reservation of `bytes` may take the shard's total to.
    fn ceiling(&self, bytes: usize) -> usize {
        if bytes as u64 > LARGE_PARTIAL_PACKET_BYTES {
            self.max / 4 * 3
        } else {
            self.max
        }
    }
}

/// One connection's reservation, given back when it is dropped.
pub(super) struct Reservation<'a> {
    allowance: &'a PartialBytes,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    pub(super) fn new(allowance: &'a PartialBytes) -> Reservation<'a> {
        Reservation {
            allowance,
            bytes: 0,
        }
    }

    /// Grows the reservation to `bytes` if the allowance has room; `false` (unchanged) if not.
    pub(super) fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(growth) = bytes.checked_sub(self.bytes) else {
            return true;
        };
        let held = self.allowance.held.get();
        if held.saturating_add(growth) > self.allowance.ceiling(bytes) {
            return false;
        }
        self.allowance.held.set(held + growth);
        self.bytes = bytes;
        true
    }

    /// Bytes reserved.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back what is reserved beyond `bytes`.
    pub(super) fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        let held = self.allowance.held.get();
        self.allowance
            .held
            .set(held.saturating_sub(self.bytes - bytes));
        self.bytes = bytes;
        self.allowance.released.notify_all();
    }

    /// Gives the whole reservation back (the connection holds no partial packet any more).
    pub(super) fn release(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let held = self.allowance.held.get();
        self.allowance.held.set(held.saturating_sub(self.bytes));
        self.bytes = 0;
        self.allowance.released.notify_all();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_allowance_and_large_ones_within_three_quarters() {
        let allowance = PartialBytes::new(1 << 20);
        let mut large = Reservation::new(&allowance);
        assert!(large.grow_to(704 * 1024));
        let mut second = Reservation::new(&allowance);
        // 704 KiB + 100 KiB is over three quarters (768 KiB): a large one waits...
        assert!(!second.grow_to(100 * 1024));
        assert_eq!(allowance.held(), 704 * 1024);
        // ... while small ones take the rest, up to the whole allowance.
        let mut small: Vec<Reservation<'_>> = Vec::new();
        for _ in 0..((1 << 20) - 704 * 1024) / (16 * 1024) {
            let mut reservation = Reservation::new(&allowance);
            assert!(reservation.grow_to(16 * 1024));
            small.push(reservation);
        }
        let mut one_more = Reservation::new(&allowance);
        assert!(!one_more.grow_to(16 * 1024));
        assert_eq!(allowance.held(), 1 << 20);
        // Growing within what is reserved needs nothing more; giving back makes room.
        assert!(large.grow_to(600 * 1024));
        large.shrink_to(700 * 1024);
        assert_eq!(allowance.held(), (1 << 20) - 4 * 1024);
        assert!(!one_more.grow_to(16 * 1024));
        drop(large);
        assert!(one_more.grow_to(16 * 1024));
        small.clear();
        one_more.release();
        assert_eq!(allowance.held(), 0);
        assert!(second.grow_to(100 * 1024));
    }
}
