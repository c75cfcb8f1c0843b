//! A session moving to another shard without losing a message (QoS >= 1 may be duplicated around
//! a takeover, never lost; QoS 2 is not duplicated either, thanks to the dedup window).
//!
//! The danger: while the session moves from shard A to shard B, another shard C may still route
//! matching messages to A (its interest for A is not updated yet), and if A withdrew its interest
//! before B's was in place, C would route them nowhere. So the hand-over runs in two phases:
//!
//! 1. A hands the session state to B but keeps a *stub* in its place: the same subscriptions in its
//!    local trie (so A's interest stays), with every delivery forwarded to B (`Mail::Forward`).
//!    B installs the session, declares its interest, passes a barrier, and tells A `Confirmed`.
//!    Between the two, C may route a message to both A and B: B keeps the ids of the messages it
//!    delivers to the session (the dedup window) and drops the second copy.
//! 2. On `Confirmed`, A takes the stub out of its trie (withdrawing interest) but keeps forwarding
//!    what still matches (a *tombstone*) until a barrier round trip to every shard proves no stale
//!    message is left in a ring to A. Then A tells B `Released`, and B closes the dedup window
//!    after its own barrier (so a direct copy still in a ring to B is caught too).
//!
//! # Chains of moves
//!
//! A client reconnecting quickly moves its session again before the last move finished: the
//! owners form a chain A -> B -> C -> ..., one *link* per claim the directory granted, each named
//! by the claimant's shard and its claim ticket (`Hop`). B may have installed the session and
//! passed it on (a stub, then a tombstone), or passed it on before it arrived (a *relay*, its own
//! claim superseded while it waited for the handover). Forwards name the claim they are for, so a
//! shard that holds several links of one client (a client bouncing between two shards) knows
//! which one a forward follows. The invariant that makes the chain lossless:
//!
//! **A shard keeps its link (stub, tombstone or relay) until the shard before it in the chain has
//! said `Released`, and only then says `Released` to the next one.** Forwards and `Released` travel
//! on the same FIFO ring, so everything the previous link forwarded has arrived and gone on before
//! the link goes; by induction a forward always finds its link, and follows the chain to the
//! session's newest owner (the links are ordered by claim, so it cannot circle). For the same
//! reason the newest owner's dedup window stays open until every older link is gone, and the
//! window's ids travel with the session (`Moved::seen`), so a copy delivered by an earlier owner is
//! recognised by a later one: QoS 2 is not duplicated along the chain either.
//!
//! `Confirmed` goes one link up: an installed session sends it once its own interest barrier
//! passed (its stub keeps that interest if it moves on meanwhile); a relay, which never held
//! interest, passes its successor's `Confirmed` up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::subscribe::BarrierKind;
use super::{SessionKey, Shard};
use crate::cluster::tags::StreamTag;
use crate::mail::{Forward, Mail, Moved, Ticket};
use crate::message::Message;
use crate::protocol::topic;
use crate::session::{Delivery, Subscription};

/// Largest number of message ids a dedup window keeps; past it, duplicates are possible again.
const DEDUP_IDS_MAX: usize = 100_000;

/// One claim in a session's chain of owners: the claimant's shard and its claim ticket there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub shard: ShardId,
    pub ticket: Ticket,
}

/// A shard that passed a session on and still forwards for it, after its stub left the trie
/// (a tombstone) or without ever installing it (a relay).
#[derive(Debug)]
pub struct Link {
    pub client_id: ByteString,
    /// This shard's claim for the session: what forwards and `Released` to here name.
    pub ticket: Ticket,
    pub to: Hop,
    /// The shard the session came from, until it says `Released` (its forwards are all in).
    pub upstream: Option<ShardId>,
    /// A tombstone's filters: messages still routed here under withdrawn interest go on. A relay
    /// has none (it never held interest).
    pub filters: Vec<(ByteString, Subscription)>,
    /// No stale message can still be in a ring to here (a tombstone's barrier passed; a relay at once).
    pub flushed: bool,
    /// `Confirmed` came from downstream (and, for a relay, went upstream).
    pub confirmed: bool,
}

impl Shard {
    /// Former owner: swaps the session for a forwarding stub and returns the real state, with its
    /// dedup window.
    pub(super) fn leave_stub(&mut self, key: SessionKey, to: Hop, now: Instant) -> Option<Moved> {
        // Messages held for this session (it was still moving in) travel on with it.
        self.release_held(key, now);
        let session = self.sessions.get_mut(key)?;
        let client_id = session.state.client_id.clone();
        let mut stub =
            crate::session::SessionState::new(client_id.clone(), session.state.version, 0);
        stub.subscriptions = session.state.subscriptions.clone();
        stub.username = session.state.username.clone();
        let state = std::mem::replace(&mut session.state, stub);
        // What the session holds leaves with it; its subscriptions stay with the stub until the
        // stub is removed.
        self.held.remove(state.held());
        let seen = session.dedup.take().map(|ids| *ids);
        session.conn = None;
        session.expires_at = None;
        session.forward_to = Some(to);
        if self.sessions_by_client.get(&client_id) == Some(&key) {
            self.sessions_by_client.remove(&client_id);
        }
        self.stubs.push(key);
        if state.is_logged() {
            self.store_gone(client_id, true);
        }
        Some(Moved { state, seen })
    }

