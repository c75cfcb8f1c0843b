//! Goal: a long QoS 1 and QoS 2 stream (rumqttc clients) loses nothing, and at QoS 2 duplicates
//! nothing, while its persistent subscriber is taken over and reconnects on other shards.
//!
//! Two publishers on shards 1 and 2 each send half of the stream, a sequence number in every
//! payload. The subscriber (clean session = 0, manual acknowledgements) moves between shards
//! several times mid-stream: taken over by a new connection with its client id, dropped without
//! DISCONNECT, or disconnected cleanly, then resumed elsewhere. Every sequence number must arrive,
//! first deliveries in publish order per publisher (MQTT 3.1.1 section 4.6). At QoS 1 a message
//! may come again only as a resend (DUP set), at most one in-flight window per switch. At QoS 2
//! the subscriber is the receiver of section 4.3.3 method B: it remembers the packet ids it has
//! received until their PUBREL, so a resent PUBLISH is recognised as such; any other repeat is a
//! duplicate and fails the test.
//!
//! The same stream with a subscriber that stays on shard 3 checks the cross-shard path alone.
//! The message count is `RINGMQ_STREAM_MESSAGES`, by default 100,000 (about 10 s at QoS 1 and
//! 20 s at QoS 2 in a debug build on 2 cores).
//!
//! The QoS 2 subscriber connects through `qos2_relay` (see there): rumqttc 0.25 cannot resume a
//! QoS 2 session whose PUBRELs are outstanding.

mod common;
#[path = "interop/qos2_relay.rs"]
mod qos2_relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestBroker, test_config};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS};
use tokio::time::{Instant, timeout};

const STREAM_MESSAGES_DEFAULT: usize = 100_000;
const PUBLISHERS: usize = 2;
const PUBLISHER_SHARDS: [usize; PUBLISHERS] = [1, 2];
const INFLIGHT_MAX: usize = 32;
/// The whole stream must finish within this.
const STREAM_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest silence from a connection that still owes us messages.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn stream_messages() -> usize {
    std::env::var("RINGMQ_STREAM_MESSAGES")
        .ok()
        .map(|value| value.parse().expect("RINGMQ_STREAM_MESSAGES is a number"))
        .unwrap_or(STREAM_MESSAGES_DEFAULT)
}

#[derive(Clone, Copy, Debug)]
enum Switch {
    /// A second connection with the same client id while the first is still open.
    Takeover,
    /// The TCP connection closes without DISCONNECT, then the client connects elsewhere.
    Drop,
    /// DISCONNECT, then connect elsewhere.
    Disconnect,
}

/// Where the subscriber connects first, then how and where it moves, at evenly spaced points of
/// the stream.
struct Moves {
    first: usize,
    then: &'static [(Switch, usize)],
}

const STAYS: Moves = Moves {
    first: 3,
    then: &[],
};

const MOVES_AROUND: Moves = Moves {
    first: 3,
    then: &[
        (Switch::Takeover, 0),
        (Switch::Drop, 2),
        (Switch::Takeover, 3),
        (Switch::Disconnect, 1),
        (Switch::Takeover, 0),
    ],
};

/// Messages of the focused tests, where the session moves back and forth between two shards with
/// one kind of move (10 moves: one alone loses messages only sometimes).
const FOCUSED_MESSAGES: usize = 20_000;

const TAKEN_OVER_BACK_AND_FORTH: Moves = Moves {
    first: 0,
    then: &[
        (Switch::Takeover, 3),
        (Switch::Takeover, 0),
        (Switch::Takeover, 3),
        (Switch::Takeover, 0),
        (Switch::Takeover, 3),
        (Switch::Takeover, 0),
        (Switch::Takeover, 3),
        (Switch::Takeover, 0),
        (Switch::Takeover, 3),
        (Switch::Takeover, 0),
    ],
};

const RESUMED_BACK_AND_FORTH: Moves = Moves {
    first: 0,
    then: &[
        (Switch::Drop, 3),
        (Switch::Drop, 0),
        (Switch::Drop, 3),
        (Switch::Drop, 0),
        (Switch::Drop, 3),
        (Switch::Drop, 0),
        (Switch::Drop, 3),
        (Switch::Drop, 0),
        (Switch::Drop, 3),
        (Switch::Drop, 0),
    ],
};

#[test]
fn qos1_stream_across_shards_loses_nothing() {
    stream(QoS::AtLeastOnce, stream_messages(), &STAYS);
}

#[test]
fn qos2_stream_across_shards_loses_and_duplicates_nothing() {
    stream(QoS::ExactlyOnce, stream_messages(), &STAYS);
}

#[test]
fn qos1_stream_through_takeovers_loses_nothing() {
    stream(QoS::AtLeastOnce, stream_messages(), &MOVES_AROUND);
}

