//! The per-client session (MQTT 3.1.1 §4.1, 5.0 §4.1): subscriptions, the bounded outbox of
//! messages waiting to be sent, the in-flight window of QoS 1 and 2 messages sent and not yet
//! acknowledged, packet identifiers, and the QoS 2 packet ids received and not yet released.
//!
//! `SessionState` is plain `Send` data with no I/O: it moves by value between shards on takeover.
//! Every collection is bounded by a limit from `SessionLimits`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod inflight;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::{PacketId, QoS, SubscriptionOptions, Version};

pub use inflight::{Inflight, InflightEntry, InflightState};

/// Messages held for subscribers, queued in outboxes and in flight (sent, not yet acknowledged):
/// one session's, or the sum over one shard's sessions (the shard-wide caps are checked against
/// that sum). Each session adds what it takes in and subtracts what it lets go, so the shard's
/// sum is kept in O(1) per message, without walking sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub messages: usize,
    pub bytes: usize,
}

impl Held {
    /// A session (with everything it holds) came in.
    pub fn add(&mut self, other: Held) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }

    /// A session (with everything it holds) went away.
    pub fn remove(&mut self, other: Held) {
        self.messages = self.messages.saturating_sub(other.messages);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }

    fn take_in(&mut self, bytes: usize) {
        self.add(Held { messages: 1, bytes });
    }

    fn let_go(&mut self, bytes: usize) {
        self.remove(Held { messages: 1, bytes });
    }
}

/// One subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    /// 5.0 Subscription Identifier, sent back with every message this subscription matches.
    pub identifier: Option<u32>,
    /// The ACL generation under which reading this filter was granted at SUBSCRIBE (filters
    /// without wildcards, whose one topic is the filter); deliveries under the same ACL skip
    /// the check. 0: check every delivery.
    pub read_granted_generation: u64,
}

/// A message on its way to one subscriber: the shared message and this hop's flags.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(message QoS, granted QoS).
    pub qos: QoS,
    pub retain: bool,
    pub subscription_identifiers: Vec<u32>,
    /// (filter, group) when it came through a shared subscription: if this session ends before
    /// it is acknowledged, another member of the group gets it.
    /// Boxed: rare, and a delivery is queued, moved and dropped once per subscriber.
    pub shared: Option<Box<(ByteString, ByteString)>>,
    /// A shared-subscription message offered again after `drop_oldest` evicted it from another
    /// member: it is not offered a third time and never evicts anything itself.
    pub reoffered: bool,
}

// Queued in an outbox (with its time) and moved once per subscriber: kept to six words.
const _: () = assert!(std::mem::size_of::<Delivery>() <= 48);

impl Delivery {
    /// The message at its own QoS, without a retain flag, identifiers or group.
    pub fn plain(message: Arc<Message>) -> Delivery {
        Delivery {
            qos: message.qos,
            retain: false,
            subscription_identifiers: Vec::new(),
            shared: None,
            reoffered: false,
            message,
        }
    }

    pub fn size_bytes(&self) -> usize {
        self.message.size_bytes()
    }
}

/// A delivery taken from the outbox to be written now.
#[derive(Debug)]
pub struct Outgoing {
    /// Assigned for QoS 1 and 2: the delivery is now in flight under it.
    pub packet_id: Option<PacketId>,
    pub delivery: Delivery,
    /// When it was queued: the time it spent in the outbox ends now.
    pub queued_at: Instant,
}

/// The limits a session enforces (from the `[limits]` config).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub outbox_messages_max: usize,
    pub outbox_bytes_max: usize,
    pub inflight_messages_max: usize,
    pub subscriptions_max: usize,
    pub queue_qos0_offline: bool,
    /// A full outbox drops its oldest messages (QoS 0 first) for a new one, instead of the new one.
    pub drop_oldest: bool,
    /// What all sessions of the shard may hold together (`Held`, queued and in flight).
    pub shard_messages_max: usize,
    pub shard_bytes_max: usize,
    /// Each session's fair share of the shard-wide caps (the caps divided by
    /// `sessions_per_shard_max`): a session holding less still queues a delivery when the shard
    /// is at its caps, so one slow consumer cannot starve the others. The shard then holds at most
    /// twice its caps (see docs/HARDENING.md).
    pub shard_share_messages: usize,
    pub shard_share_bytes: usize,
}

