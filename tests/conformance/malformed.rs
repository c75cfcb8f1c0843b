//! Malformed packets and protocol errors from a client (5.0 §1.5, §2, §4.13; 3.1.1 §1.5, §2,
//! §4.8): 5.0 gets DISCONNECT with the reason code, 3.1.1 only the close, and before CONNACK
//! neither gets anything but the close.

use std::time::Duration;

use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

use crate::common::{RawClient, TestBroker};

const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;

/// Packets a 5.0 client may not send after CONNACK, with the DISCONNECT reason they get.
const V5_AFTER_CONNACK: &[(&str, &[u8], ReasonCode)] = &[
    (
        "PUBLISH QoS 3",
        &[0x36, 0x06, 0, 1, b't', 0, 1, 0],
        MALFORMED,
    ),
    ("PUBREL flags 0", &[0x60, 0x02, 0, 1], MALFORMED),
    (
        "SUBSCRIBE flags 0",
        &[0x80, 0x07, 0, 1, 0, 0, 1, b'a', 0],
        MALFORMED,
    ),
    (
        "UNSUBSCRIBE flags 0",
        &[0xA0, 0x06, 0, 1, 0, 0, 1, b'a'],
        MALFORMED,
    ),
    ("PINGREQ flags 1", &[0xC1, 0x00], MALFORMED),
    ("DISCONNECT flags 1", &[0xE1, 0x00], MALFORMED),
    ("AUTH flags 1", &[0xF1, 0x00], MALFORMED),
    (
        "SUBSCRIBE option bits 6-7",
        &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0xC0],
        MALFORMED,
    ),
    (
        "SUBSCRIBE retain handling 3",
        &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30],
        PROTOCOL,
    ),
    (
        "SUBSCRIBE without filters",
        &[0x82, 0x03, 0, 1, 0],
        PROTOCOL,
    ),
    (
        "UNSUBSCRIBE without filters",
        &[0xA2, 0x03, 0, 1, 0],
        PROTOCOL,
    ),
    (
        "topic with U+0000",
        &[0x30, 0x05, 0, 2, b'a', 0, 0],
        MALFORMED,
    ),
    (
        "topic with U+D800",
        &[0x30, 0x06, 0, 3, 0xED, 0xA0, 0x80, 0],
        MALFORMED,
    ),
    (
        "topic not UTF-8",
        &[0x30, 0x05, 0, 2, 0xC3, 0x28, 0],
        MALFORMED,
    ),
    (
        "remaining length not minimal",
        &[0xC0, 0x80, 0x00],
        MALFORMED,
    ),
    (
        "QoS 1 with packet id 0",
        &[0x32, 0x06, 0, 1, b't', 0, 0, 0],
        PROTOCOL,
    ),
    (
        "wildcard in topic name",
        &[0x30, 0x04, 0, 1, b'#', 0],
        ReasonCode::TOPIC_NAME_INVALID,
    ),
    (
        "subscription identifier from client",
        &[0x30, 0x06, 0, 1, b't', 2, 0x0B, 1],
        PROTOCOL,
    ),
    (
        "second CONNECT",
        &[
            0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'x',
        ],
        PROTOCOL,
    ),
    (
        "property twice",
        &[0x30, 0x08, 0, 1, b't', 4, 0x01, 0, 0x01, 0],
        PROTOCOL,
    ),
    (
        "topic alias 0",
        &[0x30, 0x07, 0, 1, b't', 3, 0x23, 0, 0],
        ReasonCode::TOPIC_ALIAS_INVALID,
    ),
    (
        "unknown alias, empty topic",
        &[0x30, 0x06, 0, 0, 3, 0x23, 0, 1],
        PROTOCOL,
    ),
];

