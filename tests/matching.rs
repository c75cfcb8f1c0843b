//! Goal: subscription matching as 3.1.1 §4.7 states it, across shards: `+`, `#`, `$` topics not
//! matched by leading wildcards, overlapping subscriptions delivered once at the highest QoS,
//! granted QoS, UNSUBSCRIBE, and resubscribe replacing the old subscription.

mod common;

use std::time::Duration;

use common::{RawClient, TestBroker};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

#[test]
fn wildcards_and_dollar_topics() {
    let broker = TestBroker::start(3);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "w", true);
    sub.subscribe(1, &[("#", QoS::AtMostOnce), ("$ext/+", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    publisher.publish("$internal/x", b"hidden", QoS::AtMostOnce, false, None);
    // `$SYS` is the broker's own: a client's publish there goes nowhere.
    publisher.publish("$SYS/x", b"forged", QoS::AtMostOnce, false, None);
    publisher.publish("$ext/x", b"dollar", QoS::AtMostOnce, false, None);
    publisher.publish("a/b", b"plain", QoS::AtMostOnce, false, None);
    assert_eq!(&sub.recv_publish().payload[..], b"dollar");
    assert_eq!(&sub.recv_publish().payload[..], b"plain");
    assert!(sub.try_recv(Duration::from_millis(200)).is_none());
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "o", true);
    sub.subscribe(
        1,
        &[
            ("a/+", QoS::AtMostOnce),
            ("a/#", QoS::AtLeastOnce),
            ("a/b", QoS::AtMostOnce),
        ],
    );
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    publisher.publish("a/b", b"x", QoS::ExactlyOnce, false, Some(3));
    assert!(matches!(publisher.recv(), Packet::PubRec(_)));
    let got = sub.recv_publish();
    assert_eq!(got.qos, QoS::AtLeastOnce);
    sub.ack(&got);
    assert!(
        sub.try_recv(Duration::from_millis(200)).is_none(),
        "delivered once"
    );
}

#[test]
fn granted_qos_is_capped_by_config() {
    let mut config = common::test_config(2);
    config.mqtt.max_qos = 1;
    let broker = TestBroker::with_config(config);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "g", true);
    assert_eq!(
        sub.subscribe(1, &[("t", QoS::ExactlyOnce)]),
        vec![ReasonCode::GRANTED_QOS_1]
    );
}

#[test]
fn unsubscribe_and_resubscribe() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "u", true);
    sub.subscribe(1, &[("t/#", QoS::AtLeastOnce)]);
    sub.subscribe(2, &[("t/#", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    publisher.publish("t/1", b"a", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    assert_eq!(
        sub.recv_publish().qos,
        QoS::AtMostOnce,
        "the resubscribe replaced QoS 1"
    );
    sub.send(&Packet::Unsubscribe(ringmq::protocol::Unsubscribe {
        packet_id: common::pid(3),
        properties: Default::default(),
        filters: vec![bytestring::ByteString::from("t/#")],
    }));
    assert!(matches!(sub.recv(), Packet::UnsubAck(u) if u.packet_id.get() == 3));
    publisher.publish("t/1", b"b", QoS::AtMostOnce, false, None);
    assert!(sub.try_recv(Duration::from_millis(300)).is_none());
}
