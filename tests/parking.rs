//! Goal: idle connections park (no task, no stream, no armed receive: a socket in the shard's
//! epoll instance and a table entry) and cost the broker under 1 KiB of RSS each, and a parked
//! connection is still a connection: it receives QoS 0 and 1 deliveries, answers PINGREQ, is
//! closed at keepalive expiry, is taken over, and ends cleanly on DISCONNECT (no will) or on
//! the client's close (its will).
//!
//! The broker runs in this process: RSS is this process's (see tests/memory.rs). Four unpinned
//! shards; each client picks its shard by port.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use common::{RawClient, TestBroker, admin_get, connect_packet, metric, rss_bytes, test_config};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will};

const SHARDS: usize = 4;
/// A client must be quiet this long before a packet of its own parks it again (the broker's
/// `PARK_AFTER_QUIET` is 1 s). `quiet_ping_parks` tries again should the broker have seen less.
const QUIET: Duration = Duration::from_millis(1300);
/// Quiet spells `quiet_ping_parks` tries before it gives up.
const QUIET_TRIES: usize = 4;

/// RSS of the broker (with this process's clients, a few dozen bytes each) per idle
/// connection: about 1.3 KB here (debug build), 1.0-1.2 KB in a release build with one shard;
/// before connections parked it was about 2.4 KB (docs/BENCHMARKS.md).
const RSS_PER_IDLE_CONNECTION_MAX: u64 = 1536;

/// The tests here measure the process (RSS) or count parked connections: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Parked connections on all shards by `/metrics` once `settled` holds for the count
/// (snapshots are published about once a second), or what it shows after 15 s.
fn parked_once(admin: SocketAddr, settled: impl Fn(f64) -> bool) -> f64 {
    parked_within(admin, Duration::from_secs(15), settled)
}

/// Parked connections on all shards once `settled` holds, or what `/metrics` shows after `wait`.
fn parked_within(admin: SocketAddr, wait: Duration, settled: impl Fn(f64) -> bool) -> f64 {
    gauge_within(admin, "ringmq_connections_parked", wait, settled)
}

