//! CONNECT to CONNACK, takeover, DISCONNECT and the end of sessions (MQTT 3.1.1 §3.1, §3.14,
//! 5.0 §3.1, §3.14, §4.1).
//!
//! A CONNECT is accepted on the shard the kernel picked. Before CONNACK the shard claims the
//! client id at its home shard (the directory); if another connection or an offline session owns
//! it, that owner closes the old connection and hands the session over by value. CONNACK goes out
//! once the session (new or resumed) is installed and its subscriptions' interest is confirmed on
//! every shard.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::conn::CloseKind;
use super::{Phase, SessionKey, Shard};
use crate::mail::{Mail, Moved, Ticket};
use crate::metrics::LimitReached;
use crate::protocol::{
    ConnAck, ConnAckProperties, Connect, Disconnect, Packet, QoS, ReasonCode, Version, Will,
    validate_topic_name,
};
use crate::session::SessionState;

/// A CONNECT waiting for its claim reply and, when there was a previous owner, the handover.
#[derive(Debug)]
pub struct PendingConnect {
    conn: Option<super::ConnId>,
    connect: Box<Connect>,
    /// Assigned by the broker (empty client id in CONNECT).
    assigned: bool,
    expiry_secs: u32,
    generation: Option<u64>,
    /// A previous owner was told to hand the session over.
    awaiting_handover: bool,
    handover: Option<Option<Box<Moved>>>,
    /// A newer claim arrived while this one was pending: pass the session on to it.
    superseded_by: Option<(ShardId, Ticket)>,
    /// The shard the session came from.
    handover_from: Option<ShardId>,
    /// Deliveries forwarded by the former owner before the session is installed here.
    forwarded: Vec<crate::session::Delivery>,
}

impl PendingConnect {
    pub(super) fn client_id(&self) -> &ByteString {
        &self.connect.client_id
    }

    /// Forwards for this client are kept while the session may still arrive here: before any
    /// handover, or once one brought a session (not when the former owner had none).
    pub(super) fn awaits_forwards(&self) -> bool {
        !matches!(self.handover, Some(None))
    }

    /// Keeps a forwarded delivery until the session is installed (bounded like an outbox).
    pub(super) fn stash(&mut self, delivery: crate::session::Delivery, max: usize) {
        if self.forwarded.len() < max {
            self.forwarded.push(delivery);
        }
    }
}

