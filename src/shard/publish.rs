//! PUBLISH in both directions and its acknowledgements (MQTT 3.1.1 §3.3-§3.7, §4.3, §4.6;
//! 5.0 §3.3-§3.7, §4.3, §4.9).
//!
//! Incoming: QoS 1 is acknowledged after routing; QoS 2 is routed when first received and its
//! packet id held until PUBREL, so a repeat before PUBREL is acknowledged but not routed again
//! (MQTT 4.3.3, "method A"). Outgoing: each subscriber's session hands out deliveries in order,
//! QoS > 0 only while the in-flight window has room; bytes go into the connection's write buffer
//! and the shell writes each buffer once per batch.

use std::sync::Arc;
use std::time::Instant;

use shards::ShardSet;

use super::aliases::AliasUse;
use super::{ConnId, SessionKey, Shard};
use crate::mail::Mail;
use crate::message::Message;
use crate::protocol::{
    self, Packet, PubResponse, Publish, PublishProperties, PublishProps, PublishRef, QoS,
    ReasonCode,
};
use crate::session::{Delivery, DropReason, InflightState, Subscription};

impl Shard {
    pub(super) fn on_publish(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        mut publish: Publish,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let is_v5 = conn.version.is_v5();
        // 5.0 §3.3.2.3.4: resolve or record a Topic Alias.
        if let Some(alias) = publish.properties.topic_alias {
            if alias == 0 || alias > self.settings.topic_alias_max {
                return self.close_with_reason(conn_id, ReasonCode::TOPIC_ALIAS_INVALID, now);
            }
            if publish.topic.is_empty() {
                match conn.topic_aliases.get(alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => return self.close_protocol_error(conn_id, now),
                }
            } else if conn
                .topic_aliases
                .bind(alias, &publish.topic, &mut self.alias_allowance)
                .is_err()
            {
                self.metrics
                    .limit_reached(crate::metrics::LimitReached::TopicAliases);
                return self.close_with_reason(conn_id, ReasonCode::QUOTA_EXCEEDED, now);
            }
        }
        if publish.topic.is_empty() {
            return self.close_with_reason(conn_id, ReasonCode::TOPIC_NAME_INVALID, now);
        }
        // MQTT-3.3.4-6: a client must not send Subscription Identifiers; MQTT-3.3.2-14: a
        // Response Topic is a topic name, without wildcards.
        if !publish.properties.subscription_identifiers.is_empty()
            || publish
                .properties
                .response_topic
                .as_ref()
                .is_some_and(|t| protocol::validate_topic_name(t).is_err())
        {
            return self.close_protocol_error(conn_id, now);
        }
        // 5.0 §3.3.2.3.2: a payload declared UTF-8 must be (checked when configured).
        if self.settings.payload_format_check
            && publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            return self.close_with_reason(conn_id, ReasonCode::PAYLOAD_FORMAT_INVALID, now);
        }
        let settings = &self.settings;
        if publish.properties.user_properties.len() > settings.user_properties_max {
            return self.close_with_reason(conn_id, ReasonCode::QUOTA_EXCEEDED, now);
        }
        if publish.topic.len() > settings.topic_bytes_max
            || protocol::topic_levels(&publish.topic) > settings.topic_levels_max
        {
            return self.close_with_reason(conn_id, ReasonCode::TOPIC_NAME_INVALID, now);
        }
        if publish.qos > settings.max_qos {
            return self.close_with_reason(conn_id, ReasonCode::QOS_NOT_SUPPORTED, now);
        }
        if publish.retain && !settings.retain_available {
            return self.close_with_reason(conn_id, ReasonCode::RETAIN_NOT_SUPPORTED, now);
        }
        let allowed = self.conns.get(&conn_id).is_some_and(|conn| {
            self.may_write(&conn.client_id, conn.username.as_deref(), &publish.topic)
        });
        if !allowed {
            return self.deny_publish(conn_id, key, publish.qos, publish.packet_id, now);
        }
        if publish.qos != QoS::AtMostOnce && !self.store_accepts() {
            // The log cannot take records: nothing is promised that it cannot keep.
            if let Some(packet_id) = publish.packet_id {
                let response = ack(packet_id);
                let packet = if publish.qos == QoS::AtLeastOnce {
                    Packet::PubAck(response)
                } else {
                    Packet::PubRec(response)
                };
                self.refuse_ack(conn_id, packet);
            }
            return;
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let publisher = session.state.client_id.clone();
        if publish.qos == QoS::ExactlyOnce {
            let Some(packet_id) = publish.packet_id else {
                return self.close_protocol_error(conn_id, now);
            };
            // 5.0 §3.3.4: more unacknowledged QoS 2 than our Receive Maximum. 3.x has no flow
            // control, yet a cap of its own holds (the connection is closed: a 3.x server has no
            // other answer, §4.8): every id awaiting PUBREL is kept in the session, its store
            // records and its mirror record, which must not grow up to the id space. Checked
            // before the id is kept: an id kept for a PUBLISH refused here would make the copy the
            // client sends again after reconnecting (a persistent session) look like a repeat,
            // acknowledged and never routed.
            let awaiting_max = if is_v5 {
                self.settings.session.inflight_messages_max
            } else {
                self.settings.incoming_qos2_v3_max
            };
            if !session.state.awaits_pubrel(packet_id)
                && session.state.incoming_qos2_len() >= awaiting_max
            {
                return self.close_with_reason(conn_id, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, now);
            }
            let first_time = session.state.receive_qos2(packet_id);
            self.store_begin_route();
            let mut matched = true;
            if first_time {
                self.store_touch(key);
                let id = self.take_message_id();
                matched = self.route(Message::from_publish(id, publish, publisher, now), now);
                self.mirror_received_qos2(key);
            }
            let pubrec = Packet::PubRec(ack_routed(packet_id, matched || !is_v5));
            return self.ack_after_cluster(conn_id, pubrec, first_time);
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        let id = self.take_message_id();
        self.store_begin_route();
        let matched = self.route(Message::from_publish(id, publish, publisher, now), now);
        if qos == QoS::AtLeastOnce
            && let Some(packet_id) = packet_id
        {
            let puback = Packet::PubAck(ack_routed(packet_id, matched || !is_v5));
            self.ack_after_cluster(conn_id, puback, true);
        }
    }

    /// Publishes one `$SYS` topic (retained, QoS 0) as the broker itself.
    pub fn publish_sys(&mut self, topic: String, payload: String, now: Instant) {
        let id = self.take_message_id();
        let message = Arc::new(Message {
            id,
            topic: bytestring::ByteString::from(topic),
            payload: bytes::Bytes::from(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProps::none(),
            publisher: bytestring::ByteString::from_static("$SYS"),
            received_at: now,
            expires_at: None,
        });
        self.route(message, now);
    }

    /// Sends a message everywhere it goes: the retained store, local subscribers, and every shard
    /// that has declared interest in a matching filter. False when no subscription matched here
    /// and no other shard declared a matching interest (the PUBACK's 0x10, 5.0 §3.4.2.1).
    pub(super) fn route(&mut self, message: Arc<Message>, now: Instant) -> bool {
        self.counters.messages_received += 1;
        if message.retain {
            let home = self.home_of(&message.topic);
            if home == self.id {
                self.store_retained(Arc::clone(&message));
            } else {
                self.send_retained(home, Arc::clone(&message));
            }
        }
        // Before the local deliveries: a copy of one queued for an offline persistent session
        // here is waited for too.
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.begin_route();
        }
        let mut matched = self.deliver_local(&message, now);
        matched |= self.route_shared(&message, now);
        if let Some(cluster) = self.cluster.as_mut() {
            // `$SYS` topics describe this node: they stay on it.
            let nodes = if is_sys_topic(&message.topic) {
                0
            } else {
                cluster.nodes_for(&message.topic)
            };
            // Another node has a subscriber, whether or not the link has room for it.
            matched |= nodes != 0;
            // A retained write goes to the cluster's retained stream even without remote
            // interest (not `$SYS`: it describes this node).
            let retained = message.retain && nodes_share_retained(cluster, &message.topic);
            if nodes != 0 || retained {
                cluster.send(Arc::clone(&message), nodes, self.id, None);
            }
        }
        matched | self.mail_interested_shards(&message)
    }

    /// A message from another node of the cluster: to this node's subscribers only (never back
    /// to NATS, not into the retained store, not to shared groups: docs/CLUSTER.md).
    /// Counted by the link (`ringmq_cluster_messages_total{direction="in"}`), not as received
    /// from a client.
    pub(super) fn route_remote(&mut self, message: Arc<Message>, now: Instant) {
        self.store_begin_route();
        self.deliver_local(&message, now);
        self.mail_interested_shards(&message);
        self.routed_remote_when_durable();
    }

    /// A message from another node for one member of a shared group on this node (docs/CLUSTER.md,
    /// "Shared subscriptions"): this node's choice of shard and member, as for a local publish.
    /// A record of a stream batch keeps its tag on the way to the member (docs/CLUSTER.md,
    /// "Exactly once for QoS 2 across nodes").
    pub(super) fn route_remote_shared(&mut self, shared: crate::mail::SharedPublish, now: Instant) {
        self.store_begin_route();
        let crate::mail::SharedPublish {
            message,
            filter,
            group,
            tag,
            ..
        } = shared;
        self.with_tag(tag, message.id, |shard| {
            shard.dispatch_shared(filter, group, message, 0, None, now)
        });
        self.routed_remote_when_durable();
    }

    /// Mails the message to every other shard whose replicated interest matches its topic.
    fn mail_interested_shards(&mut self, message: &Arc<Message>) -> bool {
        self.mail_interested_shards_as(message, Mail::Publish)
    }

    /// As `mail_interested_shards`, each mail made by `mail` (a stream record keeps its tag).
    pub(super) fn mail_interested_shards_as(
        &mut self,
        message: &Arc<Message>,
        mail: impl Fn(Arc<Message>) -> Mail,
    ) -> bool {
        let mut matched = false;
        let mut targets = ShardSet::new();
        self.interest
            .for_each_match(&message.topic, |set| targets = targets.union(set));
        // Skip this shard while iterating rather than `remove` it first: a one-word store into
        // the set followed by the iterator's copy of all of it stalled on store forwarding (the
        // hottest instructions of `route` in a fan-in profile).
        if targets.is_empty() {
            return matched;
        }
        for shard in targets.iter() {
            if shard != self.id {
                matched = true;
                self.send_mail(shard, mail(Arc::clone(message)));
            }
        }
        matched
    }

    /// Delivers to the subscribers on this shard: once per session, at the highest QoS of its
    /// matching subscriptions, with all their Subscription Identifiers (MQTT-3.3.5-1, 5.0 §3.3.4).
    /// True when a subscription matched.
    pub(super) fn deliver_local(&mut self, message: &Arc<Message>, now: Instant) -> bool {
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.subscriptions
            .for_each_match(&message.topic, |subscribers| {
                matches.extend(subscribers.iter().map(|(key, sub)| (*key, *sub)));
            });
        let matched = !matches.is_empty();
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|(key, _)| *key);
        }
        let mut index = 0;
        let generation = self.acl_generation;
        // Several sessions get this message: share its encoding (see `PublishCache`).
        self.publish_cache.active = matches.len() > 1;
        while let Some((key, first)) = matches.get(index).copied() {
            let mut read_granted_generation = first.read_granted_generation;
            let mut qos = first.options.qos;
            let mut retain_as_published = first.options.retain_as_published;
            let mut no_local = first.options.no_local;
            let mut identifiers = Vec::new();
            identifiers.extend(first.identifier);
            index += 1;
            while let Some((next_key, sub)) = matches.get(index).copied() {
                if next_key != key {
                    break;
                }
                qos = qos.max(sub.options.qos);
                retain_as_published |= sub.options.retain_as_published;
                no_local &= sub.options.no_local;
                identifiers.extend(sub.identifier);
                if sub.read_granted_generation == generation {
                    read_granted_generation = generation;
                }
                index += 1;
            }
            let merged = Subscription {
                options: crate::protocol::SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    ..first.options
                },
                identifier: None,
                read_granted_generation,
            };
            self.deliver_to_session(key, message, merged, identifiers, false, now);
        }
        self.publish_cache.active = false;
        self.matches = matches;
        self.forward_to_tombstones(message);
        matched
    }

    /// Queues one message for one session and, when it is online, writes what may go now.
    pub(super) fn deliver_to_session(
        &mut self,
        key: SessionKey,
        message: &Arc<Message>,
        subscription: Subscription,
        subscription_identifiers: Vec<u32>,
        from_retained_store: bool,
        now: Instant,
    ) {
        let origin = None;
        self.deliver_inner(
            key,
            message,
            subscription,
            subscription_identifiers,
            from_retained_store,
            origin,
            false,
            now,
        );
    }

    /// A delivery through a shared subscription (`shared`: filter and group); `reoffered`: offered
    /// again after `drop_oldest` evicted it from another member.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_with_origin(
        &mut self,
        key: SessionKey,
        message: &Arc<Message>,
        subscription: Subscription,
        subscription_identifiers: Vec<u32>,
        shared: Option<(bytestring::ByteString, bytestring::ByteString)>,
        reoffered: bool,
        now: Instant,
    ) {
        self.deliver_inner(
            key,
            message,
            subscription,
            subscription_identifiers,
            false,
            shared,
            reoffered,
            now,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_inner(
        &mut self,
        key: SessionKey,
        message: &Arc<Message>,
        subscription: Subscription,
        subscription_identifiers: Vec<u32>,
        from_retained_store: bool,
        shared: Option<(bytestring::ByteString, bytestring::ByteString)>,
        reoffered: bool,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get(key) else {
            self.counters.dropped_no_session += 1;
            return;
        };
        if subscription.options.no_local && message.publisher == session.state.client_id {
            return;
        }
        if self.acl.is_some()
            && subscription.read_granted_generation != self.acl_generation
            && !self.may_read(key, &message.topic)
        {
            self.metrics
                .messages_dropped(crate::metrics::DropReason::NotAuthorized, 1);
            return;
        }
        let retain = if from_retained_store {
            true
        } else {
            message.retain && subscription.options.retain_as_published
        };
        let delivery = Delivery {
            message: Arc::clone(message),
            qos: message.qos.min(subscription.options.qos),
            retain,
            subscription_identifiers,
            shared: shared.map(Box::new),
            reoffered,
        };
        if let Some(to) = session.forward_to {
            let client_id = session.state.client_id.clone();
            return self.forward(to, client_id, delivery);
        }
        // While a moved-in session waits for its former owner's forwards, messages routed here
        // directly wait behind them, so each publisher's order is kept across the move.
        if let Some(held) = self.sessions.get_mut(key).and_then(|s| s.held.as_mut()) {
            if held.len() < self.settings.session.outbox_messages_max {
                held.push(delivery);
            } else {
                self.counters.dropped_queue_full += 1;
            }
            return;
        }
        self.enqueue_delivery(key, delivery, now);
    }

    /// Queues a delivery in a session (dropping a second copy while the session moves in) and,
    /// when it is online, writes what may go now.
    pub(super) fn enqueue_delivery(&mut self, key: SessionKey, delivery: Delivery, now: Instant) {
        let clustered = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.handle().shares_retained());
        // A record of a stream batch: once per persisted session, across restarts too.
        let tag = self.tag_of(delivery.message.id);
        if let Some(tag) = tag
            && self.queued_before(tag, key)
        {
            return self.skipped_stream_delivery();
        }
        let Some(session) = self.sessions.get_mut(key) else {
            self.counters.dropped_no_session += 1;
            return;
        };
        if Shard::seen_before(&mut session.dedup, &delivery) {
            self.counters.duplicates_dropped += 1;
            return;
        }
        let online = session.conn;
        // A QoS 1/2 message for a persistent session, connected or not, is also kept in the
        // cluster's stream until acknowledged, for a resume on another node if this one dies
        // (docs/CLUSTER.md).
        let copy = (clustered && session.state.expiry_secs > 0 && delivery.qos != QoS::AtMostOnce)
            .then(|| {
                let client_id = session.state.client_id.clone();
                (client_id, Arc::clone(&delivery.message), delivery.qos)
            });
        let limits = &self.settings.session;
        // Shared messages evicted to make room go to another member of their group (below).
        let mut evicted_shared = std::mem::take(&mut self.evicted_shared);
        match session.state.enqueue(
            delivery,
            online.is_some(),
            limits,
            &mut self.held,
            now,
            &mut evicted_shared,
        ) {
            Ok(evicted) => {
                self.counters.dropped_queue_full += evicted.queue_full as u64;
                self.counters.dropped_shard_full += evicted.shard_full as u64;
                if let Some((client_id, message, qos)) = copy {
                    self.copy_queued(client_id, message, qos);
                }
                if let Some(tag) = tag {
                    self.note_stream_delivery(tag, key);
                }
            }
            Err(DropReason::QueueFull) => self.counters.dropped_queue_full += 1,
            Err(DropReason::ShardFull) => self.counters.dropped_shard_full += 1,
            Err(DropReason::Expired) => self.counters.dropped_expired += 1,
            Err(DropReason::Qos0Offline) => self.counters.dropped_qos0_offline += 1,
        }
        self.store_touch(key);
        if let Some(conn_id) = online {
            self.pump_conn(conn_id, now);
        }
        if !evicted_shared.is_empty() {
            self.reoffer_evicted(key, &mut evicted_shared, now);
        }
        self.evicted_shared = evicted_shared;
    }

    /// Moves deliveries from a session's outbox into its connection's write buffer while the
    /// window and the buffer allow.
    pub(super) fn pump_conn(&mut self, conn_id: ConnId, now: Instant) {
        let Shard {
            id,
            conns,
            sessions,
            settings,
            counters,
            dirty,
            unstamped,
            metrics,
            held,
            publish_cache,
            alias_allowance,
            write_bytes,
            write_waiting,
            ..
        } = self;
        let Some(conn) = conns.get_mut(&conn_id) else {
            return;
        };
        // CONNACK is the first packet the server sends (MQTT-3.2.0-1): a resuming session's
        // deliveries wait for it.
        let super::Phase::Active { session: key } = conn.phase else {
            return;
        };
        let Some(session) = sessions.get_mut(key) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        let was_empty = conn.out.is_empty();
        let mut expired = 0;
        while conn.out.len() < settings.write_buffer_bytes_max && conn.unsent.has_room() {
            let Some(size) = session.state.next_size() else {
                break;
            };
            let (share, cap) = (
                settings.write_share_bytes,
                settings.write_buffer_bytes_per_shard_max,
            );
            let counted = conn.out_counted as usize;
            if !super::writes::write_room(counted, *write_bytes, size, share, cap) {
                if !conn.write_waiting {
                    conn.write_waiting = true;
                    write_waiting.push(conn_id);
                    metrics.limit_reached(crate::metrics::LimitReached::WriteBytes);
                }
                break;
            }
            let before = conn.out.len();
            let Some(crate::session::Outgoing {
                packet_id,
                delivery,
                queued_at,
            }) = session
                .state
                .next_to_send(conn.send_window, now, &mut expired, held)
            else {
                break;
            };
            let written = write_publish(
                &mut conn.out,
                conn.version,
                conn.client_packet_bytes_max,
                &delivery,
                packet_id,
                false,
                Some((&mut conn.aliases_to_client, &mut *alias_allowance)),
                Some(&mut *publish_cache).filter(|cache| cache.active),
                now,
            );
            let added = conn.out.len() - before;
            // At most the buffer's limit and one packet: well within u32.
            conn.out_counted = conn.out_counted.saturating_add(added as u32);
            *write_bytes += added;
            if written {
                counters.messages_sent += 1;
                metrics.packet_sent(crate::metrics::PacketKind::Publish);
                metrics.message_sent(delivery.qos);
                metrics.record_outbox_wait(crate::metrics::micros_between(queued_at, now));
                // The delivery latency is recorded by the writer when the write completes. A
                // delivery with the retain flag is left out: sent because of a subscription, its
                // age is the retained store's, not the broker's delay (live messages forwarded
                // with Retain As Published are left out with them).
                if !delivery.retain {
                    let path = if super::message_shard(delivery.message.id) == id.index() {
                        crate::metrics::Path::Local
                    } else {
                        crate::metrics::Path::CrossShard
                    };
                    let read_at = delivery.message.received_at;
                    if conn.unsent.push(read_at, delivery.qos, path, now) {
                        unstamped.push(conn_id);
                    }
                }
            } else {
                // Larger than the client accepts (5.0 §3.1.2.11.4): dropped, and its packet id
                // freed at once.
                counters.dropped_too_large += 1;
                if let Some(packet_id) = packet_id {
                    session.state.inflight.forget(packet_id, held);
                }
            }
        }
        counters.dropped_expired += expired;
        for _ in 0..alias_allowance.take_refused() {
            metrics.limit_reached(crate::metrics::LimitReached::TopicAliases);
        }
        if was_empty && !conn.out.is_empty() {
            dirty.push(conn_id);
        }
        self.store_touch(key);
    }

    /// After a reconnect: unacknowledged PUBLISH again with DUP set, and PUBREL for released
    /// QoS 2 messages, in their original order (MQTT-4.4.0-1).
    pub(super) fn resend_inflight(&mut self, conn_id: ConnId, key: SessionKey, now: Instant) {
        let Shard {
            conns, sessions, ..
        } = self;
        let (Some(conn), Some(session)) = (conns.get_mut(&conn_id), sessions.get(key)) else {
            return;
        };
        for entry in session.state.inflight.iter() {
            match &entry.state {
                InflightState::Sent(delivery) => {
                    write_publish(
                        &mut conn.out,
                        conn.version,
                        conn.client_packet_bytes_max,
                        delivery,
                        Some(entry.packet_id),
                        true,
                        None,
                        None,
                        now,
                    );
                }
                InflightState::Released => {
                    let pubrel = Packet::PubRel(ack(entry.packet_id));
                    let _ = protocol::encode(&pubrel, conn.version, &mut conn.out, usize::MAX);
                }
            }
        }
        if !conn.out.is_empty() {
            self.dirty.push(conn_id);
        }
    }

    pub(super) fn on_puback(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        ack: PubResponse,
        now: Instant,
    ) {
        if let Some(session) = self.sessions.get_mut(key) {
            session.state.inflight.puback(ack.packet_id, &mut self.held);
        }
        self.store_touch(key);
        self.pump_conn(conn_id, now);
    }

    pub(super) fn on_pubrec(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        rec: PubResponse,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if rec.reason.is_error() {
            // 5.0 §4.3.3: a PUBREC with an error ends the exchange.
            session.state.inflight.forget(rec.packet_id, &mut self.held);
            self.store_touch(key);
            return self.pump_conn(conn_id, now);
        }
        let known = session.state.inflight.pubrec(rec.packet_id, &mut self.held);
        self.store_touch(key);
        self.write_packet(conn_id, &Packet::PubRel(ack_known(rec.packet_id, known)));
    }

    pub(super) fn on_pubrel(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        rel: PubResponse,
        _now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let known = session.state.release_qos2(rel.packet_id);
        self.store_touch(key);
        self.complete_qos2(conn_id, key, ack_known(rel.packet_id, known), known);
    }

    pub(super) fn on_pubcomp(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        comp: PubResponse,
        now: Instant,
    ) {
        if let Some(session) = self.sessions.get_mut(key) {
            session
                .state
                .inflight
                .pubcomp(comp.packet_id, &mut self.held);
        }
        self.store_touch(key);
        self.pump_conn(conn_id, now);
    }

    /// Stores, replaces or (empty payload) deletes a retained message in this shard's partition.
    pub(super) fn store_retained(&mut self, message: Arc<Message>) {
        let replaced = self.retained.remove(&message.topic).is_some_and(|old| {
            self.retained_bytes = self.retained_bytes.saturating_sub(old.size_bytes());
            true
        });
        if message.payload.is_empty() {
            if replaced {
                self.store_retained_change(&message);
            }
            return;
        }
        let size = message.size_bytes();
        if self.retained.len() >= self.settings.retained_messages_max
            || self.retained_bytes + size > self.settings.retained_bytes_max
        {
            self.counters.dropped_retained_full += 1;
            if replaced {
                // The old message is gone too: the log says so.
                self.store_retained_clear(&message.topic);
            }
            return;
        }
        self.retained_bytes += size;
        self.store_retained_change(&message);
        let topic = message.topic.clone();
        self.retained.insert(&topic, message);
    }
}

