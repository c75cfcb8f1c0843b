//! Persistent-session no-loss: a QoS 1 or 2 subscriber with a persistent session is taken over
//! again and again by new connections on other shards (and sometimes disconnects or drops and
//! comes back) while publishers on random shards publish at QoS 1 and 2. Every message published
//! after its first SUBACK arrives on one of its connections. The keeper is a QoS 2 receiver as the
//! spec has it (MQTT 4.3.3, method B): it hands a QoS 2 message to the application on its first
//! PUBLISH and ignores re-sends of that packet id until PUBREL; the application must never see a
//! QoS 2 message twice. A re-send carries DUP (MQTT-3.3.1-1). QoS 1 duplicates around a takeover
//! are allowed, counted, and must be re-sends with DUP set (never a second routing).
//!
//! `racing: false` keeps publishes out of the takeover window (mail settles before the keeper
//! reconnects, and nobody publishes while its session may be moving); `racing: true` lets them
//! race the takeovers, several of which may be under way at once (see `shard::moving`).

use std::collections::{BTreeMap, BTreeSet};

use ringmq::protocol::{Packet, Publish, QoS, Version, matches};
use ringmq::shard::ConnId;

use super::world::{ConnectOptions, World};

const KEEPER: &str = "keeper";
const FILTER: &str = "k/#";
const TOPICS: [&str; 4] = ["k/a", "k/b/c", "z", "k"];
const PUBLISHERS: usize = 3;

struct Run {
    world: World,
    racing: bool,
    publishers: Vec<ConnId>,
    /// The keeper's newest connection.
    keeper: ConnId,
    /// How many messages had been published when the first SUBACK was read.
    watermark: Option<usize>,
    subscribe_sent_on: Option<ConnId>,
    /// The topic and QoS of every message published, by number.
    topics: Vec<(&'static str, QoS)>,
    /// The QoS of the keeper's subscription.
    subscription_qos: QoS,
    /// How many times the keeper's application saw each message.
    received: BTreeMap<usize, usize>,
    /// QoS 2 packet ids received and not yet released (the keeper's session state, which
    /// outlives its connections).
    qos2_unreleased: BTreeSet<u16>,
}

/// What the racing scenario saw, for a sweep to sum up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Messages the application saw at QoS 2 (each exactly once).
    pub qos2_delivered: usize,
    /// QoS 1 messages the application saw more than once: re-sends with DUP set after a
    /// takeover, allowed at QoS 1.
    pub qos1_duplicates: usize,
}