impl Shard {
    pub(super) fn on_connect(
        &mut self,
        conn_id: super::ConnId,
        connect: Box<Connect>,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.version = connect.version;
        conn.connect_at = now;
        // Claims waiting on the directory are bounded like every other pending request.
        if conn.over_limit || self.connects.len() >= self.settings.control_pending_max {
            return self.refuse_connect(conn_id, ReasonCode::SERVER_BUSY);
        }
        // A client whose session is already here takes it over and adds none. One that asks to
        // resume may have its session on another shard, which would move here with what it
        // holds: it is let through, and refused once its claim found no session (see
        // `try_complete_connect`).
        if self.sessions.len() >= self.settings.sessions_per_shard_max
            && !self.sessions_by_client.contains_key(&connect.client_id)
            && connect.clean_start
        {
            return self.refuse_connect(conn_id, ReasonCode::QUOTA_EXCEEDED);
        }
        let user_properties = connect.properties.user_properties.len()
            + connect
                .will
                .as_ref()
                .map_or(0, |w| w.properties.user_properties.len());
        if user_properties > self.settings.user_properties_max {
            return self.refuse_connect(conn_id, ReasonCode::QUOTA_EXCEEDED);
        }
        let settings = Arc::clone(&self.settings);
        let mut client_id = connect.client_id.clone();
        let mut assigned = false;
        if client_id.is_empty() {
            // 3.1.1 (MQTT-3.1.3-8): an empty id needs Clean Session; 3.1 needs an id at all.
            // 5.0 (MQTT-3.1.3-6): the server assigns one.
            let allowed = settings.allow_zero_length_client_id
                && match connect.version {
                    Version::V3_1 => false,
                    Version::V3_1_1 => connect.clean_start,
                    Version::V5 => true,
                };
            if !allowed {
                return self.refuse_connect(conn_id, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            self.next_assigned_id += 1;
            client_id = ByteString::from(format!(
                "{}{}-{}",
                settings.assigned_client_id_prefix,
                self.id.index(),
                self.next_assigned_id
            ));
            assigned = true;
        }
        let too_long = match connect.version {
            // MQTT 3.1: 1 to 23 characters.
            Version::V3_1 => client_id.len() > 23,
            _ => client_id.len() > settings.client_id_bytes_max,
        };
        if too_long {
            return self.refuse_connect(conn_id, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        // 5.0 §4.12: a method must have been run by the connection task (MQTT-4.12.0-1).
        if let Some(method) = &connect.properties.authentication_method {
            let done = self
                .conns
                .get(&conn_id)
                .and_then(|c| c.connecting.as_ref()?.enhanced_auth.as_ref())
                .map(|enhanced| &enhanced.method);
            if done != Some(method) {
                return self.refuse_connect(conn_id, ReasonCode::BAD_AUTHENTICATION_METHOD);
            }
        }
        if let Some(will) = &connect.will
            && let Err(reason) = check_will(will, &settings)
        {
            return self.refuse_connect(conn_id, reason);
        }
        let will = match connect.will.clone() {
            None => None,
            Some(will) => match self
                .will_bytes
                .try_hold(will, settings.will_bytes_per_shard_max)
            {
                Some(held) => Some(held),
                None => {
                    self.metrics.limit_reached(LimitReached::WillBytes);
                    return self.refuse_connect(conn_id, ReasonCode::QUOTA_EXCEEDED);
                }
            },
        };
        let expiry_secs = session_expiry(&connect, &settings);
        let ticket = self.take_ticket();
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.client_id = client_id.clone();
        conn.username = connect.username.clone();
        conn.keepalive_secs = keepalive_secs(&connect, &settings);
        conn.will = will;
        let props = &connect.properties;
        let our_window = settings.session.inflight_messages_max;
        conn.send_window = props
            .receive_maximum
            .map_or(our_window, |m| usize::from(m).min(our_window));
        conn.aliases_to_client = super::aliases::TopicAliases::new(
            props
                .topic_alias_maximum
                .unwrap_or(0)
                .min(settings.topic_alias_to_client_max),
        );
        if let Some(max) = props.maximum_packet_size {
            conn.client_packet_bytes_max = max as usize;
        }
        conn.request_problem_information = props.request_problem_information.unwrap_or(true);
        if let Some(connecting) = conn.connecting.as_mut() {
            connecting.request_response_information =
                props.request_response_information.unwrap_or(false);
            connecting.requested_keepalive_secs = connect.keep_alive_secs;
            connecting.requested_session_expiry_secs =
                props.session_expiry_interval_secs.unwrap_or(0);
        }
        conn.phase = Phase::Claiming { ticket };
        let mut connect = connect;
        connect.client_id = client_id.clone();
        let resumes = !connect.clean_start;
        self.connects.insert(
            ticket,
            PendingConnect {
                conn: Some(conn_id),
                connect,
                assigned,
                expiry_secs,
                generation: None,
                awaiting_handover: false,
                handover: None,
                superseded_by: None,
                handover_from: None,
                forwarded: Vec::new(),
            },
        );
        let home = self.home_of(&client_id);
        self.send_mail(
            home,
            Mail::Claim {
                client_id,
                ticket,
                resumes,
            },
        );
    }

    /// Directory (at the client id's home): records the new owner; tells the old one to hand over.
    pub(super) fn on_claim(
        &mut self,
        from: ShardId,
        client_id: ByteString,
        ticket: Ticket,
        resumes: bool,
    ) {
        let (generation, previous) = self.directory.claim(client_id.clone(), from);
        let mirrored = match previous {
            None => self.claim_mirrored(&client_id, resumes),
            Some(_) => None,
        };
        if let Some(previous) = previous {
            self.send_mail(
                previous,
                Mail::Takeover {
                    client_id,
                    new_owner: from,
                    ticket,
                    resumes,
                },
            );
        }
        self.send_mail(
            from,
            Mail::ClaimReply {
                ticket,
                generation,
                previous,
                mirrored,
            },
        );
    }

    pub(super) fn on_claim_reply(
        &mut self,
        ticket: Ticket,
        generation: u64,
        previous: Option<ShardId>,
        mirrored: Option<Box<crate::cluster::mirror::MirrorRecord>>,
        now: Instant,
    ) {
        let Some(pending) = self.connects.get_mut(&ticket) else {
            return;
        };
        pending.generation = Some(generation);
        pending.awaiting_handover = previous.is_some();
        if previous.is_none()
            && let Some(record) = mirrored
        {
            // Resumed from the cluster's session mirror: its subscriptions, nothing it held.
            let state = crate::cluster::mirror::state_from(*record);
            pending.handover = Some(Some(Box::new(Moved { state, seen: None })));
        }
        self.try_complete_connect(ticket, now);
    }

    pub(super) fn on_handover(
        &mut self,
        from: ShardId,
        ticket: Ticket,
        session: Option<Box<Moved>>,
        now: Instant,
    ) {
        let Some(pending) = self.connects.get_mut(&ticket) else {
            // Claims are only dropped once their handover arrived, so this cannot be ours.
            return;
        };
        if session.is_some() {
            pending.handover_from = Some(from);
        }
        pending.handover = Some(session);
        self.try_complete_connect(ticket, now);
    }

    /// Former owner: close the old connection and hand the session over by value.
    pub(super) fn on_takeover(
        &mut self,
        client_id: ByteString,
        new_owner: ShardId,
        ticket: Ticket,
        resumes: bool,
        now: Instant,
    ) {
        // A claim of ours for this client that the directory granted before this newer one, still
        // waiting for its own handover: the newer claim wins once ours resolves. (The takeover
        // that our own claim caused names our ticket and is not such a case.)
        let me = self.id;
        let superseded = self
            .connects
            .iter()
            .find(|(t, p)| {
                p.connect.client_id == client_id
                    && p.generation.is_some()
                    && p.superseded_by.is_none()
                    && !(new_owner == me && **t == ticket)
            })
            .map(|(t, _)| *t);
        if let Some(pending_ticket) = superseded {
            if let Some(pending) = self.connects.get_mut(&pending_ticket) {
                pending.superseded_by = Some((new_owner, ticket));
            }
            self.try_complete_connect(pending_ticket, now);
            return;
        }
        // The client is back before its will was due: the will is not sent, unless the new
        // connection ends the session (Clean Start), which is when a delayed will goes (5.0
        // §3.1.3.2.2).
        let delayed = self.delayed_wills.remove(&client_id);
        if delayed.is_some() {
            self.store_will_gone(&client_id);
        }
        if let Some((_, username, will)) = delayed
            && !resumes
        {
            self.publish_will(client_id.clone(), username, will.into_will(), now);
        }
        let session = match self.sessions_by_client.get(&client_id).copied() {
            Some(key) => {
                self.metrics.counts.sessions_taken_over += 1;
                if let Some(conn_id) = self.sessions.get(key).and_then(|s| s.conn) {
                    // A connection still waiting for its CONNACK gets nothing before it
                    // (MQTT-3.2.0-1): it is just closed.
                    let is_v5 = self.conns.get(&conn_id).is_some_and(|c| {
                        c.version.is_v5() && matches!(c.phase, Phase::Active { .. })
                    });
                    if is_v5 {
                        let disconnect = Packet::Disconnect(Disconnect {
                            reason: ReasonCode::SESSION_TAKEN_OVER,
                            properties: Default::default(),
                        });
                        self.write_packet(conn_id, &disconnect);
                    }
                    if let Some(conn) = self.conns.get_mut(&conn_id) {
                        conn.phase = Phase::AwaitingConnect;
                    }
                    self.will_on_takeover(conn_id, client_id.clone(), resumes, now);
                    self.end_connection_taken_over(conn_id, now);
                }
                // A stub stays and forwards until the new owner's interest is in place.
                let to = super::moving::Hop {
                    shard: new_owner,
                    ticket,
                };
                self.leave_stub(key, to, now).map(Box::new)
            }
            None => None,
        };
        self.send_mail(new_owner, Mail::Handover { ticket, session });
    }

    /// The taken-over connection's will: it never sent DISCONNECT, so its will is due (3.1.1
    /// §3.1.2.5, 5.0 §3.1.4). In 5.0 a new connection to the session is made now, so a will with
    /// a delay is not sent, unless that connection ends the session (Clean Start); a will
    /// without delay was due when the connection closed (§3.1.3.2.2). 3.x wills have no delay.
    pub(super) fn will_on_takeover(
        &mut self,
        conn_id: super::ConnId,
        client_id: ByteString,
        resumes: bool,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let Some(will) = conn.will.take().map(super::wills::HeldWill::into_will) else {
            return;
        };
        let delayed = will.properties.will_delay_interval_secs.unwrap_or(0) > 0;
        if !(delayed && resumes) {
            let username = conn.username.clone();
            self.publish_will(client_id, username, will, now);
        }
    }

    pub(super) fn end_connection_taken_over(&mut self, conn_id: super::ConnId, now: Instant) {
        // The session is handed over, not detached: unbind it first so it is not ended here.
        if let Some(conn) = self.conns.get(&conn_id) {
            let client_id = conn.client_id.clone();
            if let Some(key) = self.sessions_by_client.get(&client_id).copied()
                && let Some(session) = self.sessions.get_mut(key)
            {
                session.conn = None;
            }
        }
        self.end_connection(conn_id, CloseKind::TakenOver, now);
    }

    fn try_complete_connect(&mut self, ticket: Ticket, now: Instant) {
        let ready = self.connects.get(&ticket).is_some_and(|p| {
            p.generation.is_some() && (!p.awaiting_handover || p.handover.is_some())
        });
        if !ready {
            return;
        }
        let Some(pending) = self.connects.remove(&ticket) else {
            return;
        };
        let handover_from = pending.handover_from;
        let forwarded = pending.forwarded;
        let previous = pending.handover.flatten();
        if let Some((new_owner, their_ticket)) = pending.superseded_by {
            if let Some(conn_id) = pending.conn {
                // Never connected: no CONNACK and no will; the newer connection owns the client.
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.will = None;
                }
                self.mark_closing(conn_id);
            }
            let moving = previous.is_some();
            self.send_mail(
                new_owner,
                Mail::Handover {
                    ticket: their_ticket,
                    session: previous,
                },
            );
            if moving {
                // Relay: what the former owner still forwards goes on to the new one.
                let to = super::moving::Hop {
                    shard: new_owner,
                    ticket: their_ticket,
                };
                let client_id = pending.connect.client_id;
                self.add_relay(client_id, ticket, to, handover_from, forwarded);
            }
            return;
        }
        let generation = pending.generation.unwrap_or_default();
        let client_id = pending.connect.client_id.clone();
        let conn_live = pending
            .conn
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| !c.is_closing());
        let resume = !pending.connect.clean_start && previous.is_some();
        if !pending.connect.clean_start
            && !resume
            && self.sessions.len() >= self.settings.sessions_per_shard_max
        {
            // Let through a full shard to resume a session, and there was none: a new session
            // would be one too many. The claim is let go.
            if let Some(conn_id) = pending.conn {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.will = None;
                }
                self.refuse_connect(conn_id, ReasonCode::QUOTA_EXCEEDED);
            }
            let home = self.home_of(&client_id);
            self.send_mail(
                home,
                Mail::Release {
                    client_id,
                    generation,
                },
            );
            return;
        }
        if resume {
            self.metrics.counts.sessions_resumed += 1;
        } else {
            self.metrics.counts.sessions_created += 1;
        }
        // A persistent session replaced by one that is not leaves the cluster's session mirror.
        let mirrored = previous.as_ref().is_some_and(|m| m.state.expiry_secs > 0);
        if mirrored && pending.expiry_secs == 0 {
            self.unmirror_session(&client_id);
            self.discard_queued_copies(&client_id);
        }
        let (mut state, seen) = match previous {
            Some(moved) if resume => (moved.state, Some(moved.seen)),
            discarded => {
                if discarded.is_some_and(|moved| moved.state.is_logged()) {
                    // Clean start: the persisted session ends here (its shard noted a move).
                    self.store_gone(client_id.clone(), false);
                }
                let version = pending.connect.version;
                let state = SessionState::new(client_id.clone(), version, pending.expiry_secs);
                (state, None)
            }
        };
        state.version = pending.connect.version;
        let username = pending.connect.username.clone();
        if state.username != username {
            // Read decisions cached for the previous owner's identity do not hold for this one.
            for subscription in state.subscriptions.values_mut() {
                subscription.read_granted_generation = 0;
            }
        }
        state.username = username;
        state.expiry_secs = pending.expiry_secs;
        let key = self.install_session(state, generation, ticket);
        if resume {
            // Without a former shard here, the session came from the cluster's mirror.
            self.resumed_in_cluster(key, handover_from.is_none());
        }
        if let Some(from) = handover_from {
            self.moved_in(key, from, seen, forwarded, now);
        }
        let Some(conn_id) = pending.conn.filter(|_| conn_live) else {
            // The connection went away while claiming: the session stays as an offline session
            // (or ends now, when it does not outlive its connection).
            self.detach_session(key, now);
            return;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            session.conn = Some(conn_id);
            session.expires_at = None;
        }
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.phase = Phase::Resuming { session: key };
        }
        self.subscribe_barrier_for_session(conn_id, key, resume, pending.assigned, now);
    }

