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
    /// Deliveries waiting to be sent, each with when it was queued (for the outbox-wait metric).
    outbox: VecDeque<(Instant, Delivery)>,
    outbox_bytes: usize,
    pub inflight: Inflight,
    /// QoS 2 packet ids received and acknowledged with PUBREC, not yet released (MQTT 4.3.3).
    incoming_qos2: HashSet<u16>,
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
            incoming_qos2: HashSet::new(),
        }
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
        self.outbox.push_back((now, delivery));
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
            .position(|(_, d)| d.qos == QoS::AtMostOnce)
        {
            Some(position) => position,
            None if incoming != QoS::AtMostOnce && !self.outbox.is_empty() => 0,
            None => return Err(()),
        };
        let (_, removed) = self.outbox.remove(position).ok_or(())?;
        self.outbox_bytes = self.outbox_bytes.saturating_sub(removed.size_bytes());
        shard.let_go(removed.size_bytes());
        Ok(removed)
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
    pub fn next_to_send(
        &mut self,
        window: usize,
        now: Instant,
        expired: &mut u64,
        shard: &mut Held,
    ) -> Option<Outgoing> {
        loop {
            let (_, front) = self.outbox.front()?;
            if front.message.is_expired(now) {
                self.pop_front(shard);
                *expired += 1;
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                let (queued_at, delivery) = self.pop_front(shard)?;
                return Some(Outgoing {
                    packet_id: None,
                    delivery,
                    queued_at,
                });
            }
            if !self.has_window(window) {
                return None;
            }
            // From the outbox into the window: still held.
            let (queued_at, delivery) = self.pop_front(shard)?;
            let packet_id = self.inflight.push(delivery.clone(), shard)?;
            return Some(Outgoing {
                packet_id: Some(packet_id),
                delivery,
                queued_at,
            });
        }
    }

    fn pop_front(&mut self, shard: &mut Held) -> Option<(Instant, Delivery)> {
        let (queued_at, delivery) = self.outbox.pop_front()?;
        self.outbox_bytes = self.outbox_bytes.saturating_sub(delivery.size_bytes());
        shard.let_go(delivery.size_bytes());
        Some((queued_at, delivery))
    }

    /// Drops queued QoS 0 messages (when a connection closes: they were only for that connection).
    pub fn drop_queued_qos0(&mut self, shard: &mut Held) -> usize {
        let before = self.held();
        self.outbox.retain(|(_, d)| d.qos != QoS::AtMostOnce);
        self.outbox_bytes = self.outbox.iter().map(|(_, d)| d.size_bytes()).sum();
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
        self.incoming_qos2.insert(packet_id.get())
    }

    /// PUBREL: releases an incoming QoS 2 id; false if it was unknown.
    pub fn release_qos2(&mut self, packet_id: PacketId) -> bool {
        self.incoming_qos2.remove(&packet_id.get())
    }

    /// Takes out the QoS > 0 messages of shared subscriptions not yet completed (queued, or sent
    /// and not acknowledged), for another member of their group.
    pub fn take_unfinished_shared(&mut self) -> Vec<(Arc<Message>, ByteString, ByteString)> {
        let mut taken = Vec::new();
        let queued = self.outbox.iter().map(|(_, delivery)| delivery);
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
        self.incoming_qos2.len()
    }
}

#[cfg(test)]
mod tests;
