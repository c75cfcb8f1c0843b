//! What a connection's reading and writing halves share: control packets owed to the broker
//! (acks, PUBREL, PINGREQ), the QoS 1/2 in-flight window, and the wake-up of the writer.

use crate::client::PACKET_BYTES_MAX;
use crate::stream::WriteHalf;
use bytes::BytesMut;
use ringmq::protocol::{self, Packet, PacketId, PubResponse, ReasonCode, Version};
use shards::sync::Notify;
use std::cell::{Cell, RefCell};
use std::num::NonZeroU16;
use std::time::Duration;

pub struct Link {
    pub version: Version,
    pub control: RefCell<BytesMut>,
    pub wake: Notify,
    pub closed: Cell<bool>,
    pub window: RefCell<Window>,
}

impl Link {
    pub fn new(version: Version, inflight: usize) -> Link {
        Link {
            version,
            control: RefCell::new(BytesMut::new()),
            wake: Notify::new(),
            closed: Cell::new(false),
            window: RefCell::new(Window::new(inflight)),
        }
    }

    /// Queues a control packet for the writer (it is woken by the caller, once per batch).
    pub fn queue(&self, packet: &Packet) {
        let mut control = self.control.borrow_mut();
        // Acks and pings are a few bytes: encoding them cannot exceed the limit.
        let encoded = protocol::encode(packet, self.version, &mut control, PACKET_BYTES_MAX);
        assert!(encoded.is_ok(), "control packet encodes");
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify_one();
    }
}

pub fn response(packet_id: PacketId) -> PubResponse {
    PubResponse {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    }
}

/// QoS 1/2 messages sent and not yet acknowledged. Packet ids are handed out in order and live in
/// slot `id % capacity`, so a free slot proves its id is not in flight.
pub struct Window {
    slots: Vec<Slot>,
    limit: usize,
    in_flight: usize,
    next_id: u16,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// 0: free.
    id: u16,
    sent_ns: u64,
}

impl Window {
    pub fn new(limit: usize) -> Window {
        let limit = limit.clamp(1, 32768);
        Window {
            slots: vec![Slot::default(); limit.next_power_of_two()],
            limit,
            in_flight: 0,
            next_id: 1,
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn is_full(&self) -> bool {
        self.in_flight >= self.limit || self.slots[self.slot(self.next_id)].id != 0
    }

    fn slot(&self, id: u16) -> usize {
        usize::from(id) & (self.slots.len() - 1)
    }

    /// The next packet id, or `None` while the window is full.
    pub fn take(&mut self, sent_ns: u64) -> Option<PacketId> {
        if self.is_full() {
            return None;
        }
        let id = self.next_id;
        let slot = self.slot(id);
        self.slots[slot] = Slot { id, sent_ns };
        self.in_flight += 1;
        self.next_id = if id == u16::MAX { 1 } else { id + 1 };
        NonZeroU16::new(id)
    }

    /// Frees `id` (PUBACK, PUBCOMP); its send time, or `None` for an id not in flight.
    pub fn release(&mut self, id: PacketId) -> Option<u64> {
        let slot = self.slot(id.get());
        let entry = self.slots.get_mut(slot)?;
        if entry.id != id.get() {
            return None;
        }
        entry.id = 0;
        self.in_flight -= 1;
        Some(entry.sent_ns)
    }

    /// True if `id` is in flight (PUBREC of a QoS 2 message).
    pub fn contains(&self, id: PacketId) -> bool {
        self.slots[self.slot(id.get())].id == id.get()
    }
}

/// The writer of a connection that does not publish: control packets as they are queued, and a
/// PINGREQ when nothing was written for half the keep-alive. Ends when the link closes.
pub async fn control_writer(mut write: WriteHalf, link: &Link, keepalive_secs: u16) {
    let ping_every = if keepalive_secs == 0 {
        Duration::from_secs(86_400)
    } else {
        Duration::from_millis(u64::from(keepalive_secs) * 500)
    };
    let mut out = BytesMut::new();
    loop {
        let idle = futures_lite::future::or(
            async {
                link.wake.notified().await;
                false
            },
            async {
                shards::time::sleep(ping_every).await;
                true
            },
        )
        .await;
        if link.closed.get() {
            return;
        }
        std::mem::swap(&mut out, &mut *link.control.borrow_mut());
        if out.is_empty() && idle {
            link.queue(&Packet::PingReq);
            std::mem::swap(&mut out, &mut *link.control.borrow_mut());
        }
        if !out.is_empty() && write.write_all(&out).await.is_err() {
            link.close();
            return;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> PacketId {
        NonZeroU16::new(n).unwrap()
    }

    #[test]
    fn window_bounds_in_flight_and_frees_by_id() {
        let mut window = Window::new(3);
        assert_eq!(window.take(10), Some(id(1)));
        assert_eq!(window.take(11), Some(id(2)));
        assert_eq!(window.take(12), Some(id(3)));
        assert_eq!(window.take(13), None, "full at 3");
        assert_eq!(window.release(id(2)), Some(11));
        assert_eq!(window.release(id(2)), None, "already free");
        assert_eq!(window.release(id(9)), None, "never sent");
        assert_eq!(window.take(14), Some(id(4)));
        assert_eq!(window.in_flight(), 3);
        assert!(window.contains(id(4)));
    }

    #[test]
    fn window_wraps_packet_ids_and_skips_busy_slots() {
        let mut window = Window::new(2);
        for n in 1..=u16::MAX {
            assert_eq!(window.take(0), Some(id(n)));
            assert_eq!(window.release(id(n)), Some(0));
        }
        assert_eq!(window.take(0), Some(id(1)), "wraps to 1, never 0");
        // Slot of id 3 is id 1's slot (capacity 2): held while 1 is unacknowledged.
        assert_eq!(window.take(0), Some(id(2)));
        assert_eq!(window.release(id(2)), Some(0));
        assert_eq!(
            window.take(0),
            None,
            "id 3 would reuse the slot of id 1, still in flight"
        );
        assert_eq!(window.release(id(1)), Some(0));
        assert_eq!(window.take(0), Some(id(3)));
    }
}
