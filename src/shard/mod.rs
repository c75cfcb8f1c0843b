//! `Shard`: all broker state one core owns, and `handle`, the one synchronous entry to broker
//! logic. The async shell (`server`, `connection`) feeds it events and carries out what it leaves
//! behind: bytes in each connection's write buffer, connections to close, and mail to other shards.
//! Nothing here does I/O or awaits; time comes in as `now`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod access;
mod aliases;
mod cluster;
mod conn;
mod connect;
mod deadlines;
mod directory;
mod lifecycle;
mod mirror_qos2;
mod moving;
mod persist;
mod problem;
mod publish;
mod retained;
mod settings;
mod shared;
mod snapshot;
mod subscribe;
mod unsent;
mod wills;
mod writes;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;
use slab::Slab;

use crate::mail::{Mail, SharedPublish, Ticket};
use crate::message::Message;
use crate::protocol::{DecodeError, Packet, ReasonCode};
use crate::router::{TopicTree, Trie};
use crate::session::{SessionState, Subscription};

pub use conn::{Conn, ConnId, ConnIdHasher, ConnMap, EnhancedAuth, Phase};
pub use moving::Hop;
pub use persist::StoreMark;
pub use settings::Settings;
pub use unsent::{UNSENT_RUNS_IDLE_MAX, UNSENT_RUNS_MAX, Unsent, UnsentRun};

/// A message id holds the index of the shard that accepted the message above this bit.
const MESSAGE_ID_SHARD_SHIFT: u32 = 48;

/// The index of the shard that accepted message `id` (see `Shard::take_message_id`).
fn message_shard(id: u64) -> usize {
    (id >> MESSAGE_ID_SHARD_SHIFT) as usize
}

use directory::Directory;

/// The shard's large tables (sessions by client id, each filter's subscribers, the client-id
/// directory) are filled by the hundred thousand at a start with a large store: hashed with
/// ahash (keyed per process), several times faster there than the standard SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use subscribe::PendingBarrier;

/// Packets a client may send after CONNECT before its CONNACK is ready.
const EARLY_PACKETS_MAX: usize = 64;

/// Index of a session in this shard's session table.
pub type SessionKey = usize;

/// Something that happened, for the shard to act on.
// Events are built by the shell and consumed at once by `handle`; boxing the packet would cost an
// allocation per packet. Instead the packet is kept small (rare, large packets and properties are
// boxed) so that each move of an event between decode and the shard copies about a hundred bytes.
#[derive(Debug)]
pub enum Event {
    /// A TCP (or TLS) connection was accepted.
    Accepted { conn: ConnId, peer: SocketAddr },
    /// A whole packet arrived on a connection.
    Packet { conn: ConnId, packet: Packet },
    /// The connection's CONNECT (the next event) passed authentication, by this enhanced
    /// authentication if it named a method.
    Authenticated {
        conn: ConnId,
        enhanced: Option<EnhancedAuth>,
    },
    /// The connection's CONNECT failed authentication: CONNACK with `reason`, then close.
    AuthRefused {
        conn: ConnId,
        version: crate::protocol::Version,
        reason: ReasonCode,
    },
    /// Enhanced authentication continues: send this AUTH to the client (5.0 §4.12).
    AuthChallenge {
        conn: ConnId,
        auth: Box<crate::protocol::Auth>,
    },
    /// The connection sent bytes that do not decode (the spec's answer goes out, then close).
    Malformed { conn: ConnId, error: DecodeError },
    /// The connection's write buffer was written out: queued deliveries may go next.
    Drained { conn: ConnId },
    /// The socket is gone (peer closed, I/O error, or our own close finished). Final.
    Closed { conn: ConnId },
    /// Mail from another shard (or this one).
    Mail { from: ShardId, mail: Mail },
    /// Periodic: keepalive, CONNECT timeout, session expiry.
    Tick,
}

const _: () = assert!(std::mem::size_of::<Event>() <= 112);

