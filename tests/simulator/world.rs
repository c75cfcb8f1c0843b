//! The simulated world: N shards in one thread, virtual clients as connection ids, mail in
//! per-ordered-pair FIFO queues delivered in a seeded order, and a virtual clock. It plays the
//! shell's part (read each connection's write buffer, feed `Closed` after a close, `Drained` after
//! a write) and checks the invariants that hold in every scenario after every `handle`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq::config::Config;
use ringmq::mail::Mail;
use ringmq::protocol::{
    self, ByteString, Bytes, ConnAck, Connect, ConnectProperties, Disconnect, Packet, PacketId,
    PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
    Unsubscribe, Version,
};
use ringmq::shard::{ConnId, Event, Phase, Settings, Shard};
use shards::ShardId;

use super::invariants::Views;
use super::rng::Rng;

/// Mail deliveries after which a world that has not gone quiet is taken to be livelocked.
const SETTLE_DELIVERIES_MAX: usize = 200_000;

/// One connection of a virtual client, as the client sees it.
#[derive(Debug)]
pub struct Client {
    pub shard: usize,
    pub client_id: String,
    pub version: Version,
    pub connack: Option<ConnAck>,
    /// The broker closed it (seen after reading its buffer) or the client dropped it.
    pub closed: bool,
    /// Packet ids of SUBSCRIBE, UNSUBSCRIBE and QoS 1 PUBLISH sent and not yet answered.
    pub awaiting: BTreeSet<u16>,
    /// QoS 1 and 2 deliveries received and not yet acknowledged (PUBACK or PUBREC).
    pub unacked: Vec<(PacketId, QoS)>,
    /// Our QoS 2 publishes the broker answered with PUBREC: PUBREL is due.
    pub pubrel_due: Vec<PacketId>,
    /// QoS 2 deliveries the broker released (PUBREL): PUBCOMP is due.
    pub pubcomp_due: Vec<PacketId>,
    next_packet_id: u16,
}

impl Client {
    /// CONNACK'd with success and not closed.
    pub fn is_live(&self) -> bool {
        !self.closed
            && self
                .connack
                .as_ref()
                .is_some_and(|a| a.reason == ReasonCode::SUCCESS)
    }

    /// Acknowledgements this connection still has to send.
    fn owes_answers(&self) -> bool {
        !self.unacked.is_empty() || !self.pubrel_due.is_empty() || !self.pubcomp_due.is_empty()
    }

    fn take_packet_id(&mut self) -> PacketId {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        let id = self.next_packet_id;
        assert!(!self.awaiting.contains(&id), "packet id {id} still in use");
        NonZeroU16::new(id).unwrap()
    }
}

/// How a client connects.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    pub version: Version,
    pub clean: bool,
    /// 5.0 Session Expiry Interval (3.1.1 persistent sessions get the configured default).
    pub expiry_secs: u32,
    pub keepalive_secs: u16,
}

pub struct World {
    pub n: usize,
    pub shards: Vec<Shard>,
    pub rng: Rng,
    /// Mail moved out of `from` and not yet handed to `to`: `pending[from][to]`, FIFO.
    pub(super) pending: Vec<Vec<VecDeque<Mail>>>,
    base: Instant,
    elapsed: Duration,
    pub clients: BTreeMap<ConnId, Client>,
    /// Connections not yet closed, per shard.
    pub(super) open: Vec<BTreeSet<ConnId>>,
    /// Every client id ever used.
    pub(super) client_ids: BTreeSet<String>,
    next_conn: ConnId,
    /// Events caused by the one being handled (the shell's reactions), handled in order.
    work: VecDeque<(usize, Event)>,
    /// Every packet the broker wrote, in the order the clients read them; scenarios drain it.
    pub log: Vec<(ConnId, Packet)>,
    /// Print every action (`SIM_TRACE=1`).
    trace: bool,
    pub(super) views: Views,
}

