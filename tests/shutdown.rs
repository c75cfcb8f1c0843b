//! Goal: graceful shutdown does what clients and the specs expect: every will is published
//! (3.1.1 MQTT-3.1.2-8; 5.0 §3.1.2.5, a delayed will too since its session ends) and reaches
//! subscribers on every shard before they are disconnected; 5.0 clients get DISCONNECT 0x8B,
//! 3.1.1 clients a close; all within `runtime.shutdown_timeout_ms`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use common::{RawClient, TestBroker, connect_packet, expect_disconnect, test_config};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will};

fn will(topic: &str, delay_secs: Option<u32>) -> Will {
    let mut will = Will {
        topic: ByteString::from(topic),
        payload: Bytes::from(format!("{topic} gone")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval_secs = delay_secs;
    will
}

/// A client with a will on the given shard; `expiry_secs` keeps its 5.0 session after a close.
fn with_will(
    broker: &TestBroker,
    shard: usize,
    version: Version,
    topic: &str,
    delay_secs: Option<u32>,
    expiry_secs: Option<u32>,
) -> RawClient {
    let mut client = RawClient::connect_tcp(broker.shard(shard), version);
    let mut connect = connect_packet(version, topic, true, Some(will(topic, delay_secs)));
    connect.properties.session_expiry_interval_secs = expiry_secs;
    let connack = client.handshake(connect);
    assert_eq!(connack.reason, ReasonCode::SUCCESS, "CONNACK for {topic}");
    client
}

#[test]
fn shutdown_publishes_every_will_then_says_goodbye_within_the_timeout() {
    let mut config = test_config(4);
    config.runtime.shutdown_timeout_ms = 3000;
    let broker = TestBroker::with_config(config);
    // Watchers on two shards, so wills cross shards both ways.
    let mut watchers: Vec<RawClient> = [0, 3]
        .into_iter()
        .map(|shard| {
            let (mut watcher, _) = RawClient::connect(
                broker.shard(shard),
                Version::V5,
                &format!("watcher-{shard}"),
                true,
            );
            watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]);
            watcher
        })
        .collect();
    let mut v3 = with_will(&broker, 1, Version::V3_1_1, "wills/v3", None, None);
    let mut v5 = with_will(&broker, 2, Version::V5, "wills/v5", None, None);
    // Its will waits a minute after a close, but the session ends with the broker: due now.
    let mut delayed = with_will(
        &broker,
        3,
        Version::V5,
        "wills/delayed",
        Some(60),
        Some(600),
    );
    // One that already left with its will delayed, its session kept: due at shutdown too.
    let gone = with_will(&broker, 0, Version::V5, "wills/gone", Some(60), Some(600));
    drop(gone);
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let stopper = std::thread::spawn(move || broker.shutdown());
    let expected = ["wills/delayed", "wills/gone", "wills/v3", "wills/v5"];
    for watcher in &mut watchers {
        let mut topics = Vec::new();
        loop {
            match watcher.recv() {
                Packet::Publish(publish) => {
                    assert_eq!(
                        publish.payload,
                        Bytes::from(format!("{} gone", publish.topic))
                    );
                    topics.push(publish.topic.to_string());
                }
                Packet::Disconnect(disconnect) => {
                    assert_eq!(disconnect.reason, ReasonCode::SERVER_SHUTTING_DOWN);
                    break;
                }
                other => panic!("expected the wills then DISCONNECT, got {other:?}"),
            }
        }
        topics.sort();
        assert_eq!(topics, expected, "every will before the goodbye");
        watcher.expect_closed();
    }
    for client in [&mut v5, &mut delayed] {
        expect_disconnect(
            client,
            ReasonCode::SERVER_SHUTTING_DOWN,
            "5.0: 0x8B then close",
        );
    }
    assert_eq!(v3.expect_closed(), Vec::new(), "3.1.1: a close, no packet");
    stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "stopped in {:?}, over runtime.shutdown_timeout_ms",
        started.elapsed()
    );
}