    /// New owner: the session came from `from`. Forwards from there are taken until it says
    /// `Released`; it learns when this shard's interest for the session is in place.
    pub(super) fn moved_in(
        &mut self,
        key: SessionKey,
        from: ShardId,
        resumed: Option<Option<HashSet<u64>>>,
        forwarded: Vec<Delivery>,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.moved_from = Some(from);
        let client_id = session.state.client_id.clone();
        let ticket = session.ticket;
        if let Some(seen) = resumed {
            session.dedup = Some(Box::new(seen.unwrap_or_default()));
            session.held = Some(Box::default());
            for delivery in forwarded {
                self.enqueue_delivery(key, delivery, now);
            }
        }
        // The interest declared when the session was installed is in place once every shard
        // answered; a stub keeps it if the session moves on before then.
        let to = Hop {
            shard: from,
            ticket,
        };
        self.start_flush_barrier(BarrierKind::ConfirmMoved { client_id, to }, now);
    }

    /// A claim superseded while its session was on the way: the session went on to `to`, and
    /// what the former owner still forwards follows it.
    pub(super) fn add_relay(
        &mut self,
        client_id: ByteString,
        ticket: Ticket,
        to: Hop,
        upstream: Option<ShardId>,
        forwarded: Vec<Delivery>,
    ) {
        for delivery in forwarded {
            self.forward(to, client_id.clone(), delivery);
        }
        self.links.push(Link {
            client_id,
            ticket,
            to,
            upstream,
            filters: Vec::new(),
            flushed: true,
            confirmed: false,
        });
    }

    /// A delivery for a stub or a tombstone goes to the session's next owner.
    /// A record of a stream batch keeps its tag (see `Forward::tag`).
    pub(super) fn forward(&mut self, to: Hop, client_id: ByteString, delivery: Delivery) {
        let tag = self.tag_of(delivery.message.id);
        self.forward_hop(to, client_id, delivery, 0, tag);
    }

    fn forward_hop(
        &mut self,
        to: Hop,
        client_id: ByteString,
        delivery: Delivery,
        hops: u8,
        tag: Option<StreamTag>,
    ) {
        self.counters.forwarded += 1;
        let forward = Forward {
            client_id,
            ticket: to.ticket,
            delivery,
            hops: hops.saturating_add(1),
            tag,
        };
        self.send_mail(to.shard, Mail::Forward(Box::new(forward)));
    }

    pub(super) fn on_forward(&mut self, forward: Forward, now: Instant) {
        let Forward {
            client_id,
            ticket,
            delivery,
            hops,
            tag,
        } = forward;
        // The claim this forward is for is, here: still arriving (keep it until installed),
        // installed (deliver; a copy seen in the dedup window is dropped there), or passed on.
        if let Some(pending) = self.connects.get_mut(&ticket) {
            if pending.client_id() == &client_id && pending.awaits_forwards() {
                return pending.stash(delivery, self.settings.session.outbox_messages_max);
            }
        } else if let Some(key) = self.sessions_by_client.get(&client_id).copied()
            && let Some(session) = self.sessions.get(key)
            && session.ticket == ticket
        {
            // Only a resumed session takes what was meant for the session it replaced (a clean
            // start discards it); `held` marks one until its former owner said `Released`.
            if session.held.is_some() {
                let id = delivery.message.id;
                return self.with_tag(tag, id, |shard| shard.enqueue_delivery(key, delivery, now));
            }
        } else if let Some(to) = self.next_hop(&client_id, ticket) {
            return self.forward_hop(to, client_id, delivery, hops, tag);
        }
        self.counters.dropped_no_session += 1;
    }

    /// Where this shard's claim `ticket` passed the session on to (a stub or a link).
    fn next_hop(&self, client_id: &ByteString, ticket: Ticket) -> Option<Hop> {
        let stub = self.stubs.iter().find_map(|key| {
            let session = self.sessions.get(*key)?;
            let ours = session.ticket == ticket && session.state.client_id == *client_id;
            session.forward_to.filter(|_| ours)
        });
        stub.or_else(|| {
            self.links
                .iter()
                .find(|l| l.ticket == ticket && l.client_id == *client_id)
                .map(|l| l.to)
        })
    }