fn ack(packet_id: crate::protocol::PacketId) -> PubResponse {
    PubResponse {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    }
}

/// Whether a retained write on `topic` goes to the cluster's retained stream.
fn nodes_share_retained(cluster: &crate::cluster::ShardLink, topic: &str) -> bool {
    cluster.handle().shares_retained() && !is_sys_topic(topic)
}

/// The PUBACK or PUBREC of a message that found a subscriber (`matched`) or none: 0x10, which
/// the encoder leaves off the wire before 5.0.
fn ack_routed(packet_id: crate::protocol::PacketId, matched: bool) -> PubResponse {
    let mut response = ack(packet_id);
    if !matched {
        response.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    }
    response
}

/// The answer to PUBREC or PUBREL: 0x92 when the packet id was not in use (5.0 §3.6.2.1,
/// §3.7.2.1); before 5.0 the code is not on the wire.
fn ack_known(packet_id: crate::protocol::PacketId, known: bool) -> PubResponse {
    let mut response = ack(packet_id);
    if !known {
        response.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    }
    response
}

/// `$SYS` or a topic under it: the broker's own, per node.
pub(super) fn is_sys_topic(topic: &str) -> bool {
    topic
        .strip_prefix("$SYS")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The PUBLISH last encoded for a subscriber, so that the next subscribers of the same message
/// get a copy of its bytes instead of another encoding (fan-out). A message's bytes differ
/// between subscribers only by what `CacheKey` names and by the packet id, which is patched in;
/// deliveries with properties of their own (Subscription Identifiers, a remaining Message
/// Expiry Interval, a Topic Alias) are always encoded. Used only while `deliver_local` hands
/// one message to several sessions (`active`): a message with one subscriber, or a backlog
/// pumped later, pays nothing for it.
#[derive(Debug, Default)]
pub(super) struct PublishCache {
    active: bool,
    /// What `bytes` holds a frame of, if anything.
    key: Option<CacheKey>,
    bytes: Vec<u8>,
    /// Where the packet id is in `bytes` (QoS 1 and 2).
    packet_id_at: usize,
}

/// What makes two encodings of one message differ, the packet id aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    /// `Message::id` and the allocation: the same message, not merely an equal id.
    message: u64,
    address: usize,
    v5: bool,
    qos: QoS,
    retain: bool,
    dup: bool,
}