#[test]
fn qos2_stream_through_takeovers_loses_and_duplicates_nothing() {
    stream(QoS::ExactlyOnce, stream_messages(), &MOVES_AROUND);
}

#[test]
fn takeovers_during_a_stream_lose_nothing() {
    stream(
        QoS::AtLeastOnce,
        FOCUSED_MESSAGES,
        &TAKEN_OVER_BACK_AND_FORTH,
    );
}

#[test]
fn offline_session_resumed_elsewhere_during_a_stream_loses_nothing() {
    stream(QoS::AtLeastOnce, FOCUSED_MESSAGES, &RESUMED_BACK_AND_FORTH);
}

/// The streams run one at a time: each drives a 4-shard broker and tens of thousands of messages,
/// and six at once on a 2-core machine starve the brokers' start-up.
static ONE_STREAM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stream(qos: QoS, messages: usize, moves: &Moves) {
    let _turn = ONE_STREAM_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut config = test_config(4);
    // Every message of the stream may be queued while the subscriber is away or behind.
    config.limits.outbox_messages_max = u32::try_from(messages * 2).unwrap();
    config.limits.outbox_bytes_max = 1 << 30;
    config.limits.inflight_messages_max = INFLIGHT_MAX as u16;
    let broker = TestBroker::with_config(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = runtime.block_on(async {
        timeout(STREAM_TIMEOUT, run_stream(&broker, qos, messages, moves))
            .await
            .unwrap_or_else(|_| panic!("{qos:?} stream not done within {STREAM_TIMEOUT:?}"))
    });
    tally.check();
    broker.shutdown();
}

async fn run_stream(broker: &TestBroker, qos: QoS, messages: usize, moves: &Moves) -> Tally {
    let started = Instant::now();
    let released = Arc::new(Mutex::new(Vec::new()));
    let mut tally = Tally::new(qos, messages);
    let mut subscriber = Subscriber::connect(broker, moves.first, qos, &released, true).await;
    subscriber.subscribe(qos).await;

    let per_publisher = messages / PUBLISHERS;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let addr = broker.shard(PUBLISHER_SHARDS[publisher]);
            tokio::spawn(publish_stream(addr, publisher, per_publisher, qos))
        })
        .collect();

    for (switch, (kind, shard)) in moves.then.iter().enumerate() {
        let until = messages * (switch + 1) / (moves.then.len() + 1);
        if !subscriber.receive(&mut tally, &released, until).await {
            return tally;
        }
        let shard = *shard;
        subscriber = match kind {
            Switch::Takeover => {
                // The old connection stays open, unpolled, until the broker has closed it.
                let new = Subscriber::connect(broker, shard, qos, &released, false).await;
                drop(subscriber);
                new
            }
            Switch::Drop => {
                drop(subscriber);
                Subscriber::connect(broker, shard, qos, &released, false).await
            }
            Switch::Disconnect => {
                subscriber.disconnect().await;
                Subscriber::connect(broker, shard, qos, &released, false).await
            }
        };
        tally.switches += 1;
    }
    if !subscriber.receive(&mut tally, &released, messages).await {
        return tally;
    }
    for publisher in publishers {
        publisher.await.expect("publisher finished");
    }
    // Anything late (a duplicate in flight) would show up here.
    subscriber.linger(&mut tally, &released).await;
    eprintln!(
        "{qos:?}: {messages} messages, {} switches, {} resends recognised, {} duplicates, {:?}",
        tally.switches,
        tally.resends,
        tally.duplicates,
        started.elapsed()
    );
    tally
}

/// Publishes `count` messages numbered 0.. on `stream/{publisher}` and waits for every ack.
async fn publish_stream(addr: SocketAddr, publisher: usize, count: usize, qos: QoS) {
    let id = format!("stream-pub-{publisher}");
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_session(true);
    options.set_keep_alive(Duration::from_secs(30));
    // More than inflight_messages_max QoS 2 publishes awaiting PUBREL get a 3.1.1 client
    // disconnected (see `pipelined_qos2_publishes_beyond_the_inflight_limit` in rumqttc_v311.rs),
    // so QoS 2 publishers keep within it.
    let inflight = match qos {
        QoS::ExactlyOnce => INFLIGHT_MAX as u16,
        _ => 100,
    };
    options.set_inflight(inflight);
    let (client, mut events) = AsyncClient::new(options, 100);
    let topic = format!("stream/{publisher}");
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            let payload = payload(publisher, seq);
            client.publish(&topic, qos, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        let Ok(event) = timeout(EVENT_TIMEOUT, events.poll()).await else {
            panic!("publisher {publisher}: silent after {acked} acks");
        };
        let event = event
            .unwrap_or_else(|error| panic!("publisher {publisher} after {acked} acks: {error}"));
        if matches!(
            event,
            Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))
        ) {
            acked += 1;
        }
    }
    let client = sender.await.unwrap();
    client.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(1), events.poll()).await;
}

