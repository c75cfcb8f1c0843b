//! SUBSCRIBE, UNSUBSCRIBE and the replicated interest index (MQTT 3.1.1 §3.8-§3.11, 5.0
//! §3.8-§3.11, §4.7).
//!
//! Each shard tells every other shard which filters it has local subscribers for (`Interest`, on
//! the first subscriber and after the last). A publishing shard forwards a message only to the
//! shards whose interest matches. SUBACK waits for a barrier: every other shard answers a
//! `Barrier` mail sent after the `Interest` on the same FIFO ring, so once SUBACK is out, a
//! PUBLISH accepted anywhere reaches the new subscription. The barrier replies also carry each
//! shard's retained messages matching the new filters.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::{ShardId, ShardSet};

use super::{ConnId, SessionKey, Shard};
use crate::mail::{Mail, RetainedQuery, Ticket};
use crate::message::Message;
use crate::metrics::LimitReached;
use crate::protocol::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription as TopicSubscription,
    UnsubAck, Unsubscribe, Version, parse_subscription,
};
use crate::session::Subscription;

/// What to do once every shard has answered a barrier.
#[derive(Debug)]
pub enum BarrierKind {
    /// Send SUBACK, then the retained messages found for `subscriptions[i]`.
    Subscribe {
        packet_id: crate::protocol::PacketId,
        reasons: Vec<ReasonCode>,
        subscriptions: Vec<Subscription>,
    },
    /// Send CONNACK (a resumed session's interest is now confirmed).
    Connect {
        session_present: bool,
        assigned: bool,
    },
    /// A moved-in session's interest is in place: tell the shard it came from.
    ConfirmMoved {
        client_id: ByteString,
        to: super::moving::Hop,
    },
    /// A former owner's tombstone may go: no stale message can still be in a ring to here.
    Tombstone {
        client_id: ByteString,
        to: super::moving::Hop,
    },
    /// A moved-in session's dedup window may close: no second copy can still be in a ring.
    CloseDedup { key: SessionKey },
    /// These confirmed retained writes may be forgotten here (see `retained`).
    RetainedSettled { writes: Vec<(ByteString, u64)> },
}

#[derive(Debug)]
pub struct PendingBarrier {
    conn: ConnId,
    session: SessionKey,
    waiting: usize,
    kind: BarrierKind,
    retained: Vec<(usize, Arc<Message>)>,
}

