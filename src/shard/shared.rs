//! Shared subscriptions (MQTT 5.0 §4.8.2): `$share/{group}/{filter}`. Each message matching the
//! filter goes to exactly one member of each group, whichever shard the members are on.
//!
//! Every shard tells every other shard how many members each group has on it
//! (`Mail::SharedInterest`, an absolute count, so the last one wins). The publishing shard picks
//! one shard for each matching group in proportion to those counts; that shard picks one of its
//! members in turn: a connected one with room for the message, else an offline one with room.
//! When no member there has room, or the count was stale (the member just left), the message
//! moves on to another shard with members, with fewer hops than such shards; with none left a
//! member without room gets it (and the drop policy), or it is dropped and counted if there is no
//! member at all. When a member's session ends with QoS > 0 messages of the group still queued or
//! unacknowledged, they go to another member (§4.8.2); so do those `drop_oldest` evicts from a
//! member's outbox, once (`reoffer_evicted`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::{SessionKey, Shard};
use crate::cluster::RemoteShare;
use crate::mail::{Mail, SharedInterest, SharedPublish};
use crate::message::Message;
use crate::protocol::QoS;
use crate::router::{RoundRobin, WeightedShards};
use crate::session::DropReason;

/// Members of the groups of one filter on this shard: group -> members.
pub type LocalGroups = HashMap<ByteString, LocalGroup>;

/// The members of one group on this shard, in turn order, and the filter text their sessions
/// hold the subscription under (`$share/{group}/{filter}`), kept so a delivery does not build it.
#[derive(Debug)]
pub struct LocalGroup {
    key: ByteString,
    members: RoundRobin<SessionKey>,
}

/// Groups of one filter across shards: group -> member counts per shard (this one included).
#[derive(Debug, Default)]
pub struct SharedFilter {
    pub filter: ByteString,
    pub groups: HashMap<ByteString, WeightedShards>,
}

impl Shard {
    /// Adds a member to a group on this shard and tells every shard the new count.
    pub(super) fn add_shared_member(
        &mut self,
        filter: &ByteString,
        group: &ByteString,
        key: SessionKey,
    ) {
        let local = self
            .shared_local
            .get_or_insert_with(filter, LocalGroups::new)
            .entry(group.clone())
            .or_insert_with(|| LocalGroup {
                key: shared_key(group, filter),
                members: RoundRobin::default(),
            });
        local.members.insert(key);
        let count = local.members.len();
        self.announce_shared_count(filter, group, count);
    }

    /// Removes a member of a group on this shard and tells every shard the new count.
    pub(super) fn remove_shared_member(
        &mut self,
        filter: &ByteString,
        group: &ByteString,
        key: SessionKey,
    ) {
        let Some(groups) = self.shared_local.get_mut(filter) else {
            return;
        };
        let Some(local) = groups.get_mut(group) else {
            return;
        };
        local.members.remove(&key);
        let count = local.members.len();
        if count == 0 {
            groups.remove(group);
            if groups.is_empty() {
                self.shared_local.remove(filter);
            }
        }
        self.announce_shared_count(filter, group, count);
    }

    fn announce_shared_count(&mut self, filter: &ByteString, group: &ByteString, count: usize) {
        let me = self.id;
        let before = self
            .shared_interest
            .get(filter)
            .and_then(|shared| shared.groups.get(group))
            .map_or(0, |weights| weights.members(me.index()));
        self.set_shared_count(me, filter.clone(), group.clone(), count);
        // The other nodes learn of the group's first member here and of its last, as of a
        // filter's (their messages for the group may come here then).
        if (before == 0) != (count == 0)
            && let Some(cluster) = &self.cluster
        {
            let key = shared_key(group, filter);
            let (add, remove) = if count == 0 {
                (Vec::new(), vec![key])
            } else {
                (vec![key], Vec::new())
            };
            cluster
                .handle()
                .control(crate::cluster::ToLink::Interest { add, remove });
        }
        let members = u32::try_from(count).unwrap_or(u32::MAX);
        self.broadcast_mail(|| {
            Mail::SharedInterest(Box::new(SharedInterest {
                filter: filter.clone(),
                group: group.clone(),
                members,
            }))
        });
    }

