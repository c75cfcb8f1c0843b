//! A session moving to another shard without losing a message (QoS >= 1 may be duplicated around
//! a takeover, never lost; QoS 2 is not duplicated either, thanks to the dedup window).
//!
//! The danger: while the session moves from shard A to shard B, another shard C may still route
//! matching messages to A (its interest for A is not updated yet), and if A withdrew its interest
//! before B's was in place, C would route them nowhere. So the hand-over runs in two phases:
//!
//! 1. A hands the session state to B but keeps a *stub* in its place: the same subscriptions in its
//!    local trie (so A's interest stays), with every delivery forwarded to B (`Mail::Forward`).
//!    B installs the session, declares its interest, passes its CONNACK barrier, and tells A
//!    `Confirmed`. Between the two, C may route a message to both A and B: B keeps the ids of the
//!    messages it delivers to the session (the dedup window) and drops the second copy.
//! 2. On `Confirmed`, A takes the stub out of its trie (withdrawing interest) but keeps forwarding
//!    what still matches (a *tombstone*) until a barrier round trip to every shard proves no stale
//!    message is left in a ring to A. Then A tells B `Released`, and B closes the dedup window
//!    after its own barrier (so a direct copy still in a ring to B is caught too).
//!
//! A shard whose own claim was superseded while it waited for the handover (a *relay*) passes the
//! session on, forwards to the next owner, and passes `Confirmed` up and `Released` down the chain.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::subscribe::BarrierKind;
use super::{SessionKey, Shard};
use crate::mail::{Forward, Mail};
use crate::message::Message;
use crate::protocol::topic;
use crate::session::{Delivery, SessionState, Subscription};

/// Largest number of message ids a dedup window keeps; past it, duplicates are possible again.
const DEDUP_IDS_MAX: usize = 100_000;

/// Filters a former owner still forwards after withdrawing its interest (phase 2).
#[derive(Debug)]
pub struct Tombstone {
    pub client_id: ByteString,
    pub to: ShardId,
    pub filters: Vec<(ByteString, Subscription)>,
}

/// A shard that passed a session on while it was arriving (its claim was superseded).
#[derive(Debug)]
pub struct Relay {
    pub client_id: ByteString,
    pub to: ShardId,
    pub upstream: Option<ShardId>,
    /// `Confirmed` already came from downstream and went upstream.
    pub confirmed: bool,
}

impl Shard {
    /// Former owner: swaps the session for a forwarding stub and returns the real state.
    pub(super) fn leave_stub(
        &mut self,
        key: SessionKey,
        new_owner: ShardId,
        now: Instant,
    ) -> Option<SessionState> {
        // Messages held for this session (it was still moving in) travel on with it.
        self.release_held(key, now);
        let session = self.sessions.get_mut(key)?;
        let client_id = session.state.client_id.clone();
        let mut stub = SessionState::new(client_id.clone(), session.state.version, 0);
        stub.subscriptions = session.state.subscriptions.clone();
        stub.username = session.state.username.clone();
        let state = std::mem::replace(&mut session.state, stub);
        session.conn = None;
        session.expires_at = None;
        session.forward_to = Some(new_owner);
        if self.sessions_by_client.get(&client_id) == Some(&key) {
            self.sessions_by_client.remove(&client_id);
        }
        self.stubs.push(key);
        Some(state)
    }

    /// A delivery for a stub goes to the session's new owner.
    pub(super) fn forward(&mut self, to: ShardId, client_id: ByteString, delivery: Delivery) {
        self.forward_hop(to, client_id, delivery, 0);
    }

    fn forward_hop(&mut self, to: ShardId, client_id: ByteString, delivery: Delivery, hops: u8) {
        // A session moves at most a few times while one message is in flight; a longer chain
        // means the forwarding state is stale, and the message is dropped rather than circling.
        if usize::from(hops) > 2 * self.shard_count + 2 {
            self.counters.dropped_no_session += 1;
            return;
        }
        self.counters.forwarded += 1;
        let forward = Forward {
            client_id,
            delivery,
            hops: hops.saturating_add(1),
        };
        self.send_mail(to, Mail::Forward(Box::new(forward)));
    }

    pub(super) fn on_forward(&mut self, forward: Forward, now: Instant) {
        let Forward {
            client_id,
            delivery,
            hops,
        } = forward;
        // Where the session is now, in order: arriving here (keep it until installed), installed
        // here (deliver; a copy seen in the dedup window is dropped there), passed on from here.
        if let Some(pending) = self
            .connects
            .values_mut()
            .find(|p| p.client_id() == &client_id && p.awaits_forwards())
        {
            return pending.stash(delivery, self.settings.session.outbox_messages_max);
        }
        if let Some(key) = self.sessions_by_client.get(&client_id).copied() {
            return self.enqueue_delivery(key, delivery, now);
        }
        let me = self.id;
        if let Some(relay) = self
            .relays
            .iter()
            .find(|r| r.client_id == client_id && r.to != me)
        {
            let to = relay.to;
            return self.forward_hop(to, client_id, delivery, hops);
        }
        self.counters.dropped_no_session += 1;
    }

