//! PUBLISH and its acknowledgements from the server (3.1.1 §3.3-3.7, 5.0 §3.3-3.7, §4.3).

use std::time::Duration;

use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

use crate::common::{RawClient, TestBroker, pid, response};
use crate::conformance::raw;

fn puback_reason(client: &mut RawClient, topic: &str, id: u16) -> ReasonCode {
    client.publish(topic, b"x", QoS::AtLeastOnce, false, Some(id));
    match client.recv() {
        Packet::PubAck(ack) if ack.packet_id == pid(id) => ack.reason,
        other => panic!("expected PUBACK {id}, got {other:?}"),
    }
}

/// 5.0 §3.4.2.1 / §3.5.2.1: PUBACK and PUBREC say 0x10 (No matching subscribers) when no
/// subscription matched, on this shard or any other; 0x00 when a plain or shared subscription on
/// any shard did. 3.1.1 acknowledgements carry no reason code at all.
#[test]
fn puback_and_pubrec_say_no_matching_subscribers() {
    let broker = TestBroker::start(4);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V5, "pub", true);
    assert_eq!(
        puback_reason(&mut publisher, "nobody/here", 1),
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    publisher.publish("nobody/here", b"x", QoS::ExactlyOnce, false, Some(2));
    match publisher.recv() {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(response(pid(2))));
    assert!(matches!(publisher.recv(), Packet::PubComp(c) if c.reason == ReasonCode::SUCCESS));

    // A subscriber on another shard, one on this shard, a shared group on a third.
    let (mut remote, _) = RawClient::connect(broker.shard(1), Version::V5, "remote", true);
    remote.subscribe(1, &[("remote/+", QoS::AtMostOnce)]);
    let (mut local, _) = RawClient::connect(broker.shard(0), Version::V5, "local", true);
    local.subscribe(1, &[("local/#", QoS::AtMostOnce)]);
    let (mut member, _) = RawClient::connect(broker.shard(2), Version::V5, "member", true);
    member.subscribe(1, &[("$share/g/shared/t", QoS::AtMostOnce)]);
    for (id, topic) in [(3, "remote/x"), (4, "local/x"), (5, "shared/t")] {
        assert_eq!(
            puback_reason(&mut publisher, topic, id),
            ReasonCode::SUCCESS,
            "{topic}"
        );
    }
    assert_eq!(
        puback_reason(&mut publisher, "remote/x/y", 6),
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    remote.recv_publish();
    local.recv_publish();
    member.recv_publish();

    // 3.1.1: PUBACK is the packet id alone (remaining length 2), subscribers or not.
    let (mut old, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "old", true);
    old.publish("nobody/here", b"x", QoS::AtLeastOnce, false, Some(7));
    let bytes = raw::read_exact(&mut old, 4, Duration::from_secs(5));
    assert_eq!(bytes, [0x40, 0x02, 0x00, 0x07]);
}

/// 5.0 MQTT-3.3.2-4, -15, -16, -17, -18, -20: Payload Format Indicator, Response Topic,
/// Correlation Data, User Properties (all of them, in order, repeated names included) and
/// Content Type reach a subscriber on another shard unaltered; MQTT-3.1.3-10: so do a will's
/// User Properties, in order.
#[test]
fn publish_and_will_properties_are_forwarded_unaltered() {
    use bytes::Bytes;
    use bytestring::ByteString;
    use ringmq::protocol::{PublishProperties, Will, WillProperties};

    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(1), Version::V5, "sub", true);
    sub.subscribe(1, &[("props/#", QoS::AtLeastOnce)]);
    let pair = |k: &str, v: &str| (ByteString::from(k), ByteString::from(v));
    let user_properties = vec![pair("b", "1"), pair("a", "2"), pair("b", "3")];
    let properties = PublishProperties {
        payload_format_indicator: Some(true),
        response_topic: Some(ByteString::from("reply/here")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: user_properties.clone(),
        content_type: Some(ByteString::from("text/plain")),
        ..Default::default()
    };
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V5, "pub", true);
    publisher.send(&Packet::Publish(ringmq::protocol::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from("props/a"),
        packet_id: Some(pid(1)),
        properties: properties.clone().into(),
        payload: Bytes::from_static(b"hello"),
    }));
    let got = sub.recv_publish();
    sub.ack(&got);
    assert_eq!(got.properties.into_inner(), properties);

    let will = Will {
        topic: ByteString::from("props/will"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            user_properties: user_properties.clone(),
            content_type: Some(ByteString::from("text/plain")),
            ..Default::default()
        },
    };
    let mut dying = RawClient::connect_tcp(broker.shard(0), Version::V5);
    dying.handshake(crate::common::connect_packet(
        Version::V5,
        "dying",
        true,
        Some(will),
    ));
    drop(dying);
    let got = sub.recv_publish();
    let got = got.properties.into_inner();
    assert_eq!(got.user_properties, user_properties);
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
}

/// 5.0 and 3.1.1 MQTT-3.3.1-3: the DUP flag a publisher sets is not passed on: a subscriber's
/// first delivery has DUP 0 (and QoS 0 always has DUP 0, MQTT-3.3.1-2).
#[test]
fn dup_of_the_publisher_is_not_forwarded() {
    let broker = TestBroker::start(2);
    for version in [Version::V3_1_1, Version::V5] {
        let (mut sub, _) = RawClient::connect(broker.shard(1), version, "sub", true);
        sub.subscribe(1, &[("d/+", QoS::AtLeastOnce)]);
        let (mut publisher, _) = RawClient::connect(broker.shard(0), version, "pub", true);
        let mut publish = |topic: &str, qos: QoS, id: Option<u16>| {
            publisher.send(&Packet::Publish(ringmq::protocol::Publish {
                dup: qos != QoS::AtMostOnce,
                qos,
                retain: false,
                topic: topic.into(),
                packet_id: id.map(pid),
                properties: Default::default(),
                payload: bytes::Bytes::from_static(b"x"),
            }));
        };
        publish("d/1", QoS::AtLeastOnce, Some(1));
        publish("d/0", QoS::AtMostOnce, None);
        for _ in 0..2 {
            let got = sub.recv_publish();
            assert!(!got.dup, "{version:?} {}", got.topic);
            sub.ack(&got);
        }
        sub.disconnect();
        publisher.disconnect();
    }
}

/// 5.0 MQTT-4.3.3-9: after a PUBREC of 0x80 or more (here 0x87, the ACL refusing the topic), a
/// PUBLISH with the same packet identifier is a new message: delivered, without a PUBREL first.
#[test]
fn after_a_refusing_pubrec_the_packet_id_is_new() {
    use crate::common::security::{Files, secured, user};

    let files = Files::new("pubrec-refused");
    let acl = "user alice\ntopic readwrite open/#\n";
    let broker = TestBroker::with_config(secured(&files, Some(acl)));
    let mut alice = user(&broker, 0, Version::V5, "alice-1", "alice");
    alice.subscribe(1, &[("open/#", QoS::ExactlyOnce)]);
    alice.publish("closed/t", b"no", QoS::ExactlyOnce, false, Some(5));
    match alice.recv() {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    alice.publish("open/t", b"yes", QoS::ExactlyOnce, false, Some(5));
    let mut delivered = None;
    for _ in 0..2 {
        match alice.recv() {
            Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::SUCCESS),
            Packet::Publish(publish) => delivered = Some(publish),
            other => panic!("expected PUBREC and PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(&delivered.expect("delivered").payload[..], b"yes");
}
