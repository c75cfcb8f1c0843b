//! The window of QoS 1 and 2 messages sent to a client and not yet completed (MQTT 4.3.2, 4.3.3).
//! Kept in send order, so a reconnect retransmits in the original order (MQTT 4.6) with DUP set.
//!
//! The window is a ring of entries and nothing else: packet ids are taken in turn after the last
//! one, so the entries' ids increase (cyclically, 65,535 wrapping to 1) from the oldest to the
//! newest, and whether an id is in use, or where its entry is, is a comparison with the ends or a
//! binary search, not a lookup in a set kept beside the ring (an insert and a removal per
//! message). Entries restored out of that order, or a window that wrapped onto its own oldest
//! id, are searched one by one until the window empties.

use std::collections::VecDeque;
use std::num::NonZeroU16;

use super::{Delivery, Held, LogOp};
use crate::protocol::{PacketId, QoS};

/// Where one outgoing message stands.
#[derive(Debug, Clone)]
pub enum InflightState {
    /// QoS 1 waiting for PUBACK, or QoS 2 waiting for PUBREC: the message is kept for a resend.
    Sent(Delivery),
    /// QoS 2 after PUBREC: PUBREL sent, waiting for PUBCOMP; the message itself is no longer needed.
    Released,
}

#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub packet_id: PacketId,
    /// The entry's sequence number in its session (see `LogOp`).
    pub seq: u64,
    pub state: InflightState,
}

/// Outgoing in-flight messages in send order, with packet id allocation. The tables are
/// allocated at the first message sent at QoS 1 or 2 and kept: a session that never has one
/// (most idle clients) keeps a pointer here instead of about a hundred bytes of tables
/// (docs/BENCHMARKS.md on idle connections).
#[derive(Debug, Default)]
pub struct Inflight {
    window: Option<Box<Window>>,
    /// Changes not yet taken by the store; `None` when the session is not persisted. Boxed: a
    /// pointer in every session, the list only in persisted ones.
    #[allow(clippy::box_collection)]
    log: Option<Box<Vec<LogOp>>>,
}

#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<InflightEntry>,
    /// The entries' ids are not in turn from front to back (see the module's note): searched one
    /// by one. Cleared when the window empties.
    unordered: bool,
    last_packet_id: u16,
    /// Entries still holding their message (`Sent`), and the bytes of those messages.
    sent: usize,
    sent_bytes: usize,
}

impl Inflight {
    pub fn len(&self) -> usize {
        self.window.as_ref().map_or(0, |w| w.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries still holding their message (QoS 1, or QoS 2 before PUBREC).
    pub fn sent_len(&self) -> usize {
        self.window.as_ref().map_or(0, |w| w.sent)
    }

    /// Bytes of the messages of `sent_len` entries.
    pub fn sent_bytes(&self) -> usize {
        self.window.as_ref().map_or(0, |w| w.sent_bytes)
    }

    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.window.iter().flat_map(|w| w.entries.iter())
    }

    /// Deliveries sent and not acknowledged at all yet (QoS 1, or QoS 2 before PUBREC).
    pub fn unacknowledged(&self) -> impl Iterator<Item = &Delivery> {
        self.iter().filter_map(|e| match &e.state {
            InflightState::Sent(delivery) => Some(delivery),
            InflightState::Released => None,
        })
    }

    /// Adds a delivery with a fresh packet id (counted in `shard`); `None` only if all 65,535
    /// ids are in use.
    pub fn push(&mut self, seq: u64, delivery: Delivery, shard: &mut Held) -> Option<PacketId> {
        let window = self.window.get_or_insert_with(Box::default);
        let packet_id = window.allocate()?;
        window.sent += 1;
        window.sent_bytes += delivery.size_bytes();
        shard.take_in(delivery.size_bytes());
        window.append(InflightEntry {
            packet_id,
            seq,
            state: InflightState::Sent(delivery),
        });
        Some(packet_id)
    }

    /// Adds an entry read back from the store: `Some` delivery waits for its ack, `None` was
    /// released (QoS 2 after PUBREC). Entries come in send order.
    pub fn restore(
        &mut self,
        seq: u64,
        packet_id: PacketId,
        delivery: Option<Delivery>,
        shard: &mut Held,
    ) {
        let window = self.window.get_or_insert_with(Box::default);
        if window.find(packet_id).is_some() {
            return;
        }
        window.last_packet_id = packet_id.get();
        let state = match delivery {
            Some(delivery) => {
                window.sent += 1;
                window.sent_bytes += delivery.size_bytes();
                shard.take_in(delivery.size_bytes());
                InflightState::Sent(delivery)
            }
            None => InflightState::Released,
        };
        window.append(InflightEntry {
            packet_id,
            seq,
            state,
        });
    }

    pub(super) fn set_logged(&mut self, logged: bool) {
        self.log = logged.then(Box::default);
    }

    pub(super) fn has_log(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !log.is_empty())
    }

    pub(super) fn take_log(&mut self, out: &mut Vec<LogOp>) {
        if let Some(log) = self.log.as_mut() {
            out.append(&mut **log);
        }
    }

