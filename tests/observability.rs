//! Goal: after known traffic, /metrics reports exact counts (merged and per shard) — packets,
//! messages, socket bytes, ring and outbox waits —, /health answers, /ready says whether every
//! shard serves, and a subscriber to `$SYS/#` receives Mosquitto's topics; `#` does not.

mod common;

use std::net::SocketAddr;
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
    // Each shard hands over its snapshot about once a second, each on its own schedule: wait
    // until every shard's part of the traffic is in (or the deadline passes and the asserts
    // below say what is missing).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = get(admin, "/metrics");
        assert_eq!(status, 200);
        let caught_up = exact
            .iter()
            .all(|(series, expected)| value(&body, series) == Some(*expected));
        if caught_up || Instant::now() >= deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (series, expected) in exact {
        assert_eq!(
            value(&metrics, series),
            Some(expected),
            "{series}\n{metrics}"
        );
    }
    // Every delivery's latency was recorded: the QoS 1 histogram of the cross-shard path counts
    // 5 (the publisher is on shard 1, the subscriber on shard 0), the local one none.
    let count = |path: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("ringmq_delivery_latency_seconds_count")
                    && l.contains("shard=\"all\"")
                    && l.contains("qos=\"1\"")
                    && l.contains(&format!("path=\"{path}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(count("cross_shard"), Some(5.0), "{metrics}");
    assert_eq!(count("local"), Some(0.0), "{metrics}");

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

/// Scrapes until `done` holds for the scrape (snapshots are handed over about once a second).
fn scrape_until(admin: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(admin, "/metrics");
        assert_eq!(status, 200);
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} never held:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A series' value, 0 if absent.
fn number(metrics: &str, series: &str) -> u64 {
    value(metrics, &format!("{series} ")).map_or(0, |v| v as u64)
}

/// Ring-wait counts per shard (0..4) and merged.
fn ring_waits(metrics: &str) -> Vec<u64> {
    ["0", "1", "2", "3", "all"]
        .iter()
        .map(|shard| {
            number(
                metrics,
                &format!("ringmq_ring_wait_seconds_count{{shard=\"{shard}\"}}"),
            )
        })
        .collect()
}

#[test]
fn bytes_ring_waits_and_outbox_waits_match_the_traffic_exactly() {
    let mut config = common::test_config(4);
    // No $SYS: its retained writes would be cross-shard mail and socket bytes of their own.
    config.sys.enabled = false;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");

    // The publisher on shard 1; subscribers on shards 0, 2 and 3 (remote) and 1 (local).
    let mut subscribers = Vec::new();
    for shard in [0usize, 2, 3, 1] {
        let id = format!("sub{shard}");
        let (mut sub, _) = RawClient::connect(broker.shard(shard), Version::V5, &id, true);
        sub.subscribe(1, &[("t/#", QoS::AtLeastOnce)]);
        subscribers.push(sub);
    }
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);

    // Connecting and subscribing sent mail of their own (claims, interest, barriers): wait until
    // every shard's snapshot has it, i.e. two scrapes a snapshot period apart agree.
    let mut before = ring_waits(&get(admin, "/metrics").1);
    loop {
        std::thread::sleep(Duration::from_millis(1300));
        let now = ring_waits(&get(admin, "/metrics").1);
        if now == before && now[4] > 0 {
            break;
        }
        before = now;
    }

    const MESSAGES: u64 = 10;
    for i in 0..MESSAGES as u16 {
        let payload = vec![b'p'; usize::from(i) * 10];
        publisher.publish(
            &format!("t/{i}"),
            &payload,
            QoS::AtLeastOnce,
            false,
            Some(i + 1),
        );
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        for sub in &mut subscribers {
            let got = sub.recv_publish();
            sub.ack(&got);
        }
    }

    let clients: Vec<&RawClient> = subscribers.iter().chain([&publisher]).collect();
    let sent: u64 = clients.iter().map(|c| c.bytes_sent).sum();
    let received: u64 = clients.iter().map(|c| c.bytes_received).sum();
    let metrics = scrape_until(admin, "bytes and outbox waits", |m| {
        number(m, "ringmq_bytes_received_total{shard=\"all\"}") == sent
            && number(m, "ringmq_outbox_wait_seconds_count{shard=\"all\"}") == 4 * MESSAGES
            && ring_waits(m)[4] == before[4] + 3 * MESSAGES
    });
    // Everything the clients wrote was read, and everything they read was written.
    assert_eq!(
        number(&metrics, "ringmq_bytes_sent_total{shard=\"all\"}"),
        received
    );
    // Per shard: shard 1 holds the publisher and sub1.
    let per_shard = |shard: usize| -> (u64, u64) {
        let on_shard: Vec<&RawClient> = match shard {
            0 => vec![&subscribers[0]],
            2 => vec![&subscribers[1]],
            3 => vec![&subscribers[2]],
            _ => vec![&subscribers[3], &publisher],
        };
        (
            on_shard.iter().map(|c| c.bytes_sent).sum(),
            on_shard.iter().map(|c| c.bytes_received).sum(),
        )
    };
    let after = ring_waits(&metrics);
    for shard in 0..4 {
        let (client_sent, client_received) = per_shard(shard);
        let label = format!("{{shard=\"{shard}\"}}");
        assert_eq!(
            number(&metrics, &format!("ringmq_bytes_received_total{label}")),
            client_sent,
            "shard {shard}"
        );
        assert_eq!(
            number(&metrics, &format!("ringmq_bytes_sent_total{label}")),
            client_received,
            "shard {shard}"
        );
        // One delivery per message per subscriber, each through its outbox.
        assert_eq!(
            number(
                &metrics,
                &format!("ringmq_outbox_wait_seconds_count{label}")
            ),
            MESSAGES,
            "shard {shard}"
        );
        // One cross-shard mail per message to each remote subscriber's shard, none to the
        // publisher's own shard.
        let expected = if shard == 1 { 0 } else { MESSAGES };
        assert_eq!(after[shard] - before[shard], expected, "shard {shard}");
    }
    // The quantile gauges read the same histograms.
    for name in ["ring_wait", "outbox_wait"] {
        let max = format!("ringmq_{name}_quantile_seconds{{shard=\"all\",quantile=\"1\"}}");
        let max = value(&metrics, &max).expect("quantile gauge");
        assert!(max.is_finite() && max < 10.0, "{name} max {max}");
    }
}

#[test]
fn ready_is_true_while_every_shard_serves_and_false_once_shutdown_begins() {
    let broker = TestBroker::start(2);
    let admin = broker.admin_addr().expect("admin listener");
    assert_eq!(get(admin, "/ready"), (200, String::from("ready\n")));
    broker.begin_shutdown();
    // The admin listener stays up until the broker is dropped: probes see the shutdown.
    assert_eq!(get(admin, "/ready"), (503, String::from("not ready\n")));
    assert_eq!(get(admin, "/health").0, 200);
    broker.shutdown();
}
