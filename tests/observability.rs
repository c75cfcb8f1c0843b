//! Goal: after known traffic, /metrics reports exact counts (merged and per shard), /health and
//! /ready answer, and a subscriber to `$SYS/#` receives Mosquitto's topics; `#` does not.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, http_get as get};
use ringmq::protocol::{Packet, QoS, Version};

/// The value of the first series whose name and labels start with `prefix`.
fn value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_known_traffic_exactly_and_sys_topics_are_published() {
    let mut config = common::test_config(2);
    config.sys.interval_secs = 1;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    assert_eq!(get(admin, "/health").0, 200);
    assert_eq!(get(admin, "/ready").0, 200);

    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "sub", true);
    sub.subscribe(1, &[("m/#", QoS::AtLeastOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);
    for i in 0..5u16 {
        publisher.publish("m/x", b"x", QoS::AtLeastOnce, false, Some(i + 1));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        let got = sub.recv_publish();
        sub.ack(&got);
    }
    for _ in 0..3 {
        publisher.publish("m/y", b"y", QoS::AtMostOnce, false, None);
        sub.recv_publish();
    }

    // Snapshots are handed over about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = get(admin, "/metrics");
        assert_eq!(status, 200);
        if value(&body, "ringmq_messages_sent_total{shard=\"all\",qos=\"0\"}") == Some(3.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let exact = [
        (
            "ringmq_messages_received_total{shard=\"all\",qos=\"1\"}",
            5.0,
        ),
        (
            "ringmq_messages_received_total{shard=\"all\",qos=\"0\"}",
            3.0,
        ),
        ("ringmq_messages_sent_total{shard=\"all\",qos=\"1\"}", 5.0),
        ("ringmq_messages_received_total{shard=\"1\",qos=\"1\"}", 5.0),
        ("ringmq_messages_sent_total{shard=\"0\",qos=\"1\"}", 5.0),
        (
            "ringmq_packets_received_total{shard=\"all\",type=\"puback\"}",
            5.0,
        ),
        (
            "ringmq_packets_received_total{shard=\"all\",type=\"subscribe\"}",
            1.0,
        ),
        (
            "ringmq_packets_sent_total{shard=\"all\",type=\"suback\"}",
            1.0,
        ),
        ("ringmq_connections{shard=\"all\"}", 2.0),
        ("ringmq_subscriptions{shard=\"all\"}", 1.0),
    ];
    for (series, expected) in exact {
        assert_eq!(
            value(&metrics, series),
            Some(expected),
            "{series}\n{metrics}"
        );
    }
    // Every delivery's latency was recorded: the QoS 1 histogram counts 5.
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("ringmq_delivery_latency_seconds_count")
                && l.contains("shard=\"all\"")
                && l.contains("qos=\"1\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(count, Some(5.0), "{metrics}");

    // $SYS: delivered to $SYS/#, retained, and not to #.
    let (mut everything, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "all", true);
    everything.subscribe(1, &[("#", QoS::AtMostOnce)]);
    let (mut sys, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "sys", true);
    sys.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]);
    let required = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/subscriptions/count",
    ];
    let mut topics = std::collections::BTreeMap::new();
    let counted = |topics: &std::collections::BTreeMap<String, String>| {
        topics
            .get("$SYS/broker/messages/received")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n >= 8)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !(required.iter().all(|t| topics.contains_key(*t)) && counted(&topics))
    {
        if let Some(Packet::Publish(p)) = sys.try_recv(Duration::from_millis(500)) {
            topics.insert(
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).to_string(),
            );
        }
    }
    for topic in required {
        assert!(
            topics.contains_key(topic),
            "{topic} missing from {topics:?}"
        );
    }
    assert!(
        counted(&topics),
        "messages/received reflects the traffic: {topics:?}"
    );
    assert!(
        everything.try_recv(Duration::from_millis(300)).is_none(),
        "# does not match $SYS"
    );
}