pub fn run(n: usize, seed: u64, steps: usize, racing: bool) -> Outcome {
    let mut world = World::new(n, seed);
    let subscription_qos = if world.rng.chance(75) {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    let publishers = (0..PUBLISHERS)
        .map(|i| {
            let shard = world.random_shard();
            let options = options(&mut world, true);
            world.connect(shard, &format!("p{i}"), options)
        })
        .collect();
    let shard = world.random_shard();
    let keeper_options = options(&mut world, false);
    let keeper = world.connect(shard, KEEPER, keeper_options);
    let mut run = Run {
        world,
        racing,
        publishers,
        keeper,
        watermark: None,
        subscribe_sent_on: None,
        topics: Vec::new(),
        subscription_qos,
        received: BTreeMap::new(),
        qos2_unreleased: BTreeSet::new(),
    };
    for _ in 0..steps {
        run.step();
        run.read();
    }
    // End with a live keeper (an early DISCONNECT may close the newest connection only now).
    loop {
        run.world.quiesce(|_| {});
        run.read();
        if !run.world.client(run.keeper).closed {
            break;
        }
        run.reconnect();
    }
    run.world.check_quiescent();
    run.check_complete()
}

fn options(world: &mut World, clean: bool) -> ConnectOptions {
    let version = if world.rng.chance(50) {
        Version::V5
    } else {
        Version::V3_1_1
    };
    ConnectOptions {
        version,
        clean,
        expiry_secs: if clean { 0 } else { 3_600 },
        keepalive_secs: 0,
    }
}

impl Run {
    fn step(&mut self) {
        let world = &mut self.world;
        match world.rng.weighted(&[50, 20, 5, 2, 2, 12, 5, 4]) {
            0 => {
                world.deliver_one();
            }
            1 => {
                let conn = self.publishers[world.rng.below(PUBLISHERS)];
                // Quiet: the session is installed somewhere and not moving.
                let keeper = world.client(self.keeper);
                let quiet = keeper.is_live() || (keeper.closed && !world.mail_pending());
                if world.client(conn).is_live() && (self.racing || quiet) {
                    let topic = *world.rng.pick(&TOPICS);
                    let qos = if world.rng.chance(50) {
                        QoS::ExactlyOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    let payload = (self.topics.len() as u64).to_be_bytes().to_vec();
                    world.publish(conn, topic, payload, qos);
                    self.topics.push((topic, qos));
                }
            }
            2 => self.reconnect(),
            3 => world.disconnect(self.keeper),
            4 => world.drop_connection(self.keeper),
            5 => {
                world.ack(self.keeper);
                let publisher = self.publishers[world.rng.below(PUBLISHERS)];
                world.ack(publisher);
            }
            6 => {
                if world.client(self.keeper).closed {
                    self.reconnect();
                }
            }
            _ => {
                let by = std::time::Duration::from_millis(world.rng.below(20) as u64);
                world.tick(by);
            }
        }
        self.subscribe_if_needed();
    }

    /// A new connection for the keeper, on another shard than its newest one.
    fn reconnect(&mut self) {
        let world = &mut self.world;
        if !self.racing {
            world.settle_with(|_| {});
        }
        let previous = world.client(self.keeper).shard;
        let shard = (previous + 1 + world.rng.below(world.n - 1)) % world.n;
        let options = options(world, false);
        self.keeper = world.connect(shard, KEEPER, options);
    }

    /// Until a SUBACK has been read, each new live keeper connection subscribes.
    fn subscribe_if_needed(&mut self) {
        let live = self.world.client(self.keeper).is_live();
        if self.watermark.is_none() && live && self.subscribe_sent_on != Some(self.keeper) {
            self.subscribe_sent_on = Some(self.keeper);
            let qos = self.subscription_qos;
            self.world.subscribe(self.keeper, &[FILTER], qos);
        }
    }

    fn read(&mut self) {
        for (conn, packet) in std::mem::take(&mut self.world.log) {
            if self.world.client(conn).client_id != KEEPER {
                continue;
            }
            match packet {
                Packet::SubAck(_) => {
                    self.watermark.get_or_insert(self.topics.len());
                }
                Packet::Publish(publish) => self.receive(&publish),
                Packet::PubRel(release) => {
                    self.qos2_unreleased.remove(&release.packet_id.get());
                }
                _ => {}
            }
        }
    }

    /// The keeper's application gets a message, unless it is a QoS 2 re-send.
    fn receive(&mut self, publish: &Publish) {
        let number = u64::from_be_bytes(publish.payload[..].try_into().unwrap()) as usize;
        let (topic, published_qos) = self.topics[number];
        assert!(matches(FILTER, topic), "unsubscribed topic");
        let qos = published_qos.min(self.subscription_qos);
        assert_eq!(
            publish.qos, qos,
            "message {number} delivered at the wrong QoS"
        );
        if qos == QoS::ExactlyOnce {
            let packet_id = publish.packet_id.unwrap().get();
            if !self.qos2_unreleased.insert(packet_id) {
                assert!(publish.dup, "QoS 2 re-send of {number} without DUP");
                return;
            }
        }
        let seen = self.received.entry(number).or_default();
        *seen += 1;
        // A second copy is only ever a re-send of an unacknowledged delivery (the session's
        // in-flight window moved with it), never a second routing of the message.
        assert!(
            *seen == 1 || publish.dup,
            "message {number} delivered again as a new message (DUP not set)"
        );
        assert!(
            qos != QoS::ExactlyOnce || *seen == 1,
            "the keeper's application got QoS 2 message {number} twice"
        );
    }

    fn check_complete(&self) -> Outcome {
        assert!(
            self.world.client(self.keeper).is_live(),
            "the keeper's last connection is not live at the end"
        );
        let watermark = self.watermark.unwrap_or(self.topics.len());
        for (number, (topic, _)) in self.topics.iter().enumerate().skip(watermark) {
            if matches(FILTER, topic) {
                assert!(
                    self.received.contains_key(&number),
                    "the keeper lost message {number} on {topic} (published after its SUBACK)"
                );
            }
        }
        let mut outcome = Outcome::default();
        for (number, seen) in &self.received {
            let qos = self.topics[*number].1.min(self.subscription_qos);
            match qos {
                QoS::ExactlyOnce => outcome.qos2_delivered += 1,
                _ => outcome.qos1_duplicates += usize::from(*seen > 1),
            }
        }
        outcome
    }
}
