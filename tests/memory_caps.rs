//! Goal: the shard-wide caps on write buffers, wills and subscription filters hold the broker's
//! memory whatever many hostile clients do, answer the spec's way, count each refusal by reason,
//! and leave well-behaved clients on the same shard served.
//!
//! The broker runs in this process: RSS is this process's (see tests/memory.rs).

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use common::memory::{WellBehaved, limits_reached, shard_gauge_settles};
use common::{RawClient, TestBroker, connect_packet, rss_bytes, test_config};
use ringmq::protocol::{QoS, ReasonCode, Version, Will, WillProperties};
use socket2::{Domain, Socket, Type};

/// The tests here measure the process (RSS): they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The RSS the process must stay under.
const RSS_BUDGET_BYTES: u64 = 256 << 20;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A 3.1.1 subscriber to `filter` whose socket receives into a 4 KiB buffer and which never
/// reads after its SUBACK.
fn stalled_subscriber(addr: SocketAddr, client_id: &str, filter: &str) -> RawClient {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut client = RawClient::from_stream(socket.into(), Version::V3_1_1);
    let connack = client.handshake(connect_packet(Version::V3_1_1, client_id, true, None));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    client.subscribe(1, &[(filter, QoS::AtMostOnce)]);
    client
}

#[test]
fn stalled_subscribers_hold_at_most_the_write_buffer_cap() {
    let _serial = serial();
    const STALLED: usize = 100;
    const MESSAGES: usize = 40;
    const CAP: u64 = 4 << 20;
    let payload = vec![9u8; 256 * 1024];
    let mut config = test_config(2);
    config.limits.write_buffer_bytes_per_shard_max = CAP;
    // Their outboxes are held to small caps too, so that what is measured is the write side.
    config.limits.outbox_bytes_max = 1 << 20;
    config.limits.queued_bytes_per_shard_max = 4 << 20;
    let mut served = WellBehaved::start(config, Version::V3_1_1);
    let (mut flooder, _) =
        RawClient::connect(served.broker.shard(1), Version::V3_1_1, "flood", true);
    let stalled: Vec<RawClient> = (0..STALLED)
        .map(|i| stalled_subscriber(served.broker.shard(0), &format!("s{i}"), "big"))
        .collect();
    served.exchange(10);

    // 40 messages of 256 KiB to 100 subscribers that do not read: without the cap each holds a
    // 64 KiB buffer and a packet, plus the write under way (about 60 MiB together).
    let rss_before = rss_bytes();
    for _ in 0..MESSAGES {
        flooder.publish("big", &payload, QoS::AtMostOnce, false, None);
        served.exchange(2);
    }
    served.exchange(100);
    let rss_held = rss_bytes();
    let growth = rss_held.saturating_sub(rss_before);
    eprintln!(
        "{STALLED} stalled subscribers, {MESSAGES} x 256 KiB: RSS {} MiB -> {} MiB",
        rss_before >> 20,
        rss_held >> 20
    );
    // Three times the write cap, twice the held-messages cap, and slack for the allocator.
    assert!(
        growth < 3 * CAP + (8 << 20) + (16 << 20),
        "RSS grew by {growth} bytes ({rss_before} -> {rss_held})"
    );
    assert!(rss_held < RSS_BUDGET_BYTES, "RSS {rss_held} bytes");
    let waits = limits_reached(served.admin, "write_bytes", 1.0);
    assert!(waits >= 1.0, "write_bytes waits counted: {waits}");

    // They half-close without reading: the broker sees the end of their stream while their
    // writers are stuck in writes nobody takes, and gives up on those after its close flush
    // time (5 s), cancelling them; the bytes of those writes are given back all the same.
    for client in &stalled {
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let left = shard_gauge_settles(served.admin, "ringmq_write_buffer_bytes", 0.0);
    assert_eq!(left, 0.0, "write buffer bytes left by cancelled writes");
    // Their bytes are given back when they go: a message larger than a connection's share
    // (which needs room under the cap) reaches the well-behaved subscriber again.
    drop(stalled);
    served.exchange(10);
    let deadline = Instant::now() + Duration::from_secs(10);
    served
        .publisher
        .publish("ok", &payload, QoS::AtMostOnce, false, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "a 256 KiB message did not get through");
        match served.subscriber.try_recv(left) {
            Some(ringmq::protocol::Packet::Publish(publish))
                if publish.payload.len() == payload.len() =>
            {
                break;
            }
            Some(_) => {}
            None => panic!("a 256 KiB message did not get through"),
        }
    }
    let left = shard_gauge_settles(served.admin, "ringmq_write_buffer_bytes", 0.0);
    assert_eq!(left, 0.0, "write buffer bytes left");
}

/// A client that publishes to its own subscription faster than it reads is still read: the
/// deliveries it does not take wait in (and are dropped from) its outbox, and only answers to its
/// own requests pause its input. Pausing on deliveries too stalled it: once the kernel's buffers
/// filled, its writes blocked on a broker that had stopped reading it, and it never read.
#[test]
fn a_client_publishing_to_its_own_subscription_is_not_stalled() {
    let _serial = serial();
    let broker = TestBroker::start(1);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "self", true);
    client.subscribe(1, &[("me", QoS::AtMostOnce)]);
    client
        .stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 32 MiB of QoS 0 publishes without reading: far more than the socket buffers hold.
    let payload = vec![7u8; 16 * 1024];
    for _ in 0..2048 {
        client.publish("me", &payload, QoS::AtMostOnce, false, None);
    }
    client.send(&ringmq::protocol::Packet::PingReq);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no PINGRESP after the flood");
        match client.try_recv(left) {
            Some(ringmq::protocol::Packet::PingResp) => break,
            Some(_) => {}
            None => panic!("no PINGRESP after the flood"),
        }
    }
}

