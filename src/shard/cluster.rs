//! The shard's hooks into the cluster (docs/CLUSTER.md): a PUBACK or PUBREC of a message that
//! went to the stream for other nodes waits until the stream holds it, after any wait for the
//! local log, and acknowledgements keep their order behind it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::conn::Phase;
use super::{ConnId, SessionKey, Shard};
use shards::ShardId;

use crate::cluster::mirror::MirrorRecord;
use crate::cluster::tags::StreamTag;
use crate::cluster::{Routed, ToLink};
use crate::mail::Mail;
use crate::message::Message;
use crate::protocol::{Disconnect, Packet, QoS, ReasonCode};
use crate::session::Delivery;

/// How many of a session's last copies in the stream of queued messages may still be needed:
/// every entry queued from its oldest one not acknowledged (queued, or sent without PUBACK or
/// PUBREC) on. Copies are made in the order entries are numbered, and the stream keeps that
/// order per session, so keeping that many last copies keeps every unacknowledged one. It
/// counts QoS 0 entries and entries without a copy too, so it may keep a few acknowledged
/// copies (duplicates after a failover, never a loss); 0 when nothing is unacknowledged.
fn copies_to_keep(state: &crate::session::SessionState) -> u64 {
    let queued = state.queued().next().map(|q| q.seq);
    let sent = state
        .inflight
        .iter()
        .filter(|entry| matches!(entry.state, crate::session::InflightState::Sent(_)))
        .map(|entry| entry.seq)
        .min();
    match (queued, sent) {
        (None, None) => 0,
        (a, b) => {
            let oldest = a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX));
            state.next_seq().saturating_sub(oldest)
        }
    }
}

impl Shard {
    /// Acknowledges a PUBLISH just handled (`routed`: it was routed now, not a repeated QoS 2):
    /// refused when the link could not take it for the other nodes, held for the stream when the
    /// link took it, then through the local log's wait as any acknowledgement.
    pub(super) fn ack_after_cluster(&mut self, conn: ConnId, packet: Packet, routed: bool) {
        if routed && let Some(cluster) = self.cluster.as_mut() {
            match cluster.routed() {
                Routed::Refused => return self.refuse_ack(conn, packet),
                Routed::Stored(number) => {
                    if let Packet::PubAck(ack) | Packet::PubRec(ack) = &packet {
                        cluster.hold(conn, ack.packet_id.get(), number);
                    }
                }
                Routed::Free => {}
            }
        }
        self.ack_when_durable(conn, packet);
    }

    /// Writes an acknowledgement the local log no longer holds, unless it waits for the stream
    /// (or behind one that does).
    pub(super) fn write_ack(&mut self, conn: ConnId, packet: Packet) {
        let passed = match self.cluster.as_mut() {
            Some(cluster) => cluster.pass(conn, packet),
            None => Some((packet, true)),
        };
        match passed {
            Some((packet, true)) => self.write_packet(conn, &packet),
            Some((packet, false)) => self.refuse_ack(conn, packet),
            None => {}
        }
    }

    /// Refuses an acknowledgement the local log could not keep, through the link's order when
    /// the cluster is on (so its entry there goes too).
    pub(super) fn refuse_ack_in_order(&mut self, conn: ConnId, packet: Packet) {
        let passed = match self.cluster.as_mut() {
            Some(cluster) => cluster.pass_refused(conn, packet),
            None => Some(packet),
        };
        if let Some(packet) = passed {
            self.refuse_ack(conn, packet);
        }
    }