    /// The next owner's interest is in place: a stub withdraws its own and becomes a tombstone;
    /// a relay passes the news up.
    pub(super) fn on_confirmed(
        &mut self,
        from: ShardId,
        client_id: ByteString,
        ticket: Ticket,
        now: Instant,
    ) {
        let hop = Hop {
            shard: from,
            ticket,
        };
        if let Some(index) = self
            .links
            .iter()
            .position(|l| l.to == hop && l.client_id == client_id && !l.confirmed)
        {
            let Some(link) = self.links.get_mut(index) else {
                return;
            };
            link.confirmed = true;
            if let Some(upstream) = link.upstream {
                let ticket = link.ticket;
                self.send_mail(upstream, Mail::Confirmed { client_id, ticket });
            }
            return self.finish_link(index);
        }
        let position = self.stubs.iter().position(|key| {
            self.sessions
                .get(*key)
                .is_some_and(|s| s.state.client_id == client_id && s.forward_to == Some(hop))
        });
        let Some(key) = position.map(|i| self.stubs.swap_remove(i)) else {
            return;
        };
        let Some(stub) = self.sessions.get(key) else {
            return;
        };
        let (own_ticket, upstream) = (stub.ticket, stub.moved_from);
        let Some(stub) = self.remove_session(key) else {
            return;
        };
        self.links.push(Link {
            client_id: client_id.clone(),
            ticket: own_ticket,
            to: hop,
            upstream,
            filters: stub.subscriptions.into_iter().collect(),
            flushed: false,
            confirmed: true,
        });
        self.start_flush_barrier(BarrierKind::Tombstone { client_id, to: hop }, now);
    }

    /// A tombstone's barrier passed: nothing stale can still arrive here for the moved session.
    pub(super) fn tombstone_done(&mut self, client_id: ByteString, to: Hop) {
        let found = |l: &Link| l.to == to && l.client_id == client_id;
        self.update_link(found, |l| l.flushed = true);
    }

    /// Applies `update` to the first link `found` accepts, then lets it go if it is done.
    /// False when no link matched.
    fn update_link(
        &mut self,
        found: impl Fn(&Link) -> bool,
        update: impl FnOnce(&mut Link),
    ) -> bool {
        let Some(index) = self.links.iter().position(found) else {
            return false;
        };
        if let Some(link) = self.links.get_mut(index) {
            update(link);
        }
        self.finish_link(index);
        true
    }

    /// The shard before this one in the chain forwards nothing more for our claim `ticket`.
    pub(super) fn on_released(&mut self, client_id: ByteString, ticket: Ticket, now: Instant) {
        let found = |l: &Link| l.ticket == ticket && l.client_id == client_id;
        if self.update_link(found, |l| l.upstream = None) {
            return;
        }
        let stub = self.stubs.iter().copied().find(|key| {
            self.sessions
                .get(*key)
                .is_some_and(|s| s.ticket == ticket && s.state.client_id == client_id)
        });
        if let Some(session) = stub.and_then(|key| self.sessions.get_mut(key)) {
            // It becomes a tombstone on `Confirmed`, which waits for this no longer.
            session.moved_from = None;
            return;
        }
        if let Some(key) = self.sessions_by_client.get(&client_id).copied()
            && let Some(session) = self.sessions.get_mut(key)
            && session.ticket == ticket
        {
            session.moved_from = None;
            // Everything forwarded is in: what was routed here directly follows, in order.
            self.release_held(key, now);
            self.start_flush_barrier(BarrierKind::CloseDedup { key }, now);
        }
    }

    /// A link goes once its barrier passed, the next owner confirmed and the previous one
    /// released it; only then may the next owner hear `Released` (see the module comment).
    fn finish_link(&mut self, index: usize) {
        let done = self
            .links
            .get(index)
            .is_some_and(|l| l.flushed && l.confirmed && l.upstream.is_none());
        if done {
            let link = self.links.swap_remove(index);
            let (client_id, ticket) = (link.client_id, link.to.ticket);
            self.send_mail(link.to.shard, Mail::Released { client_id, ticket });
        }
    }

    /// Queues the messages a moving-in session held back, in the order they arrived.
    fn release_held(&mut self, key: SessionKey, now: Instant) {
        let held = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.held.take())
            .map(|held| *held)
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
        if self.links.is_empty() {
            return;
        }
        let mut forwards = Vec::new();
        for link in &self.links {
            let mut best: Option<Subscription> = None;
            for (filter, subscription) in &link.filters {
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
                    reoffered: false,
                };
                forwards.push((link.to, link.client_id.clone(), delivery));
            }
        }
        for (to, client_id, delivery) in forwards {
            self.forward(to, client_id, delivery);
        }
    }

    /// True when the session's dedup window already saw this message (and records it if not).
    #[expect(
        clippy::box_collection,
        reason = "boxed in `LocalSession`: 8 bytes in every session instead of 48"
    )]
    pub(super) fn seen_before(dedup: &mut Option<Box<HashSet<u64>>>, delivery: &Delivery) -> bool {
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

    /// Stubs, links and open dedup windows on this shard: all gone once a quiet world has no
    /// mail left (every move finished).
    pub fn moving_len(&self) -> usize {
        let windows = self
            .sessions
            .iter()
            .filter(|(_, s)| s.dedup.is_some() || s.held.is_some() || s.moved_from.is_some())
            .count();
        self.stubs.len() + self.links.len() + windows
    }
}