    /// New owner: the session's interest is confirmed everywhere; the former owner may withdraw.
    pub(super) fn confirm_moved(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(from) = session.moved_from.take() {
            let client_id = session.state.client_id.clone();
            self.send_mail(from, Mail::Confirmed { client_id });
        }
    }

    pub(super) fn on_confirmed(&mut self, from: ShardId, client_id: ByteString, now: Instant) {
        if let Some(index) = self
            .relays
            .iter()
            .position(|r| r.client_id == client_id && r.to == from && !r.confirmed)
        {
            let upstream = self.relays.get_mut(index).and_then(|r| {
                r.confirmed = true;
                r.upstream
            });
            match upstream {
                Some(upstream) => self.send_mail(upstream, Mail::Confirmed { client_id }),
                None => {
                    self.relays.swap_remove(index);
                    self.send_mail(from, Mail::Released { client_id });
                }
            }
            return;
        }
        let position = self.stubs.iter().position(|key| {
            self.sessions
                .get(*key)
                .is_some_and(|s| s.state.client_id == client_id && s.forward_to == Some(from))
        });
        let Some(key) = position.map(|i| self.stubs.swap_remove(i)) else {
            // Nothing here forwards to that shard any more: let it close its window.
            return self.send_mail(from, Mail::Released { client_id });
        };
        let Some(stub) = self.remove_session(key) else {
            return;
        };
        let filters = stub.subscriptions.into_iter().collect();
        self.tombstones.push(Tombstone {
            client_id: client_id.clone(),
            to: from,
            filters,
        });
        self.start_flush_barrier(
            BarrierKind::Tombstone {
                client_id,
                to: from,
            },
            now,
        );
    }

    /// Phase 2 is over on this shard: nothing stale can still arrive for the moved session.
    pub(super) fn tombstone_done(&mut self, client_id: ByteString, to: ShardId) {
        self.tombstones
            .retain(|t| !(t.client_id == client_id && t.to == to));
        self.send_mail(to, Mail::Released { client_id });
    }

    pub(super) fn on_released(&mut self, from: ShardId, client_id: ByteString, now: Instant) {
        if let Some(index) = self
            .relays
            .iter()
            .position(|r| r.client_id == client_id && r.upstream == Some(from))
        {
            let relay = self.relays.swap_remove(index);
            return self.send_mail(relay.to, Mail::Released { client_id });
        }
        if let Some(key) = self.sessions_by_client.get(&client_id).copied() {
            // Everything forwarded is in: what was routed here directly follows, in order.
            self.release_held(key, now);
            self.start_flush_barrier(BarrierKind::CloseDedup { key }, now);
        }
    }

    /// Queues the messages a moving-in session held back, in the order they arrived.
    fn release_held(&mut self, key: SessionKey, now: Instant) {
        let held = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.held.take())
            .unwrap_or_default();
        for delivery in held {
            self.enqueue_delivery(key, delivery, now);
        }
    }

    pub(super) fn close_dedup(&mut self, key: SessionKey) {
        if let Some(session) = self.sessions.get_mut(key) {
            session.dedup = None;
        }
    }

    /// Deliveries for tombstones: messages routed here under interest already withdrawn.
    pub(super) fn forward_to_tombstones(&mut self, message: &Arc<Message>) {
        if self.tombstones.is_empty() {
            return;
        }
        let mut forwards = Vec::new();
        for tombstone in &self.tombstones {
            let mut best: Option<Subscription> = None;
            for (filter, subscription) in &tombstone.filters {
                let filter = match topic::parse_subscription(filter.clone()) {
                    Ok(topic::Subscription::Normal(f)) => f,
                    Ok(topic::Subscription::Shared { filter, .. }) => filter,
                    Err(_) => continue,
                };
                if topic::matches(filter.as_str(), &message.topic)
                    && best.is_none_or(|b| subscription.options.qos > b.options.qos)
                {
                    best = Some(*subscription);
                }
            }
            if let Some(subscription) = best {
                let delivery = Delivery {
                    message: Arc::clone(message),
                    qos: message.qos.min(subscription.options.qos),
                    retain: message.retain && subscription.options.retain_as_published,
                    subscription_identifiers: subscription.identifier.into_iter().collect(),
                    shared: None,
                };
                forwards.push((tombstone.to, tombstone.client_id.clone(), delivery));
            }
        }
        for (to, client_id, delivery) in forwards {
            self.forward(to, client_id, delivery);
        }
    }

    /// True when the session's dedup window already saw this message (and records it if not).
    pub(super) fn seen_before(dedup: &mut Option<HashSet<u64>>, delivery: &Delivery) -> bool {
        match dedup {
            Some(ids) => {
                if ids.contains(&delivery.message.id) {
                    return true;
                }
                if ids.len() < DEDUP_IDS_MAX {
                    ids.insert(delivery.message.id);
                }
                false
            }
            None => false,
        }
    }
}