    /// Records that `shard` has `count` members of `group` on `filter`.
    pub(super) fn set_shared_count(
        &mut self,
        shard: ShardId,
        filter: ByteString,
        group: ByteString,
        count: usize,
    ) {
        let entry = self
            .shared_interest
            .get_or_insert_with(&filter, || SharedFilter {
                filter: filter.clone(),
                groups: HashMap::new(),
            });
        let weights = entry.groups.entry(group.clone()).or_default();
        let current = weights.members(shard.index());
        if count > current {
            weights.add(shard.index(), count - current);
        } else if current > count {
            weights.remove(shard.index(), current - count);
        }
        if weights.is_empty() {
            entry.groups.remove(&group);
            if entry.groups.is_empty() {
                self.shared_interest.remove(&filter);
            }
        }
    }

    /// Sends a message to one member of every shared group whose filter matches its topic; true
    /// when a group matched. With the cluster on, a group with members on other nodes takes
    /// turns between this node (if it has members) and each of those nodes: a message for
    /// another node goes there marked for the group (docs/CLUSTER.md, "Shared subscriptions").
    pub(super) fn route_shared(&mut self, message: &Arc<Message>, now: Instant) -> bool {
        let mut remote: Vec<RemoteShare> = Vec::new();
        if let Some(cluster) = self.cluster.as_mut()
            && !super::publish::is_sys_topic(&message.topic)
        {
            cluster.shares_for(&message.topic, &mut remote);
        }
        if self.shared_interest.is_empty() && remote.is_empty() {
            return false;
        }
        let mut matched: Vec<(ByteString, ByteString)> = Vec::new();
        self.shared_interest
            .for_each_match(&message.topic, |shared| {
                matched.extend(
                    shared
                        .groups
                        .keys()
                        .map(|group| (shared.filter.clone(), group.clone())),
                );
            });
        let any = !matched.is_empty() || !remote.is_empty();
        for (filter, group) in matched {
            let elsewhere = remote
                .iter()
                .position(|(f, g, _, _)| *f == filter && *g == group)
                .map(|at| remote.swap_remove(at));
            match elsewhere {
                Some((_, _, key, nodes)) => {
                    self.share_across_nodes(filter, group, key, nodes, true, message, now)
                }
                None => self.dispatch_shared(filter, group, Arc::clone(message), 0, None, now),
            }
        }
        for (filter, group, key, nodes) in remote {
            self.share_across_nodes(filter, group, key, nodes, false, message, now);
        }
        any
    }

    /// One message of a group with members on other `nodes` (and here, `here`): to this node's
    /// choice of member, or to the node whose turn it is.
    #[allow(clippy::too_many_arguments)]
    fn share_across_nodes(
        &mut self,
        filter: ByteString,
        group: ByteString,
        key: ByteString,
        nodes: u64,
        here: bool,
        message: &Arc<Message>,
        now: Instant,
    ) {
        let me = self.id;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        match cluster.pick_share(&key, here, nodes) {
            Some(node) => cluster.send(Arc::clone(message), node, me, Some(key)),
            None => self.dispatch_shared(filter, group, Arc::clone(message), 0, None, now),
        }
    }