    /// Sends CONNACK and starts the session's traffic (after the interest barrier).
    pub(super) fn send_connack(
        &mut self,
        conn_id: super::ConnId,
        key: SessionKey,
        session_present: bool,
        assigned: bool,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.phase = Phase::Active { session: key };
        // What only the way here needed is let go with this CONNACK.
        let mut connecting = conn
            .connecting
            .take()
            .map_or_else(|| super::conn::Connecting::new(now), |c| *c);
        let connect_deadline = connecting.accepted_at + self.settings.connect_timeout;
        conn.queue_keepalive(conn_id, &mut self.deadlines, connect_deadline, now);
        tracing::info!(
            client_id = %conn.client_id,
            peer = %conn.peer,
            shard = self.id.index(),
            version = ?conn.version,
            session_present,
            "client connected"
        );
        let connect_at = conn.connect_at;
        let connect_latency = crate::metrics::micros_between(connect_at, now);
        let version = conn.version;
        let client_id = conn.client_id.clone();
        // 5.0 §4.12: the CONNACK of an enhanced authentication names its method.
        let mut properties = ConnAckProperties {
            authentication_method: connecting.enhanced_auth.as_ref().map(|e| e.method.clone()),
            authentication_data: connecting.enhanced_auth.take().and_then(|e| e.data),
            ..ConnAckProperties::default()
        };
        if version.is_v5() {
            let s = &self.settings;
            // A property equal to the default its absence means is left out (§3.2.2.3): the
            // CONNACK stays small enough for a client with a small Maximum Packet Size.
            properties.receive_maximum = u16::try_from(s.session.inflight_messages_max)
                .ok()
                .filter(|m| *m != u16::MAX);
            properties.maximum_packet_size = u32::try_from(s.packet_bytes_max)
                .ok()
                .filter(|m| *m < NO_PACKET_LIMIT);
            properties.topic_alias_maximum = Some(s.topic_alias_max).filter(|m| *m != 0);
            if s.max_qos < QoS::ExactlyOnce {
                properties.maximum_qos = Some(s.max_qos.as_u8());
            }
            if !s.retain_available {
                properties.retain_available = Some(false);
            }
            properties.wildcard_subscription_available =
                Some(false).filter(|_| !s.wildcard_subscription_available);
            properties.shared_subscription_available =
                Some(false).filter(|_| !s.shared_subscription_available);
            properties.subscription_identifiers_available =
                Some(false).filter(|_| !s.subscription_identifiers_available);
            if assigned {
                properties.assigned_client_identifier = Some(client_id.clone());
            }
            // MQTT-3.2.2-21: when the broker lowers the keepalive, it says so.
            if conn.keepalive_secs != connecting.requested_keepalive_secs {
                properties.server_keep_alive_secs = Some(conn.keepalive_secs);
            }
            // 5.0 §3.2.2.3.2: a Session Expiry Interval other than the client's is said.
            let expiry_secs = self.sessions.get(key).map(|s| s.state.expiry_secs);
            if let Some(expiry_secs) = expiry_secs
                && expiry_secs != connecting.requested_session_expiry_secs
            {
                properties.session_expiry_interval_secs = Some(expiry_secs);
            }
            if connecting.request_response_information && !s.response_information.is_empty() {
                properties.response_information = Some(ByteString::from(format!(
                    "{}{}",
                    s.response_information, client_id
                )));
            }
        }
        let connack = ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        };
        let Some(connack) = connack_within(connack, version, conn.client_packet_bytes_max) else {
            // Not even the properties the client needs fit its Maximum Packet Size: refuse
            // rather than leave it waiting for a CONNACK that never comes.
            conn.will = None;
            let refusal = Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                reason: ReasonCode::PACKET_TOO_LARGE,
                properties: Default::default(),
            }));
            self.write_packet(conn_id, &refusal);
            self.counters.connections_rejected += 1;
            return self.end_connection(conn_id, CloseKind::Normal, now);
        };
        self.write_packet(conn_id, &Packet::ConnAck(Box::new(connack)));
        self.cluster_claim(&client_id, connect_at);
        self.metrics.record_connect_latency(connect_latency);
        self.resend_inflight(conn_id, key, now);
        self.pump_conn(conn_id, now);
        for packet in connecting.early_packets {
            self.on_packet(conn_id, packet, now);
        }
    }

    /// The connection of an abandoned claim closed before the claim resolved.
    pub(super) fn abandon_connect(&mut self, ticket: Ticket, now: Instant) {
        if let Some(pending) = self.connects.get_mut(&ticket) {
            pending.conn = None;
        }
        self.try_complete_connect(ticket, now);
    }

    pub(super) fn on_disconnect(
        &mut self,
        conn_id: super::ConnId,
        disconnect: Disconnect,
        now: Instant,
    ) {
        let mut kind = CloseKind::Normal;
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            if conn.version.is_v5() {
                if disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
                    kind = CloseKind::Abnormal;
                }
                // 5.0 §3.14.2.2.2: the client may change the expiry, unless it was 0 at CONNECT.
                if let Some(expiry) = disconnect.properties.session_expiry_interval_secs
                    && let Some(key) = conn.session()
                    && let Some(session) = self.sessions.get_mut(key)
                {
                    if session.state.expiry_secs == 0 && expiry != 0 {
                        return self.close_protocol_error(conn_id, now);
                    }
                    session.state.expiry_secs = expiry.min(self.settings.session_expiry_max_secs);
                }
            }
            if kind == CloseKind::Normal {
                conn.will = None;
            }
        }
        self.end_connection(conn_id, kind, now);
    }
}

