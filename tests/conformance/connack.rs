//! CONNACK: its flags, return codes and properties (3.1 §3.2, 3.1.1 §3.2, 5.0 §3.2).

use std::time::Duration;

use ringmq::protocol::{Packet, ReasonCode, Version};

use crate::common::{RawClient, TestBroker, connect_packet};
use crate::conformance::raw;

/// MQTT 3.1 has no Session Present flag: the first byte of the variable header is reserved and
/// 0, even when a stored session is resumed (a 3.1 client may reject anything else).
#[test]
fn v31_connack_has_no_session_present_flag() {
    let broker = TestBroker::start(2);
    let (client, connack) = RawClient::connect(broker.shard(0), Version::V3_1, "old31", false);
    assert!(!connack.session_present, "first connection has no session");
    client.disconnect();
    // Resumed on the other shard: the session exists, still the flags byte is 0.
    let mut client = RawClient::connect_tcp(broker.shard(1), Version::V3_1);
    client.send(&Packet::Connect(Box::new(connect_packet(
        Version::V3_1,
        "old31",
        false,
        None,
    ))));
    let bytes = raw::read_exact(&mut client, 4, Duration::from_secs(5));
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x00], "3.1 CONNACK, accepted");
    // The same resume in 3.1.1 does say the session is present (MQTT-3.2.2-2).
    let (client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "old31", false);
    client.disconnect();
    let (_client, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "old31", false);
    assert!(connack.session_present, "3.1.1 resume");
}

fn connect_with_maximum_packet_size(broker: &TestBroker, id: &str, max: u32) -> RawClient {
    let mut client = RawClient::connect_tcp(broker.shard(1), Version::V5);
    let mut connect = connect_packet(Version::V5, id, true, None);
    connect.properties.maximum_packet_size = Some(max);
    client.send(&Packet::Connect(Box::new(connect)));
    client
}

/// MQTT-3.1.2-24: no packet over the client's Maximum Packet Size, the CONNACK included. A
/// property that states its default is left out, and what only informs the client goes before
/// the CONNACK does; when not even the properties the client needs fit, the connection is
/// refused with 0x95 (Packet too large) instead of being left without an answer.
#[test]
fn connack_fits_a_small_maximum_packet_size_or_refuses() {
    let broker = TestBroker::start(2);
    let mut client = connect_with_maximum_packet_size(&broker, "small", 20);
    let head = raw::read_exact(&mut client, 2, Duration::from_secs(5));
    assert_eq!(head[0], 0x20, "CONNACK");
    assert!(
        2 + usize::from(head[1]) <= 20,
        "CONNACK of {} bytes",
        2 + head[1]
    );
    let body = raw::read_exact(&mut client, usize::from(head[1]), Duration::from_secs(5));
    assert_eq!(body[1], 0x00, "accepted");
    client.send(&Packet::PingReq);
    assert_eq!(client.recv(), Packet::PingResp);

    // Defaults are not stated: no "available" flag that says 1.
    let (mut big, connack) = RawClient::connect(broker.shard(0), Version::V5, "big", true);
    assert_eq!(connack.properties.wildcard_subscription_available, None);
    assert_eq!(connack.properties.shared_subscription_available, None);
    assert_eq!(connack.properties.subscription_identifiers_available, None);
    big.send(&Packet::PingReq);
    assert_eq!(big.recv(), Packet::PingResp);

    // Receive Maximum and Maximum Packet Size alone take 13 bytes with the header.
    let mut tiny = connect_with_maximum_packet_size(&broker, "tiny", 10);
    let packets = tiny.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == ReasonCode::PACKET_TOO_LARGE && c.properties == Default::default()),
        "{packets:?}"
    );
}

/// MQTT 3.1 (§3.1 Client Identifier): 1 to 23 characters, always present; a longer or empty one
/// gets return code 2 (Identifier rejected) and the close.
#[test]
fn v31_client_ids_are_1_to_23_characters() {
    let broker = TestBroker::start(2);
    let (client, _) = RawClient::connect(broker.shard(0), Version::V3_1, &"a".repeat(23), true);
    client.disconnect();
    for id in [String::new(), "a".repeat(24)] {
        let mut client = RawClient::connect_tcp(broker.shard(1), Version::V3_1);
        let connect = connect_packet(Version::V3_1, &id, true, None);
        client.send(&Packet::Connect(Box::new(connect)));
        let packets = client.expect_closed();
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            "{} characters: {packets:?}",
            id.len()
        );
    }
}
