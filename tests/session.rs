//! Goal: sessions as MQTT 3.1.1 defines them, across shards: persistent sessions keep
//! subscriptions and queue QoS > 0 messages while offline, clean sessions forget, a second
//! connection with the same client id takes the session over (on any shard), in-flight messages
//! are resent with DUP on reconnect.

mod common;

use std::time::Duration;

use common::{RawClient, Received, TestBroker, connect_packet};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

#[test]
fn persistent_session_queues_while_offline_and_resumes_on_another_shard() {
    let broker = TestBroker::start(4);
    let (mut sub, connack) = RawClient::connect(broker.shard(0), Version::V3_1_1, "keeper", false);
    assert!(!connack.session_present);
    sub.subscribe(1, &[("news/#", QoS::AtLeastOnce)]);
    sub.disconnect();

    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);
    // QoS 0 is not queued for an offline session by default. Sent first, so that it reaches
    // shard 0 (ring 1 -> 0 is FIFO) ahead of the QoS 1 messages, while the session is offline
    // there: sent last, it could still be in that ring when the session moves, and a forwarded
    // QoS 0 message rightly reaches the session online again.
    publisher.publish("news/x", b"qos0", QoS::AtMostOnce, false, None);
    for i in 0..5u16 {
        publisher.publish(
            "news/x",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            false,
            Some(i + 1),
        );
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }

    let (mut sub, connack) = RawClient::connect(broker.shard(3), Version::V3_1_1, "keeper", false);
    assert!(
        connack.session_present,
        "the session moved from shard 0 to shard 3"
    );
    for i in 0..5u16 {
        let got = sub.recv_publish();
        assert_eq!(&got.payload[..], &i.to_be_bytes());
        assert_eq!(got.qos, QoS::AtLeastOnce);
        sub.ack(&got);
    }
    let extra = sub.try_recv(Duration::from_millis(300));
    assert!(extra.is_none(), "QoS 0 was not queued: {extra:?}");
    // The subscription moved with the session.
    publisher.publish("news/y", b"live", QoS::AtLeastOnce, false, Some(99));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    assert_eq!(&sub.recv_publish().payload[..], b"live");
}

#[test]
fn clean_session_discards_the_previous_session() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "c1", false);
    sub.subscribe(1, &[("t", QoS::AtLeastOnce)]);
    sub.disconnect();
    let (sub, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "c1", true);
    assert!(!connack.session_present);
    sub.disconnect();
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "p", true);
    publisher.publish("t", b"x", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    let (mut sub, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "c1", false);
    assert!(
        !connack.session_present,
        "a clean session left nothing behind"
    );
    assert!(sub.try_recv(Duration::from_millis(300)).is_none());
}

#[test]
fn takeover_closes_the_old_connection_on_any_shard() {
    let broker = TestBroker::start(4);
    for (first, second) in [(0, 0), (0, 2), (3, 1)] {
        let (mut old, _) = RawClient::connect(broker.shard(first), Version::V3_1_1, "dup", false);
        old.subscribe(1, &[("d", QoS::AtLeastOnce)]);
        let (mut new, connack) =
            RawClient::connect(broker.shard(second), Version::V3_1_1, "dup", false);
        assert!(connack.session_present);
        assert!(
            old.expect_closed().is_empty(),
            "3.1.1 gets no DISCONNECT, just the close"
        );
        let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
        publisher.publish("d", b"to-new", QoS::AtLeastOnce, false, Some(1));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        let got = new.recv_publish();
        assert_eq!(&got.payload[..], b"to-new");
        new.ack(&got);
        new.disconnect();
        publisher.disconnect();
    }
}

#[test]
fn takeover_on_v5_sends_disconnect_session_taken_over() {
    let broker = TestBroker::start(2);
    let (mut old, _) = RawClient::connect(broker.shard(0), Version::V5, "five", true);
    let (_new, _) = RawClient::connect(broker.shard(1), Version::V5, "five", true);
    let packets = old.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
        "{packets:?}"
    );
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "flaky", false);
    sub.subscribe(1, &[("r", QoS::ExactlyOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    publisher.publish("r", b"one", QoS::AtLeastOnce, false, Some(1));
    publisher.publish("r", b"two", QoS::ExactlyOnce, false, Some(2));
    let first = sub.recv_publish();
    let second = sub.recv_publish();
    assert!(!first.dup && !second.dup);
    // Acknowledge only the PUBREC of the second, then drop the connection without DISCONNECT.
    sub.send(&Packet::PubRec(common::response(second.packet_id.unwrap())));
    assert!(matches!(sub.recv(), Packet::PubRel(_)));
    drop(sub);
    std::thread::sleep(Duration::from_millis(200));
    let (mut sub, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "flaky", false);
    assert!(connack.session_present);
    let again = sub.recv_publish();
    assert!(again.dup, "resent PUBLISH carries DUP");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(&again.payload[..], b"one");
    match sub.recv() {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, second.packet_id.unwrap()),
        other => panic!("expected the PUBREL to be resent, got {other:?}"),
    }
}

#[test]
fn empty_client_id_rules() {
    let broker = TestBroker::start(2);
    // 3.1.1 with clean session: an id is assigned.
    let (client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "", true);
    client.disconnect();
    // 3.1.1 without clean session: 0x02 identifier rejected, then close.
    let mut client = RawClient::connect_tcp(broker.shard(1), Version::V3_1_1);
    let connack = client.handshake(connect_packet(Version::V3_1_1, "", false, None));
    assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    client.expect_closed();
    // 5.0: assigned, and told which.
    let (client, connack) = RawClient::connect(broker.shard(1), Version::V5, "", false);
    let assigned = connack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!assigned.is_empty());
    client.disconnect();
}

#[test]
fn connect_must_come_first_and_only_once() {
    let broker = TestBroker::start(2);
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    client.send(&Packet::PingReq);
    assert!(client.expect_closed().is_empty());

    let (mut client, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "twice", true);
    client.send(&Packet::Connect(Box::new(connect_packet(
        Version::V3_1_1,
        "twice",
        true,
        None,
    ))));
    assert!(client.expect_closed().is_empty());

    // An unsupported protocol level gets CONNACK 0x01 (3.1.1 format), then the close.
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    client.send_raw(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 9, 2, 0, 60, 0, 1, b'x',
    ]);
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{packets:?}"
    );
}

#[test]
fn ping_and_keepalive() {
    let broker = TestBroker::start(1);
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    let mut connect = connect_packet(Version::V3_1_1, "sleepy", true, None);
    connect.keep_alive_secs = 1;
    client.handshake(connect);
    client.send(&Packet::PingReq);
    assert!(matches!(client.recv(), Packet::PingResp));
    // Silent for more than 1.5 x keepalive: the broker closes the connection.
    let started = std::time::Instant::now();
    match client.recv_or_closed(Duration::from_secs(4)) {
        Received::Closed => {}
        _ => panic!("not closed after keepalive expiry"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1400));
}
