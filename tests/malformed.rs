//! Goal: malformed input or a protocol violation closes that connection only (3.1.1 §4.8), with
//! the spec's answer, and never affects another client.

mod common;

use common::{RawClient, TestBroker};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

#[test]
fn bad_packets_close_only_their_connection() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "bystander", true);
    sub.subscribe(1, &[("ok", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);

    let cases: &[(&str, &[u8])] = &[
        ("PUBLISH with QoS 3", &[0x36, 0x05, 0, 1, b't', 0, 1]),
        ("wildcard in PUBLISH topic", &[0x30, 0x03, 0, 1, b'#']),
        ("PUBREL with bad flags", &[0x60, 0x02, 0, 1]),
        ("SUBSCRIBE without filters", &[0x82, 0x02, 0, 1]),
        (
            "5-byte remaining length",
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("invalid UTF-8 topic", &[0x30, 0x05, 0, 2, 0xc3, 0x28, b'x']),
        ("packet type 0", &[0x00, 0x00]),
    ];
    for (name, bytes) in cases {
        let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "bad", true);
        bad.send_raw(bytes);
        assert!(
            bad.expect_closed().is_empty(),
            "{name}: 3.1.1 closes without an answer"
        );
        publisher.publish("ok", name.as_bytes(), QoS::AtMostOnce, false, None);
        assert_eq!(
            &sub.recv_publish().payload[..],
            name.as_bytes(),
            "{name}: others go on"
        );
    }
}

#[test]
fn v5_protocol_errors_get_disconnect_with_reason() {
    let broker = TestBroker::start(2);
    let (mut bad, _) = RawClient::connect(broker.shard(1), Version::V5, "bad5", true);
    // PUBLISH QoS 1 with topic alias 0.
    bad.send_raw(&[0x32, 0x09, 0, 1, b't', 0, 1, 3, 0x23, 0, 0]);
    let packets = bad.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID),
        "{packets:?}"
    );
}

#[test]
fn oversized_packet_is_refused_before_it_is_buffered() {
    let broker = TestBroker::start(1);
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    // A first packet (not even CONNECT) declaring 256 MB: closed from its header alone.
    client.send_raw(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
    assert!(client.expect_closed().is_empty());
}
