//! Goal: PUBLISH reaches subscribers at the right QoS, on the same shard and across shards, with
//! 3.1.1, 3.1 and 5.0 clients (blocking clients over the broker's own codec).

mod common;

use common::{RawClient, TestBroker};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

#[test]
fn qos0_same_and_cross_shard() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in [(0, 0), (1, 2), (3, 0)] {
        let (mut sub, _) =
            RawClient::connect(broker.shard(sub_shard), Version::V3_1_1, "sub", true);
        assert_eq!(
            sub.subscribe(1, &[("a/+/c", QoS::AtMostOnce)]),
            vec![ReasonCode::GRANTED_QOS_0]
        );
        let (mut publisher, _) =
            RawClient::connect(broker.shard(pub_shard), Version::V3_1_1, "pub", true);
        for i in 0..10u8 {
            publisher.publish("a/b/c", &[i], QoS::AtMostOnce, false, None);
        }
        for i in 0..10u8 {
            let publish = sub.recv_publish();
            assert_eq!(&publish.topic[..], "a/b/c");
            assert_eq!(
                &publish.payload[..],
                &[i],
                "order kept from {pub_shard} to {sub_shard}"
            );
            assert!(!publish.retain);
        }
        publisher.disconnect();
        sub.disconnect();
    }
}

#[test]
fn qos1_and_qos2_cross_shard() {
    let broker = TestBroker::start(4);
    let (mut sub, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "s", true);
    assert_eq!(
        sub.subscribe(7, &[("q/1", QoS::AtLeastOnce), ("q/2", QoS::ExactlyOnce)]),
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_2]
    );
    let (mut publisher, _) = RawClient::connect(broker.shard(2), Version::V3_1_1, "p", true);
    publisher.publish("q/1", b"one", QoS::AtLeastOnce, false, Some(10));
    assert!(matches!(publisher.recv(), Packet::PubAck(ack) if ack.packet_id.get() == 10));
    let got = sub.recv_publish();
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtLeastOnce, &b"one"[..]));
    sub.ack(&got);

    publisher.publish("q/2", b"two", QoS::ExactlyOnce, false, Some(11));
    assert!(matches!(publisher.recv(), Packet::PubRec(ack) if ack.packet_id.get() == 11));
    publisher.send(&Packet::PubRel(common::response(common::pid(11))));
    assert!(matches!(publisher.recv(), Packet::PubComp(ack) if ack.packet_id.get() == 11));
    let got = sub.recv_publish();
    assert_eq!((got.qos, &got.payload[..]), (QoS::ExactlyOnce, &b"two"[..]));
    let id = got.packet_id.unwrap();
    sub.send(&Packet::PubRec(common::response(id)));
    assert!(matches!(sub.recv(), Packet::PubRel(rel) if rel.packet_id == id));
    sub.send(&Packet::PubComp(common::response(id)));
}

/// The reader keeps no buffer between frames: a frame split over many reads (one byte each), one
/// larger than a read, and a retained message sliced from an earlier read all arrive intact.
#[test]
fn frames_split_over_reads_and_retained_slices_stay_intact() {
    let broker = TestBroker::start(1);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "pub", true);
    publisher.publish("kept", b"retained payload", QoS::AtMostOnce, true, None);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "sub", true);
    sub.subscribe(1, &[("t/#", QoS::AtMostOnce)]);

    // PUBLISH t/a "hello", one byte per write with time for the broker to read each alone.
    for byte in [
        0x30, 0x0a, 0x00, 0x03, b't', b'/', b'a', b'h', b'e', b'l', b'l', b'o',
    ] {
        publisher.send_raw(&[byte]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(&sub.recv_publish().payload[..], b"hello");

    // Larger than any read, then a small frame in the same write; many times, so that the
    // shard's read buffer moves on well past the retained message's bytes.
    let large: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    for round in 0..8u8 {
        publisher.publish("t/large", &large, QoS::AtMostOnce, false, None);
        publisher.publish("t/small", &[round], QoS::AtMostOnce, false, None);
        let got = sub.recv_publish();
        assert_eq!(&got.topic[..], "t/large");
        assert!(
            got.payload[..] == large[..],
            "round {round}: large payload intact"
        );
        assert_eq!(&sub.recv_publish().payload[..], &[round]);
    }

    let (mut late, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "late", true);
    late.subscribe(1, &[("kept", QoS::AtMostOnce)]);
    assert_eq!(&late.recv_publish().payload[..], b"retained payload");
}