    /// The link's answer for this shard's messages numbered up to `upto` (`refused`: mirror
    /// records the stream did not take, only their acknowledgements refused).
    pub(super) fn on_cluster_stored(&mut self, upto: u64, ok: bool, refused: &[u64]) {
        let mut released = Vec::new();
        let mut replies = Vec::new();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.stored(upto, ok, refused, &mut released);
            cluster.durable_released(&mut replies);
        }
        for (received, ok) in replies {
            self.reply_durable(received, ok);
        }
        for (conn, packet, ok) in released {
            if ok {
                self.write_packet(conn, &packet);
            } else {
                self.refuse_ack(conn, packet);
            }
        }
    }

    /// With persistence on, tells the other shards how many of their mails this shard handled
    /// and whether their records are durable, once the stream also holds the copies of offline
    /// queued messages made here so far: a PUBACK on another shard waits for those copies as
    /// for the records (docs/CLUSTER.md, "Messages queued for a persistent session").
    pub(super) fn reply_durable_after_copies(&mut self, received: Vec<u64>, ok: bool) {
        let now = match self.cluster.as_mut() {
            Some(cluster) => cluster.hold_durable(received, ok),
            None => Some((received, ok)),
        };
        if let Some((received, ok)) = now {
            self.reply_durable(received, ok);
        }
    }

    /// A message of a stream batch from another node (docs/CLUSTER.md, "Exactly once"): routed
    /// as `route_remote`, its tag with it, so that a session that queued it before the batch
    /// came again (after a restart) does not get it twice.
    pub(super) fn route_remote_tagged(
        &mut self,
        message: Arc<Message>,
        tag: StreamTag,
        now: Instant,
    ) {
        self.store_begin_route();
        self.deliver_tagged(&message, tag, now);
        self.mail_interested_shards_as(&message, |message| Mail::PublishTagged { message, tag });
        self.routed_remote_when_durable();
    }

    /// Delivers a tagged stream record to this shard's subscribers.
    pub(super) fn deliver_tagged(&mut self, message: &Arc<Message>, tag: StreamTag, now: Instant) {
        self.with_tag(Some(tag), message.id, |shard| {
            shard.deliver_local(message, now)
        });
    }

    /// Runs `route` with `tag` as the tag of message `id` (a record of a stream batch; none:
    /// runs it as it is), so that each delivery of that message it queues for a persisted
    /// session notes the record, or finds the note and is not queued again.
    pub(super) fn with_tag<R>(
        &mut self,
        tag: Option<StreamTag>,
        id: u64,
        route: impl FnOnce(&mut Shard) -> R,
    ) -> R {
        let Some(tag) = tag else {
            return route(self);
        };
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.set_tag(Some((tag, id)));
        }
        let routed = route(self);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.set_tag(None);
        }
        routed
    }

    /// The tag of message `id` while it is routed here (see `with_tag`).
    pub(super) fn tag_of(&self, id: u64) -> Option<StreamTag> {
        self.cluster.as_ref().and_then(|cluster| cluster.tag_of(id))
    }

    /// Whether the persisted session `key` queued the stream record of `tag` before.
    pub(super) fn queued_before(&self, tag: StreamTag, key: SessionKey) -> bool {
        let Some((cluster, session)) = self.cluster.as_ref().zip(self.sessions.get(key)) else {
            return false;
        };
        session.state.is_logged() && cluster.notes.queued_before(tag, &session.state.client_id)
    }

    /// Session `key` queued the stream record of `tag`: noted when it is persisted, and written
    /// with its records.
    pub(super) fn note_stream_delivery(&mut self, tag: StreamTag, key: SessionKey) {
        let Some((cluster, session)) = self.cluster.as_mut().zip(self.sessions.get(key)) else {
            return;
        };
        if session.state.is_logged() {
            cluster.note(tag, session.state.client_id.clone());
        }
    }

    /// A tagged stream record a session had queued before: not queued again (counted).
    pub(super) fn skipped_stream_delivery(&self) {
        if let Some(cluster) = &self.cluster {
            let stats = &cluster.handle().stats;
            crate::cluster::ClusterStats::add(&stats.stream_deliveries_skipped, 1);
        }
    }

    /// The stream will not deliver the batches up to `floor` again: their notes go.
    pub(super) fn on_stream_ack_floor(&mut self, floor: u64) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.forget_notes_through(floor);
        }
    }

    /// Tells the link that one more message from another node is routed and durable here.
    pub(super) fn count_routed_remote(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.routed_remote(self.id);
        }
    }

    /// A persistent session's own data changed (installed, subscriptions, connected or not):
    /// its record goes to the cluster's session mirror (docs/CLUSTER.md).
    pub(super) fn mirror_session(&self, key: SessionKey) {
        if let Some((cluster, record)) = self.cluster.as_ref().zip(self.mirror_record(key)) {
            let client_id = record.session.client_id.clone();
            cluster.handle().mirror(client_id, Some(record));
        }
    }

    /// The mirror's record of session `key`, when it is mirrored (persistent, not a stub).
    pub(super) fn mirror_record(&self, key: SessionKey) -> Option<Box<MirrorRecord>> {
        let session = self.sessions.get(key)?;
        if self.cluster.is_none() || session.state.expiry_secs == 0 || session.forward_to.is_some()
        {
            return None;
        }
        let clock = crate::store::Clock::now();
        let state = &session.state;
        Some(Box::new(MirrorRecord {
            session: crate::store::session_record(0, state, session.expires_at, &clock),
            incoming_qos2: state.incoming_qos2().collect(),
        }))
    }

    /// A persistent session of this node ended: the mirror forgets it.
    pub(super) fn unmirror_session(&self, client_id: &ByteString) {
        if let Some(cluster) = &self.cluster {
            cluster.handle().mirror(client_id.clone(), None);
        }
    }

    /// `client_id` started clean: every node's copies of its messages in the stream go (a
    /// session ended by a session's own node purges that node's copies only).
    pub(super) fn discard_queued_copies(&self, client_id: &ByteString) {
        if let Some(cluster) = &self.cluster {
            cluster.handle().session_mail(ToLink::DiscardQueued {
                client_id: client_id.clone(),
            });
        }
    }

    /// The home shard of `client_id`: a record of the session mirror, written by `node`.
    pub(super) fn on_mirrored_session(
        &mut self,
        client_id: ByteString,
        record: Option<Box<MirrorRecord>>,
        node: Box<str>,
        own: bool,
    ) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.mirrored(client_id, record, node, own);
        }
    }

    /// `node` died and this node adopts its persistent sessions (docs/CLUSTER.md, "Adopting a
    /// dead node's sessions"): each mirrored record it wrote whose home is this shard becomes
    /// an offline session here, with its subscriptions (interest announced, so messages queue
    /// for it and are copied to the stream as for any offline session), its expiry, the
    /// messages the dead node queued for it (taken from the stream), and a mirror record of
    /// this node's. A client id with a session on this node already is left alone.
    pub(super) fn adopt_sessions(&mut self, node: &str, now: Instant) {
        let wall_ms = crate::store::Clock::now().wall_ms;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let records = cluster.take_mirrored_of(node, wall_ms);
        for record in records {
            let client_id = record.session.client_id.clone();
            if self.directory.owner(&client_id).is_some() {
                continue;
            }
            if self.sessions.len() >= self.settings.sessions_per_shard_max {
                // No room: the record stays, for its client to resume with.
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.mirrored(client_id, Some(record), node.into(), false);
                }
                continue;
            }
            // Connected when its node died: its whole expiry starts now.
            let left = match record.session.expires_at_ms {
                Some(at) => Duration::from_millis(at.saturating_sub(wall_ms)),
                None => Duration::from_secs(u64::from(record.session.expiry_secs)),
            };
            let (generation, _) = self.directory.claim(client_id.clone(), self.id);
            let ticket = self.take_ticket();
            let key = self.install_session(
                crate::cluster::mirror::state_from(*record),
                generation,
                ticket,
            );
            if let Some(session) = self.sessions.get_mut(key) {
                session.expires_at = Some(now + left);
                super::lifecycle::expires_sooner(&mut self.sessions_expire_from, now + left);
            }
            self.store_meta(key);
            self.mirror_session(key);
            self.resumed_in_cluster(key, true);
            if let Some(cluster) = &self.cluster {
                cluster
                    .handle()
                    .stats
                    .sessions_adopted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The home shard, at a claim that found no session on this node: another node's mirrored
    /// session of the client, for a client that resumes; one that starts clean ends it in the
    /// mirror too.
    pub(super) fn claim_mirrored(
        &mut self,
        client_id: &ByteString,
        resumes: bool,
    ) -> Option<Box<MirrorRecord>> {
        let now_ms = crate::store::Clock::now().wall_ms;
        let record = self.cluster.as_mut()?.take_mirrored(client_id, now_ms)?;
        if resumes {
            return Some(record);
        }
        self.unmirror_session(client_id);
        // Its own node ended it at the claim without a purge (for a resume to take them).
        self.discard_queued_copies(client_id);
        None
    }

    /// A QoS 1/2 message was queued for the offline persistent session of `client_id`: a copy
    /// (at the QoS it is delivered) goes to the stream of queued messages; queued by the route
    /// of a client's PUBLISH, its PUBACK/PUBREC waits for the copy (docs/CLUSTER.md).
    pub(super) fn copy_queued(&mut self, client_id: ByteString, message: Arc<Message>, qos: QoS) {
        let shard = self.id;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let message = if message.qos == qos {
            message
        } else {
            Arc::new(Message {
                qos,
                ..Message::clone(&message)
            })
        };
        cluster.copy_queued(client_id, message, shard);
    }

    /// Session `key` resumed here: from the mirror (`mirrored`), the messages its former node
    /// queued for it are taken from the stream; otherwise the stream's copies are trimmed to
    /// those of the messages it still holds unacknowledged, at the next tick.
    pub(super) fn resumed_in_cluster(&mut self, key: SessionKey, mirrored: bool) {
        let Some(client_id) = self.sessions.get(key).map(|s| s.state.client_id.clone()) else {
            return;
        };
        if let Some(cluster) = self.cluster.as_mut() {
            if mirrored {
                cluster
                    .handle()
                    .session_mail(ToLink::TakeQueued { client_id });
            } else {
                cluster.trim_due(key);
            }
        }
    }

    /// The client of session `key` acknowledged a message (PUBACK, or PUBREC for QoS 2): the
    /// copy in the stream is not needed any more, dropped at the next trim.
    pub(super) fn acknowledged_in_cluster(&mut self, key: SessionKey) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.handle().shares_retained()
            && self
                .sessions
                .get(key)
                .is_some_and(|s| s.state.expiry_secs > 0)
        {
            cluster.trim_due(key);
        }
    }

    /// At each tick: the sessions whose clients acknowledged messages since the last one keep
    /// in the stream only the copies of the messages from their oldest unacknowledged one on
    /// (docs/CLUSTER.md, "Messages for a connected client"): one purge per session and tick,
    /// never one per acknowledgement.
    pub(super) fn trim_queued_copies(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        for key in cluster.take_trims() {
            let Some(session) = self.sessions.get(key) else {
                continue;
            };
            if session.state.expiry_secs == 0 || session.forward_to.is_some() {
                continue;
            }
            cluster.trim_copies(
                session.state.client_id.clone(),
                copies_to_keep(&session.state),
            );
        }
    }

    /// A message queued for `client_id` on the node its session resumed from: at the home shard
    /// (from the link) it goes on to the session's shard; there into the session.
    pub(super) fn on_queued_for(
        &mut self,
        from: ShardId,
        client_id: ByteString,
        message: Arc<Message>,
        now: Instant,
    ) {
        if let Some(key) = self.sessions_by_client.get(&client_id).copied() {
            return self.enqueue_delivery(key, Delivery::plain(message), now);
        }
        match self.directory.owner(&client_id) {
            Some(owner) if from == self.id && owner != self.id => {
                self.send_mail(owner, Mail::QueuedFor { client_id, message });
            }
            _ => self.counters.dropped_no_session += 1,
        }
    }

    /// A client connected here (its CONNECT arrived `at`): the other nodes end their older
    /// connection of it (a client id is unique in the cluster; docs/CLUSTER.md).
    pub(super) fn cluster_claim(&self, client_id: &ByteString, at: Instant) {
        if let Some(cluster) = &self.cluster {
            cluster.handle().control(ToLink::Claim {
                client_id: client_id.clone(),
                at,
            });
        }
    }

    /// `client_id` connected on another node at `at`: its connection here, if older, is taken
    /// over (5.0: DISCONNECT 0x8E), its will is due, and its session here ends (it does not
    /// move: the client finds a new session on the other node unless that node had one).
    pub(super) fn on_remote_claim(&mut self, client_id: ByteString, at: Instant, now: Instant) {
        let Some(key) = self.sessions_by_client.get(&client_id).copied() else {
            return;
        };
        let newer = self
            .sessions
            .get(key)
            .and_then(|s| s.conn)
            .and_then(|conn| self.conns.get(&conn))
            .is_some_and(|conn| conn.connect_at >= at);
        if newer {
            return;
        }
        self.metrics.counts.sessions_taken_over += 1;
        if let Some(conn_id) = self.sessions.get(key).and_then(|s| s.conn) {
            let is_v5 = self
                .conns
                .get(&conn_id)
                .is_some_and(|c| c.version.is_v5() && matches!(c.phase, Phase::Active { .. }));
            if is_v5 {
                let disconnect = Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SESSION_TAKEN_OVER,
                    properties: Default::default(),
                });
                self.write_packet(conn_id, &disconnect);
            }
            self.will_on_takeover(conn_id, client_id, false, now);
            self.end_connection_taken_over(conn_id, now);
        }
        // The node that took the client writes its session to the mirror: ending this one
        // must not write "gone" after it.
        if let Some(session) = self.sessions.get_mut(key) {
            session.state.expiry_secs = 0;
        }
        self.end_session(key, now);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Bytes;
    use bytestring::ByteString;

    use super::copies_to_keep;
    use crate::message::Message;
    use crate::protocol::QoS;
    use crate::session::{Delivery, Held, SessionLimits, SessionState};

    fn limits() -> SessionLimits {
        SessionLimits {
            outbox_messages_max: 100,
            outbox_bytes_max: 1 << 20,
            inflight_messages_max: 100,
            subscriptions_max: 10,
            queue_qos0_offline: false,
            drop_oldest: false,
            shard_messages_max: 1_000,
            shard_bytes_max: 1 << 20,
            shard_share_messages: 0,
            shard_share_bytes: 0,
        }
    }

    fn delivery(qos: QoS) -> Delivery {
        Delivery::plain(Arc::new(Message {
            id: 0,
            topic: ByteString::from_static("t"),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            properties: Default::default(),
            publisher: ByteString::from_static("p"),
            received_at: Instant::now(),
            expires_at: None,
        }))
    }

    /// The copies kept are those from the oldest entry not acknowledged on: out-of-order
    /// acknowledgements keep the acknowledged ones after it, a PUBREC counts as acknowledged,
    /// and nothing is kept once everything is.
    #[test]
    fn copies_kept_from_the_oldest_unacknowledged_entry() {
        let (now, mut held) = (Instant::now(), Held::default());
        let limits = limits();
        let mut state = SessionState::new("c".into(), crate::protocol::Version::V5, 600);
        assert_eq!(copies_to_keep(&state), 0);
        let qos = [
            QoS::AtLeastOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
        ];
        let queue = |state: &mut SessionState, qos, online, held: &mut Held| {
            let queued = state.enqueue(delivery(qos), online, &limits, held, now, &mut Vec::new());
            assert!(queued.is_ok());
        };
        for qos in qos {
            queue(&mut state, qos, true, &mut held);
        }
        // Four queued, none sent: all four kept.
        assert_eq!(copies_to_keep(&state), 4);
        let mut ids = Vec::new();
        let mut expired = 0;
        while let Some(out) = state.next_to_send(10, now, &mut expired, &mut held) {
            ids.push(out.packet_id.unwrap());
        }
        assert_eq!(copies_to_keep(&state), 4);
        // The second acknowledged first: the first still holds all four.
        assert!(state.inflight.puback(ids[1], &mut held));
        assert_eq!(copies_to_keep(&state), 4);
        // The first too: from the third on.
        assert!(state.inflight.puback(ids[0], &mut held));
        assert_eq!(copies_to_keep(&state), 2);
        // The QoS 2 one's PUBREC: only the last.
        assert!(state.inflight.pubrec(ids[2], &mut held));
        assert_eq!(copies_to_keep(&state), 1);
        assert!(state.inflight.puback(ids[3], &mut held));
        assert_eq!(copies_to_keep(&state), 0);
        // A new one queued while offline: kept.
        queue(&mut state, QoS::AtLeastOnce, false, &mut held);
        assert_eq!(copies_to_keep(&state), 1);
    }
}