impl Shard {
    pub(super) fn on_subscribe(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        subscribe: Subscribe,
        now: Instant,
    ) {
        let version = self.conns.get(&conn_id).map_or(Version::V5, |c| c.version);
        if subscribe.filters.len() > self.settings.filters_per_subscribe_max
            || subscribe.properties.user_properties.len() > self.settings.user_properties_max
        {
            return self.close_with_reason(conn_id, ReasonCode::QUOTA_EXCEEDED, now);
        }
        if self.barriers.len() >= self.settings.control_pending_max {
            // Too many subscribes waiting on other shards: refuse this one, keep the connection.
            let reasons = vec![ReasonCode::QUOTA_EXCEEDED; subscribe.filters.len()];
            return self.write_suback(conn_id, subscribe.packet_id, reasons);
        }
        let identifier = subscribe.properties.subscription_identifier;
        // 5.0 §3.2.2.3.12: a client told they are not available must not send one.
        if identifier.is_some() && !self.settings.subscription_identifiers_available {
            return self.close_with_reason(
                conn_id,
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                now,
            );
        }
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut queries = Vec::new();
        let mut subscriptions = Vec::new();
        let mut new_filters = Vec::new();
        for request in subscribe.filters {
            let checked = self.check_filter(key, &request.filter).and_then(|parsed| {
                if self.may_subscribe(key, &request.filter) {
                    Ok(parsed)
                } else {
                    Err(ReasonCode::NOT_AUTHORIZED)
                }
            });
            if checked == Err(ReasonCode::QUOTA_EXCEEDED)
                && self.over_subscription_bytes(key, &request.filter)
            {
                self.metrics.limit_reached(LimitReached::SubscriptionBytes);
            }
            let reason = match checked {
                Err(reason) => reason,
                Ok(TopicSubscription::Shared { group, filter }) => {
                    // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
                    if request.options.no_local {
                        return self.close_protocol_error(conn_id, now);
                    }
                    let (subscription, existed) =
                        self.record_subscription(key, &request, identifier);
                    let granted = subscription.options.qos;
                    if !existed {
                        let filter = ByteString::from(filter.as_str());
                        self.add_shared_member(&filter, &group, key);
                    }
                    // Retained messages are not sent for a shared subscription (5.0 §4.8.2).
                    granted_code(granted)
                }
                Ok(TopicSubscription::Normal(_)) => {
                    let (subscription, existed) =
                        self.record_subscription(key, &request, identifier);
                    let (granted, options) = (subscription.options.qos, subscription.options);
                    if self.add_local_subscription(&request.filter, key, subscription) {
                        new_filters.push(request.filter.clone());
                    }
                    let send_retained = !version.is_v5()
                        || match options.retain_handling {
                            RetainHandling::OnSubscribe => true,
                            RetainHandling::OnNewSubscription => !existed,
                            RetainHandling::Never => false,
                        };
                    if send_retained {
                        queries.push(RetainedQuery {
                            filter: request.filter,
                            limit: self.settings.session.outbox_messages_max,
                        });
                        subscriptions.push(subscription);
                    }
                    granted_code(granted)
                }
            };
            reasons.push(reason);
        }
        if !new_filters.is_empty() {
            self.announce_interest(new_filters, Vec::new());
            // A publish on another shard finds the subscription only once this arrives: the
            // shell sends it at once rather than on the flush task's next turn.
            self.urgent_mail = true;
        }
        let kind = BarrierKind::Subscribe {
            packet_id: subscribe.packet_id,
            reasons,
            subscriptions,
        };
        self.start_barrier(conn_id, key, kind, queries, now);
    }

    /// Records a granted subscription in the session (granted QoS = min(requested, max_qos));
    /// says whether it replaced one with the same filter.
    fn record_subscription(
        &mut self,
        key: SessionKey,
        request: &crate::protocol::SubscribeFilter,
        identifier: Option<u32>,
    ) -> (Subscription, bool) {
        let mut options = request.options;
        options.qos = options.qos.min(self.settings.max_qos);
        let filter = &request.filter;
        let exact = !filter.contains(['+', '#']) && !filter.starts_with("$share/");
        let read_granted_generation = if exact && self.acl.is_some() && self.may_read(key, filter) {
            self.acl_generation
        } else {
            0
        };
        let subscription = Subscription {
            options,
            identifier,
            read_granted_generation,
        };
        let existed = self
            .sessions
            .get_mut(key)
            .and_then(|s| {
                s.state
                    .subscriptions
                    .insert(request.filter.clone(), subscription)
            })
            .is_some();
        if !existed {
            self.subscription_count += 1;
            self.subscription_bytes += request.filter.len();
        }
        self.store_meta(key);
        (subscription, existed)
    }

