//! Goal: publishers that never pause cannot starve the rest of their shard. Their sockets always
//! have data, so a connection task that reads without ever yielding would keep the shard to
//! itself: subscribers on the same shard would receive nothing until the publishers stop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use common::{RawClient, TestBroker};
use ringmq::protocol::{self, Packet, Publish, QoS, Version};

const PUBLISHERS: usize = 4;
const WANTED: usize = 50_000;
const LIMIT: Duration = Duration::from_secs(15);

/// A block of QoS 0 PUBLISH packets, written again and again by one publisher.
fn block(topic: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    for _ in 0..512 {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(&[7; 64]),
        };
        protocol::encode(
            &Packet::Publish(publish),
            Version::V3_1_1,
            &mut out,
            usize::MAX,
        )
        .unwrap();
    }
    out.to_vec()
}

#[test]
fn subscriber_receives_while_publishers_flood_the_same_shard() {
    let broker = TestBroker::start(1);
    let (mut subscriber, _) = RawClient::connect(broker.addr, Version::V3_1_1, "sink", true);
    subscriber.subscribe(1, &[("fair/#", QoS::AtMostOnce)]);

    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let (mut client, _) =
                RawClient::connect(broker.addr, Version::V3_1_1, &format!("flood-{i}"), true);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let bytes = block(&format!("fair/{i}"));
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LIMIT {
                    client.send_raw(&bytes);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut received = 0;
    while received < WANTED && started.elapsed() < LIMIT {
        if let Some(Packet::Publish(_)) = subscriber.try_recv(Duration::from_millis(100)) {
            received += 1;
        }
    }
    // Measured before the publishers are told to stop: deliveries had to flow during the flood.
    let flowing = received;
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.join().unwrap();
    }
    assert!(
        flowing >= WANTED,
        "the subscriber got {flowing} messages in {LIMIT:?} while publishers flooded its shard"
    );
}
