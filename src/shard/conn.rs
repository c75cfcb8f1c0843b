//! Per-connection state inside the shard: protocol phase, version, keepalive, the will, the
//! client's limits, and the write buffer the shell drains.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;

use super::deadlines::{Deadline, Deadlines};
use super::{SessionKey, Shard};
use crate::mail::Ticket;
use crate::protocol::{
    self, ConnAck, Disconnect, DisconnectProperties, Packet, ReasonCode, Version,
};

/// Connection ids are never reused, so a late event for a closed connection finds nothing.
pub type ConnId = u64;

/// A table keyed by connection id: looked up several times per message (the publisher's
/// connection, each subscriber's), so with a hasher that costs a few instructions instead of
/// SipHash's hundred or so.
pub type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

/// Hashes a connection id with one multiplication (Fibonacci hashing). Connection ids come from
/// the shell's own counter, never from a client, so the table needs no keyed hash against
/// flooding; the odd multiplier maps consecutive ids to distinct buckets and mixes the high bits
/// the table's control bytes use.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a `ConnId`; this keeps the hasher whole for any key.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Debug)]
pub enum Phase {
    /// TCP is up, no CONNECT yet.
    AwaitingConnect,
    /// CONNECT accepted, waiting for the client-id directory (and a handover) before CONNACK.
    Claiming { ticket: Ticket },
    /// The session is installed and bound; CONNACK waits for its interest to be confirmed on
    /// every shard.
    Resuming { session: SessionKey },
    /// CONNACK sent; the connection is bound to a session on this shard.
    Active { session: SessionKey },
}

#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub phase: Phase,
    /// Until CONNECT arrives this is 5.0 (only used to pick how to answer a broken CONNECT).
    pub version: Version,
    /// What only the way to CONNACK needs; `None` once it is sent. Boxed, so that an
    /// established connection does not carry it.
    pub connecting: Option<Box<Connecting>>,
    /// When CONNECT arrived (for the CONNECT -> CONNACK latency, and to tell a remote claim
    /// older than this connection).
    pub connect_at: Instant,
    pub last_seen: Instant,
    /// The keepalive in force, in seconds (0 = none): the client's, or the broker's lower one.
    pub keepalive_secs: u16,
    pub client_id: ByteString,
    /// The authenticated username (or certificate identity), the ACL's key; `None`: anonymous.
    pub username: Option<ByteString>,
    /// Boxed: most clients set no will, and a connection's state stays small without one.
    pub will: Option<super::wills::HeldWill>,
    /// The client's Receive Maximum (5.0), capped by our in-flight limit.
    pub send_window: usize,
    /// The client's Maximum Packet Size (5.0); our packet limit otherwise.
    pub client_packet_bytes_max: usize,
    pub request_problem_information: bool,
    /// Client-to-broker topic aliases (5.0 §3.3.2.3.4).
    pub topic_aliases: super::aliases::ClientAliases,
    /// Broker-to-client topic aliases.
    pub aliases_to_client: super::aliases::TopicAliases,
    /// Bytes for the shell to write.
    pub out: BytesMut,
    /// Bytes of deliveries in `out`, counted in the shard's write bytes (see `writes`).
    pub out_counted: u32,
    /// Waiting in the shard's list for room under `limits.write_buffer_bytes_per_shard_max`.
    pub write_waiting: bool,
    /// The deliveries in `out`, for the writer to time when its write completes.
    pub unsent: super::Unsent,
    /// Set when the shell should write what is buffered and then close.
    close: bool,
    /// Accepted over `connections_per_shard_max`: its CONNECT is refused with "server busy".
    pub over_limit: bool,
    /// When the partial packet the reader holds (if any) began: set by the shell
    /// (`Shard::set_partial_since`, which queues its deadline), checked against
    /// `limits.packet_timeout_ms` by the tick.
    partial_since: Option<Instant>,
    /// The shard's deadlines hold a keepalive entry for this connection (`deadlines`).
    keepalive_queued: bool,
    /// The shard's deadlines hold a packet-deadline entry for this connection.
    packet_queued: bool,
}