/// A will of about 60 KB.
fn large_will(i: usize) -> Will {
    Will {
        topic: ByteString::from(format!("will/{i}")),
        payload: Bytes::from(vec![b'w'; 60_000]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    }
}

#[test]
fn wills_stop_at_the_shard_cap() {
    let _serial = serial();
    const CLIENTS: usize = 1000;
    const CAP: u64 = 4 << 20;
    let mut config = test_config(2);
    config.limits.will_bytes_per_shard_max = CAP;
    let mut served = WellBehaved::start(config, Version::V5);

    // 1,000 wills of 60 KB would hold 60 MB without the cap.
    let rss_before = rss_bytes();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..CLIENTS {
        let version = if i % 2 == 0 {
            Version::V5
        } else {
            Version::V3_1_1
        };
        let mut client = RawClient::connect_tcp(served.broker.shard(0), version);
        let connect = connect_packet(version, &format!("w{i}"), true, Some(large_will(i)));
        let connack = client.handshake(connect);
        match connack.reason {
            ReasonCode::SUCCESS => held.push(client),
            // 5.0: 0x97 Quota exceeded; 3.1.1: return code 3, Server unavailable.
            ReasonCode::QUOTA_EXCEEDED | ReasonCode::SERVER_UNAVAILABLE => refused += 1,
            other => panic!("client {i}: CONNACK {other:?}"),
        }
        if i % 50 == 0 {
            served.exchange(5);
        }
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "{CLIENTS} wills of 60 KB: {} held, {refused} refused, RSS +{} MiB",
        held.len(),
        growth >> 20
    );
    // The cap holds 69 of them.
    assert_eq!(held.len(), (CAP / 60_007) as usize, "held");
    assert_eq!(refused, CLIENTS - held.len());
    assert!(growth < 32 << 20, "RSS grew by {growth} bytes");
    assert_eq!(
        limits_reached(served.admin, "will_bytes", refused as f64),
        refused as f64
    );

    // A clean DISCONNECT discards the will (MQTT-3.14.4-3): its bytes are given back.
    for client in held {
        client.disconnect();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let _again = loop {
        let mut client = RawClient::connect_tcp(served.broker.shard(0), Version::V5);
        let connect = connect_packet(Version::V5, "again", true, Some(large_will(0)));
        if client.handshake(connect).reason == ReasonCode::SUCCESS {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "the wills' bytes were not given back"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Only the last will is held: its topic and payload.
    let held = shard_gauge_settles(served.admin, "ringmq_will_bytes", 60_006.0);
    assert_eq!(held, 60_006.0, "will bytes");
    served.exchange(10);
}

#[test]
fn subscription_filters_stop_at_the_shard_cap() {
    let _serial = serial();
    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 100;
    const CAP: u64 = 4 << 20;
    let mut config = test_config(2);
    config.limits.subscription_bytes_per_shard_max = CAP;
    let mut served = WellBehaved::start(config, Version::V5);

    // 1,000 filters of 60 KB would hold 60 MB (and the trie's copy) without the cap.
    let rss_before = rss_bytes();
    let mut granted = 0;
    let mut refused = 0;
    let mut hostile = Vec::new();
    for i in 0..CLIENTS {
        let version = if i % 2 == 0 {
            Version::V5
        } else {
            Version::V3_1_1
        };
        let (mut client, _) =
            RawClient::connect(served.broker.shard(0), version, &format!("f{i}"), true);
        for chunk in 0..PER_CLIENT / 10 {
            let filters: Vec<String> = (0..10)
                .map(|n| format!("{i}/{chunk}/{n}/{}", "f".repeat(60_000)))
                .collect();
            let requests: Vec<(&str, QoS)> = filters
                .iter()
                .map(|filter| (filter.as_str(), QoS::AtMostOnce))
                .collect();
            for reason in client.subscribe(1 + chunk as u16, &requests) {
                match reason {
                    ReasonCode::SUCCESS => granted += 1,
                    // 5.0: 0x97 Quota exceeded; 3.1.1: 0x80 Failure.
                    ReasonCode::QUOTA_EXCEEDED | ReasonCode::UNSPECIFIED_ERROR => refused += 1,
                    other => panic!("client {i}: SUBACK {other:?}"),
                }
            }
        }
        served.exchange(5);
        hostile.push(client);
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "{} filters of 60 KB: {granted} granted, {refused} refused, RSS +{} MiB",
        CLIENTS * PER_CLIENT,
        growth >> 20
    );
    // The cap holds 69 of them (plus the bystander's two bytes).
    assert_eq!(granted, 69, "granted");
    assert_eq!(refused, CLIENTS * PER_CLIENT - granted);
    assert!(growth < 32 << 20, "RSS grew by {growth} bytes");
    assert_eq!(
        limits_reached(served.admin, "subscription_bytes", refused as f64),
        refused as f64
    );

    // A session that ends gives its filters' bytes back.
    for client in hostile {
        client.disconnect();
    }
    let (mut again, _) = RawClient::connect(served.broker.shard(0), Version::V5, "again", true);
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!("again/{}", "f".repeat(60_000));
    let mut packet_id = 1;
    while again.subscribe(packet_id, &[(filter.as_str(), QoS::AtMostOnce)]) != [ReasonCode::SUCCESS]
    {
        assert!(
            Instant::now() < deadline,
            "the filters' bytes were not given back"
        );
        std::thread::sleep(Duration::from_millis(100));
        packet_id += 1;
    }
    // The bystander's `ok` and the new filter.
    let expected = (2 + filter.len()) as f64;
    let held = shard_gauge_settles(served.admin, "ringmq_subscription_bytes", expected);
    assert_eq!(held, expected, "subscription filter bytes");
    served.exchange(10);
}
