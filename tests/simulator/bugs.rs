//! Broker bugs the simulator found, each reduced to a fixed sequence of events; both are fixed
//! and these reductions guard against their return.

use std::time::Duration;

use ringmq::protocol::{Packet, QoS, Version};
use ringmq::shard::home_of;

use super::world::{ConnectOptions, World};

const PERSISTENT: ConnectOptions = ConnectOptions {
    version: Version::V3_1_1,
    clean: false,
    expiry_secs: 0,
    keepalive_secs: 0,
};

const CLEAN: ConnectOptions = ConnectOptions {
    version: Version::V3_1_1,
    clean: true,
    expiry_secs: 0,
    keepalive_secs: 0,
};

/// A client id whose directory entry lives on `shard` of `n`.
fn id_with_home(prefix: &str, shard: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| home_of(id, n).index() == shard)
        .unwrap()
}

/// A persistent QoS 1 subscriber on shard 0 reconnects on shard 1 (home of its id: shard 0). A
/// publisher on shard 1 publishes after the new CONNECT. Shard 1 routes the message to shard 0,
/// where the subscription still is; the Claim (1 -> 0, ahead of the Publish) makes shard 0 take
/// the session over (self-mail) and hand it to shard 1 before the Publish arrives. Shard 0 then
/// has no subscriber and drops it; shard 1 never saw it. Expected: delivered (QoS 1, accepted
/// after SUBACK; at most duplicated around a takeover, never lost).
#[test]
fn publish_in_flight_to_former_owner() {
    let mut world = World::new(2, 0);
    let keeper = id_with_home("keeper", 0, 2);
    let publisher = world.connect(1, "publisher", CLEAN);
    let old = world.connect(0, &keeper, PERSISTENT);
    world.settle_with(|_| {});
    world.subscribe(old, &["k/#"], QoS::AtLeastOnce);
    world.settle_with(|_| {});
    assert!(world.client(old).awaiting.is_empty(), "SUBACK read");

    let new = world.connect(1, &keeper, PERSISTENT);
    world.publish(publisher, "k/x", b"m".to_vec(), QoS::AtLeastOnce);
    assert!(world.deliver_from(1, 0), "Claim reaches the home shard");
    assert!(
        world.deliver_from(0, 0),
        "Takeover: shard 0 hands the session over"
    );
    world.quiesce(|_| {});
    world.check_quiescent();

    assert!(world.client(new).is_live());
    let received = world
        .log
        .iter()
        .filter(|(conn, packet)| {
            (*conn == old || *conn == new)
                && matches!(packet, Packet::Publish(p) if p.topic == "k/x")
        })
        .count();
    assert!(received >= 1, "QoS 1 message published after SUBACK lost");
}

/// A persistent session with a subscription resumes on shard 0: the session is installed and
/// bound to the new connection, CONNACK waits for the interest barrier. The CONNECT deadline
/// passes first; `check_connections` only marks the connection closing, and `on_closed` then
/// skips `end_connection` because it is already closing. Expected: the session is detached
/// (offline, expiry running). Actual: it stays bound to a connection that no longer exists, so it
/// never goes offline or expires, and QoS 0 keeps being queued for it as if online.
#[test]
fn connect_deadline_while_resuming() {
    let mut world = World::new(2, 0);
    let first = world.connect(0, "ghost", PERSISTENT);
    world.settle_with(|_| {});
    world.subscribe(first, &["a/b"], QoS::AtLeastOnce);
    world.settle_with(|_| {});
    world.disconnect(first);
    world.settle_with(|_| {});

    let second = world.connect(0, "ghost", PERSISTENT);
    while !world.any_resuming() {
        assert!(
            world.deliver_one(),
            "mail ran out before the session resumed"
        );
    }
    // The world's own check fails here: "session ghost bound to missing connection".
    world.tick(Duration::from_secs(11));
    assert!(world.client(second).closed);
    world.settle_with(|_| {});
    let session = world.shards[0]
        .session("ghost")
        .expect("the session outlives it");
    assert_eq!(session.conn, None, "the session is offline");
    assert!(session.expires_at.is_some(), "its expiry runs");
}
