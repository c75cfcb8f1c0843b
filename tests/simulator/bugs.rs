//! Broker bugs the simulator found, each reduced to a fixed sequence of events; all are fixed
//! and these reductions guard against their return.

use std::time::Duration;

use ringmq::protocol::{Packet, QoS, Version};
use ringmq::shard::{ConnId, home_of};

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

/// Two shards: a clean publisher on `publisher_shard`, and a persistent subscriber to `k/#` at
/// QoS 1 on shard 0, the home of its id (SUBACK read). Returns the publisher's connection, the
/// subscriber's id and its connection.
fn subscribed(world: &mut World, publisher_shard: usize) -> (ConnId, String, ConnId) {
    let keeper = id_with_home("keeper", 0, 2);
    let publisher = world.connect(publisher_shard, "publisher", CLEAN);
    let conn = world.connect(0, &keeper, PERSISTENT);
    world.settle_with(|_| {});
    world.subscribe(conn, &["k/#"], QoS::AtLeastOnce);
    world.settle_with(|_| {});
    assert!(world.client(conn).awaiting.is_empty(), "SUBACK read");
    (publisher, keeper, conn)
}

/// How many times the connections in `conns` received a message on `topic`.
fn received(world: &World, conns: &[ConnId], topic: &str) -> usize {
    world
        .log
        .iter()
        .filter(|(conn, packet)| {
            conns.contains(conn) && matches!(packet, Packet::Publish(p) if p.topic == topic)
        })
        .count()
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
    let (publisher, keeper, old) = subscribed(&mut world, 1);

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
    assert!(
        received(&world, &[old, new], "k/x") >= 1,
        "QoS 1 message published after SUBACK lost"
    );
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

/// A persistent QoS 1 subscriber, offline on shard 0 (home of its id), reconnects on shard 0 and
/// at once on shard 1. Shard 0 takes its own session over (a stub forwarding to its own new
/// claim), a publish on shard 0 hits the stub and is forwarded to that claim, and before the
/// forward arrives the session is installed there and taken over again by shard 1's claim.
/// Expected: the forward follows the session to shard 1. It used to find no session, no pending
/// claim and no relay on shard 0 and was dropped (the simulator's racing scenario, 2 shards,
/// seed 9).
#[test]
fn forward_chases_a_session_taken_over_twice() {
    let mut world = World::new(2, 0);
    let (publisher, keeper, first) = subscribed(&mut world, 0);
    world.disconnect(first);
    world.settle_with(|_| {});

    let again = world.connect(0, &keeper, PERSISTENT);
    let elsewhere = world.connect(1, &keeper, PERSISTENT);
    assert!(world.deliver_from(0, 0), "Claim (shard 0)");
    assert!(
        world.deliver_from(0, 0),
        "Takeover: shard 0 leaves a stub for itself"
    );
    assert!(world.deliver_from(1, 0), "Claim (shard 1)");
    world.publish(publisher, "k/x", b"m".to_vec(), QoS::AtLeastOnce);
    assert!(world.deliver_from(0, 0), "ClaimReply (shard 0)");
    assert!(world.deliver_from(0, 0), "Handover: installed on shard 0");
    assert!(
        world.deliver_from(0, 0),
        "Takeover: shard 0 passes it on to shard 1"
    );
    assert!(world.deliver_from(0, 0), "Forward for shard 0's claim");
    world.quiesce(|_| {});
    world.check_quiescent();

    assert!(world.client(again).closed);
    assert!(world.client(elsewhere).is_live());
    assert!(
        received(&world, &[elsewhere], "k/x") >= 1,
        "QoS 1 message published after SUBACK lost"
    );
}