/// The all-shards value of gauge `name` once `settled` holds, or what `/metrics` shows after
/// `wait`.
fn gauge_within(
    admin: SocketAddr,
    name: &str,
    wait: Duration,
    settled: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + wait;
    let series = format!("{name}{{shard=\"all\"}}");
    loop {
        let value = metric(&admin_get(admin, "/metrics"), &series);
        if settled(value) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parked_at_least(admin: SocketAddr, at_least: f64) -> f64 {
    parked_once(admin, |parked| parked >= at_least)
}

fn parked_at_most(admin: SocketAddr, at_most: f64) -> f64 {
    parked_once(admin, |parked| parked <= at_most)
}

fn parked_exactly(admin: SocketAddr, count: f64) -> f64 {
    parked_once(admin, |parked| parked == count)
}

/// A quiet spell, then a PINGREQ, until the gauge shows `parked` connections: the packet after
/// the spell parks `client` again. At most `QUIET_TRIES` spells (a snapshot comes about once a
/// second, so each try waits 3 s for it).
fn quiet_ping_parks(client: &mut RawClient, admin: SocketAddr, parked: f64) {
    for _ in 0..QUIET_TRIES {
        std::thread::sleep(QUIET);
        ping(client);
        if parked_within(admin, Duration::from_secs(3), |now| now == parked) == parked {
            return;
        }
    }
    panic!("not {parked} parked after {QUIET_TRIES} quiet spells and PINGREQs");
}

/// A broker with one client connected to `shard` and parked.
fn one_parked(
    shard: usize,
    version: Version,
    id: &str,
    clean: bool,
) -> (TestBroker, SocketAddr, RawClient) {
    let (broker, admin) = start();
    let (client, _) = RawClient::connect(broker.shard(shard), version, id, clean);
    assert_eq!(parked_at_least(admin, 1.0), 1.0, "parked after CONNACK");
    (broker, admin, client)
}

/// Waits (at most 15 s) until `/metrics` shows a snapshot of every shard (a shard's series
/// appear with its first).
fn every_shard_published(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = admin_get(admin, "/metrics");
        let published = (0..SHARDS)
            .filter(|shard| metrics.contains(&format!("ringmq_connections{{shard=\"{shard}\"}}")))
            .count();
        if published == SHARDS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{published} of {SHARDS} shards published a metrics snapshot in 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start() -> (TestBroker, SocketAddr) {
    let broker = TestBroker::with_config(test_config(SHARDS));
    let admin = broker.admin_addr().expect("admin listener");
    (broker, admin)
}

/// A quiet client's PINGREQ, answered: after a quiet spell it parks the connection again.
fn ping(client: &mut RawClient) {
    client.send(&Packet::PingReq);
    match client.recv() {
        Packet::PingResp => {}
        other => panic!("expected PINGRESP, got {other:?}"),
    }
}

#[test]
fn idle_connections_park_and_hold_little_memory() {
    const CLIENTS: usize = 2000;
    const WARM_UP: usize = 2000;
    let _serial = serial();
    let (broker, admin) = start();
    let connect = |from: usize, count: usize| -> Vec<RawClient> {
        (from..from + count)
            .map(|i| {
                let shard = broker.shard(i % SHARDS);
                RawClient::connect(shard, Version::V3_1_1, &format!("idle-{i}"), true).0
            })
            .collect()
    };
    // What the next 2,000 cost, once a first 2,000 are parked: not the broker's first metric
    // snapshots, the shards' receive pools (4 x 1 MiB, whose pages the first few hundred reads
    // touch) or the first growth of each thread's heap. (2,000 from a fresh start measured
    // about 8 KB each in this debug build, nearly all of it such one-time growth.) The pause
    // is a time, not a condition: waiting only for every shard's first snapshot measured
    // 6.2 KB once of two runs, and with no pause 7.9 KB: something else grows in the broker's
    // first second or two.
    every_shard_published(admin);
    std::thread::sleep(Duration::from_millis(1500));
    let warm_up = connect(0, WARM_UP);
    assert_eq!(parked_at_least(admin, WARM_UP as f64), WARM_UP as f64);
    let before = rss_bytes();
    let clients = connect(WARM_UP, CLIENTS);
    let all = (WARM_UP + CLIENTS) as f64;
    assert_eq!(
        parked_at_least(admin, all),
        all,
        "parked after their CONNACK"
    );
    let per_connection = rss_bytes().saturating_sub(before) / CLIENTS as u64;
    eprintln!("{CLIENTS} idle connections: {per_connection} B of RSS each (clients included)");
    assert!(
        per_connection <= RSS_PER_IDLE_CONNECTION_MAX,
        "{per_connection} B of RSS per idle connection"
    );
    drop((warm_up, clients));
    assert_eq!(
        parked_at_most(admin, 0.0),
        0.0,
        "closed clients stay parked"
    );
    broker.shutdown();
}

#[test]
fn a_parked_subscriber_receives_qos_0_and_1() {
    let _serial = serial();
    let (broker, admin) = start();
    let (mut subscriber, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "sub", true);
    subscriber.subscribe(1, &[("parked/+", QoS::AtLeastOnce)]);
    quiet_ping_parks(&mut subscriber, admin, 1.0);
    let (mut publisher, _) = RawClient::connect(broker.shard(2), Version::V3_1_1, "pub", true);
    publisher.publish("parked/0", b"zero", QoS::AtMostOnce, false, None);
    let delivery = subscriber.recv_publish();
    assert_eq!(&delivery.payload[..], b"zero");
    // Parked again (a packet of its own after a quiet spell; the publisher, revived by its
    // PUBLISH, stays a task), then a QoS 1 delivery.
    quiet_ping_parks(&mut subscriber, admin, 1.0);
    publisher.publish("parked/1", b"one", QoS::AtLeastOnce, false, Some(7));
    match publisher.recv() {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let delivery = subscriber.recv_publish();
    assert_eq!(&delivery.payload[..], b"one");
    assert_eq!(delivery.qos, QoS::AtLeastOnce);
    subscriber.ack(&delivery);
    subscriber.disconnect();
    publisher.disconnect();
    broker.shutdown();
}

#[test]
fn a_parked_connection_answers_pingreq_and_closes_at_keepalive_expiry() {
    let _serial = serial();
    let (broker, admin, mut pinging) = one_parked(0, Version::V3_1_1, "ping", true);
    // Revived by its PINGREQ, answered, parked again by the next after a quiet spell.
    ping(&mut pinging);
    quiet_ping_parks(&mut pinging, admin, 1.0);
    // Keepalive 3 s: a client silent for 4.5 s is closed (MQTT-3.1.2-24) although it parked
    // (the gauge, published about once a second, shows it well before).
    let mut silent = RawClient::connect_tcp(broker.shard(3), Version::V3_1_1);
    let mut connect = connect_packet(Version::V3_1_1, "silent", true, None);
    connect.keep_alive_secs = 3;
    let connack = silent.handshake(connect);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    let connected = Instant::now();
    assert_eq!(
        parked_once(admin, |parked| parked >= 2.0),
        2.0,
        "the silent connection parked"
    );
    assert!(
        silent.expect_closed().is_empty(),
        "3.1.1: closed without a packet"
    );
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(4400),
        "closed after {waited:?}, before 1.5 x keepalive"
    );
    ping(&mut pinging);
    pinging.disconnect();
    broker.shutdown();
}

#[test]
fn a_parked_connection_is_taken_over() {
    let _serial = serial();
    let (broker, _admin, mut first) = one_parked(0, Version::V5, "same-id", false);
    let (second, connack) = RawClient::connect(broker.shard(2), Version::V5, "same-id", false);
    assert!(
        connack.session_present,
        "the session moved to the new connection"
    );
    common::expect_disconnect(
        &mut first,
        ReasonCode::SESSION_TAKEN_OVER,
        "the parked connection",
    );
    second.disconnect();
    broker.shutdown();
}

#[test]
fn a_parked_connection_ends_on_disconnect_or_on_the_clients_close() {
    let _serial = serial();
    let (broker, admin) = start();
    let mut watcher = will_watcher(&broker);
    let clean = with_will(&broker, 0, "clean", 60);
    let dropped = with_will(&broker, 0, "dropped", 60);
    // The watcher, revived by its SUBSCRIBE, stays a task.
    assert_eq!(parked_exactly(admin, 2.0), 2.0, "both parked");
    // DISCONNECT: the will is discarded (MQTT-3.14.4-3).
    clean.disconnect();
    // The client's close without DISCONNECT: the will is published.
    drop(dropped);
    let will = watcher.recv_publish();
    assert_eq!(&will.topic[..], "wills/dropped");
    assert!(
        watcher.try_recv(Duration::from_millis(500)).is_none(),
        "the will of a clean DISCONNECT was published"
    );
    watcher.disconnect();
    broker.shutdown();
}

/// A client on shard 1 subscribed to the wills (`wills/<client id>`) of `with_will`'s clients.
fn will_watcher(broker: &TestBroker) -> RawClient {
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "watcher", true);
    watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]);
    watcher
}