/// The largest packet the remaining-length encoding allows (5.0 §2.1.4): a Maximum Packet Size
/// of this or more says nothing, as its absence does (§3.2.2.3.6).
const NO_PACKET_LIMIT: u32 = 1 + 4 + 268_435_455;

/// The CONNACK as it fits the client's Maximum Packet Size (5.0 MQTT-3.1.2-24): whole; else
/// without what only informs the client (Reason String and User Property, MQTT-3.2.2-19 and
/// -20; Response Information, which the client may do without; Topic Alias Maximum, whose
/// absence means 0, so the client just sends no aliases); `None` when even that does not fit.
fn connack_within(connack: ConnAck, version: Version, max: usize) -> Option<ConnAck> {
    let fits = |connack: &ConnAck| {
        let packet = Packet::ConnAck(Box::new(connack.clone()));
        crate::protocol::encode(&packet, version, &mut bytes::BytesMut::new(), max).is_ok()
    };
    if !version.is_v5() || fits(&connack) {
        return Some(connack);
    }
    let mut reduced = connack;
    let properties = &mut reduced.properties;
    properties.reason_string = None;
    properties.user_properties = Default::default();
    properties.response_information = None;
    properties.topic_alias_maximum = None;
    fits(&reduced).then_some(reduced)
}