    /// Checks one filter of a SUBSCRIBE against the spec and our limits.
    fn check_filter(
        &self,
        key: SessionKey,
        filter: &ByteString,
    ) -> Result<TopicSubscription, ReasonCode> {
        let settings = &self.settings;
        let parsed =
            parse_subscription(filter.clone()).map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)?;
        let filter_text = match &parsed {
            TopicSubscription::Normal(f) => f,
            TopicSubscription::Shared { filter, .. } => {
                if !settings.shared_subscription_available {
                    return Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
                }
                filter
            }
        };
        if filter.len() > settings.topic_bytes_max
            || filter_text.levels() > settings.topic_levels_max
        {
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        if filter_text.has_wildcards() && !settings.wildcard_subscription_available {
            return Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        let session = self
            .sessions
            .get(key)
            .ok_or(ReasonCode::UNSPECIFIED_ERROR)?;
        if !session.state.subscriptions.contains_key(filter)
            && (session.state.subscriptions.len() >= settings.session.subscriptions_max
                || self.subscription_count >= settings.subscriptions_per_shard_max)
            || self.over_subscription_bytes(key, filter)
        {
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        Ok(parsed)
    }

    /// Whether `filter`, new to the session, would take the shard's filters over
    /// `limits.subscription_bytes_per_shard_max` (replacing a subscription adds nothing).
    fn over_subscription_bytes(&self, key: SessionKey, filter: &ByteString) -> bool {
        let new = self
            .sessions
            .get(key)
            .is_some_and(|s| !s.state.subscriptions.contains_key(filter));
        new && self.subscription_bytes + filter.len()
            > self.settings.subscription_bytes_per_shard_max
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        unsubscribe: Unsubscribe,
        now: Instant,
    ) {
        if unsubscribe.filters.len() > self.settings.filters_per_subscribe_max
            || unsubscribe.properties.user_properties.len() > self.settings.user_properties_max
        {
            return self.close_with_reason(conn_id, ReasonCode::QUOTA_EXCEEDED, now);
        }
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut gone = Vec::new();
        for filter in unsubscribe.filters {
            let existed = self
                .sessions
                .get_mut(key)
                .and_then(|s| s.state.subscriptions.remove(&filter))
                .is_some();
            if existed {
                self.subscription_count = self.subscription_count.saturating_sub(1);
                self.subscription_bytes = self.subscription_bytes.saturating_sub(filter.len());
                self.store_meta(key);
                match parse_subscription(filter.clone()) {
                    Ok(TopicSubscription::Shared {
                        group,
                        filter: inner,
                    }) => {
                        let inner = ByteString::from(inner.as_str());
                        self.remove_shared_member(&inner, &group, key);
                    }
                    _ => {
                        if self.remove_local_subscription(&filter, key) {
                            gone.push(filter);
                        }
                    }
                }
            }
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !gone.is_empty() {
            self.announce_interest(Vec::new(), gone);
        }
        let version = self.conns.get(&conn_id).map_or(Version::V5, |c| c.version);
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Default::default(),
            reasons: if version.is_v5() { reasons } else { Vec::new() },
        });
        self.write_packet(conn_id, &unsuback);
    }

    fn write_suback(
        &mut self,
        conn_id: ConnId,
        packet_id: crate::protocol::PacketId,
        reasons: Vec<ReasonCode>,
    ) {
        let suback = Packet::SubAck(SubAck {
            packet_id,
            properties: Default::default(),
            reasons,
        });
        self.write_packet(conn_id, &suback);
    }

    /// Adds a session to a filter's local subscribers; true if the filter is new on this shard.
    fn add_local_subscription(
        &mut self,
        filter: &str,
        key: SessionKey,
        subscription: Subscription,
    ) -> bool {
        let mut is_new = false;
        let subscribers = self.subscriptions.get_or_insert_with(filter, || {
            is_new = true;
            super::FastMap::default()
        });
        subscribers.insert(key, subscription);
        is_new
    }

    /// Removes a session from a filter's local subscribers; true if the filter is now gone here.
    fn remove_local_subscription(&mut self, filter: &str, key: SessionKey) -> bool {
        let Some(subscribers) = self.subscriptions.get_mut(filter) else {
            return false;
        };
        subscribers.remove(&key);
        if subscribers.is_empty() {
            self.subscriptions.remove(filter);
            return true;
        }
        false
    }

    /// Puts an installed session's subscriptions into the local trie (resumed or handed over).
    pub(super) fn add_session_subscriptions(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let subscriptions: Vec<(ByteString, Subscription)> = session
            .state
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        let mut new_filters = Vec::new();
        for (filter, subscription) in subscriptions {
            if let Ok(TopicSubscription::Shared {
                group,
                filter: inner,
            }) = parse_subscription(filter.clone())
            {
                let inner = ByteString::from(inner.as_str());
                self.add_shared_member(&inner, &group, key);
                continue;
            }
            if self.add_local_subscription(&filter, key, subscription) {
                new_filters.push(filter);
            }
        }
        if !new_filters.is_empty() {
            self.announce_interest(new_filters, Vec::new());
        }
    }

    /// Takes a session's subscriptions out of the local trie (it ends or moves away).
    pub(super) fn remove_session_subscriptions(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let filters: Vec<ByteString> = session.state.subscriptions.keys().cloned().collect();
        let mut gone = Vec::new();
        for filter in filters {
            if let Ok(TopicSubscription::Shared {
                group,
                filter: inner,
            }) = parse_subscription(filter.clone())
            {
                let inner = ByteString::from(inner.as_str());
                self.remove_shared_member(&inner, &group, key);
                continue;
            }
            if self.remove_local_subscription(&filter, key) {
                gone.push(filter);
            }
        }
        if !gone.is_empty() {
            self.announce_interest(Vec::new(), gone);
        }
    }

    /// Tells the other shards, and the cluster link, that filters got their first local
    /// subscriber or lost their last.
    fn announce_interest(&mut self, add: Vec<ByteString>, remove: Vec<ByteString>) {
        if let Some(cluster) = &self.cluster {
            cluster.handle().control(crate::cluster::ToLink::Interest {
                add: add.clone(),
                remove: remove.clone(),
            });
        }
        self.broadcast_mail(|| Mail::Interest {
            add: add.clone(),
            remove: remove.clone(),
        });
    }

    pub(super) fn on_interest(
        &mut self,
        from: ShardId,
        add: Vec<ByteString>,
        remove: Vec<ByteString>,
    ) {
        for filter in add {
            self.interest
                .get_or_insert_with(&filter, ShardSet::new)
                .insert(from);
        }
        for filter in remove {
            if let Some(set) = self.interest.get_mut(&filter) {
                set.remove(from);
                if set.is_empty() {
                    self.interest.remove(&filter);
                }
            }
        }
    }

    /// Starts a barrier across all shards (or completes at once on a single shard).
    fn start_barrier(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        kind: BarrierKind,
        queries: Vec<RetainedQuery>,
        now: Instant,
    ) {
        let retained = self.find_retained(&queries, now);
        let ticket = self.take_ticket();
        // A subscription (or a resumed session's) is promised cluster-wide: the link answers
        // once every known node has its interest (docs/CLUSTER.md). Sent after the interest,
        // on the same FIFO queue.
        let cluster_waits = matches!(
            kind,
            BarrierKind::Subscribe { .. } | BarrierKind::Connect { .. }
        ) && self.cluster.as_ref().is_some_and(|cluster| {
            cluster.handle().control(crate::cluster::ToLink::Barrier {
                shard: self.id,
                ticket,
            })
        });
        let pending = PendingBarrier {
            conn: conn_id,
            session: key,
            waiting: self.shard_count - 1 + usize::from(cluster_waits),
            kind,
            retained,
        };
        if pending.waiting == 0 {
            return self.complete_barrier(pending, now);
        }
        if self.shard_count > 1 {
            self.broadcast_mail(|| Mail::Barrier {
                ticket,
                queries: queries.clone(),
            });
        }
        self.barriers.insert(ticket, pending);
    }

    /// A resumed session's CONNACK waits for its interest to be confirmed; a new one does not.
    pub(super) fn subscribe_barrier_for_session(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        session_present: bool,
        assigned: bool,
        now: Instant,
    ) {
        let has_subscriptions = self
            .sessions
            .get(key)
            .is_some_and(|s| !s.state.subscriptions.is_empty());
        let kind = BarrierKind::Connect {
            session_present,
            assigned,
        };
        if has_subscriptions && (self.shard_count > 1 || self.cluster.is_some()) {
            self.start_barrier(conn_id, key, kind, Vec::new(), now);
        } else {
            self.complete_barrier(
                PendingBarrier {
                    conn: conn_id,
                    session: key,
                    waiting: 0,
                    kind,
                    retained: Vec::new(),
                },
                now,
            );
        }
    }

    pub(super) fn on_barrier(
        &mut self,
        from: ShardId,
        ticket: Ticket,
        queries: Vec<RetainedQuery>,
        now: Instant,
    ) {
        let retained = self.find_retained(&queries, now);
        self.send_mail(from, Mail::BarrierReply { ticket, retained });
    }

    pub(super) fn on_barrier_reply(
        &mut self,
        ticket: Ticket,
        retained: Vec<(usize, Arc<Message>)>,
        now: Instant,
    ) {
        let Some(pending) = self.barriers.get_mut(&ticket) else {
            return;
        };
        pending.retained.extend(retained);
        pending.waiting = pending.waiting.saturating_sub(1);
        if pending.waiting == 0
            && let Some(pending) = self.barriers.remove(&ticket)
        {
            self.complete_barrier(pending, now);
        }
    }

    /// A barrier that belongs to no connection: completes once every shard has answered.
    pub(super) fn start_flush_barrier(&mut self, kind: BarrierKind, now: Instant) {
        self.start_barrier(0, 0, kind, Vec::new(), now);
    }

    fn complete_barrier(&mut self, pending: PendingBarrier, now: Instant) {
        match pending.kind {
            BarrierKind::ConfirmMoved { client_id, to } => {
                let ticket = to.ticket;
                return self.send_mail(to.shard, Mail::Confirmed { client_id, ticket });
            }
            BarrierKind::Tombstone { client_id, to } => return self.tombstone_done(client_id, to),
            BarrierKind::CloseDedup { key } => return self.close_dedup(key),
            BarrierKind::RetainedSettled { writes } => return self.retained_settled(writes, now),
            BarrierKind::Connect { .. } | BarrierKind::Subscribe { .. } => {}
        }
        // The connection must still be the one bound to (or connecting to) that session.
        let Some(conn) = self.conns.get(&pending.conn) else {
            return;
        };
        if conn.is_closing() || conn.session() != Some(pending.session) {
            return;
        }
        match pending.kind {
            BarrierKind::Connect {
                session_present,
                assigned,
            } => self.send_connack(
                pending.conn,
                pending.session,
                session_present,
                assigned,
                now,
            ),
            BarrierKind::ConfirmMoved { .. }
            | BarrierKind::Tombstone { .. }
            | BarrierKind::CloseDedup { .. }
            | BarrierKind::RetainedSettled { .. } => {}
            BarrierKind::Subscribe {
                packet_id,
                reasons,
                subscriptions,
            } => {
                self.write_suback(pending.conn, packet_id, reasons);
                for (index, message) in super::retained::newest_retained(pending.retained) {
                    if let Some(subscription) = subscriptions.get(index).copied() {
                        let identifiers = subscription.identifier.into_iter().collect();
                        self.deliver_to_session(
                            pending.session,
                            &message,
                            subscription,
                            identifiers,
                            true,
                            now,
                        );
                    }
                }
            }
        }
    }

    /// This shard's retained messages matching each query (bounded by the query's limit), and
    /// its writes still on their way to their home shard (see `retained`).
    fn find_retained(&self, queries: &[RetainedQuery], now: Instant) -> Vec<(usize, Arc<Message>)> {
        let mut found = Vec::new();
        for (index, query) in queries.iter().enumerate() {
            let mut count = 0;
            self.retained
                .for_each_matching(&query.filter, |_, message| {
                    if count < query.limit && !message.is_expired(now) {
                        found.push((index, Arc::clone(message)));
                        count += 1;
                    }
                });
            self.retained_sending_matching(index, &query.filter, now, &mut found);
        }
        found
    }
}

fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GRANTED_QOS_1,
        QoS::ExactlyOnce => ReasonCode::GRANTED_QOS_2,
    }
}