/// Queued deliveries dropped to make room for a new one (`drop_oldest`), by the limit that was
/// reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub queue_full: usize,
    pub shard_full: usize,
}

impl Evicted {
    fn count(&mut self, reason: DropReason) {
        match reason {
            DropReason::ShardFull => self.shard_full += 1,
            _ => self.queue_full += 1,
        }
    }
}

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's outbox is at its limit.
    QueueFull,
    /// The sessions of the shard hold their shard-wide limit.
    ShardFull,
    Expired,
    Qos0Offline,
}

/// One change to what a persistent session holds, in the order it happened, for the store to
/// write (see `src/store`). Entries are named by their sequence number in the session: it is
/// given when a delivery is queued and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOp {
    /// A delivery was queued.
    Queued(u64),
    /// A queued delivery went out under this packet id and is now in flight.
    Sent(u64, PacketId),
    /// A QoS 2 delivery was received by the client (PUBREC): only its packet id is kept.
    Released(u64),
    /// An entry left the session: acknowledged, sent at QoS 0, expired or dropped.
    Done(u64),
    /// An incoming QoS 2 packet id is now awaiting PUBREL (true) or was released (false).
    IncomingQos2(PacketId, bool),
}

/// A queued delivery with when it was queued and its sequence number in the session.
#[derive(Debug)]
pub struct Queued {
    pub at: Instant,
    pub seq: u64,
    pub delivery: Delivery,
}

/// Everything the server keeps for one client id between connections.
#[derive(Debug)]
pub struct SessionState {
    pub client_id: ByteString,
    /// The username of the connection that last held the session (the ACL's key for deliveries).
    pub username: Option<ByteString>,
    pub version: Version,
    /// Filter text (including a `$share/group/` prefix) -> subscription.
    pub subscriptions: HashMap<ByteString, Subscription>,
    /// Session Expiry Interval in seconds after the connection closes; 0 ends it with the connection.
    pub expiry_secs: u32,
    /// Deliveries waiting to be sent, each with when it was queued (for the outbox-wait metric),
    /// in sequence order.
    outbox: VecDeque<Queued>,
    outbox_bytes: usize,
    pub inflight: Inflight,
    /// QoS 2 packet ids received and acknowledged with PUBREC, not yet released (MQTT 4.3.3).
    /// Boxed at the first one: most sessions never receive QoS 2, and a pointer is 8 bytes of
    /// every session where the table inline is 48.
    #[allow(clippy::box_collection)]
    incoming_qos2: Option<Box<HashSet<u16>>>,
    /// The sequence number of the next delivery queued.
    next_seq: u64,
    /// Changes not yet taken by the store; `None` when the session is not persisted. Boxed: a
    /// pointer in every session, the list only in persisted ones.
    #[allow(clippy::box_collection)]
    log: Option<Box<Vec<LogOp>>>,
}

impl SessionState {
    pub fn new(client_id: ByteString, version: Version, expiry_secs: u32) -> SessionState {
        SessionState {
            client_id,
            username: None,
            version,
            subscriptions: HashMap::new(),
            expiry_secs,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            inflight: Inflight::default(),
            incoming_qos2: None,
            next_seq: 1,
            log: None,
        }
    }