/// A session held on this shard, with the connection it is bound to, if any.
#[derive(Debug)]
pub struct LocalSession {
    pub state: SessionState,
    pub conn: Option<ConnId>,
    /// The directory generation under which this shard owns the session.
    pub generation: u64,
    /// This shard's claim ticket for the session: names it in a chain of moves (see `moving`).
    pub ticket: Ticket,
    /// When an offline session ends.
    pub expires_at: Option<Instant>,
    /// Set on a stub left behind by a session that moved to that shard: deliveries are forwarded.
    pub forward_to: Option<Hop>,
    /// The shard this session came from, until it says it forwards nothing more (`Released`).
    pub moved_from: Option<ShardId>,
    /// Ids of messages delivered while the session is moving in (see `moving`); boxed, as
    /// only a session moving in has one.
    pub dedup: Option<Box<std::collections::HashSet<u64>>>,
    /// Messages routed here directly while the former owner still forwards older ones; boxed,
    /// as only a session moving in has them (8 bytes of every session, where the list is 24).
    #[allow(clippy::box_collection)]
    pub held: Option<Box<Vec<crate::session::Delivery>>>,
    /// How the session is written to the store at the end of the batch.
    pub store: StoreMark,
}

/// Counters kept by the shard (the metrics issue exports them).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub protocol_errors: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub dropped_queue_full: u64,
    pub dropped_shard_full: u64,
    pub dropped_expired: u64,
    pub dropped_too_large: u64,
    pub dropped_qos0_offline: u64,
    pub dropped_no_session: u64,
    pub dropped_retained_full: u64,
    pub dropped_no_subscribers: u64,
    pub forwarded: u64,
    pub duplicates_dropped: u64,
    pub mail_sent: u64,
    pub mail_received: u64,
}

