//! CONNACK: its flags, return codes and properties (3.1 §3.2, 3.1.1 §3.2, 5.0 §3.2).

use std::time::Duration;

use ringmq::protocol::{Packet, Version};

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