    /// Rebuilds a session read back from the store: `queued` in sequence order, `inflight` in
    /// send order. What it holds is not counted anywhere yet (installing it does that).
    pub fn restore(
        mut self,
        queued: Vec<(u64, Delivery)>,
        inflight: Vec<(u64, PacketId, Option<Delivery>)>,
        incoming_qos2: impl IntoIterator<Item = PacketId>,
        next_seq: u64,
        now: Instant,
    ) -> SessionState {
        let mut uncounted = Held::default();
        for (seq, delivery) in queued {
            self.outbox_bytes += delivery.size_bytes();
            self.outbox.push_back(Queued {
                at: now,
                seq,
                delivery,
            });
        }
        for (seq, packet_id, delivery) in inflight {
            self.inflight
                .restore(seq, packet_id, delivery, &mut uncounted);
        }
        let incoming_qos2: HashSet<u16> = incoming_qos2.into_iter().map(PacketId::get).collect();
        self.incoming_qos2 = (!incoming_qos2.is_empty()).then(|| Box::new(incoming_qos2));
        // The session's own record may be older than its last entry: never reuse a number.
        let last_queued = self.outbox.back().map_or(0, |q| q.seq);
        let last_sent = self.inflight.iter().map(|e| e.seq).max().unwrap_or(0);
        self.next_seq = next_seq
            .max(self.next_seq)
            .max(last_queued.max(last_sent) + 1);
        self
    }

    /// Starts (or stops) keeping a log of changes for the store.
    pub fn set_logged(&mut self, logged: bool) {
        self.log = logged.then(Box::default);
        self.inflight.set_logged(logged);
    }

    pub fn is_logged(&self) -> bool {
        self.log.is_some()
    }