impl World {
    pub fn new(n: usize, seed: u64) -> World {
        let settings = Arc::new(Settings::from_config(&Config::default(), n));
        World {
            n,
            shards: (0..n)
                .map(|i| Shard::new(ShardId::new(i), n, Arc::clone(&settings)))
                .collect(),
            rng: Rng::new(seed),
            pending: (0..n)
                .map(|_| (0..n).map(|_| VecDeque::new()).collect())
                .collect(),
            base: Instant::now(),
            elapsed: Duration::ZERO,
            clients: BTreeMap::new(),
            open: (0..n).map(|_| BTreeSet::new()).collect(),
            client_ids: BTreeSet::new(),
            next_conn: 1,
            work: VecDeque::new(),
            log: Vec::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            views: Views::new(n),
        }
    }

    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    pub fn random_shard(&mut self) -> usize {
        self.rng.below(self.n)
    }

    pub fn client(&self, conn: ConnId) -> &Client {
        &self.clients[&conn]
    }

    fn note(&self, what: std::fmt::Arguments) {
        if self.trace {
            eprintln!("[{:>8?}] {what}", self.elapsed);
        }
    }

    // ---- Client actions ----

    /// Opens a connection on `shard` and sends CONNECT; returns its id.
    pub fn connect(&mut self, shard: usize, client_id: &str, options: ConnectOptions) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.note(format_args!(
            "conn {conn}: {client_id} CONNECT on shard {shard} {options:?}"
        ));
        self.client_ids.insert(client_id.to_owned());
        self.clients.insert(
            conn,
            Client {
                shard,
                client_id: client_id.to_owned(),
                version: options.version,
                connack: None,
                closed: false,
                awaiting: BTreeSet::new(),
                unacked: Vec::new(),
                pubrel_due: Vec::new(),
                pubcomp_due: Vec::new(),
                next_packet_id: 0,
            },
        );
        self.open[shard].insert(conn);
        let peer: SocketAddr = ([127, 0, 0, 1], 1024 + (conn % 60_000) as u16).into();
        self.feed(shard, Event::Accepted { conn, peer });
        let mut properties = ConnectProperties::default();
        if options.version.is_v5() && options.expiry_secs > 0 {
            properties.session_expiry_interval_secs = Some(options.expiry_secs);
        }
        let connect = Connect {
            version: options.version,
            clean_start: options.clean,
            keep_alive_secs: options.keepalive_secs,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties,
        };
        self.send(conn, Packet::Connect(Box::new(connect)));
        conn
    }

    /// Sends a packet on an open connection (ignored once it is closed).
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let Some(client) = self.clients.get(&conn) else {
            return;
        };
        if client.closed {
            return;
        }
        let shard = client.shard;
        self.feed(shard, Event::Packet { conn, packet });
    }

    pub fn subscribe(&mut self, conn: ConnId, filters: &[&str], qos: QoS) {
        let client = self.clients.get_mut(&conn).unwrap();
        if client.closed {
            return;
        }
        let packet_id = client.take_packet_id();
        client.awaiting.insert(packet_id.get());
        self.note(format_args!("conn {conn}: SUBSCRIBE {filters:?}"));
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: ByteString::from(*f),
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            })
            .collect();
        let subscribe = Subscribe {
            packet_id,
            properties: Default::default(),
            filters,
        };
        self.send(conn, Packet::Subscribe(subscribe));
    }

    pub fn unsubscribe(&mut self, conn: ConnId, filters: &[&str]) {
        let client = self.clients.get_mut(&conn).unwrap();
        if client.closed {
            return;
        }
        let packet_id = client.take_packet_id();
        client.awaiting.insert(packet_id.get());
        self.note(format_args!("conn {conn}: UNSUBSCRIBE {filters:?}"));
        let unsubscribe = Unsubscribe {
            packet_id,
            properties: Default::default(),
            filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
        };
        self.send(conn, Packet::Unsubscribe(unsubscribe));
    }

    /// Publishes (QoS 0, 1 or 2) on an open connection.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: Vec<u8>, qos: QoS) {
        let client = self.clients.get_mut(&conn).unwrap();
        if client.closed {
            return;
        }
        let packet_id = (qos != QoS::AtMostOnce).then(|| {
            let id = client.take_packet_id();
            client.awaiting.insert(id.get());
            id
        });
        self.note(format_args!("conn {conn}: PUBLISH {topic} {payload:?}"));
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from(topic),
            packet_id,
            properties: Default::default(),
            payload: Bytes::from(payload),
        };
        self.send(conn, Packet::Publish(publish));
    }

    /// Answers everything the connection owes the broker: PUBACK or PUBREC for deliveries,
    /// PUBREL for our QoS 2 publishes it received, PUBCOMP for deliveries it released.
    pub fn ack(&mut self, conn: ConnId) {
        let client = self.clients.get_mut(&conn).unwrap();
        if client.closed {
            return;
        }
        let response = |packet_id| PubResponse {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        };
        let mut packets = Vec::new();
        for (packet_id, qos) in std::mem::take(&mut client.unacked) {
            packets.push(match qos {
                QoS::ExactlyOnce => Packet::PubRec(response(packet_id)),
                _ => Packet::PubAck(response(packet_id)),
            });
        }
        for packet_id in std::mem::take(&mut client.pubrel_due) {
            packets.push(Packet::PubRel(response(packet_id)));
        }
        for packet_id in std::mem::take(&mut client.pubcomp_due) {
            packets.push(Packet::PubComp(response(packet_id)));
        }
        for packet in packets {
            self.send(conn, packet);
        }
    }

    /// A normal DISCONNECT (the broker closes the connection after it).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.note(format_args!("conn {conn}: DISCONNECT"));
        self.send(conn, Packet::Disconnect(Disconnect::default()));
    }

    /// The socket dies under the connection (no DISCONNECT).
    pub fn drop_connection(&mut self, conn: ConnId) {
        let client = self.clients.get_mut(&conn).unwrap();
        if client.closed {
            return;
        }
        client.closed = true;
        let shard = client.shard;
        self.note(format_args!("conn {conn}: dropped"));
        self.open[shard].remove(&conn);
        self.feed(shard, Event::Closed { conn });
    }

    /// Advances the clock and gives every shard a `Tick`.
    pub fn tick(&mut self, by: Duration) {
        self.elapsed += by;
        self.note(format_args!("tick +{by:?}"));
        for shard in 0..self.n {
            self.feed(shard, Event::Tick);
        }
    }

    // ---- Mail ----

    /// Hands the front of one non-empty pair queue, chosen at random, to its shard. False when
    /// no mail is pending.
    pub fn deliver_one(&mut self) -> bool {
        let mut pairs = Vec::new();
        for from in 0..self.n {
            for to in 0..self.n {
                if !self.pending[from][to].is_empty() {
                    pairs.push((from, to));
                }
            }
        }
        if pairs.is_empty() {
            return false;
        }
        let (from, to) = *self.rng.pick(&pairs);
        let mail = self.pending[from][to].pop_front().unwrap();
        self.note(format_args!("mail {from} -> {to}: {}", mail_name(&mail)));
        self.feed(
            to,
            Event::Mail {
                from: ShardId::new(from),
                mail,
            },
        );
        true
    }

    /// Hands the front of the `from` -> `to` queue to `to`. False when that queue is empty.
    pub fn deliver_from(&mut self, from: usize, to: usize) -> bool {
        let Some(mail) = self.pending[from][to].pop_front() else {
            return false;
        };
        self.note(format_args!("mail {from} -> {to}: {}", mail_name(&mail)));
        let from = ShardId::new(from);
        self.feed(to, Event::Mail { from, mail });
        true
    }

    /// Whether any connection is between CONNECT and CONNACK with its session installed.
    pub fn any_resuming(&self) -> bool {
        self.open.iter().enumerate().any(|(shard, conns)| {
            conns.iter().any(|c| {
                self.shards[shard]
                    .conn(*c)
                    .is_some_and(|conn| matches!(conn.phase, Phase::Resuming { .. }))
            })
        })
    }

    pub fn mail_pending(&self) -> bool {
        self.pending.iter().flatten().any(|q| !q.is_empty())
    }

    /// Delivers mail until none is left, calling `after` after each delivery.
    pub fn settle_with(&mut self, mut after: impl FnMut(&mut World)) {
        for _ in 0..SETTLE_DELIVERIES_MAX {
            if !self.deliver_one() {
                return;
            }
            after(self);
        }
        panic!("mail did not quiesce after {SETTLE_DELIVERIES_MAX} deliveries");
    }

    /// Settles mail, then acknowledges what clients hold, until nothing moves.
    pub fn quiesce(&mut self, mut after: impl FnMut(&mut World)) {
        loop {
            self.settle_with(&mut after);
            let holding: Vec<ConnId> = self
                .clients
                .iter()
                .filter(|(_, c)| !c.closed && c.owes_answers())
                .map(|(id, _)| *id)
                .collect();
            if holding.is_empty() && !self.mail_pending() {
                return;
            }
            for conn in holding {
                self.ack(conn);
            }
            after(self);
        }
    }

    // ---- The shell's part ----

    /// Handles one event and everything the shell does in reaction, checking the per-handle
    /// invariants after each.
    fn feed(&mut self, shard: usize, event: Event) {
        self.work.push_back((shard, event));
        while let Some((shard, event)) = self.work.pop_front() {
            let now = self.now();
            let mail_in =
                matches!(&event, Event::Mail { mail, .. } if !matches!(mail, Mail::Publish(_)));
            self.shards[shard].handle(event, now);
            self.collect_mail(shard);
            self.collect_output(shard);
            self.check_always(shard, mail_in);
        }
    }

    fn collect_mail(&mut self, from: usize) {
        let mut batch = Vec::new();
        for to in 0..self.n {
            loop {
                let max = 1 + self.rng.below(4);
                self.shards[from].take_mail(ShardId::new(to), &mut batch, max);
                if batch.is_empty() {
                    break;
                }
                assert!(batch.len() <= max, "take_mail moved more than asked");
                self.pending[from][to].extend(batch.drain(..));
            }
        }
        assert!(
            !self.shards[from].has_mail(),
            "shard {from} has mail after every queue was taken"
        );
    }

    /// Reads every open connection's write buffer on `shard` and queues the shell's reactions.
    fn collect_output(&mut self, shard: usize) {
        let mut dirty = Vec::new();
        self.shards[shard].take_dirty(&mut dirty);
        // As the shell does: the batch's deliveries are dated, and the writer takes them with
        // the bytes (a connection whose runs are never taken stops being written to).
        let now = self.now();
        self.shards[shard].stamp_encoded(now);
        let mut runs = Vec::new();
        let open: Vec<ConnId> = self.open[shard].iter().copied().collect();
        for conn_id in open {
            let Some(conn) = self.shards[shard].conn_mut(conn_id) else {
                panic!("shard {shard} forgot connection {conn_id} before it was closed");
            };
            let mut bytes = conn.out.split();
            conn.unsent.take(&mut runs);
            runs.clear();
            let closing = conn.is_closing();
            if (!bytes.is_empty() || closing) && !dirty.contains(&conn_id) {
                panic!(
                    "shard {shard}: connection {conn_id} has output or a close but was not \
                     reported dirty"
                );
            }
            let version = self.clients[&conn_id].version;
            while !bytes.is_empty() {
                let packet = match protocol::decode(&mut bytes, version, usize::MAX) {
                    Ok(Some(packet)) => packet,
                    Ok(None) => panic!("conn {conn_id}: broker wrote a partial frame"),
                    Err(error) => panic!("conn {conn_id}: broker wrote garbage: {error:?}"),
                };
                self.read_packet(conn_id, packet);
            }
            if closing {
                self.note(format_args!("conn {conn_id}: closed by shard {shard}"));
                self.clients.get_mut(&conn_id).unwrap().closed = true;
                self.open[shard].remove(&conn_id);
                self.work
                    .push_back((shard, Event::Closed { conn: conn_id }));
            } else if dirty.contains(&conn_id) && self.shards[shard].drain_pending(conn_id) {
                // As the shell's writer does: a write that leaves nothing queued anywhere hands
                // no `Drained` over (tests/subpub.rs checks a backlog still follows).
                self.work
                    .push_back((shard, Event::Drained { conn: conn_id }));
            }
        }
    }

    fn read_packet(&mut self, conn_id: ConnId, packet: Packet) {
        let client = self.clients.get_mut(&conn_id).unwrap();
        if self.trace {
            eprintln!("    conn {conn_id} <- {}", packet_name(&packet));
        }
        // MQTT-3.2.0-1: CONNACK is the first packet the server sends.
        assert!(
            client.connack.is_some() || matches!(packet, Packet::ConnAck(_)),
            "conn {conn_id}: {} before CONNACK",
            packet_name(&packet)
        );
        match &packet {
            Packet::ConnAck(connack) => {
                assert!(client.connack.is_none(), "conn {conn_id}: second CONNACK");
                client.connack = Some(ConnAck::clone(connack));
                if client.is_live() {
                    self.check_one_live_connection(conn_id);
                }
            }
            Packet::SubAck(ack) => {
                assert!(client.awaiting.remove(&ack.packet_id.get()), "stray SUBACK");
            }
            Packet::UnsubAck(ack) => {
                assert!(
                    client.awaiting.remove(&ack.packet_id.get()),
                    "stray UNSUBACK"
                );
            }
            Packet::PubAck(ack) => {
                assert!(client.awaiting.remove(&ack.packet_id.get()), "stray PUBACK");
            }
            Packet::Publish(publish) => {
                if let Some(packet_id) = publish.packet_id {
                    client.unacked.push((packet_id, publish.qos));
                }
            }
            Packet::PubRec(ack) => {
                assert!(
                    client.awaiting.contains(&ack.packet_id.get()),
                    "stray PUBREC"
                );
                client.pubrel_due.push(ack.packet_id);
            }
            Packet::PubComp(ack) => {
                assert!(
                    client.awaiting.remove(&ack.packet_id.get()),
                    "stray PUBCOMP"
                );
            }
            Packet::PubRel(ack) => client.pubcomp_due.push(ack.packet_id),
            _ => {}
        }
        self.log.push((conn_id, packet));
    }
}