    /// Picks a shard for one group and delivers there (here, or by mail). `reoffer`: the message
    /// is offered again after `drop_oldest` evicted it from a member, for that reason.
    pub(super) fn dispatch_shared(
        &mut self,
        filter: ByteString,
        group: ByteString,
        message: Arc<Message>,
        hops: u8,
        reoffer: Option<DropReason>,
        now: Instant,
    ) {
        let me = self.id;
        let shard_count = self.shard_count;
        let target = if hops > 0 {
            // Skip this shard: it already found no member (a stale count).
            self.other_shard(&filter, &group)
        } else {
            self.shared_interest
                .get_mut(&filter)
                .and_then(|s| s.groups.get_mut(&group))
                .and_then(WeightedShards::pick)
                .map(ShardId::new)
        };
        match target {
            Some(shard) if shard == me => {
                self.deliver_shared_local(filter, group, message, hops, reoffer, None, now)
            }
            Some(shard) if usize::from(hops) < shard_count => self.send_shared(
                shard,
                message,
                filter,
                group,
                hops.saturating_add(1),
                reoffer,
            ),
            _ => match reoffer {
                Some(reason) => self.count_shared_drop(reason),
                None => self.counters.dropped_no_subscribers += 1,
            },
        }
    }

    /// A shard other than this one with members of the group, in the group's weighted turn.
    fn other_shard(&mut self, filter: &ByteString, group: &ByteString) -> Option<ShardId> {
        let me = self.id.index();
        let weights = self
            .shared_interest
            .get_mut(filter)?
            .groups
            .get_mut(group)?;
        for _ in 0..weights.total() {
            match weights.pick()? {
                shard if shard == me => continue,
                shard => return Some(ShardId::new(shard)),
            }
        }
        None
    }

    /// Whether a member of the group here queued this record of a stream batch before (the
    /// batch came again after a restart): the turn may now pick another member than the one
    /// that did, so every member's note counts.
    fn member_queued_before(
        &self,
        filter: &ByteString,
        group: &ByteString,
        message: &Message,
    ) -> bool {
        let Some(tag) = self.tag_of(message.id) else {
            return false;
        };
        let members = self
            .shared_local
            .get(filter)
            .and_then(|groups| groups.get(group));
        members.is_some_and(|local| {
            local
                .members
                .iter()
                .any(|key| self.queued_before(tag, *key))
        })
    }

    fn shards_with_members(&self, filter: &ByteString, group: &ByteString) -> usize {
        self.shared_interest
            .get(filter)
            .and_then(|shared| shared.groups.get(group))
            .map_or(0, WeightedShards::shards)
            .min(self.shard_count)
    }

    fn send_shared(
        &mut self,
        shard: ShardId,
        message: Arc<Message>,
        filter: ByteString,
        group: ByteString,
        hops: u8,
        reoffer: Option<DropReason>,
    ) {
        let tag = self.tag_of(message.id);
        self.send_mail(
            shard,
            Mail::SharedPublish(Box::new(SharedPublish {
                message,
                filter,
                group,
                hops,
                reoffer,
                tag,
            })),
        );
    }

