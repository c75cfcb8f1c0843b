//! Goal: retained messages (store, replace, delete, delivered on subscribe with RETAIN set, not
//! re-retained when forwarded) and will messages (on abnormal close, not after DISCONNECT), with
//! the retained home shard, the publisher and the subscriber on different shards.

mod common;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::{RawClient, TestBroker, connect_packet};
use ringmq::protocol::{QoS, Version, Will};

#[test]
fn retained_store_replace_delete_across_shards() {
    let broker = TestBroker::start(4);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "p", true);
    for topic in ["r/1", "r/2", "r/3", "other"] {
        publisher.publish(topic, topic.as_bytes(), QoS::AtMostOnce, true, None);
    }
    publisher.publish("r/2", b"replaced", QoS::AtMostOnce, true, None);
    publisher.publish("r/3", b"", QoS::AtMostOnce, true, None);
    std::thread::sleep(Duration::from_millis(200));

    for shard in 0..4 {
        let (mut sub, _) = RawClient::connect(broker.shard(shard), Version::V3_1_1, "s", true);
        sub.subscribe(1, &[("r/+", QoS::AtLeastOnce)]);
        let mut got = Vec::new();
        for _ in 0..2 {
            let publish = sub.recv_publish();
            assert!(publish.retain, "retained messages are sent with RETAIN set");
            got.push((publish.topic.to_string(), publish.payload.clone()));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                (String::from("r/1"), Bytes::from_static(b"r/1")),
                (String::from("r/2"), Bytes::from_static(b"replaced")),
            ]
        );
        assert!(
            sub.try_recv(Duration::from_millis(200)).is_none(),
            "r/3 was deleted"
        );
        // A live retained publish reaches existing subscribers without RETAIN (3.1.1 §3.3.1.3).
        // (It replaces r/2 with the same payload, so the stored set stays as asserted above.)
        publisher.publish("r/2", b"replaced", QoS::AtMostOnce, true, None);
        let live = sub.recv_publish();
        assert_eq!(&live.payload[..], b"replaced");
        assert!(!live.retain);
        sub.disconnect();
    }
}

fn will(topic: &str, payload: &'static [u8]) -> Will {
    Will {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

#[test]
fn will_is_published_on_abnormal_close_only() {
    let broker = TestBroker::start(4);
    let (mut watcher, _) = RawClient::connect(broker.shard(2), Version::V3_1_1, "watcher", true);
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]);

    let mut dying = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    dying.handshake(connect_packet(
        Version::V3_1_1,
        "dying",
        true,
        Some(will("wills/dying", b"gone")),
    ));
    drop(dying);
    let got = watcher.recv_publish();
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        ("wills/dying", &b"gone"[..])
    );
    watcher.ack(&got);

    let mut polite = RawClient::connect_tcp(broker.shard(1), Version::V3_1_1);
    polite.handshake(connect_packet(
        Version::V3_1_1,
        "polite",
        true,
        Some(will("wills/polite", b"x")),
    ));
    polite.disconnect();
    assert!(
        watcher.try_recv(Duration::from_millis(500)).is_none(),
        "no will after DISCONNECT"
    );
}

/// A client that saw its retained write acknowledged, then a SUBSCRIBE on another shard: the
/// subscriber gets the write, wherever the topic's home shard is (the write and the SUBSCRIBE's
/// query travel different rings to it). Deletions likewise. 64 topics spread the homes.
#[test]
fn a_retained_write_is_visible_to_a_subscribe_after_its_puback() {
    let broker = TestBroker::start(4);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "p", true);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V5, "s", true);
    for n in 0..64u16 {
        let topic = format!("seen/{n}");
        publisher.publish(&topic, b"v1", QoS::AtLeastOnce, true, Some(1));
        publisher.recv();
        sub.subscribe(n + 1, &[(topic.as_str(), QoS::AtMostOnce)]);
        let got = sub.recv_publish();
        assert_eq!(
            (&got.topic[..], &got.payload[..]),
            (topic.as_str(), &b"v1"[..])
        );
        // Replaced: the wildcard subscription sees only the new one.
        publisher.publish(&topic, b"v2", QoS::AtLeastOnce, true, Some(1));
        publisher.recv();
        let live = sub.recv_publish();
        assert_eq!(&live.payload[..], b"v2");
    }
    sub.subscribe(100, &[("seen/#", QoS::AtMostOnce)]);
    for _ in 0..64 {
        assert_eq!(&sub.recv_publish().payload[..], b"v2");
    }
    for n in 0..64u16 {
        let topic = format!("seen/{n}");
        publisher.publish(&topic, b"", QoS::AtLeastOnce, true, Some(1));
        publisher.recv();
    }
    // Each deletion also went live to `sub`; a fresh subscription finds nothing.
    for _ in 0..64 {
        assert!(sub.recv_publish().payload.is_empty());
    }
    let (mut late, _) = RawClient::connect(broker.shard(2), Version::V5, "late", true);
    late.subscribe(1, &[("seen/#", QoS::AtMostOnce)]);
    assert!(late.try_recv(Duration::from_millis(200)).is_none());
}
