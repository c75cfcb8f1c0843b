//! The SUBACK barrier: once a subscriber has read its SUBACK, every QoS 1 PUBLISH accepted on any
//! shard to a matching topic reaches it exactly once, in publish order per publisher. Publishers
//! sit on random shards; other clients churn the same filters to stir interest; mail interleaves
//! at random.

use std::collections::BTreeMap;

use ringmq::protocol::{Packet, QoS, Version, matches};
use ringmq::shard::ConnId;

use super::world::{ConnectOptions, World};

const PUBLISHERS: usize = 3;
const SUBSCRIBER_FILTERS: [&str; 3] = ["t/#", "t/+/c", "t/a"];
const NOISE_FILTERS: [&str; 6] = ["t/#", "t/+/c", "t/a", "#", "u/x", "+/+/c"];
const TOPICS: [&str; 6] = ["t/a", "t/b/c", "t/x/c", "u/x", "t", "u/b/c"];

struct Subscriber {
    conn: ConnId,
    filter: &'static str,
    sent: bool,
    /// How many messages had been published when SUBACK was read.
    watermark: Option<usize>,
    /// Message number -> times received.
    received: BTreeMap<usize, usize>,
    /// The last sequence number received from each publisher.
    last_from: [Option<usize>; PUBLISHERS],
}

/// One QoS 1 PUBLISH accepted by the broker.
struct Published {
    topic: &'static str,
    publisher: usize,
    seq: usize,
}

struct Run {
    world: World,
    publishers: Vec<ConnId>,
    subscribers: Vec<Subscriber>,
    noise: Vec<ConnId>,
    published: Vec<Published>,
    seq: [usize; PUBLISHERS],
}

pub fn run(n: usize, seed: u64, steps: usize) {
    let mut world = World::new(n, seed);
    let publishers = (0..PUBLISHERS)
        .map(|i| connect_random(&mut world, &format!("p{i}")))
        .collect();
    let subscribers = SUBSCRIBER_FILTERS
        .iter()
        .enumerate()
        .map(|(i, filter)| Subscriber {
            conn: connect_random(&mut world, &format!("s{i}")),
            filter,
            sent: false,
            watermark: None,
            received: BTreeMap::new(),
            last_from: [None; PUBLISHERS],
        })
        .collect();
    let noise = (0..2)
        .map(|i| connect_random(&mut world, &format!("n{i}")))
        .collect();
    let mut run = Run {
        world,
        publishers,
        subscribers,
        noise,
        published: Vec::new(),
        seq: [0; PUBLISHERS],
    };
    for _ in 0..steps {
        run.step();
        run.read();
    }
    run.world.quiesce(|_| {});
    run.read();
    run.world.check_quiescent();
    run.check_complete();
}

fn connect_random(world: &mut World, id: &str) -> ConnId {
    let shard = world.random_shard();
    let version = if world.rng.chance(50) {
        Version::V5
    } else {
        Version::V3_1_1
    };
    let options = ConnectOptions {
        version,
        clean: true,
        expiry_secs: 0,
        keepalive_secs: 0,
    };
    world.connect(shard, id, options)
}

impl Run {
    fn step(&mut self) {
        let world = &mut self.world;
        match world.rng.weighted(&[50, 20, 4, 10, 8, 3]) {
            0 => {
                world.deliver_one();
            }
            1 => {
                let publisher = world.rng.below(PUBLISHERS);
                let conn = self.publishers[publisher];
                if !world.client(conn).is_live() {
                    return;
                }
                let topic = *world.rng.pick(&TOPICS);
                let number = self.published.len();
                let payload = (number as u64).to_be_bytes().to_vec();
                world.publish(conn, topic, payload, QoS::AtLeastOnce);
                self.published.push(Published {
                    topic,
                    publisher,
                    seq: self.seq[publisher],
                });
                self.seq[publisher] += 1;
            }
            2 => {
                let index = world.rng.below(self.subscribers.len());
                let subscriber = &mut self.subscribers[index];
                if !subscriber.sent && world.client(subscriber.conn).is_live() {
                    subscriber.sent = true;
                    world.subscribe(subscriber.conn, &[subscriber.filter], QoS::AtLeastOnce);
                }
            }
            3 => {
                let index = world.rng.below(self.subscribers.len());
                world.ack(self.subscribers[index].conn);
            }
            4 => self.stir(),
            _ => {
                let by = std::time::Duration::from_millis(world.rng.below(20) as u64);
                world.tick(by);
            }
        }
    }

    /// A noise client subscribes, unsubscribes or reconnects on another shard.
    fn stir(&mut self) {
        let world = &mut self.world;
        let index = world.rng.below(self.noise.len());
        let conn = self.noise[index];
        if world.client(conn).closed {
            self.noise[index] = connect_random(world, &format!("n{index}"));
            return;
        }
        let filter = *world.rng.pick(&NOISE_FILTERS);
        match world.rng.below(5) {
            0 | 1 => world.subscribe(conn, &[filter], QoS::AtLeastOnce),
            2 | 3 => world.unsubscribe(conn, &[filter]),
            _ => world.disconnect(conn),
        }
        world.ack(conn);
    }

    /// Takes what the subscribers read and checks it as it arrives.
    fn read(&mut self) {
        for (conn, packet) in std::mem::take(&mut self.world.log) {
            let Some(subscriber) = self.subscribers.iter_mut().find(|s| s.conn == conn) else {
                continue;
            };
            match packet {
                Packet::SubAck(_) => subscriber.watermark = Some(self.published.len()),
                Packet::Publish(publish) => {
                    let number = u64::from_be_bytes(publish.payload[..].try_into().unwrap());
                    let number = number as usize;
                    let message = &self.published[number];
                    assert!(
                        matches(subscriber.filter, message.topic),
                        "{} got {} it did not subscribe to",
                        subscriber.filter,
                        message.topic
                    );
                    let count = subscriber.received.entry(number).or_default();
                    *count += 1;
                    assert_eq!(
                        *count, 1,
                        "subscriber {} got message {number} twice (no takeover)",
                        subscriber.filter
                    );
                    let last = &mut subscriber.last_from[message.publisher];
                    assert!(
                        last.is_none_or(|l| l < message.seq),
                        "subscriber {} got publisher {}'s #{} after #{last:?}",
                        subscriber.filter,
                        message.publisher,
                        message.seq
                    );
                    *last = Some(message.seq);
                }
                _ => {}
            }
        }
    }

    /// Every matching message published after SUBACK was read has arrived.
    fn check_complete(&self) {
        for subscriber in &self.subscribers {
            assert!(
                !self.world.client(subscriber.conn).closed,
                "subscriber {} was disconnected",
                subscriber.filter
            );
            let Some(watermark) = subscriber.watermark else {
                assert!(
                    !subscriber.sent,
                    "subscriber {} got no SUBACK",
                    subscriber.filter
                );
                continue;
            };
            for (number, message) in self.published.iter().enumerate().skip(watermark) {
                if matches(subscriber.filter, message.topic) {
                    assert!(
                        subscriber.received.contains_key(&number),
                        "subscriber {} lost message {number} on {} published after its SUBACK",
                        subscriber.filter,
                        message.topic
                    );
                }
            }
        }
    }
}
