//! Shared subscriptions (MQTT 5.0 §4.8.2): `$share/{group}/{filter}`. Each message matching the
//! filter goes to exactly one member of each group, whichever shard the members are on.
//!
//! Every shard tells every other shard how many members each group has on it
//! (`Mail::SharedInterest`, an absolute count, so the last one wins). The publishing shard picks
//! one shard for each matching group in proportion to those counts; that shard picks one of its
//! members in turn, preferring connected ones. A pick can meet a stale count (the member just
//! left): the message then moves on to another shard with members, at most once per shard, and is
//! dropped and counted if none is left. When a member's session ends with QoS > 0 messages of the
//! group still queued or unacknowledged, they go to another member (§4.8.2).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::{SessionKey, Shard};
use crate::mail::{Mail, SharedInterest, SharedPublish};
use crate::message::Message;
use crate::router::{RoundRobin, WeightedShards};
use crate::session::Subscription;

/// Members of the groups of one filter on this shard: group -> members in turn order.
pub type LocalGroups = HashMap<ByteString, RoundRobin<SessionKey>>;

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
        let members = self
            .shared_local
            .get_or_insert_with(filter, LocalGroups::new)
            .entry(group.clone())
            .or_default();
        members.insert(key);
        let count = members.len();
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
        let Some(members) = groups.get_mut(group) else {
            return;
        };
        members.remove(&key);
        let count = members.len();
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
        self.set_shared_count(me, filter.clone(), group.clone(), count);
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

    /// Sends a message to one member of every shared group whose filter matches its topic.
    pub(super) fn route_shared(&mut self, message: &Arc<Message>, now: Instant) {
        if self.shared_interest.is_empty() {
            return;
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
        for (filter, group) in matched {
            self.dispatch_shared(filter, group, Arc::clone(message), 0, now);
        }
    }

    /// Picks a shard for one group and delivers there (here, or by mail).
    fn dispatch_shared(
        &mut self,
        filter: ByteString,
        group: ByteString,
        message: Arc<Message>,
        hops: u8,
        now: Instant,
    ) {
        let me = self.id;
        let shard_count = self.shard_count;
        let mut target = None;
        if let Some(weights) = self
            .shared_interest
            .get_mut(&filter)
            .and_then(|s| s.groups.get_mut(&group))
        {
            // Skip this shard when it already found no member (a stale count).
            for _ in 0..weights.total().max(1) {
                match weights.pick() {
                    Some(shard) if hops > 0 && shard == me.index() => continue,
                    Some(shard) => {
                        target = Some(ShardId::new(shard));
                        break;
                    }
                    None => break,
                }
            }
        }
        match target {
            Some(shard) if shard == me => {
                self.deliver_shared_local(filter, group, message, hops, now)
            }
            Some(shard) if usize::from(hops) < shard_count => self.send_mail(
                shard,
                Mail::SharedPublish(Box::new(SharedPublish {
                    message,
                    filter,
                    group,
                    hops: hops.saturating_add(1),
                })),
            ),
            _ => self.counters.dropped_no_subscribers += 1,
        }
    }

    /// A message for one of this shard's members of a group (from a publish here or by mail).
    pub(super) fn deliver_shared_local(
        &mut self,
        filter: ByteString,
        group: ByteString,
        message: Arc<Message>,
        hops: u8,
        now: Instant,
    ) {
        let sessions = &self.sessions;
        let chosen = self
            .shared_local
            .get_mut(&filter)
            .and_then(|groups| groups.get_mut(&group))
            .and_then(|members| {
                // A connected member first; an offline persistent one queues it otherwise.
                let online =
                    |key: &SessionKey| sessions.get(*key).is_some_and(|s| s.conn.is_some());
                match members.pick_where(online).copied() {
                    Some(key) => Some(key),
                    None => members.pick().copied(),
                }
            });
        let Some(key) = chosen else {
            // Stale count: try another shard.
            return self.dispatch_shared(filter, group, message, hops.saturating_add(1), now);
        };
        let full = shared_key(&group, &filter);
        let subscription = self
            .sessions
            .get(key)
            .and_then(|s| s.state.subscriptions.get(&full).copied());
        let Some(subscription) = subscription else {
            self.counters.dropped_no_subscribers += 1;
            return;
        };
        let identifiers = subscription.identifier.into_iter().collect();
        self.deliver_shared_to_session(
            key,
            &message,
            subscription,
            identifiers,
            (filter, group),
            now,
        );
    }

    fn deliver_shared_to_session(
        &mut self,
        key: SessionKey,
        message: &Arc<Message>,
        subscription: Subscription,
        identifiers: Vec<u32>,
        shared: (ByteString, ByteString),
        now: Instant,
    ) {
        self.deliver_with_origin(key, message, subscription, identifiers, Some(shared), now);
    }

    /// A member's session ended: its unfinished QoS > 0 messages of shared groups go to another
    /// member.
    pub(super) fn redispatch_shared(
        &mut self,
        pending: Vec<(Arc<Message>, ByteString, ByteString)>,
        now: Instant,
    ) {
        for (message, filter, group) in pending {
            self.dispatch_shared(filter, group, message, 0, now);
        }
    }
}

/// The session's key for a shared subscription: the filter as the client wrote it.
pub fn shared_key(group: &str, filter: &str) -> ByteString {
    ByteString::from(format!("$share/{group}/{filter}"))
}