    /// A shared message that no member could take, counted as the limit that refused it.
    fn count_shared_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::ShardFull => self.counters.dropped_shard_full += 1,
            _ => self.counters.dropped_queue_full += 1,
        }
    }

    /// A message for one of this shard's members of a group (from a publish here or by mail).
    ///
    /// The member is picked in turn among, in order: connected members with room for it,
    /// offline members with room (`SessionState::room`; an offline member takes QoS 0 only when
    /// `queue_qos0_offline` is set). When no member here has room and another shard has
    /// members, the message moves on to it (fewer hops than shards with members). Only
    /// then does the outbox drop policy apply, to the member picked in turn (connected first).
    /// A message offered again (`reoffer`) goes only to a member with room, never to `not` (the
    /// member that evicted it), and is dropped, counted as `reoffer`'s reason, otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_shared_local(
        &mut self,
        filter: ByteString,
        group: ByteString,
        message: Arc<Message>,
        hops: u8,
        reoffer: Option<DropReason>,
        not: Option<SessionKey>,
        now: Instant,
    ) {
        if self.member_queued_before(&filter, &group, &message) {
            return self.skipped_stream_delivery();
        }
        let (with_room, full) = {
            let Shard {
                sessions,
                shared_local,
                settings,
                held,
                ..
            } = self;
            let limits = &settings.session;
            let size = message.size_bytes();
            let Some(LocalGroup { key: full, members }) = shared_local
                .get_mut(&filter)
                .and_then(|groups| groups.get_mut(&group))
            else {
                // Stale count: try another shard.
                let hops = hops.saturating_add(1);
                return self.dispatch_shared(filter, group, message, hops, reoffer, now);
            };
            let full = full.clone();
            let has_room = |key: &SessionKey, connected: bool| {
                if not == Some(*key) {
                    return false;
                }
                let Some(session) = sessions.get(*key) else {
                    return false;
                };
                let Some(subscription) = session.state.subscriptions.get(&full) else {
                    return false;
                };
                let online = session.conn.is_some();
                let qos = message.qos.min(subscription.options.qos);
                online == connected
                    && (online || qos != QoS::AtMostOnce || limits.queue_qos0_offline)
                    && session.state.room(size, limits, held).is_ok()
            };
            let picked = match members.pick_where(|key| has_room(key, true)).copied() {
                Some(key) => Some(key),
                None => members.pick_where(|key| has_room(key, false)).copied(),
            };
            (picked, full)
        };
        let key = match with_room {
            Some(key) => key,
            None => {
                // No member here has room: another shard's may. Each hop goes to the next shard
                // in the group's turn, and there are fewer hops than shards with members.
                let next = hops.saturating_add(1);
                if usize::from(next) < self.shards_with_members(&filter, &group)
                    && let Some(shard) = self.other_shard(&filter, &group)
                {
                    return self.send_shared(shard, message, filter, group, next, reoffer);
                }
                if let Some(reason) = reoffer {
                    return self.count_shared_drop(reason);
                }
                let sessions = &self.sessions;
                let online =
                    |key: &SessionKey| sessions.get(*key).is_some_and(|s| s.conn.is_some());
                let picked = self
                    .shared_local
                    .get_mut(&filter)
                    .and_then(|groups| groups.get_mut(&group))
                    .and_then(|local| match local.members.pick_where(online).copied() {
                        Some(key) => Some(key),
                        None => local.members.pick().copied(),
                    });
                let Some(key) = picked else {
                    self.counters.dropped_no_subscribers += 1;
                    return;
                };
                key
            }
        };
        let subscription = self
            .sessions
            .get(key)
            .and_then(|s| s.state.subscriptions.get(&full).copied());
        let Some(subscription) = subscription else {
            self.counters.dropped_no_subscribers += 1;
            return;
        };
        let identifiers = subscription.identifier.into_iter().collect();
        let reoffered = reoffer.is_some();
        self.deliver_with_origin(
            key,
            &message,
            subscription,
            identifiers,
            Some((filter, group)),
            reoffered,
            now,
        );
    }

    /// A member's session ended: its unfinished QoS > 0 messages of shared groups go to another
    /// member.
    pub(super) fn redispatch_shared(
        &mut self,
        pending: Vec<(Arc<Message>, ByteString, ByteString)>,
        now: Instant,
    ) {
        for (message, filter, group) in pending {
            self.dispatch_shared(filter, group, message, 0, None, now);
        }
    }
}

/// The session's key for a shared subscription: the filter as the client wrote it.
pub fn shared_key(group: &str, filter: &str) -> ByteString {
    ByteString::from(format!("$share/{group}/{filter}"))
}

impl Shard {
    /// Offers again to another member of their group the QoS > 0 shared messages that
    /// `drop_oldest` evicted from session `from` (each once; see `deliver_shared_local`).
    pub(super) fn reoffer_evicted(
        &mut self,
        from: SessionKey,
        evicted: &mut Vec<(crate::session::Delivery, DropReason)>,
        now: Instant,
    ) {
        for (delivery, reason) in evicted.drain(..) {
            match delivery.shared.map(|shared| *shared) {
                Some((filter, group)) => self.deliver_shared_local(
                    filter,
                    group,
                    delivery.message,
                    0,
                    Some(reason),
                    Some(from),
                    now,
                ),
                None => self.count_shared_drop(reason),
            }
        }
    }
}