fn payload(publisher: usize, seq: usize) -> Vec<u8> {
    let mut payload = vec![publisher as u8];
    payload.extend_from_slice(&(seq as u32).to_be_bytes());
    payload
}

/// What the subscriber application has received, across all its connections.
struct Tally {
    qos: QoS,
    per_publisher: usize,
    /// Deliveries per message, indexed publisher * per_publisher + seq.
    counts: Vec<u8>,
    /// The subscriber connection (0 = first, then one per switch) of each first delivery.
    connection: Vec<u8>,
    delivered: usize,
    /// Next sequence number expected from each publisher.
    next_seq: [usize; PUBLISHERS],
    out_of_order: Vec<(usize, usize, usize)>,
    /// QoS 1 repeats (DUP set).
    duplicates: usize,
    /// QoS 2 resends of a packet id still awaiting PUBREL.
    resends: usize,
    /// QoS 2 receiver state: packet id -> message, from PUBLISH until PUBREL.
    awaiting_release: HashMap<u16, usize>,
    switches: usize,
    /// Set when the subscriber heard nothing for `EVENT_TIMEOUT` before the end of the stream.
    stalled: Option<String>,
}

impl Tally {
    fn new(qos: QoS, messages: usize) -> Tally {
        let per_publisher = messages / PUBLISHERS;
        Tally {
            qos,
            per_publisher,
            counts: vec![0; per_publisher * PUBLISHERS],
            connection: vec![0; per_publisher * PUBLISHERS],
            delivered: 0,
            next_seq: [0; PUBLISHERS],
            out_of_order: Vec::new(),
            duplicates: 0,
            resends: 0,
            awaiting_release: HashMap::new(),
            switches: 0,
            stalled: None,
        }
    }

    fn on_publish(&mut self, publish: &Publish) {
        assert_eq!(publish.qos, self.qos, "delivered at the subscribed QoS");
        let (publisher, seq) = decode(&publish.payload);
        assert_eq!(publish.topic, format!("stream/{publisher}"));
        let index = publisher * self.per_publisher + seq;
        if self.qos == QoS::ExactlyOnce {
            if let Some(&known) = self.awaiting_release.get(&publish.pkid) {
                assert_eq!(
                    known, index,
                    "packet id {} reused before PUBREL (DUP {})",
                    publish.pkid, publish.dup
                );
                assert!(publish.dup, "a resent QoS 2 PUBLISH has DUP set");
                self.resends += 1;
                return;
            }
            self.awaiting_release.insert(publish.pkid, index);
        }
        if self.counts[index] > 0 {
            assert!(
                self.qos == QoS::AtLeastOnce,
                "QoS 2 duplicate: publisher {publisher} seq {seq} (packet id {}, DUP {})",
                publish.pkid,
                publish.dup
            );
            assert!(
                publish.dup,
                "QoS 1 repeat of publisher {publisher} seq {seq} without DUP"
            );
            self.duplicates += 1;
        } else {
            if seq != self.next_seq[publisher] {
                self.out_of_order
                    .push((publisher, self.next_seq[publisher], seq));
            }
            self.next_seq[publisher] = seq + 1;
            self.delivered += 1;
            self.connection[index] = self.switches as u8;
        }
        self.counts[index] = self.counts[index].saturating_add(1);
    }

    /// Runs of lost messages.
    fn missing(&self) -> Vec<Lost> {
        let mut runs: Vec<Lost> = Vec::new();
        for (index, _) in self.counts.iter().enumerate().filter(|(_, n)| **n == 0) {
            let (publisher, seq) = (index / self.per_publisher, index % self.per_publisher);
            match runs.last_mut() {
                Some(run) if run.publisher == publisher && run.last + 1 == seq => run.last = seq,
                _ => runs.push(Lost {
                    publisher,
                    first: seq,
                    last: seq,
                    connections: [None; 2],
                }),
            }
        }
        let base = |run: &Lost| run.publisher * self.per_publisher;
        let connection = |index: usize| (self.counts[index] > 0).then(|| self.connection[index]);
        for run in &mut runs {
            let before = (run.first > 0).then(|| connection(base(run) + run.first - 1));
            let after =
                (run.last + 1 < self.per_publisher).then(|| connection(base(run) + run.last + 1));
            run.connections = [before.flatten(), after.flatten()];
        }
        runs
    }

    fn on_release(&mut self, packet_id: u16) {
        self.awaiting_release.remove(&packet_id);
    }