/// Frames over this are encoded every time: their cost is the payload copy either way.
const CACHED_FRAME_BYTES_MAX: usize = 16 * 1024;

impl PublishCache {
    /// Appends the cached frame for `key` with `packet_id` patched in; `None` on a miss (the
    /// caller encodes, then calls `encoded`).
    fn write(
        &mut self,
        key: CacheKey,
        out: &mut bytes::BytesMut,
        packet_bytes_max: usize,
        packet_id: Option<crate::protocol::PacketId>,
    ) -> Option<bool> {
        if self.key != Some(key) {
            return None;
        }
        if self.bytes.len() > packet_bytes_max {
            return Some(false);
        }
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(packet_id) = packet_id {
            let at = start + self.packet_id_at;
            if let Some(slot) = out.get_mut(at..at + 2) {
                slot.copy_from_slice(&packet_id.get().to_be_bytes());
            }
        }
        Some(true)
    }

    /// After a miss: `frame` was just encoded for `key` (`topic_len`: its topic's length).
    fn encoded(&mut self, key: CacheKey, frame: &[u8], topic_len: usize) {
        if frame.len() > CACHED_FRAME_BYTES_MAX {
            self.key = None;
            return;
        }
        // Fixed header: the first byte and the Remaining Length (1-4 bytes, the last < 0x80);
        // then the topic with its 2-byte length, then the packet id.
        let length_bytes = frame
            .iter()
            .skip(1)
            .take(4)
            .position(|byte| byte & 0x80 == 0)
            .map_or(4, |last| last + 1);
        self.packet_id_at = 1 + length_bytes + 2 + topic_len;
        self.bytes.clear();
        self.bytes.extend_from_slice(frame);
        self.key = Some(key);
    }
}

