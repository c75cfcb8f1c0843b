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

/// A subscriber that does not read during a burst has the burst's tail wait in its outbox behind
/// a full write buffer. Each completed write pumps the outbox on (`Event::Drained`, skipped only
/// when nothing waits), so once it reads, every message arrives in order, the last ones too,
/// with no later publish to move them.
#[test]
fn a_backlog_behind_a_full_write_buffer_follows_when_the_subscriber_reads() {
    use socket2::{Domain, Socket, Type};
    // 14 MiB: well past the connection's 64 KiB write buffer and the sockets' buffers (a
    // loopback send buffer grows to 4 MiB; with 600 of 1 KiB the backlog never formed), and
    // under the outbox's default 1,000 messages and 16 MiB, so nothing is dropped.
    const MESSAGES: u32 = 900;
    let broker = TestBroker::start(2);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&broker.shard(0).into()).expect("connect");
    let mut sub = RawClient::from_stream(socket.into(), Version::V3_1_1);
    let connack = sub.handshake(common::connect_packet(Version::V3_1_1, "slow", true, None));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    sub.subscribe(1, &[("backlog/t", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "pub", true);
    let mut payload = vec![0u8; 16 * 1024];
    for seq in 0..MESSAGES {
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        publisher.publish("backlog/t", &payload, QoS::AtMostOnce, false, None);
    }
    // Every PUBLISH before it has been handled once the PINGRESP is back.
    publisher.send(&Packet::PingReq);
    assert!(matches!(publisher.recv(), Packet::PingResp));
    for seq in 0..MESSAGES {
        let publish = sub.recv_publish();
        assert_eq!(
            publish.payload[..4],
            seq.to_be_bytes(),
            "message {seq} of {MESSAGES} out of order or missing"
        );
    }
    publisher.disconnect();
    sub.disconnect();
}