/// All state one shard owns.
pub struct Shard {
    id: ShardId,
    shard_count: usize,
    settings: Arc<Settings>,
    /// Boxed: a table of inline `Conn`s would hold (and, growing, briefly double) room for up
    /// to twice as many connections as are open.
    conns: ConnMap<Box<Conn>>,
    /// When each connection's CONNECT, keepalive or packet deadline is to be looked at.
    deadlines: deadlines::Deadlines,
    sessions: Slab<LocalSession>,
    /// No offline session expires before this (`None`: none has an expiry): the tick passes
    /// over the sessions only once it is reached (`expire_sessions`).
    sessions_expire_from: Option<Instant>,
    sessions_by_client: FastMap<ByteString, SessionKey>,
    /// What the sessions in `sessions` hold together, queued and in flight (against
    /// `limits.queued_*_per_shard_max`): a session adds to it when it is installed and takes off
    /// what it holds when it leaves, and every message taken in or let go counts.
    held: crate::session::Held,
    /// Subscriptions of the sessions in `sessions` (against `limits.subscriptions_per_shard_max`).
    subscription_count: usize,
    /// Bytes of the filters of those subscriptions (against
    /// `limits.subscription_bytes_per_shard_max`).
    subscription_bytes: usize,
    /// What the topic alias tables of all connections hold (against
    /// `limits.topic_alias_bytes_per_shard_max`).
    alias_allowance: aliases::AliasAllowance,
    /// Local subscriptions: filter -> session -> subscription.
    subscriptions: Trie<FastMap<SessionKey, Subscription>>,
    /// Replicated interest: filter -> remote shards with at least one subscriber.
    interest: Trie<shards::ShardSet>,
    /// Shared-subscription members on this shard: filter -> group -> members.
    shared_local: Trie<shared::LocalGroups>,
    /// Shared-subscription member counts of every shard (this one included).
    shared_interest: Trie<shared::SharedFilter>,
    /// This shard's partition of the retained store (topics whose home is here).
    retained: TopicTree<Arc<Message>>,
    retained_bytes: usize,
    /// Retained writes sent to their topic's home shard and not yet confirmed stored there, by
    /// topic (see `retained`).
    retained_sending: HashMap<ByteString, Arc<Message>>,
    /// Writes of `retained_sending` confirmed by their home, waiting for the next settle barrier.
    retained_confirmed: Vec<(ByteString, u64)>,
    /// A settle barrier is on its way.
    retained_settling: bool,
    directory: Directory,
    /// Mail waiting to be moved into the ring to each shard (index = shard).
    outgoing: Vec<VecDeque<Mail>>,
    /// Mail that should not wait for the flush task (a new subscription's interest).
    urgent_mail: bool,
    /// Connections with bytes to write or a close to carry out.
    dirty: Vec<ConnId>,
    /// Connections with deliveries encoded in the batch under way, to be dated when it ends
    /// (`stamp_encoded`).
    unstamped: Vec<ConnId>,
    next_ticket: Ticket,
    barriers: HashMap<Ticket, PendingBarrier>,
    connects: HashMap<Ticket, connect::PendingConnect>,
    next_assigned_id: u64,
    /// Sessions that moved away and still forward (see `moving`).
    stubs: Vec<SessionKey>,
    /// Moves passed on from here that still forward (see `moving`).
    links: Vec<moving::Link>,
    next_message_id: u64,
    /// Metrics handed to the admin listener and `$SYS` about once a second (see `metrics`).
    pub metrics: crate::metrics::ShardMetrics,
    /// `counters` as last copied into `metrics`.
    counters_reported: Counters,
    /// Wills waiting for their Will Delay Interval, by client id (5.0).
    /// The username is the publisher's, for the ACL check when the will is sent.
    delayed_wills: HashMap<ByteString, (Instant, Option<ByteString>, wills::HeldWill)>,
    /// Bytes of the shard's write buffers and writes under way (against
    /// `limits.write_buffer_bytes_per_shard_max`, see `writes`).
    write_bytes: usize,
    /// Connections whose deliveries wait for room under that cap.
    write_waiting: Vec<ConnId>,
    /// Bytes of the wills held by connections and in `delayed_wills` (against
    /// `limits.will_bytes_per_shard_max`).
    will_bytes: wills::WillBytes,
    pub counters: Counters,
    /// Scratch space for one fan-out, reused so routing does not allocate per message.
    matches: Vec<(SessionKey, Subscription)>,
    /// The last PUBLISH encoded, for the next subscriber of the same message.
    publish_cache: publish::PublishCache,
    /// Scratch space for the shared messages one delivery evicted (`drop_oldest`), to be offered
    /// to another member of their group.
    evicted_shared: Vec<(crate::session::Delivery, crate::session::DropReason)>,
    /// The ACL file in force; `None`: everything is allowed (and nothing is checked).
    acl: Option<Arc<crate::auth::Acl>>,
    /// Names `acl` (the security reload generation + 1, the same on every shard), for the read
    /// decisions cached in subscriptions.
    acl_generation: u64,
    /// The log of what this shard persists, when persistence is on (see `persist`).
    store: Option<Box<crate::store::Journal>>,
    /// Sessions changed in this batch, for the store (may repeat).
    store_dirty: Vec<SessionKey>,
    /// Changes other than sessions' own, in order, for the store.
    store_pending: Vec<persist::Pending>,
    /// Scratch space for one session's changes.
    store_ops: Vec<crate::session::LogOp>,
    /// Where the snapshot under way has got to (see `snapshot`).
    snapshot_cursor: Option<Box<snapshot::SnapshotCursor>>,
    /// Shards that said they installed their restored state (`Mail::Restored`).
    restored_peers: usize,
    /// The link to the other nodes of the cluster, when there is one.
    cluster: Option<crate::cluster::ShardLink>,
}

impl Shard {
    pub fn new(id: ShardId, shard_count: usize, settings: Arc<Settings>) -> Shard {
        assert!(id.index() < shard_count, "shard id out of range");
        let alias_bytes_max = settings.topic_alias_bytes_per_shard_max;
        Shard {
            id,
            shard_count,
            settings,
            conns: ConnMap::default(),
            deadlines: deadlines::Deadlines::default(),
            sessions: Slab::new(),
            sessions_expire_from: None,
            sessions_by_client: FastMap::default(),
            held: crate::session::Held::default(),
            subscription_count: 0,
            subscription_bytes: 0,
            alias_allowance: aliases::AliasAllowance::new(alias_bytes_max),
            subscriptions: Trie::new(),
            interest: Trie::new(),
            shared_local: Trie::new(),
            shared_interest: Trie::new(),
            retained: TopicTree::new(),
            retained_bytes: 0,
            retained_sending: HashMap::new(),
            retained_confirmed: Vec::new(),
            retained_settling: false,
            directory: Directory::default(),
            outgoing: (0..shard_count).map(|_| VecDeque::new()).collect(),
            urgent_mail: false,
            dirty: Vec::new(),
            unstamped: Vec::new(),
            next_ticket: 1,
            barriers: HashMap::new(),
            connects: HashMap::new(),
            next_assigned_id: 0,
            delayed_wills: HashMap::new(),
            will_bytes: wills::WillBytes::default(),
            write_bytes: 0,
            write_waiting: Vec::new(),
            stubs: Vec::new(),
            links: Vec::new(),
            next_message_id: 0,
            metrics: crate::metrics::ShardMetrics::new(),
            counters_reported: Counters::default(),
            counters: Counters::default(),
            matches: Vec::new(),
            publish_cache: publish::PublishCache::default(),
            evicted_shared: Vec::new(),
            acl: None,
            acl_generation: 1,
            store: None,
            store_dirty: Vec::new(),
            store_pending: Vec::new(),
            store_ops: Vec::new(),
            snapshot_cursor: None,
            restored_peers: 0,
            cluster: None,
        }
    }