    /// The entry with sequence number `seq`.
    pub fn by_seq(&self, seq: u64) -> Option<&InflightEntry> {
        let entries = &self.window.as_ref()?.entries;
        let index = entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        entries.get(index)
    }

    fn remove_at(&mut self, index: usize, shard: &mut Held) -> bool {
        let Some(window) = self.window.as_deref_mut() else {
            return false;
        };
        let removed = match window.entries.remove(index) {
            Some(entry) => {
                if let Some(log) = self.log.as_mut() {
                    log.push(LogOp::Done(entry.seq));
                }
                if let InflightState::Sent(delivery) = &entry.state {
                    window.let_go(delivery.size_bytes(), shard);
                }
                true
            }
            None => false,
        };
        if window.entries.is_empty() {
            window.unordered = false;
        }
        removed
    }

    fn position(&self, packet_id: PacketId) -> Option<usize> {
        self.window.as_ref()?.find(packet_id)
    }

    fn state(&self, index: usize) -> Option<&InflightState> {
        self.window.as_ref()?.entries.get(index).map(|e| &e.state)
    }

    /// Drops an entry whatever its state (a delivery that could not be sent, or an error PUBREC).
    pub fn forget(&mut self, packet_id: PacketId, shard: &mut Held) -> bool {
        match self.position(packet_id) {
            Some(index) => self.remove_at(index, shard),
            None => false,
        }
    }

    /// PUBACK: completes a QoS 1 message. False if no QoS 1 message has this id.
    pub fn puback(&mut self, packet_id: PacketId, shard: &mut Held) -> bool {
        match self.position(packet_id) {
            Some(index) => match self.state(index) {
                Some(InflightState::Sent(d)) if d.qos == QoS::AtLeastOnce => {
                    self.remove_at(index, shard)
                }
                _ => false,
            },
            None => false,
        }
    }

    /// PUBREC: a QoS 2 message reached the client; from now on only PUBREL is owed. Returns true
    /// if the id is known as QoS 2 (either state: a repeated PUBREC is answered with PUBREL again).
    /// The message is let go (counted out of `shard`): only its packet id is kept.
    pub fn pubrec(&mut self, packet_id: PacketId, shard: &mut Held) -> bool {
        let Some(index) = self.position(packet_id) else {
            return false;
        };
        let Some(window) = self.window.as_deref_mut() else {
            return false;
        };
        let Some(entry) = window.entries.get_mut(index) else {
            return false;
        };
        match &entry.state {
            InflightState::Sent(d) if d.qos == QoS::ExactlyOnce => {
                let bytes = d.size_bytes();
                entry.state = InflightState::Released;
                if let Some(log) = self.log.as_mut() {
                    log.push(LogOp::Released(entry.seq));
                }
                window.let_go(bytes, shard);
                true
            }
            InflightState::Released => true,
            InflightState::Sent(_) => false,
        }
    }

    /// PUBCOMP: completes a released QoS 2 message (its message was let go at PUBREC).
    pub fn pubcomp(&mut self, packet_id: PacketId, shard: &mut Held) -> bool {
        match self.position(packet_id) {
            Some(index) if matches!(self.state(index), Some(InflightState::Released)) => {
                self.remove_at(index, shard)
            }
            _ => false,
        }
    }
}

impl Window {
    fn allocate(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let Some(candidate) = NonZeroU16::new(self.last_packet_id) else {
                continue;
            };
            if self.find(candidate).is_none() {
                return Some(candidate);
            }
        }
        None
    }

    /// Adds an entry at the back, noting when its id breaks the order of the ring.
    fn append(&mut self, entry: InflightEntry) {
        if let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) {
            let from = front.packet_id.get();
            if turns(from, entry.packet_id.get()) <= turns(from, back.packet_id.get()) {
                self.unordered = true;
            }
        }
        self.entries.push_back(entry);
    }

    /// The index of the entry with `packet_id`.
    fn find(&self, packet_id: PacketId) -> Option<usize> {
        let front = self.entries.front()?;
        // Acknowledgements nearly always arrive in order: the oldest entry first.
        if front.packet_id == packet_id {
            return Some(0);
        }
        if self.unordered {
            return self.entries.iter().position(|e| e.packet_id == packet_id);
        }
        let from = front.packet_id.get();
        let wanted = turns(from, packet_id.get());
        let back = self
            .entries
            .back()
            .map_or(0, |e| turns(from, e.packet_id.get()));
        if wanted > back {
            // Past the newest entry: the usual answer for a fresh id.
            return None;
        }
        self.entries
            .binary_search_by_key(&wanted, |e| turns(from, e.packet_id.get()))
            .ok()
    }

    /// A message leaves the window (acknowledged, or its entry dropped or released).
    fn let_go(&mut self, bytes: usize, shard: &mut Held) {
        self.sent = self.sent.saturating_sub(1);
        self.sent_bytes = self.sent_bytes.saturating_sub(bytes);
        shard.let_go(bytes);
    }
}

/// How many ids after `from` `id` comes, taking ids in turn (1..=65,535, then 1 again).
fn turns(from: u16, id: u16) -> u16 {
    if id >= from {
        id - from
    } else {
        // `from` > `id` >= 1, so the result is below 65,535.
        id + (u16::MAX - from)
    }
}
