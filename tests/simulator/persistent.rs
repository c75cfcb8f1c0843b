//! Persistent-session no-loss: a QoS 1 subscriber with a persistent session is taken over again
//! and again by new connections on other shards (and sometimes disconnects or drops and comes
//! back) while publishers on random shards publish. Every message published after its first
//! SUBACK arrives on one of its connections; duplicates around a takeover are allowed.
//!
//! `racing: false` keeps publishes out of the takeover window (mail settles before the keeper
//! reconnects, and nobody publishes while its session may be moving): the broker loses messages
//! published while a session moves between shards (`bugs::publish_in_flight_to_former_owner`).

use std::collections::BTreeSet;

use ringmq::protocol::{Packet, QoS, Version, matches};
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
    topics: Vec<&'static str>,
    received: BTreeSet<usize>,
}

pub fn run(n: usize, seed: u64, steps: usize, racing: bool) {
    let mut world = World::new(n, seed);
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
        received: BTreeSet::new(),
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
    run.check_complete();
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
                    let payload = (self.topics.len() as u64).to_be_bytes().to_vec();
                    world.publish(conn, topic, payload, QoS::AtLeastOnce);
                    self.topics.push(topic);
                }
            }
            2 => self.reconnect(),
            3 => world.disconnect(self.keeper),
            4 => world.drop_connection(self.keeper),
            5 => world.ack(self.keeper),
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
            self.world
                .subscribe(self.keeper, &[FILTER], QoS::AtLeastOnce);
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
                Packet::Publish(publish) => {
                    let number = u64::from_be_bytes(publish.payload[..].try_into().unwrap());
                    let number = number as usize;
                    assert!(matches(FILTER, self.topics[number]), "unsubscribed topic");
                    self.received.insert(number);
                }
                _ => {}
            }
        }
    }

    fn check_complete(&self) {
        assert!(
            self.world.client(self.keeper).is_live(),
            "the keeper's last connection is not live at the end"
        );
        let Some(watermark) = self.watermark else {
            return;
        };
        for (number, topic) in self.topics.iter().enumerate().skip(watermark) {
            if matches(FILTER, topic) {
                assert!(
                    self.received.contains(&number),
                    "the keeper lost message {number} on {topic} (published after its SUBACK)"
                );
            }
        }
    }
}