    /// Joins the cluster: publishes with remote interest go to the link, interest changes and
    /// subscribe barriers too (docs/CLUSTER.md).
    pub fn set_cluster(&mut self, cluster: crate::cluster::ClusterHandle) {
        self.cluster = Some(crate::cluster::ShardLink::new(cluster));
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The one entry to broker logic.
    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Accepted { conn, peer } => self.on_accepted(conn, peer, now),
            Event::Packet { conn, packet } => self.on_packet(conn, packet, now),
            Event::Authenticated { conn, enhanced } => self.on_authenticated(conn, enhanced),
            Event::AuthRefused {
                conn,
                version,
                reason,
            } => self.on_auth_refused(conn, version, reason),
            Event::AuthChallenge { conn, auth } => self.on_auth_challenge(conn, auth),
            Event::Malformed { conn, error } => self.on_malformed(conn, error, now),
            Event::Drained { conn } => {
                self.pump_conn(conn, now);
                self.pump_write_waiting(now);
            }
            Event::Closed { conn } => self.on_closed(conn, now),
            Event::Mail { from, mail } => {
                self.counters.mail_received += 1;
                self.store_mail_handled(from, &mail);
                self.on_mail(from, mail, now);
            }
            Event::Tick => self.on_tick(now),
        }
    }

    fn on_packet(&mut self, conn_id: ConnId, packet: Packet, now: Instant) {
        self.metrics
            .packet_received(crate::metrics::PacketKind::of(&packet));
        if let Packet::Publish(publish) = &packet {
            self.metrics.message_received(publish.qos);
        }
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        conn.last_seen = now;
        match (&conn.phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => {
                self.on_connect(conn_id, connect, now)
            }
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            (Phase::AwaitingConnect, _) => self.close_protocol_error(conn_id, now),
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
            (_, Packet::Connect(_)) => self.close_protocol_error(conn_id, now),
            // A client may send packets right after CONNECT (3.1.1 §3.1.4); while the CONNECT is
            // still being claimed they wait, bounded, and are handled after CONNACK.
            (Phase::Claiming { .. } | Phase::Resuming { .. }, packet) => {
                match conn.connecting.as_mut() {
                    Some(c) if c.early_packets.len() < EARLY_PACKETS_MAX => {
                        c.early_packets.push(packet)
                    }
                    _ => self.close_with_reason(conn_id, ReasonCode::QUOTA_EXCEEDED, now),
                }
            }
            (Phase::Active { session }, packet) => {
                let session = *session;
                self.on_session_packet(conn_id, session, packet, now)
            }
        }
    }

    fn on_session_packet(
        &mut self,
        conn_id: ConnId,
        session: SessionKey,
        packet: Packet,
        now: Instant,
    ) {
        match packet {
            Packet::Publish(publish) => self.on_publish(conn_id, session, publish, now),
            Packet::PubAck(ack) => {
                self.on_puback(conn_id, session, ack, now);
                self.acknowledged_in_cluster(session);
            }
            Packet::PubRec(ack) => {
                self.on_pubrec(conn_id, session, ack, now);
                self.acknowledged_in_cluster(session);
            }
            Packet::PubRel(ack) => self.on_pubrel(conn_id, session, ack, now),
            Packet::PubComp(ack) => self.on_pubcomp(conn_id, session, ack, now),
            Packet::Subscribe(subscribe) => self.on_subscribe(conn_id, session, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(conn_id, session, unsubscribe, now)
            }
            Packet::PingReq => self.write_packet(conn_id, &Packet::PingResp),
            Packet::Disconnect(disconnect) => self.on_disconnect(conn_id, disconnect, now),
            Packet::Auth(_) => self.close_protocol_error(conn_id, now),
            // Packets only a server sends.
            Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Connect(_) => self.close_protocol_error(conn_id, now),
        }
    }

    fn on_mail(&mut self, from: ShardId, mail: Mail, now: Instant) {
        match mail {
            Mail::Publish(message) => {
                self.deliver_local(&message, now);
            }
            Mail::Interest { add, remove } => self.on_interest(from, add, remove),
            Mail::SharedInterest(interest) => {
                let count = interest.members as usize;
                self.set_shared_count(from, interest.filter, interest.group, count)
            }
            Mail::SharedPublish(publish) => {
                let SharedPublish {
                    message,
                    filter,
                    group,
                    hops,
                    reoffer,
                    tag,
                } = *publish;
                self.with_tag(tag, message.id, |shard| {
                    shard.deliver_shared_local(filter, group, message, hops, reoffer, None, now)
                })
            }
            Mail::Barrier { ticket, queries } => self.on_barrier(from, ticket, queries, now),
            Mail::BarrierReply { ticket, retained } => self.on_barrier_reply(ticket, retained, now),
            Mail::Retain(message) => self.on_retain(from, message),
            Mail::RetainStored { topic, id } => self.on_retain_stored(topic, id, now),
            Mail::Claim {
                client_id,
                ticket,
                resumes,
            } => self.on_claim(from, client_id, ticket, resumes),
            Mail::ClaimReply {
                ticket,
                generation,
                previous,
                mirrored,
            } => self.on_claim_reply(ticket, generation, previous, mirrored, now),
            Mail::Takeover {
                client_id,
                new_owner,
                ticket,
                resumes,
            } => self.on_takeover(client_id, new_owner, ticket, resumes, now),
            Mail::Handover { ticket, session } => self.on_handover(from, ticket, session, now),
            Mail::Forward(forward) => self.on_forward(*forward, now),
            Mail::Confirmed { client_id, ticket } => {
                self.on_confirmed(from, client_id, ticket, now)
            }
            Mail::Released { client_id, ticket } => self.on_released(client_id, ticket, now),
            Mail::Release {
                client_id,
                generation,
            } => self.directory.release(&client_id, generation),
            Mail::Durable { count, ok } => self.on_durable(from, count, ok),
            Mail::Restored => self.on_restored(),
            Mail::Remote(message) => self.route_remote(message, now),
            Mail::RemoteTagged { message, tag } => self.route_remote_tagged(message, tag, now),
            Mail::PublishTagged { message, tag } => self.deliver_tagged(&message, tag, now),
            Mail::StreamAckFloor(floor) => self.on_stream_ack_floor(floor),
            Mail::RemoteShared(shared) => self.route_remote_shared(*shared, now),
            Mail::QueuedFor { client_id, message } => {
                self.on_queued_for(from, client_id, message, now)
            }
            Mail::MirroredSession {
                client_id,
                record,
                node,
                own,
            } => self.on_mirrored_session(client_id, record, node, own),
            Mail::AdoptSessions { node } => self.adopt_sessions(&node, now),
            Mail::ClusterStored { upto, ok, refused } => {
                self.on_cluster_stored(upto, ok, &refused);
            }
            Mail::RemoteRetain(message) => self.store_retained(message),
            Mail::RemoteClaim { client_id, at } => self.on_remote_claim(client_id, at, now),
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.check_connections(now);
        self.expire_sessions(now);
        self.trim_queued_copies();
    }

    /// Queues mail for `to` (itself included: the shell hands self-mail straight back).
    fn send_mail(&mut self, to: ShardId, mail: Mail) {
        self.store_mailed(to, &mail);
        if let Some(queue) = self.outgoing.get_mut(to.index()) {
            self.counters.mail_sent += 1;
            queue.push_back(mail);
        }
    }

    /// Queues a copy of mail for every other shard.
    fn broadcast_mail(&mut self, make: impl Fn() -> Mail) {
        for index in 0..self.shard_count {
            if index != self.id.index() {
                self.send_mail(ShardId::new(index), make());
            }
        }
    }

    /// A process-wide unique message id: this shard's index and its own counter.
    fn take_message_id(&mut self) -> u64 {
        self.next_message_id += 1;
        ((self.id.index() as u64) << MESSAGE_ID_SHARD_SHIFT)
            | (self.next_message_id & ((1 << MESSAGE_ID_SHARD_SHIFT) - 1))
    }

    fn take_ticket(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// The shard that owns `key` (a client id or a topic) in a hash-partitioned table.
    pub fn home_of(&self, key: &str) -> ShardId {
        home_of(key, self.shard_count)
    }

    // ---- What the shell reads after `handle` ----

    /// Connections whose write buffer or close flag changed since the last call.
    pub fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.dirty);
    }

    /// Whether deliveries were encoded since the last `stamp_encoded`.
    pub fn has_unstamped(&self) -> bool {
        !self.unstamped.is_empty()
    }

    /// Dates the deliveries encoded in the batch that just ended: the shell reads the clock
    /// once at the end of a batch that encoded any.
    pub fn stamp_encoded(&mut self, at: Instant) {
        for conn_id in self.unstamped.drain(..) {
            if let Some(conn) = self.conns.get_mut(&conn_id) {
                conn.unsent.stamp(at);
            }
        }
    }

    /// Moves up to `max` mails for shard `to` into `into`.
    pub fn take_mail(&mut self, to: ShardId, into: &mut Vec<Mail>, max: usize) {
        if let Some(queue) = self.outgoing.get_mut(to.index()) {
            let n = queue.len().min(max);
            into.extend(queue.drain(..n));
        }
    }

    /// Hands a one-shard test's mail to itself back to it until none is left, as the shell
    /// does (bounded: a shard that keeps mailing itself fails the test).
    #[cfg(test)]
    pub(crate) fn handle_own_mail(&mut self, now: Instant) {
        let me = self.id;
        let mut batch = Vec::new();
        for _ in 0..1000 {
            self.take_mail(me, &mut batch, 64);
            if batch.is_empty() {
                return;
            }
            for mail in batch.drain(..) {
                self.handle(Event::Mail { from: me, mail }, now);
            }
        }
        panic!("the shard still mails itself after 1,000 batches");
    }

    /// Puts mail the shell could not send back at the front of its queue, in order.
    pub fn unsend_mail(&mut self, to: ShardId, mail: Vec<Mail>) {
        if let Some(queue) = self.outgoing.get_mut(to.index()) {
            for mail in mail.into_iter().rev() {
                queue.push_front(mail);
            }
        }
    }

    /// Whether mail was queued since the last call that the shell should send at once.
    pub fn take_urgent_mail(&mut self) -> bool {
        std::mem::take(&mut self.urgent_mail)
    }

    /// Whether any mail is waiting to go out.
    pub fn has_mail(&self) -> bool {
        self.outgoing.iter().any(|q| !q.is_empty())
    }

    /// Whether outgoing mail has backed up past the high-water mark for some peer: publishers on
    /// this shard stop reading until it drains (backpressure ends at TCP; nothing is dropped).
    pub fn mail_backlogged(&self) -> bool {
        self.outgoing
            .iter()
            .any(|q| q.len() >= self.settings.mail_backlog_max)
    }

    pub fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn).map(|conn| &**conn)
    }

    pub fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&conn).map(|conn| &mut **conn)
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What this shard's sessions hold, queued and in flight.
    pub fn held(&self) -> crate::session::Held {
        self.held
    }

    /// Subscriptions (shared ones included) of this shard's sessions.
    pub fn subscription_count(&self) -> usize {
        self.subscription_count
    }

    /// Bytes of the filters of this shard's subscriptions.
    pub fn subscription_bytes(&self) -> usize {
        self.subscription_bytes
    }

    /// Bytes of the wills this shard holds (connections' and delayed ones).
    pub fn will_bytes(&self) -> usize {
        self.will_bytes.get()
    }

    /// `held()` and `subscription_count()` counted again by walking every session: what the
    /// kept totals must equal (for tests; O(sessions)).
    pub fn recount_held(&self) -> (crate::session::Held, usize) {
        let mut held = crate::session::Held::default();
        let mut subscriptions = 0;
        for (_, session) in &self.sessions {
            held.add(session.state.held());
            subscriptions += session.state.subscriptions.len();
        }
        (held, subscriptions)
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub fn session(&self, client_id: &str) -> Option<&LocalSession> {
        self.sessions_by_client
            .get(client_id)
            .and_then(|key| self.sessions.get(*key))
    }

    /// Filters with a local subscriber on this shard.
    pub fn local_filters(&self) -> Vec<String> {
        self.subscriptions
            .iter()
            .map(|(filter, _)| filter)
            .collect()
    }

    /// Filters this shard believes `shard` has subscribers for.
    pub fn interest_filters(&self, shard: ShardId) -> Vec<String> {
        self.interest
            .iter()
            .filter(|(_, set)| set.contains(shard))
            .map(|(filter, _)| filter)
            .collect()
    }

    /// Client ids whose home is this shard and that have an owner.
    pub fn directory_len(&self) -> usize {
        self.directory.len()
    }

    pub fn directory_owner(&self, client_id: &str) -> Option<ShardId> {
        self.directory.owner(client_id)
    }

    /// Brings the metrics up to date (gauges, and the counters kept in `Counters`) before a
    /// snapshot is taken. Walks the sessions: about once a second, not per message.
    pub fn refresh_metrics(&mut self) {
        use crate::metrics::DropReason as Reason;
        let counts = &mut self.metrics.counts;
        counts.connections = self.conns.len() as u64;
        counts.sessions = self.sessions.len() as u64;
        let (mut subscriptions, mut shared, mut queued) = (0u64, 0u64, 0u64);
        for (_, session) in &self.sessions {
            for filter in session.state.subscriptions.keys() {
                if filter.starts_with("$share/") {
                    shared += 1;
                } else {
                    subscriptions += 1;
                }
            }
            queued += session.state.outbox_len() as u64;
        }
        counts.subscriptions = subscriptions;
        counts.shared_subscriptions = shared;
        counts.queued_messages = queued;
        counts.queued_bytes = self.held.bytes as u64;
        counts.retained_messages = self.retained.len() as u64;
        counts.retained_bytes = self.retained_bytes as u64;
        counts.ring_depth = self.outgoing.iter().map(|q| q.len() as u64).sum();
        counts.write_buffer_bytes = self.write_bytes as u64;
        counts.will_bytes = self.will_bytes.get() as u64;
        counts.subscription_bytes = self.subscription_bytes as u64;
        counts.store_broken = u64::from(self.store.as_ref().is_some_and(|j| j.is_broken()));
        counts.store_acks_waiting = self.store.as_ref().map_or(0, |j| j.pending_acks() as u64);
        let c = &self.counters;
        counts.connections_accepted = c.connections_accepted;
        counts.mail_sent = c.mail_sent;
        counts.mail_received = c.mail_received;
        let r = &self.counters_reported;
        let drops = [
            (
                Reason::QueueFull,
                c.dropped_queue_full - r.dropped_queue_full,
            ),
            (
                Reason::ShardFull,
                c.dropped_shard_full - r.dropped_shard_full,
            ),
            (Reason::Expired, c.dropped_expired - r.dropped_expired),
            (
                Reason::TooLargeForClient,
                c.dropped_too_large - r.dropped_too_large,
            ),
            (
                Reason::Qos0Offline,
                c.dropped_qos0_offline - r.dropped_qos0_offline,
            ),
            (
                Reason::NoSession,
                c.dropped_no_session - r.dropped_no_session,
            ),
            (
                Reason::RetainedFull,
                c.dropped_retained_full - r.dropped_retained_full,
            ),
            (
                Reason::NoSubscribers,
                c.dropped_no_subscribers - r.dropped_no_subscribers,
            ),
        ];
        for (reason, n) in drops {
            if n > 0 {
                self.metrics.messages_dropped(reason, n);
            }
        }
        self.counters_reported = self.counters.clone();
    }
}

/// Hash partitioning shared by every shard: the same key always has the same home.
pub fn home_of(key: &str, shard_count: usize) -> ShardId {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    let count = shard_count.max(1) as u64;
    ShardId::new((hasher.finish() % count) as usize)
}