/// Encodes one delivery in the subscriber's version. False when it is over the client's maximum
/// packet size (nothing written).
#[allow(clippy::too_many_arguments)]
fn write_publish(
    out: &mut bytes::BytesMut,
    version: protocol::Version,
    packet_bytes_max: usize,
    delivery: &Delivery,
    packet_id: Option<crate::protocol::PacketId>,
    dup: bool,
    aliases: Option<(
        &mut super::aliases::TopicAliases,
        &mut super::aliases::AliasAllowance,
    )>,
    cache: Option<&mut PublishCache>,
    now: Instant,
) -> bool {
    let message = &delivery.message;
    let alias = match aliases {
        // Without room in the shard's alias tables the full topic goes (counted by the caller).
        Some((aliases, allowance)) if version.is_v5() => {
            aliases.alias_for(&message.topic, allowance).ok().flatten()
        }
        _ => None,
    };
    let adjusted;
    let properties: &PublishProperties = if version.is_v5()
        && (!delivery.subscription_identifiers.is_empty()
            || message.expires_at.is_some()
            || alias.is_some())
    {
        let mut p = PublishProperties::clone(&message.properties);
        p.subscription_identifiers = delivery.subscription_identifiers.clone();
        p.message_expiry_interval_secs = message.remaining_expiry_secs(now);
        p.topic_alias = alias.map(|a| match a {
            AliasUse::Known(n) | AliasUse::Bind(n) => n,
        });
        adjusted = p;
        &adjusted
    } else {
        &message.properties
    };
    let topic: &str = match alias {
        Some(AliasUse::Known(_)) => "",
        _ => &message.topic,
    };
    let publish = PublishRef {
        dup: dup && delivery.qos != QoS::AtMostOnce,
        qos: delivery.qos,
        retain: delivery.retain,
        topic,
        packet_id,
        properties,
        payload: &message.payload,
    };
    // Only a frame made of the message's own properties is the same for every subscriber.
    let shared = std::ptr::eq(properties, &*message.properties);
    let Some(cache) = cache.filter(|_| shared) else {
        return protocol::encode_publish(&publish, version, out, packet_bytes_max).is_ok();
    };
    let key = CacheKey {
        message: message.id,
        address: Arc::as_ptr(message) as usize,
        v5: version.is_v5(),
        qos: publish.qos,
        retain: publish.retain,
        dup: publish.dup,
    };
    if let Some(written) = cache.write(key, out, packet_bytes_max, packet_id) {
        return written;
    }
    let start = out.len();
    if protocol::encode_publish(&publish, version, out, packet_bytes_max).is_err() {
        return false;
    }
    if let Some(frame) = out.get(start..) {
        cache.encoded(key, frame, topic.len());
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{PacketId, Version};

    fn delivery(qos: QoS, retain: bool, expires_at: Option<Instant>) -> Delivery {
        let now = Instant::now();
        Delivery {
            message: Arc::new(Message {
                id: 7,
                topic: "fan/out".into(),
                payload: bytes::Bytes::from_static(b"payload"),
                qos,
                retain,
                properties: PublishProps::none(),
                publisher: "p".into(),
                received_at: now,
                expires_at,
            }),
            qos,
            retain,
            subscription_identifiers: Vec::new(),
            shared: None,
            reoffered: false,
        }
    }

    /// What `write_publish` writes without the cache.
    fn encoded(
        version: Version,
        d: &Delivery,
        packet_id: Option<PacketId>,
        now: Instant,
    ) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        assert!(write_publish(
            &mut out,
            version,
            usize::MAX,
            d,
            packet_id,
            false,
            None,
            None,
            now
        ));
        out.to_vec()
    }

    /// `write_publish` through `cache`, as `pump_conn` calls it.
    fn cached(
        out: &mut bytes::BytesMut,
        version: Version,
        packet_bytes_max: usize,
        d: &Delivery,
        packet_id: Option<PacketId>,
        cache: &mut PublishCache,
    ) -> bool {
        let now = d.message.received_at;
        let (dup, aliases) = (false, None);
        write_publish(
            out,
            version,
            packet_bytes_max,
            d,
            packet_id,
            dup,
            aliases,
            Some(cache),
            now,
        )
    }

    #[test]
    fn cached_frames_equal_fresh_encodings_with_their_own_packet_ids() {
        let now = Instant::now();
        let mut cache = PublishCache::default();
        for version in [Version::V3_1_1, Version::V5] {
            for (qos, retain) in [(QoS::AtMostOnce, false), (QoS::AtLeastOnce, true)] {
                let d = delivery(qos, retain, None);
                for n in 1..=4u16 {
                    let packet_id =
                        (qos != QoS::AtMostOnce).then(|| PacketId::new(n * 300).unwrap());
                    let mut out = bytes::BytesMut::from(&b"before"[..]);
                    let written = cached(&mut out, version, usize::MAX, &d, packet_id, &mut cache);
                    assert!(written);
                    assert_eq!(&out[..6], b"before");
                    assert_eq!(
                        out[6..],
                        encoded(version, &d, packet_id, now)[..],
                        "{version:?} {qos:?} #{n}"
                    );
                }
                assert!(cache.key.is_some());
            }
        }
    }

    #[test]
    fn cached_frames_respect_each_clients_maximum_packet_size() {
        let now = Instant::now();
        let mut cache = PublishCache::default();
        let d = delivery(QoS::AtMostOnce, false, None);
        let size = encoded(Version::V5, &d, None, now).len();
        for max in [usize::MAX, usize::MAX, size - 1, size] {
            let mut out = bytes::BytesMut::new();
            let written = cached(&mut out, Version::V5, max, &d, None, &mut cache);
            assert_eq!(written, max >= size);
            assert_eq!(out.len(), if written { size } else { 0 });
        }
    }

    #[test]
    fn deliveries_with_their_own_properties_are_not_cached() {
        let now = Instant::now();
        let mut cache = PublishCache::default();
        let d = delivery(QoS::AtMostOnce, false, Some(now + Duration::from_secs(100)));
        for _ in 0..3 {
            let mut out = bytes::BytesMut::new();
            assert!(cached(
                &mut out,
                Version::V5,
                usize::MAX,
                &d,
                None,
                &mut cache
            ));
        }
        assert!(cache.key.is_none());
    }
}
