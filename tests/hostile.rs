//! Goal: hostile input (huge counts inside a packet, truncated bodies, replays, other protocols on
//! the MQTT port) gets the spec's answer on its own connection and affects no other client.
//! The simpler malformed cases are in `malformed.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{
    Bystanders, RawClient, Received, TestBroker, connect_packet, expect_disconnect, pid, response,
    test_config, vbi,
};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

/// A packet from its first byte and body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    vbi(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn string(text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&u16::try_from(text.len()).unwrap().to_be_bytes());
    out.extend_from_slice(text);
}

#[test]
fn huge_counts_inside_one_packet() {
    let broker = TestBroker::start(2);
    let mut others = Bystanders::new(&broker);

    // 100,000 empty User Properties in one PUBLISH (500 KB, under the packet limit).
    let mut body = Vec::new();
    string(b"t", &mut body);
    let properties: Vec<u8> = [0x26, 0, 0, 0, 0].repeat(100_000);
    vbi(properties.len(), &mut body);
    body.extend_from_slice(&properties);
    let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V5, "props", true);
    bad.send_raw(&frame(0x30, &body));
    expect_disconnect(&mut bad, ReasonCode::QUOTA_EXCEEDED, "user properties");
    others.still_served("user properties");

    // 10,000 filters in one SUBSCRIBE.
    let mut body = vec![0, 1, 0];
    for _ in 0..10_000 {
        string(b"a", &mut body);
        body.push(0);
    }
    let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V5, "filters", true);
    bad.send_raw(&frame(0x82, &body));
    expect_disconnect(&mut bad, ReasonCode::QUOTA_EXCEEDED, "filters");
    others.still_served("filters");

    // A topic of 65,535 levels: refused as a filter (SUBACK 0x8F), closed as a topic name (0x90).
    let levels = "/".repeat(65_534);
    let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V5, "levels", true);
    let reasons = bad.subscribe(1, &[(&levels, QoS::AtMostOnce)]);
    assert_eq!(reasons, [ReasonCode::TOPIC_FILTER_INVALID]);
    bad.publish(&levels, b"x", QoS::AtMostOnce, false, None);
    expect_disconnect(&mut bad, ReasonCode::TOPIC_NAME_INVALID, "levels");
    others.still_served("levels");
}

#[test]
fn truncated_bodies_are_closed_by_the_connect_and_keepalive_deadlines() {
    let mut config = test_config(2);
    config.mqtt.connect_timeout_ms = 500;
    let broker = TestBroker::with_config(config);
    let mut others = Bystanders::new(&broker);

    // A CONNECT declaring 32 bytes, 5 sent, then silence.
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    client.send_raw(&[0x10, 0x20, 0, 4, b'M']);
    let started = Instant::now();
    assert!(client.expect_closed().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));

    // After CONNECT (keepalive 1 s): a PUBLISH declaring 16 bytes, 3 sent, then silence.
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    let mut connect = connect_packet(Version::V3_1_1, "half", true, None);
    connect.keep_alive_secs = 1;
    assert_eq!(client.handshake(connect).reason, ReasonCode::SUCCESS);
    client.send_raw(&[0x30, 0x10, 0]);
    let started = Instant::now();
    assert!(matches!(
        client.recv_or_closed(Duration::from_secs(4)),
        Received::Closed
    ));
    assert!(started.elapsed() >= Duration::from_millis(1000));
    others.still_served("truncated");
}

#[test]
fn a_second_connect_on_5_0_is_a_protocol_error() {
    let broker = TestBroker::start(1);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "twice5", true);
    client.send(&Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "twice5",
        true,
        None,
    ))));
    expect_disconnect(&mut client, ReasonCode::PROTOCOL_ERROR, "second CONNECT");
}

#[test]
fn qos2_replayed_without_release_is_delivered_once() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V5, "sub", true);
    sub.subscribe(1, &[("q2", QoS::ExactlyOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "replayer", true);
    for _ in 0..10_000 {
        publisher.publish("q2", b"once", QoS::ExactlyOnce, false, Some(7));
    }
    for i in 0..10_000 {
        match publisher.recv() {
            Packet::PubRec(rec) => assert_eq!(rec.packet_id, pid(7), "PUBREC {i}"),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    let first = sub.recv_publish();
    assert_eq!(&first.payload[..], b"once");
    sub.ack(&first);
    assert!(matches!(sub.recv(), Packet::PubRel(_)));
    assert!(
        sub.try_recv(Duration::from_millis(500)).is_none(),
        "delivered again"
    );
    // Released, the id may carry a new message.
    publisher.send(&Packet::PubRel(response(pid(7))));
    assert!(matches!(publisher.recv(), Packet::PubComp(c) if c.reason == ReasonCode::SUCCESS));
    publisher.publish("q2", b"next", QoS::ExactlyOnce, false, Some(7));
    assert!(matches!(publisher.recv(), Packet::PubRec(_)));
    assert_eq!(&sub.recv_publish().payload[..], b"next");
}

#[test]
fn acknowledgements_for_unknown_packet_ids() {
    let broker = TestBroker::start(1);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "acks", true);
    // PUBREL for an id never used: PUBCOMP 0x92 Packet Identifier not found (5.0 §3.7.2.1).
    client.send(&Packet::PubRel(response(pid(11))));
    assert!(
        matches!(client.recv(), Packet::PubComp(c) if c.reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
    );
    // PUBACK, PUBREC and PUBCOMP for ids the broker never sent are ignored.
    client.send(&Packet::PubAck(response(pid(12))));
    client.send(&Packet::PubRec(response(pid(13))));
    client.send(&Packet::PubComp(response(pid(14))));
    client.send(&Packet::PingReq);
    let packets: Vec<Packet> =
        std::iter::from_fn(|| client.try_recv(Duration::from_millis(500))).collect();
    assert!(
        packets.iter().any(|p| matches!(p, Packet::PingResp)),
        "{packets:?}"
    );
}

#[test]
fn other_protocols_on_the_mqtt_port_are_closed_at_once_without_an_answer() {
    let broker = TestBroker::start(2);
    let mut others = Bystanders::new(&broker);
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0, 0, 0, 0,
    ];
    // 'G' announces a 69-byte packet that never comes: without the first-byte check this waited
    // for the 10 s CONNECT deadline.
    let http: &[u8] = b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n";
    let publish_first: &[u8] = &[0x30, 0x03, 0x00, 0x01, b't'];
    for (what, bytes) in [
        ("TLS ClientHello", client_hello),
        ("HTTP request", http),
        ("PUBLISH first", publish_first),
    ] {
        let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
        let sent_at = Instant::now();
        client.send_raw(bytes);
        let mut answer = [0u8; 64];
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // A signal delivered to this thread interrupts the read (EINTR): read again, within
        // the read timeout's bound.
        let read = loop {
            match std::io::Read::read(&mut client.stream, &mut answer) {
                Err(error)
                    if error.kind() == std::io::ErrorKind::Interrupted
                        && sent_at.elapsed() < Duration::from_secs(5) => {}
                read => break read,
            }
        };
        let closed = match &read {
            Ok(0) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(closed, "{what}: expected a close, got {read:?}");
        assert!(
            sent_at.elapsed() < Duration::from_secs(2),
            "{what}: closed after {:?}, not at once",
            sent_at.elapsed()
        );
        others.still_served(what);
    }
}