pub fn mail_name(mail: &Mail) -> String {
    match mail {
        Mail::Publish(m) => format!("Publish({})", m.topic),
        Mail::Retain(m) => format!("Retain({})", m.topic),
        Mail::Handover { ticket, session } => {
            format!("Handover({ticket}, session: {})", session.is_some())
        }
        Mail::BarrierReply { ticket, .. } => format!("BarrierReply({ticket})"),
        other => format!("{other:?}"),
    }
}

fn packet_name(packet: &Packet) -> String {
    match packet {
        Packet::ConnAck(a) => format!("CONNACK({:?}, present {})", a.reason, a.session_present),
        Packet::Publish(p) => format!(
            "PUBLISH({}, {:?}, dup {}, id {:?})",
            p.topic, p.payload, p.dup, p.packet_id
        ),
        Packet::SubAck(a) => format!("SUBACK({}, {:?})", a.packet_id, a.reasons),
        Packet::Disconnect(d) => format!("DISCONNECT({:?})", d.reason),
        other => format!("{other:?}"),
    }
}

/// Runs `run` for every seed (or only `SIM_SEED`), naming the seed if it fails.
pub fn for_seeds(name: &str, seeds: std::ops::Range<u64>, run: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => seeds.collect(),
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)));
        if let Err(panic) = result {
            eprintln!(
                "{name}: failed with seed {seed}; replay: SIM_SEED={seed} SIM_TRACE=1 cargo test \
                 --test simulator {name}"
            );
            std::panic::resume_unwind(panic);
        }
    }
}