/// A 3.1.1 client on `shard` with a will on `wills/<id>` and keepalive `keep_alive_secs`.
fn with_will(broker: &TestBroker, shard: usize, id: &str, keep_alive_secs: u16) -> RawClient {
    let mut client = RawClient::connect_tcp(broker.shard(shard), Version::V3_1_1);
    let will = Will {
        topic: ByteString::from(format!("wills/{id}")),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut connect = connect_packet(Version::V3_1_1, id, true, Some(will));
    connect.keep_alive_secs = keep_alive_secs;
    let connack = client.handshake(connect);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    client
}

/// A client quiet for a while sends a PINGREQ and resets its connection at once: the broker's
/// PINGRESP write fails in the pass that read the PINGREQ, just as the read decides the
/// connection may park. The connection must close (its will published, the connection gauge
/// down), not park without its writer and leave the shard's connection behind.
#[test]
fn a_client_resetting_right_after_a_packet_of_a_quiet_spell_is_closed() {
    const CLIENTS: usize = 16;
    let _serial = serial();
    let (broker, admin) = start();
    let mut watcher = will_watcher(&broker);
    let mut clients: Vec<RawClient> = (0..CLIENTS)
        // Keepalive 0: nothing but its close can end a connection.
        .map(|i| with_will(&broker, i % SHARDS, &format!("reset-{i}"), 0))
        .collect();
    // The watcher, whose SUBSCRIBE came right after its CONNACK, stays a task.
    let all = CLIENTS as f64;
    assert_eq!(parked_at_least(admin, all), all, "parked after CONNACK");
    // Revived by a packet, then quiet: their next packet lets them park again.
    for client in &mut clients {
        ping(client);
    }
    std::thread::sleep(QUIET);
    for mut client in clients {
        client.send(&Packet::PingReq);
        socket2::SockRef::from(&client.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(client);
    }
    let mut wills = 0;
    while watcher.try_recv(Duration::from_secs(5)).is_some() {
        wills += 1;
        if wills == CLIENTS {
            break;
        }
    }
    assert_eq!(wills, CLIENTS, "wills of reset connections published");
    assert_eq!(
        gauge_within(
            admin,
            "ringmq_connections",
            Duration::from_secs(15),
            |open| open <= 1.0
        ),
        1.0,
        "only the watcher is still connected"
    );
    watcher.disconnect();
    broker.shutdown();
}

#[test]
fn a_parked_connection_is_told_of_the_shutdown() {
    let _serial = serial();
    let (broker, _admin, mut parked) = one_parked(3, Version::V5, "at-shutdown", true);
    broker.shutdown();
    common::expect_disconnect(
        &mut parked,
        ReasonCode::SERVER_SHUTTING_DOWN,
        "the parked connection at shutdown",
    );
}