    /// Whether changes wait for the store.
    pub fn has_log(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !log.is_empty()) || self.inflight.has_log()
    }

    /// Takes the changes since the last call into `out`, in an order that keeps each entry's
    /// own changes in the order they happened.
    pub fn take_log(&mut self, out: &mut Vec<LogOp>) {
        if let Some(log) = self.log.as_mut() {
            out.append(&mut **log);
        }
        self.inflight.take_log(out);
    }

    fn log(&mut self, op: LogOp) {
        if let Some(log) = self.log.as_mut() {
            log.push(op);
        }
    }

    /// The sequence number the next queued delivery gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Queued deliveries with their sequence numbers, front first.
    pub fn queued(&self) -> impl Iterator<Item = &Queued> {
        self.outbox.iter()
    }

    /// The queued delivery with sequence number `seq`.
    pub fn queued_by_seq(&self, seq: u64) -> Option<&Queued> {
        let index = self.outbox.binary_search_by_key(&seq, |q| q.seq).ok()?;
        self.outbox.get(index)
    }

    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub fn incoming_qos2(&self) -> impl Iterator<Item = u16> + '_ {
        self.incoming_qos2
            .iter()
            .flat_map(|ids| ids.iter().copied())
    }

    /// Queues a delivery. `online` says whether a connection will drain it; offline sessions keep
    /// QoS 0 only when configured to. A full outbox, or a shard whose sessions hold
    /// `limits.shard_*_max` together (`shard`, kept up to date here) while this session holds
    /// its fair share or more, drops the new delivery or, with `drop_oldest`, queued ones of this
    /// session to make room; returns how many queued ones were dropped, and why. The QoS > 0
    /// shared-subscription deliveries so dropped that were not offered again already go to
    /// `reoffer` (with the limit that evicted them) instead of being counted, for another member
    /// of their group. A delivery offered again never evicts anything: it is dropped if there is
    /// no room.
    pub fn enqueue(
        &mut self,
        delivery: Delivery,
        online: bool,
        limits: &SessionLimits,
        shard: &mut Held,
        now: Instant,
        reoffer: &mut Vec<(Delivery, DropReason)>,
    ) -> Result<Evicted, DropReason> {
        if delivery.message.is_expired(now) {
            return Err(DropReason::Expired);
        }
        if !online && delivery.qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            return Err(DropReason::Qos0Offline);
        }
        let size = delivery.size_bytes();
        let mut evicted = Evicted::default();
        while let Err(reason) = self.room(size, limits, shard) {
            if !limits.drop_oldest
                || delivery.reoffered
                || size > limits.outbox_bytes_max
                || size > limits.shard_bytes_max
            {
                return Err(reason);
            }
            let removed = self.drop_oldest(delivery.qos, shard).map_err(|()| reason)?;
            if removed.shared.is_some() && removed.qos != QoS::AtMostOnce && !removed.reoffered {
                reoffer.push((removed, reason));
            } else {
                evicted.count(reason);
            }
        }
        self.outbox_bytes += size;
        shard.take_in(size);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.push_back(Queued {
            at: now,
            seq,
            delivery,
        });
        self.log(LogOp::Queued(seq));
        Ok(evicted)
    }

    /// Whether a delivery of `size` bytes may be queued now without dropping anything, or which
    /// limit is in the way: the session's outbox, or the shard's caps (unless this session holds
    /// less than its fair share of them).
    pub fn room(
        &self,
        size: usize,
        limits: &SessionLimits,
        shard: &Held,
    ) -> Result<(), DropReason> {
        if self.outbox.len() >= limits.outbox_messages_max
            || self.outbox_bytes + size > limits.outbox_bytes_max
        {
            return Err(DropReason::QueueFull);
        }
        let shard_full = shard.messages >= limits.shard_messages_max
            || shard.bytes + size > limits.shard_bytes_max;
        if shard_full && !self.within_share(size, limits) {
            return Err(DropReason::ShardFull);
        }
        Ok(())
    }

    /// Whether this session, given a delivery of `size` bytes, still holds no more than its fair
    /// share of the shard's caps.
    fn within_share(&self, size: usize, limits: &SessionLimits) -> bool {
        let held = self.held();
        held.messages < limits.shard_share_messages && held.bytes + size <= limits.shard_share_bytes
    }

    /// Drops the oldest queued QoS 0 delivery or, if none is queued and the newcomer (of QoS
    /// `incoming`) is not QoS 0 itself, the oldest delivery: a QoS 0 message never displaces a
    /// QoS 1 or 2 one. Fails when nothing may be dropped.
    fn drop_oldest(&mut self, incoming: QoS, shard: &mut Held) -> Result<Delivery, ()> {
        let position = match self
            .outbox
            .iter()
            .position(|q| q.delivery.qos == QoS::AtMostOnce)
        {
            Some(position) => position,
            None if incoming != QoS::AtMostOnce && !self.outbox.is_empty() => 0,
            None => return Err(()),
        };
        let removed = self.outbox.remove(position).ok_or(())?;
        self.outbox_bytes = self
            .outbox_bytes
            .saturating_sub(removed.delivery.size_bytes());
        shard.let_go(removed.delivery.size_bytes());
        self.log(LogOp::Done(removed.seq));
        Ok(removed.delivery)
    }

    /// Bytes of this session's subscription filters (against the shard's
    /// `limits.subscription_bytes_per_shard_max`).
    pub fn subscription_bytes(&self) -> usize {
        self.subscriptions.keys().map(|filter| filter.len()).sum()
    }

    /// What this session holds for its client: queued, and in flight awaiting an ack (a QoS 2
    /// message after PUBREC is no longer held, only its packet id).
    pub fn held(&self) -> Held {
        Held {
            messages: self.outbox.len() + self.inflight.sent_len(),
            bytes: self.outbox_bytes + self.inflight.sent_bytes(),
        }
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Whether a QoS > 0 delivery could go out now (the window `window` is the smaller of our
    /// in-flight limit and the client's Receive Maximum).
    pub fn has_window(&self, window: usize) -> bool {
        self.inflight.len() < window
    }

    /// Takes the next queued delivery that may be sent now. QoS 0 goes whenever it is at the front;
    /// QoS > 0 waits for room in the in-flight window and then gets a packet id. Expired deliveries
    /// are dropped on the way and counted in `expired`.
    /// The bytes of the PUBLISH the next message `next_to_send` gives may take, at most, for
    /// the room in the write buffer.
    pub fn next_size(&self) -> Option<usize> {
        self.outbox
            .front()
            .map(|queued| queued.delivery.message.publish_bytes_max())
    }

    pub fn next_to_send(
        &mut self,
        window: usize,
        now: Instant,
        expired: &mut u64,
        shard: &mut Held,
    ) -> Option<Outgoing> {
        loop {
            let front = &self.outbox.front()?.delivery;
            if front.message.is_expired(now) {
                let queued = self.pop_front(shard)?;
                self.log(LogOp::Done(queued.seq));
                *expired += 1;
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                let queued = self.pop_front(shard)?;
                self.log(LogOp::Done(queued.seq));
                return Some(Outgoing {
                    packet_id: None,
                    delivery: queued.delivery,
                    queued_at: queued.at,
                });
            }
            if !self.has_window(window) {
                return None;
            }
            // From the outbox into the window: still held.
            let queued = self.pop_front(shard)?;
            let packet_id = self
                .inflight
                .push(queued.seq, queued.delivery.clone(), shard)?;
            self.log(LogOp::Sent(queued.seq, packet_id));
            return Some(Outgoing {
                packet_id: Some(packet_id),
                delivery: queued.delivery,
                queued_at: queued.at,
            });
        }
    }

    fn pop_front(&mut self, shard: &mut Held) -> Option<Queued> {
        let queued = self.outbox.pop_front()?;
        self.outbox_bytes = self
            .outbox_bytes
            .saturating_sub(queued.delivery.size_bytes());
        shard.let_go(queued.delivery.size_bytes());
        Some(queued)
    }

    /// Drops queued QoS 0 messages (when a connection closes: they were only for that connection).
    pub fn drop_queued_qos0(&mut self, shard: &mut Held) -> usize {
        let before = self.held();
        if let Some(log) = self.log.as_mut() {
            let dropped = self
                .outbox
                .iter()
                .filter(|q| q.delivery.qos == QoS::AtMostOnce);
            log.extend(dropped.map(|q| LogOp::Done(q.seq)));
        }
        self.outbox.retain(|q| q.delivery.qos != QoS::AtMostOnce);
        self.outbox_bytes = self.outbox.iter().map(|q| q.delivery.size_bytes()).sum();
        let after = self.held();
        let dropped = Held {
            messages: before.messages.saturating_sub(after.messages),
            bytes: before.bytes.saturating_sub(after.bytes),
        };
        shard.remove(dropped);
        dropped.messages
    }

    /// Records an incoming QoS 2 packet id. Returns false when it is already awaiting PUBREL: the
    /// message was delivered onward once and must not be again (MQTT 4.3.3).
    pub fn receive_qos2(&mut self, packet_id: PacketId) -> bool {
        let first = self
            .incoming_qos2
            .get_or_insert_with(Box::default)
            .insert(packet_id.get());
        if first {
            self.log(LogOp::IncomingQos2(packet_id, true));
        }
        first
    }

    /// PUBREL: releases an incoming QoS 2 id; false if it was unknown.
    pub fn release_qos2(&mut self, packet_id: PacketId) -> bool {
        let known = self
            .incoming_qos2
            .as_mut()
            .is_some_and(|ids| ids.remove(&packet_id.get()));
        if known {
            self.log(LogOp::IncomingQos2(packet_id, false));
        }
        known
    }

    /// Takes out the QoS > 0 messages of shared subscriptions not yet completed (queued, or sent
    /// and not acknowledged), for another member of their group.
    pub fn take_unfinished_shared(&mut self) -> Vec<(Arc<Message>, ByteString, ByteString)> {
        let mut taken = Vec::new();
        let queued = self.outbox.iter().map(|q| &q.delivery);
        for delivery in queued.chain(self.inflight.unacknowledged()) {
            if let (Some((filter, group)), true) =
                (delivery.shared.as_deref(), delivery.qos != QoS::AtMostOnce)
            {
                taken.push((Arc::clone(&delivery.message), filter.clone(), group.clone()));
            }
        }
        taken
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.incoming_qos2.as_ref().map_or(0, |ids| ids.len())
    }

    /// Whether a QoS 2 id is awaiting its PUBREL.
    pub fn awaits_pubrel(&self, packet_id: PacketId) -> bool {
        self.incoming_qos2
            .as_ref()
            .is_some_and(|ids| ids.contains(&packet_id.get()))
    }
}

#[cfg(test)]
mod tests;
