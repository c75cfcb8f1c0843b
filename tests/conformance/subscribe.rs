//! SUBSCRIBE / SUBACK and UNSUBSCRIBE / UNSUBACK from the server's side (3.1.1 §3.8-3.11, 5.0
//! §3.8-3.11): one code per filter, in order, under the request's packet identifier.

use bytestring::ByteString;
use ringmq::protocol::{Packet, QoS, ReasonCode, Unsubscribe, Version};

use crate::common::{RawClient, TestBroker, pid};

fn unsubscribe(client: &mut RawClient, id: u16, filters: &[&str]) -> Vec<ReasonCode> {
    client.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
    }));
    match client.recv() {
        Packet::UnsubAck(ack) => {
            assert_eq!(ack.packet_id, pid(id), "UNSUBACK packet id");
            ack.reasons
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// 5.0 MQTT-3.8.4-1/2/5/6/7, MQTT-3.9.3-1/2, MQTT-3.10.4-4/5/6, MQTT-3.11.3-1/2 (3.1.1
/// MQTT-3.8.4-1/2/4/5, MQTT-3.9.3-1/2, MQTT-3.10.4-4/5/6): a multi-filter SUBSCRIBE gets one
/// SUBACK with a code per filter in request order (granted QoS, or a failure for the invalid
/// one), and UNSUBSCRIBE one UNSUBACK (5.0: 0x11 for a filter that had no subscription).
#[test]
fn one_ack_with_a_code_per_filter_in_order() {
    let broker = TestBroker::start(2);
    let (mut five, _) = RawClient::connect(broker.shard(0), Version::V5, "five", true);
    let filters = [
        ("a/+", QoS::ExactlyOnce),
        ("a/#/b", QoS::AtMostOnce),
        ("b", QoS::AtLeastOnce),
    ];
    assert_eq!(
        five.subscribe(7, &filters),
        [
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1
        ]
    );
    assert_eq!(
        unsubscribe(&mut five, 8, &["b", "never", "a/+"]),
        [
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::SUCCESS
        ]
    );
    for version in [Version::V3_1_1, Version::V3_1] {
        let (mut old, _) = RawClient::connect(broker.shard(1), version, "old", true);
        assert_eq!(
            old.subscribe(9, &filters),
            [ReasonCode(2), ReasonCode(0x80), ReasonCode(1)],
            "{version:?}"
        );
        // 3.x UNSUBACK carries only the packet id, even when nothing was subscribed.
        assert_eq!(unsubscribe(&mut old, 10, &["never", "b"]), Vec::new());
        old.disconnect();
    }
}

/// 5.0 MQTT-3.9.2-1 and MQTT-3.14.2-3: a client with a small Maximum Packet Size (and Request
/// Problem Information on) gets the SUBACK of a refused filter and the DISCONNECT of a protocol
/// error without the Reason String that would not fit; the same client with room gets it.
#[test]
fn reason_strings_that_would_not_fit_are_left_out() {
    let broker = TestBroker::start(2);
    for (max, fits) in [(16, false), (1024, true)] {
        let mut client = RawClient::connect_tcp(broker.shard(1), Version::V5);
        let mut connect = crate::common::connect_packet(Version::V5, "small", true, None);
        connect.properties.maximum_packet_size = Some(max);
        assert_eq!(client.handshake(connect).reason, ReasonCode::SUCCESS);
        client.send(&Packet::Subscribe(ringmq::protocol::Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![ringmq::protocol::SubscribeFilter {
                filter: ByteString::from("a/#/b"),
                options: Default::default(),
            }],
        }));
        match client.recv() {
            Packet::SubAck(ack) => {
                assert_eq!(ack.reasons, [ReasonCode::TOPIC_FILTER_INVALID]);
                assert_eq!(
                    ack.properties.reason_string.is_some(),
                    fits,
                    "SUBACK, max {max}"
                );
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        // PUBLISH QoS 3: malformed.
        client.send_raw(&[0x36, 0x06, 0, 1, b't', 0, 1, 0]);
        let packets = client.expect_closed();
        match packets.as_slice() {
            [Packet::Disconnect(d)] => {
                assert_eq!(d.reason, ReasonCode::MALFORMED_PACKET);
                assert_eq!(
                    d.properties.reason_string.is_some(),
                    fits,
                    "DISCONNECT, max {max}"
                );
            }
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }
}