/// 5.0 MQTT-4.13.1-1, MQTT-4.13.2-1: each malformed packet or protocol error gets DISCONNECT with
/// its reason code, then the close; other clients are not affected.
#[test]
fn v5_malformed_packets_and_protocol_errors_get_disconnect_then_close() {
    let broker = TestBroker::start(2);
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V5, "watcher", true);
    watcher.subscribe(1, &[("ok", QoS::AtMostOnce)]);
    let mut wrong = Vec::new();
    for (name, bytes, reason) in V5_AFTER_CONNACK {
        let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V5, "bad", true);
        bad.send_raw(bytes);
        let packets = bad.expect_closed();
        if !matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == *reason) {
            wrong.push(format!("{name}: {packets:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V5, "good", true);
    publisher.publish("ok", b"still", QoS::AtMostOnce, false, None);
    assert_eq!(&watcher.recv_publish().payload[..], b"still");
}

/// 3.1.1 MQTT-4.8.0-1 (and 3.1): the same mistakes close the connection without an answer.
#[test]
fn v311_malformed_packets_close_without_an_answer() {
    let broker = TestBroker::start(2);
    let cases: &[(&str, &[u8])] = &[
        ("SUBSCRIBE flags 0", &[0x80, 0x06, 0, 1, 0, 1, b'a', 0]),
        ("UNSUBSCRIBE flags 0", &[0xA0, 0x05, 0, 1, 0, 1, b'a']),
        ("PINGREQ flags 1", &[0xC1, 0x00]),
        ("DISCONNECT flags 1", &[0xE1, 0x00]),
        ("SUBSCRIBE QoS 3", &[0x82, 0x06, 0, 1, 0, 1, b'a', 3]),
        (
            "SUBSCRIBE reserved bits",
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04],
        ),
        ("UNSUBSCRIBE without filters", &[0xA2, 0x02, 0, 1]),
        ("topic with U+0000", &[0x30, 0x04, 0, 2, b'a', 0]),
        ("topic with U+D800", &[0x30, 0x05, 0, 3, 0xED, 0xA0, 0x80]),
        ("QoS 1 with packet id 0", &[0x32, 0x05, 0, 1, b't', 0, 0]),
        ("AUTH (not in 3.1.1)", &[0xF0, 0x00]),
    ];
    for version in [Version::V3_1_1, Version::V3_1] {
        for (name, bytes) in cases {
            let (mut bad, _) = RawClient::connect(broker.shard(0), version, "bad", true);
            bad.send_raw(bytes);
            assert_eq!(bad.expect_closed(), Vec::new(), "{version:?} {name}");
        }
    }
}

/// CONNECT packets that do not conform (3.1.1 MQTT-3.1.4-1, MQTT-3.1.2-3, -11, -13, -15, -22;
/// 5.0 MQTT-3.1.4-1, MQTT-3.1.2-3): closed without CONNACK; a wrong protocol name (MQTT-3.1.2-1)
/// gets the refusal of an unsupported protocol.
#[test]
fn nonconforming_connects_are_closed_without_connack() {
    let broker = TestBroker::start(2);
    let v311 = |flags: u8| {
        vec![
            0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'x',
        ]
    };
    let v5 = |flags: u8| {
        vec![
            0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 60, 0, 0, 1, b'x',
        ]
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("3.1.1 reserved flag", v311(0x03)),
        ("3.1.1 will QoS without will flag", v311(0x0A)),
        ("3.1.1 will retain without will flag", v311(0x22)),
        ("3.1.1 password without user name", v311(0x42)),
        ("5.0 reserved flag", v5(0x03)),
        ("5.0 will QoS without will flag", v5(0x0A)),
        ("5.0 will retain without will flag", v5(0x22)),
        (
            "5.0 client id not UTF-8",
            vec![
                0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, 0xFF,
            ],
        ),
    ];
    for (name, bytes) in &cases {
        let mut client = RawClient::connect_tcp(broker.shard(1), Version::V3_1_1);
        client.send_raw(bytes);
        assert!(client.expect_closed().is_empty(), "{name}");
    }
    // An unknown protocol name is answered like an unknown level (3.1.1 MQTT-3.1.2-1 lets the
    // server close; 5.0 MQTT-3.1.2-1 suggests CONNACK 0x84): return code 0x01, then the close.
    let mut wrong_name = v311(0x02);
    wrong_name[7] = b'X';
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    client.send_raw(&wrong_name);
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{packets:?}"
    );
}

/// 5.0 MQTT-1.5.4-3 / 3.1.1 MQTT-1.5.3-3: a byte order mark in a topic is a character like any
/// other: not stripped, so it only matches a filter that has it too (MQTT-4.7.3-4: no
/// normalization).
#[test]
fn a_byte_order_mark_in_a_topic_is_kept() {
    let broker = TestBroker::start(2);
    let (mut with_bom, _) = RawClient::connect(broker.shard(0), Version::V5, "bom", true);
    with_bom.subscribe(1, &[("\u{FEFF}t", QoS::AtMostOnce)]);
    let (mut plain, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "plain", true);
    plain.subscribe(1, &[("t", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    publisher.publish("\u{FEFF}t", b"x", QoS::AtMostOnce, false, None);
    assert_eq!(&with_bom.recv_publish().topic[..], "\u{FEFF}t");
    assert_eq!(plain.try_recv(Duration::from_millis(300)), None);
}
