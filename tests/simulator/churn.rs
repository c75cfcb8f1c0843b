//! Churn: clients with a few fixed ids connect (clean and persistent, 3.1.1 and 5.0) on random
//! shards, subscribe, unsubscribe, publish, disconnect, drop, and reconnect elsewhere, while mail
//! is delivered in a random interleaving. The world checks interest replication and the
//! session/directory invariants after every handle; at quiet points the exact ones.

use std::time::Duration;

use ringmq::protocol::{QoS, Version};
use ringmq::shard::ConnId;

use super::world::{ConnectOptions, World};

/// The weights of one churn scenario's actions, in the order of `Action`.
pub struct Mix {
    pub ids: &'static [&'static str],
    pub filters: &'static [&'static str],
    pub topics: &'static [&'static str],
    pub weights: [u32; ACTIONS],
}

const ACTIONS: usize = 11;

#[derive(Debug, Clone, Copy)]
enum Action {
    Deliver,
    Connect,
    /// Two connections with the same id on different shards before any mail moves.
    Race,
    Subscribe,
    Unsubscribe,
    Publish,
    Ack,
    Disconnect,
    Drop,
    Tick,
    /// Deliver everything, acknowledge everything, and check the quiet-world invariants.
    Settle,
}

const ALL: [Action; ACTIONS] = [
    Action::Deliver,
    Action::Connect,
    Action::Race,
    Action::Subscribe,
    Action::Unsubscribe,
    Action::Publish,
    Action::Ack,
    Action::Disconnect,
    Action::Drop,
    Action::Tick,
    Action::Settle,
];

pub fn run(mix: &Mix, n: usize, seed: u64, steps: usize) {
    let mut world = World::new(n, seed);
    for _ in 0..steps {
        let action = ALL[world.rng.weighted(&mix.weights)];
        step(&mut world, mix, action);
        world.log.clear();
    }
    world.quiesce(|_| {});
    world.check_quiescent();
}

fn step(world: &mut World, mix: &Mix, action: Action) {
    match action {
        Action::Deliver => {
            world.deliver_one();
        }
        Action::Connect => {
            let id = *world.rng.pick(mix.ids);
            let shard = world.random_shard();
            let options = random_options(world);
            world.connect(shard, id, options);
        }
        Action::Race => {
            let id = *world.rng.pick(mix.ids);
            let first = world.random_shard();
            let second = (first + 1 + world.rng.below(world.n - 1)) % world.n;
            for shard in [first, second] {
                let options = random_options(world);
                world.connect(shard, id, options);
            }
        }
        Action::Subscribe => {
            if let Some(conn) = random_open(world) {
                let filters = random_filters(world, mix.filters);
                let qos = if world.rng.chance(50) {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                world.subscribe(conn, &filters, qos);
            }
        }
        Action::Unsubscribe => {
            if let Some(conn) = random_open(world) {
                let filters = random_filters(world, mix.filters);
                world.unsubscribe(conn, &filters);
            }
        }
        Action::Publish => {
            if let Some(conn) = random_live(world) {
                let topic = *world.rng.pick(mix.topics);
                let qos = if world.rng.chance(50) {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                world.publish(conn, topic, vec![1], qos);
            }
        }
        Action::Ack => {
            if let Some(conn) = random_open(world) {
                world.ack(conn);
            }
        }
        Action::Disconnect => {
            if let Some(conn) = random_open(world) {
                world.disconnect(conn);
            }
        }
        Action::Drop => {
            if let Some(conn) = random_open(world) {
                world.drop_connection(conn);
            }
        }
        Action::Tick => {
            // Mostly small steps; now and then far enough for keepalives, the CONNECT deadline
            // and 5.0 session expiry to fire. Not while a connection is resuming: the CONNECT
            // deadline then strands its session (`bugs::connect_deadline_while_resuming`).
            let by = if world.rng.chance(5) && !world.any_resuming() {
                Duration::from_secs(400)
            } else {
                Duration::from_millis(world.rng.below(50) as u64)
            };
            world.tick(by);
        }
        Action::Settle => {
            world.quiesce(|_| {});
            world.check_quiescent();
        }
    }
}

fn random_options(world: &mut World) -> ConnectOptions {
    let version = if world.rng.chance(50) {
        Version::V5
    } else {
        Version::V3_1_1
    };
    ConnectOptions {
        version,
        clean: world.rng.chance(50),
        expiry_secs: *world.rng.pick(&[0, 0, 300, 7_200]),
        keepalive_secs: *world.rng.pick(&[0, 60]),
    }
}

fn random_filters(world: &mut World, filters: &[&'static str]) -> Vec<&'static str> {
    let count = 1 + world.rng.below(2);
    let mut chosen = Vec::new();
    for _ in 0..count {
        let filter = *world.rng.pick(filters);
        if !chosen.contains(&filter) {
            chosen.push(filter);
        }
    }
    chosen
}

/// A connection that sent CONNECT and is not closed (it may still wait for CONNACK).
fn random_open(world: &mut World) -> Option<ConnId> {
    let open: Vec<ConnId> = world
        .clients
        .iter()
        .filter(|(_, c)| !c.closed)
        .map(|(id, _)| *id)
        .collect();
    (!open.is_empty()).then(|| *world.rng.pick(&open))
}

fn random_live(world: &mut World) -> Option<ConnId> {
    let live: Vec<ConnId> = world
        .clients
        .iter()
        .filter(|(_, c)| c.is_live())
        .map(|(id, _)| *id)
        .collect();
    (!live.is_empty()).then(|| *world.rng.pick(&live))
}