/// A connection's state until CONNACK.
#[derive(Debug)]
pub struct Connecting {
    pub accepted_at: Instant,
    /// Packets that arrived while CONNECT was being claimed, handled after CONNACK.
    pub early_packets: Vec<Packet>,
    /// The enhanced authentication the connection task completed (5.0 §4.12).
    pub enhanced_auth: Option<EnhancedAuth>,
    pub request_response_information: bool,
    /// The Keep Alive the client asked for in CONNECT.
    pub requested_keepalive_secs: u16,
    /// The Session Expiry Interval the client asked for in CONNECT (5.0; absent is 0).
    pub requested_session_expiry_secs: u32,
}

impl Connecting {
    pub fn new(accepted_at: Instant) -> Connecting {
        Connecting {
            accepted_at,
            early_packets: Vec::new(),
            enhanced_auth: None,
            request_response_information: false,
            requested_keepalive_secs: 0,
            requested_session_expiry_secs: 0,
        }
    }
}

impl Conn {
    pub fn new(peer: SocketAddr, now: Instant, packet_bytes_max: usize) -> Conn {
        Conn {
            peer,
            phase: Phase::AwaitingConnect,
            version: Version::V5,
            connecting: Some(Box::new(Connecting::new(now))),
            connect_at: now,
            last_seen: now,
            keepalive_secs: 0,
            client_id: ByteString::new(),
            username: None,
            will: None,
            send_window: 1,
            client_packet_bytes_max: packet_bytes_max,
            request_problem_information: true,
            topic_aliases: super::aliases::ClientAliases::default(),
            aliases_to_client: super::aliases::TopicAliases::default(),
            out: BytesMut::new(),
            out_counted: 0,
            write_waiting: false,
            unsent: super::Unsent::default(),
            close: false,
            over_limit: false,
            partial_since: None,
            keepalive_queued: false,
            packet_queued: false,
        }
    }

    /// Whether the shell should close this connection once its buffer is written.
    pub fn is_closing(&self) -> bool {
        self.close
    }

    /// When the keepalive runs out (one and a half times it, in whole milliseconds, since the
    /// client was last heard from); `None` before CONNACK or with no keepalive.
    fn keepalive_deadline(&self) -> Option<Instant> {
        let active = matches!(self.phase, Phase::Active { .. });
        (active && self.keepalive_secs != 0)
            .then(|| self.last_seen + Duration::from_millis(u64::from(self.keepalive_secs) * 1500))
    }

    /// At CONNACK: queues the keepalive deadline of a connection when it ends before its
    /// CONNECT deadline, whose entry becomes the keepalive's otherwise (`check_connections`).
    pub(super) fn queue_keepalive(
        &mut self,
        id: ConnId,
        deadlines: &mut Deadlines,
        connect_deadline: Instant,
        now: Instant,
    ) {
        if let Some(at) = self.keepalive_deadline()
            && at < connect_deadline
        {
            self.keepalive_queued = true;
            deadlines.push(now, at, id, Deadline::KeepAlive);
        }
    }

    pub fn session(&self) -> Option<SessionKey> {
        match self.phase {
            Phase::Active { session } | Phase::Resuming { session } => Some(session),
            Phase::AwaitingConnect | Phase::Claiming { .. } => None,
        }
    }
}

/// A completed enhanced authentication: its method, and the server's last data for CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnhancedAuth {
    pub method: ByteString,
    pub data: Option<bytes::Bytes>,
}

/// How a connection ends, seen from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// The client sent DISCONNECT (normal): no will (unless 5.0 asked for it).
    Normal,
    /// Network error, keepalive, protocol error, takeover...: the will is published.
    Abnormal,
    /// Taken over by a new connection of the same client.
    TakenOver,
    /// The broker is shutting down: no will here, `publish_wills_at_shutdown` sent them all
    /// before the goodbyes, while their subscribers were still connected.
    Shutdown,
}