fn check_will(will: &Will, settings: &super::Settings) -> Result<(), ReasonCode> {
    if validate_topic_name(&will.topic).is_err() {
        return Err(ReasonCode::TOPIC_NAME_INVALID);
    }
    if let Some(response_topic) = &will.properties.response_topic
        && validate_topic_name(response_topic).is_err()
    {
        return Err(ReasonCode::PROTOCOL_ERROR);
    }
    if will.qos > settings.max_qos {
        return Err(ReasonCode::QOS_NOT_SUPPORTED);
    }
    if will.retain && !settings.retain_available {
        return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
    }
    if will.topic.len() + will.payload.len() > settings.will_bytes_max {
        return Err(ReasonCode::PACKET_TOO_LARGE);
    }
    // 5.0 §3.1.3.2.3: a will declared UTF-8 may be checked like a PUBLISH.
    if settings.payload_format_check
        && will.properties.payload_format_indicator == Some(true)
        && std::str::from_utf8(&will.payload).is_err()
    {
        return Err(ReasonCode::PAYLOAD_FORMAT_INVALID);
    }
    Ok(())
}

/// Seconds the session outlives its connection. 3.1.1: clean sessions end with the connection,
/// persistent ones get the configured default; 5.0: what the client asked, capped.
fn session_expiry(connect: &Connect, settings: &super::Settings) -> u32 {
    match connect.version {
        Version::V5 => connect
            .properties
            .session_expiry_interval_secs
            .unwrap_or(0)
            .min(settings.session_expiry_max_secs),
        Version::V3_1 | Version::V3_1_1 if connect.clean_start => 0,
        Version::V3_1 | Version::V3_1_1 => settings.session_expiry_default_secs,
    }
}

/// The keepalive the broker enforces: 5.0 clients asking more than the maximum get the maximum
/// (sent back as Server Keep Alive); 3.x clients keep theirs.
fn keepalive_secs(connect: &Connect, settings: &super::Settings) -> u16 {
    if connect.version.is_v5() && connect.keep_alive_secs > settings.keepalive_max_secs {
        settings.keepalive_max_secs
    } else {
        connect.keep_alive_secs
    }
}