    fn check(&self) {
        let missing = self.missing();
        let lost: usize = missing.iter().map(|run| run.last - run.first + 1).sum();
        assert!(
            lost == 0,
            "{:?}: {lost} of {} messages lost{}: {:#?}",
            self.qos,
            self.counts.len(),
            self.stalled.as_deref().unwrap_or_default(),
            &missing[..missing.len().min(20)]
        );
        assert!(
            self.out_of_order.is_empty(),
            "{:?}: first deliveries out of publish order (publisher, expected, got): {:?}",
            self.qos,
            &self.out_of_order[..self.out_of_order.len().min(10)]
        );
        assert!(
            self.duplicates <= self.switches * INFLIGHT_MAX,
            "{} QoS 1 repeats for {} switches of at most {INFLIGHT_MAX} in flight",
            self.duplicates,
            self.switches
        );
    }
}

/// A run of consecutive lost messages of one publisher, with the subscriber connections that
/// received the messages just before and just after it.
#[derive(Debug)]
#[allow(dead_code)]
struct Lost {
    publisher: usize,
    first: usize,
    last: usize,
    connections: [Option<u8>; 2],
}

fn decode(payload: &[u8]) -> (usize, usize) {
    assert_eq!(payload.len(), 5, "payload {payload:?}");
    let seq = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    (usize::from(payload[0]), seq as usize)
}

/// One connection of the persistent subscriber.
struct Subscriber {
    client: AsyncClient,
    events: EventLoop,
}

impl Subscriber {
    async fn connect(
        broker: &TestBroker,
        shard: usize,
        qos: QoS,
        released: &Arc<Mutex<Vec<u16>>>,
        first: bool,
    ) -> Subscriber {
        let addr = match qos {
            QoS::ExactlyOnce => qos2_relay::relay(broker.shard(shard), Arc::clone(released)).await,
            _ => broker.shard(shard),
        };
        let mut options = MqttOptions::new("stream-sub", addr.ip().to_string(), addr.port());
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_manual_acks(true);
        // Room for one ack per message the broker may have in flight, and then some.
        let (client, mut events) = AsyncClient::new(options, 1024);
        let connack = match timeout(EVENT_TIMEOUT, events.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(connack)))) => connack,
            other => panic!("subscriber connect on shard {shard}: {other:?}"),
        };
        assert_eq!(
            connack.session_present, !first,
            "session present on shard {shard}"
        );
        Subscriber { client, events }
    }

    async fn subscribe(&mut self, qos: QoS) {
        self.client.subscribe("stream/+", qos).await.unwrap();
        loop {
            let event = timeout(EVENT_TIMEOUT, self.events.poll()).await;
            if let Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) = event {
                return;
            }
            assert!(matches!(event, Ok(Ok(_))), "subscribe: {event:?}");
        }
    }

    /// Receives until `until` distinct messages have been delivered in total; false if the
    /// broker went silent first (recorded in the tally).
    async fn receive(
        &mut self,
        tally: &mut Tally,
        released: &Mutex<Vec<u16>>,
        until: usize,
    ) -> bool {
        while tally.delivered < until {
            let Ok(event) = timeout(EVENT_TIMEOUT, self.events.poll()).await else {
                tally.stalled = Some(format!(
                    " (nothing for {EVENT_TIMEOUT:?} after {} of {until} messages, {} switches)",
                    tally.delivered, tally.switches
                ));
                return false;
            };
            let event = event.unwrap_or_else(|error| {
                panic!(
                    "{:?}: subscriber connection failed after {} messages: {error}",
                    tally.qos, tally.delivered
                )
            });
            self.handle(event, tally, released);
        }
        true
    }

    fn handle(&mut self, event: Event, tally: &mut Tally, released: &Mutex<Vec<u16>>) {
        for packet_id in released.lock().unwrap().drain(..) {
            tally.on_release(packet_id);
        }
        match event {
            Event::Incoming(Incoming::Publish(publish)) => {
                tally.on_publish(&publish);
                self.client.try_ack(&publish).expect("ack queued");
            }
            Event::Incoming(Incoming::PubRel(release)) => tally.on_release(release.pkid),
            _ => {}
        }
    }

    /// Keeps receiving for a short while after the stream is complete, to catch late repeats.
    async fn linger(&mut self, tally: &mut Tally, released: &Mutex<Vec<u16>>) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(event) = tokio::time::timeout_at(deadline, self.events.poll()).await {
            let event = event.expect("subscriber connection stays up");
            self.handle(event, tally, released);
        }
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        loop {
            match timeout(EVENT_TIMEOUT, self.events.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return,
                Ok(Ok(_)) => {}
                other => panic!("disconnect: {other:?}"),
            }
        }
    }
}