impl Shard {
    /// Encodes a packet into a connection's write buffer, with the problem information the
    /// client gets (see `problem`). A packet over the client's maximum is not sent (5.0
    /// §3.1.2.11.4): without its Reason String it may fit (MQTT-3.4.2-2); only PUBLISH can get
    /// larger than that, and it is counted there.
    pub(super) fn write_packet(&mut self, conn_id: ConnId, packet: &Packet) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let was_empty = conn.out.is_empty();
        let max = conn.client_packet_bytes_max;
        let annotated = if conn.version.is_v5() {
            super::problem::with_problem_information(packet, conn.request_problem_information)
        } else {
            None
        };
        let first = annotated.as_ref().unwrap_or(packet);
        let written = protocol::encode(first, conn.version, &mut conn.out, max).is_ok()
            || (conn.version.is_v5()
                && !matches!(packet, Packet::Publish(_))
                && protocol::encode(
                    &super::problem::without_problem_information(packet),
                    conn.version,
                    &mut conn.out,
                    max,
                )
                .is_ok());
        if !written {
            self.counters.dropped_too_large += 1;
            return;
        }
        self.metrics
            .packet_sent(crate::metrics::PacketKind::of(packet));
        if was_empty {
            self.dirty.push(conn_id);
        }
    }

    /// Marks a connection for closing after its buffer is written.
    #[track_caller]
    pub(super) fn mark_closing(&mut self, conn_id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn_id)
            && !conn.close
        {
            tracing::debug!(conn = conn_id, at = %std::panic::Location::caller(), "closing");
            conn.close = true;
            self.dirty.push(conn_id);
        }
    }

    /// Sends CONNACK with a failure code and closes (MQTT-3.2.2-5 / 5.0 §4.13.2).
    pub(super) fn refuse_connect(&mut self, conn_id: ConnId, reason: ReasonCode) {
        self.counters.connections_rejected += 1;
        let rejection = crate::metrics::ConnectRejection::from_reason_code(reason)
            .unwrap_or(crate::metrics::ConnectRejection::Other);
        self.metrics.connection_rejected(rejection);
        let connack = Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason,
            properties: Default::default(),
        }));
        self.write_packet(conn_id, &connack);
        self.mark_closing(conn_id);
    }

    /// Closes for a protocol violation: 5.0 gets DISCONNECT 0x82 first (§4.13.1), 3.x just the
    /// close (MQTT-4.8.0-1). The will is published.
    pub(super) fn close_protocol_error(&mut self, conn_id: ConnId, now: Instant) {
        self.close_with_reason(conn_id, ReasonCode::PROTOCOL_ERROR, now);
    }

    /// Closes an established or establishing connection with a reason: DISCONNECT for 5.0 after
    /// CONNACK, CONNACK for 5.0 before it, nothing but the close for 3.x.
    pub(super) fn close_with_reason(&mut self, conn_id: ConnId, reason: ReasonCode, now: Instant) {
        self.counters.protocol_errors += 1;
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        // Before CONNECT the client's version is unknown: just close (MQTT-3.1.0-1). After
        // CONNACK, 5.0 gets a DISCONNECT with the reason (§4.13.1); 3.x only the close.
        let active = matches!(conn.phase, Phase::Active { .. });
        if conn.version.is_v5() && active {
            let disconnect = Packet::Disconnect(Disconnect {
                reason,
                properties: DisconnectProperties::default(),
            });
            self.write_packet(conn_id, &disconnect);
        }
        self.end_connection(conn_id, CloseKind::Abnormal, now);
    }

    /// Ends a connection's part in the broker: the session is detached (or ended), the will goes
    /// out when the close was abnormal, and the socket is closed after the buffer is written.
    pub(super) fn end_connection(&mut self, conn_id: ConnId, kind: CloseKind, now: Instant) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let will = match kind {
            CloseKind::Abnormal => conn.will.take().map(super::wills::HeldWill::into_will),
            CloseKind::TakenOver if conn.version.is_v5() => {
                conn.will.take().map(super::wills::HeldWill::into_will)
            }
            _ => None,
        };
        conn.will = None;
        let client_id = conn.client_id.clone();
        let username = conn.username.clone();
        let session = conn.session();
        if session.is_some() {
            tracing::info!(
                client_id = %client_id,
                peer = %conn.peer,
                shard = self.id.index(),
                reason = ?kind,
                "client disconnected"
            );
        }
        self.mark_closing(conn_id);
        if let Some(key) = session {
            self.detach_session(key, now);
        }
        if let Some(will) = will {
            self.will_on_close(client_id, username, will, now);
        }
    }

    /// Graceful shutdown: DISCONNECT 0x8B to 5.0 clients (§3.14.2.1), then every connection
    /// closes after its buffer is written.
    pub fn begin_shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn_id in ids {
            let Some(conn) = self.conns.get(&conn_id) else {
                continue;
            };
            if conn.is_closing() {
                continue;
            }
            if conn.version.is_v5() && matches!(conn.phase, Phase::Active { .. }) {
                let disconnect = Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SERVER_SHUTTING_DOWN,
                    properties: DisconnectProperties::default(),
                });
                self.write_packet(conn_id, &disconnect);
            }
            self.end_connection(conn_id, CloseKind::Shutdown, now);
        }
    }

    pub(super) fn on_closed(&mut self, conn_id: ConnId, now: Instant) {
        let closing = self.conns.get(&conn_id).map(|conn| conn.is_closing());
        if closing == Some(false) {
            self.end_connection(conn_id, CloseKind::Abnormal, now);
        }
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        self.write_bytes = self.write_bytes.saturating_sub(conn.out_counted as usize);
        conn.topic_aliases.release(&mut self.alias_allowance);
        conn.aliases_to_client.release(&mut self.alias_allowance);
        if let Phase::Claiming { ticket } = conn.phase {
            self.abandon_connect(ticket, now);
        }
        // Room it held may let connections that waited for it go on.
        self.pump_write_waiting(now);
    }

    pub(super) fn on_accepted(&mut self, conn_id: ConnId, peer: SocketAddr, now: Instant) {
        self.counters.connections_accepted += 1;
        let mut conn = Conn::new(peer, now, self.settings.packet_bytes_max);
        // Refused when its CONNECT comes, so that the CONNACK is in the client's version: 5.0
        // 0x89 Server busy, 3.1.1 0x03 Server unavailable (nothing may precede CONNACK). A client
        // that never sends CONNECT is closed by the CONNECT timeout.
        conn.over_limit = self.conns.len() >= self.settings.connections_per_shard_max;
        self.conns.insert(conn_id, Box::new(conn));
        self.deadlines.push(
            now,
            now + self.settings.connect_timeout,
            conn_id,
            Deadline::Connect,
        );
    }

    /// Records when the partial packet the connection's reader holds began (`None`: it holds
    /// none), and queues its deadline when none is queued.
    pub fn set_partial_since(&mut self, conn_id: ConnId, since: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.partial_since = since;
        if let Some(since) = since
            && !conn.packet_queued
        {
            conn.packet_queued = true;
            self.deadlines.push(
                since,
                since + self.settings.packet_timeout,
                conn_id,
                Deadline::Packet,
            );
        }
    }

    pub(super) fn on_malformed(
        &mut self,
        conn_id: ConnId,
        error: protocol::DecodeError,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        let reason = error.reason_code();
        if matches!(conn.phase, Phase::AwaitingConnect) {
            if let Some(version) = error.refusal_version() {
                // Unsupported protocol level: answer in a format the client can read
                // (MQTT-3.1.2-2: 3.1.1 return code 0x01; 5.0: 0x84), then close.
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.version = version;
                }
                self.refuse_connect(conn_id, reason);
                return;
            }
            // A CONNECT that does not conform: close without CONNACK (MQTT-3.1.4-1).
            self.counters.protocol_errors += 1;
            self.mark_closing(conn_id);
            return;
        }
        self.close_with_reason(conn_id, reason, now);
    }

    /// Keepalive (1.5 x, MQTT-3.1.2-24), the CONNECT deadline and the packet deadline: only
    /// the connections whose entry in `deadlines` has come due are looked at. An entry whose
    /// connection was heard from since (or finished its packet, or sent CONNECT and got its
    /// CONNACK) goes back at its new time, or is dropped when nothing is left to time.
    pub(super) fn check_connections(&mut self, now: Instant) {
        let connect_timeout = self.settings.connect_timeout;
        let packet_timeout = self.settings.packet_timeout;
        let mut expired = Vec::new();
        while let Some((id, kind)) = self.deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            // When this connection is due next for what the entry was for (the kind may change:
            // the CONNECT deadline's entry goes on as the keepalive's), or `None`.
            let (due, kind) = match kind {
                Deadline::Packet => {
                    conn.packet_queued = false;
                    (conn.partial_since.map(|since| since + packet_timeout), kind)
                }
                Deadline::Connect => match conn.phase {
                    Phase::Active { .. } if conn.keepalive_queued => (None, kind),
                    Phase::Active { .. } => (conn.keepalive_deadline(), Deadline::KeepAlive),
                    Phase::AwaitingConnect | Phase::Claiming { .. } | Phase::Resuming { .. } => {
                        // Until CONNACK `connecting` is there; a connection without it
                        // (set back to waiting for CONNECT by a takeover) is past its time.
                        let Some(connecting) = conn.connecting.as_ref() else {
                            expired.push((id, kind));
                            continue;
                        };
                        (Some(connecting.accepted_at + connect_timeout), kind)
                    }
                },
                Deadline::KeepAlive => {
                    conn.keepalive_queued = false;
                    (conn.keepalive_deadline(), kind)
                }
            };
            let Some(due) = due else {
                continue;
            };
            if conn.is_closing() {
                continue;
            }
            if now <= due {
                match kind {
                    Deadline::Packet => conn.packet_queued = true,
                    Deadline::KeepAlive => conn.keepalive_queued = true,
                    Deadline::Connect => {}
                }
                self.deadlines.push(now, due, id, kind);
                continue;
            }
            expired.push((id, kind));
        }
        for (id, kind) in expired {
            // Two deadlines of one connection may pass in one tick: the first closes it.
            if self.conns.get(&id).is_none_or(|conn| conn.is_closing()) {
                continue;
            }
            match kind {
                // A packet begun and not finished in time (slow loris): closed as on a network
                // error, no DISCONNECT (the client is inside a packet), the will is published.
                Deadline::Packet => {
                    self.metrics
                        .limit_reached(crate::metrics::LimitReached::PacketTimeout);
                    self.end_connection(id, CloseKind::Abnormal, now);
                }
                Deadline::KeepAlive => {
                    self.close_with_reason(id, ReasonCode::KEEP_ALIVE_TIMEOUT, now)
                }
                Deadline::Connect => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        // Never connected: no will. A session already bound (resuming) goes
                        // offline.
                        conn.will = None;
                        self.end_connection(id, CloseKind::Normal, now);
                    }
                }
            }
        }
        let conns = &self.conns;
        self.deadlines
            .compact(conns.len(), |id| conns.contains_key(&id));
    }
}

#[cfg(test)]
mod size_tests {
    /// What each connection costs in the shard's own tables (docs/BENCHMARKS.md on idle
    /// connections): a `Box<Conn>` per connection and a `LocalSession` in the sessions' slab. A
    /// field added here is paid by every idle connection.
    #[test]
    fn per_connection_state_stays_small() {
        let sizes = [
            ("Conn", size_of::<super::Conn>(), 296),
            ("LocalSession", size_of::<super::super::LocalSession>(), 312),
            (
                "SessionState",
                size_of::<crate::session::SessionState>(),
                200,
            ),
        ];
        for (name, size, max) in sizes {
            assert!(size <= max, "{name} is {size} bytes, over {max}");
        }
    }
}

#[cfg(test)]
mod deadline_tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytestring::ByteString;
    use shards::ShardId;

    use super::super::{Event, Settings, Shard};
    use super::{ConnId, Phase};
    use crate::config::Config;
    use crate::protocol::{Connect, Packet, Version};

    pub(super) struct Harness {
        pub(super) shard: Shard,
        t0: Instant,
    }

    impl Harness {
        pub(super) fn new() -> Harness {
            let settings = Arc::new(Settings::from_config(&Config::default(), 1));
            Harness {
                shard: Shard::new(ShardId::new(0), 1, settings),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Handles `event` at `ms` after the start, then the mail the shard sent itself.
        pub(super) fn handle(&mut self, event: Event, ms: u64) {
            let now = self.at(ms);
            self.shard.handle(event, now);
            self.shard.handle_own_mail(now);
        }

        fn accept(&mut self, conn: ConnId, ms: u64) {
            let peer = ([127, 0, 0, 1], 1024).into();
            self.handle(Event::Accepted { conn, peer }, ms);
        }

        fn connect(&mut self, conn: ConnId, keep_alive_secs: u16, ms: u64) {
            self.connect_with(conn, keep_alive_secs, None, ms);
        }

        /// Connects with 5.0 and a Session Expiry Interval when `expiry_secs` is given.
        pub(super) fn connect_with(
            &mut self,
            conn: ConnId,
            keep_alive: u16,
            expiry_secs: Option<u32>,
            ms: u64,
        ) {
            self.accept(conn, ms);
            let mut connect = Connect {
                version: Version::V3_1_1,
                clean_start: true,
                keep_alive_secs: keep_alive,
                client_id: ByteString::from(format!("client-{conn}")),
                will: None,
                username: None,
                password: None,
                properties: Default::default(),
            };
            if let Some(secs) = expiry_secs {
                connect.version = Version::V5;
                connect.properties.session_expiry_interval_secs = Some(secs);
            }
            let packet = Packet::Connect(Box::new(connect));
            self.handle(Event::Packet { conn, packet }, ms);
            let active = self
                .shard
                .conn(conn)
                .is_some_and(|c| matches!(c.phase, Phase::Active { .. }));
            assert!(active, "connection {conn} got no CONNACK");
        }

        fn closing(&self, conn: ConnId) -> bool {
            self.shard.conn(conn).is_some_and(|c| c.is_closing())
        }
    }

    /// Each deadline closes its connection after its time and not before, whatever the number
    /// of other connections, and a connection heard from is put back, not closed; the queue
    /// holds one entry per idle connection however many ticks pass.
    #[test]
    fn deadlines_close_on_time_and_the_queue_stays_one_entry_per_connection() {
        let mut h = Harness::new();
        const IDLE: u64 = 1_000;
        for conn in 1..=IDLE {
            h.connect(conn, 60, 0);
        }
        h.connect(2_001, 2, 0); // silent: closed after 3 s
        h.connect(2_002, 2, 0); // pings at 2.5 s: closed after 5.5 s
        h.accept(2_003, 0); // never sends CONNECT: closed after the 10 s connect timeout
        h.connect(2_004, 0, 0); // a partial packet from 1 s: closed after 31 s
        h.shard.set_partial_since(2_004, Some(h.at(1_000)));
        h.connect(2_005, 0, 0); // a partial packet finished in time: left open
        h.shard.set_partial_since(2_005, Some(h.at(1_000)));
        h.connect(2_006, 60, 0); // pings at 60 s: left open at 90 s
        let timeline: &[(u64, &[ConnId])] = &[
            (2_900, &[]),
            (3_100, &[2_001]),
            (5_400, &[2_001]),
            (5_600, &[2_001, 2_002]),
            (9_900, &[2_001, 2_002]),
            (10_100, &[2_001, 2_002, 2_003]),
            (30_900, &[2_001, 2_002, 2_003]),
            (31_100, &[2_001, 2_002, 2_003, 2_004]),
            (89_900, &[2_001, 2_002, 2_003, 2_004]),
        ];
        let mut ms = 0;
        let (mut pinged, mut finished) = (false, false);
        for &(until, closed) in timeline {
            // A tick every 250 ms, as the shell gives them.
            while ms < until {
                ms = (ms + 250).min(until);
                if ms >= 2_500 && !std::mem::replace(&mut pinged, true) {
                    h.handle(
                        Event::Packet {
                            conn: 2_002,
                            packet: Packet::PingReq,
                        },
                        2_500,
                    );
                }
                if ms >= 20_000 && !std::mem::replace(&mut finished, true) {
                    h.shard.set_partial_since(2_005, None);
                }
                h.handle(Event::Tick, ms);
            }
            for conn in [2_001, 2_002, 2_003, 2_004, 2_005] {
                assert_eq!(
                    h.closing(conn),
                    closed.contains(&conn),
                    "connection {conn} at {ms} ms"
                );
            }
            assert!(
                (1..=IDLE).all(|conn| !h.closing(conn)),
                "an idle one closed at {ms} ms"
            );
            // Until the CONNECT deadline passes, each connection's entry for it is queued too.
            let bound = if ms <= 10_000 {
                2 * IDLE + 20
            } else {
                IDLE + 10
            };
            assert!(
                h.shard.deadlines.len() <= bound as usize,
                "{} entries at {ms} ms",
                h.shard.deadlines.len()
            );
        }
        let ping = Packet::PingReq;
        h.handle(
            Event::Packet {
                conn: 2_006,
                packet: ping,
            },
            60_000,
        );
        // One and a half times the keepalive of 60 s: all the idle ones go at 90 s.
        h.handle(Event::Tick, 90_100);
        assert!((1..=IDLE).all(|conn| h.closing(conn)));
        assert!(!h.closing(2_005));
        assert!(!h.closing(2_006));
        h.handle(Event::Tick, 149_900);
        assert!(!h.closing(2_006));
        h.handle(Event::Tick, 150_100);
        assert!(h.closing(2_006));
    }
}

#[cfg(test)]
mod churn_tests {
    use super::super::Event;

    /// Connections that come and go with the longest keepalive leave no growing queue of
    /// deadlines behind them: the entries of closed ones are dropped once they outnumber the
    /// live ones' (`Deadlines::compact`), though their time is 27 hours away.
    #[test]
    fn the_deadline_queue_stays_bounded_under_churn() {
        let mut h = super::deadline_tests::Harness::new();
        let mut most = 0;
        for conn in 1..=20_000u64 {
            let ms = conn / 10;
            h.connect_with(conn, u16::MAX, None, ms);
            if conn > 100 {
                h.handle(Event::Closed { conn: conn - 100 }, ms);
            }
            if conn.is_multiple_of(50) {
                h.handle(Event::Tick, ms);
            }
            most = most.max(h.shard.deadlines.len());
        }
        assert_eq!(h.shard.conns.len(), 100);
        assert!(
            most <= 3 * 100 + 1024 + 50,
            "{most} entries for 100 connections"
        );
    }
}

#[cfg(test)]
mod session_expiry_tests {
    /// An offline session ends at its expiry and not before, with many connected sessions the
    /// tick no longer passes over, and one that expires later still ends on time.
    #[test]
    fn offline_sessions_expire_on_time() {
        let mut h = super::deadline_tests::Harness::new();
        for conn in 1..=1_000 {
            h.connect_with(conn, 0, Some(3_600), 0);
        }
        h.connect_with(2_001, 0, Some(5), 0);
        h.connect_with(2_002, 0, Some(8), 0);
        h.handle(super::super::Event::Closed { conn: 2_002 }, 1_000);
        h.handle(super::super::Event::Closed { conn: 2_001 }, 2_000);
        let live = |h: &super::deadline_tests::Harness, conn: u64| {
            h.shard.session(&format!("client-{conn}")).is_some()
        };
        for (ms, first, second) in [
            (6_900, true, true),
            (7_100, false, true),
            (8_900, false, true),
            (9_100, false, false),
        ] {
            h.handle(super::super::Event::Tick, ms);
            assert_eq!(live(&h, 2_001), first, "at {ms} ms");
            assert_eq!(live(&h, 2_002), second, "at {ms} ms");
            assert!((1..=1_000).all(|conn| live(&h, conn)));
        }
        assert_eq!(h.shard.sessions_expire_from, None);
    }
}
