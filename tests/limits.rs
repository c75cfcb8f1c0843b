//! Goal: every limit on client input answers as the spec says (5.0 reason code, then close where
//! the spec closes) and leaves the other clients served.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use common::{
    Bystanders, RawClient, Received, TestBroker, admin_get, connect_packet, expect_disconnect,
    metric, test_config,
};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will};

fn expect_refused(client: &mut RawClient, connect: ringmq::protocol::Connect, reason: ReasonCode) {
    let connack = client.handshake(connect);
    assert_eq!(connack.reason, reason);
    assert!(client.expect_closed().is_empty());
}

#[test]
fn client_id_longer_than_the_limit_is_rejected_in_both_versions() {
    let mut config = test_config(2);
    config.limits.client_id_bytes_max = 32;
    let broker = TestBroker::with_config(config);
    let mut others = Bystanders::new(&broker);
    let long = "x".repeat(33);
    for version in [Version::V5, Version::V3_1_1] {
        let mut client = RawClient::connect_tcp(broker.shard(0), version);
        // 5.0 0x85; 3.1.1 return code 2, which decodes back to 0x85.
        expect_refused(
            &mut client,
            connect_packet(version, &long, true, None),
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        );
    }
    RawClient::connect(broker.shard(0), Version::V5, &"y".repeat(32), true);
    others.still_served("client id");
}

#[test]
fn topic_bytes_and_levels_limits_on_publish_and_subscribe() {
    let mut config = test_config(2);
    config.limits.topic_bytes_max = 64;
    config.limits.topic_levels_max = 4;
    let broker = TestBroker::with_config(config);
    let mut others = Bystanders::new(&broker);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "subscriber", true);
    let reasons = client.subscribe(
        1,
        &[
            ("a/b/c/d", QoS::AtMostOnce),
            ("a/b/c/d/e", QoS::AtMostOnce),
            (&"t".repeat(65), QoS::AtMostOnce),
        ],
    );
    let granted = ReasonCode::GRANTED_QOS_0;
    let invalid = ReasonCode::TOPIC_FILTER_INVALID;
    assert_eq!(reasons, [granted, invalid, invalid]);
    for (what, topic) in [
        ("levels", "a/b/c/d/e".to_string()),
        ("bytes", "t".repeat(65)),
    ] {
        let (mut bad, _) = RawClient::connect(broker.shard(0), Version::V5, "bad", true);
        bad.publish(&topic, b"x", QoS::AtMostOnce, false, None);
        expect_disconnect(&mut bad, ReasonCode::TOPIC_NAME_INVALID, what);
        others.still_served(what);
    }
}

#[test]
fn subscriptions_per_session_and_filters_per_subscribe() {
    let mut config = test_config(2);
    config.limits.subscriptions_per_session_max = 3;
    config.limits.filters_per_subscribe_max = 4;
    let broker = TestBroker::with_config(config);
    let mut others = Bystanders::new(&broker);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "many", true);
    let filters = [
        ("a", QoS::AtMostOnce),
        ("b", QoS::AtMostOnce),
        ("c", QoS::AtMostOnce),
        ("d", QoS::AtMostOnce),
    ];
    let reasons = client.subscribe(1, &filters);
    let granted = ReasonCode::GRANTED_QOS_0;
    assert_eq!(
        reasons,
        [granted, granted, granted, ReasonCode::QUOTA_EXCEEDED]
    );
    // Re-subscribing to a filter it holds replaces it and is not one more.
    assert_eq!(client.subscribe(2, &[("a", QoS::AtMostOnce)]), [granted]);
    let five = [("e", QoS::AtMostOnce); 5];
    let (mut bad, _) = RawClient::connect(broker.shard(1), Version::V5, "five", true);
    bad.send(&Packet::Subscribe(ringmq::protocol::Subscribe {
        packet_id: common::pid(1),
        properties: Default::default(),
        filters: five
            .iter()
            .map(|(filter, qos)| ringmq::protocol::SubscribeFilter {
                filter: ByteString::from(*filter),
                options: ringmq::protocol::SubscriptionOptions {
                    qos: *qos,
                    ..Default::default()
                },
            })
            .collect(),
    }));
    expect_disconnect(&mut bad, ReasonCode::QUOTA_EXCEEDED, "filters");
    let (mut bad, _) = RawClient::connect(broker.shard(1), Version::V5, "five-off", true);
    bad.send(&Packet::Unsubscribe(ringmq::protocol::Unsubscribe {
        packet_id: common::pid(1),
        properties: Default::default(),
        filters: five.iter().map(|(f, _)| ByteString::from(*f)).collect(),
    }));
    expect_disconnect(&mut bad, ReasonCode::QUOTA_EXCEEDED, "unsubscribe filters");
    others.still_served("subscriptions");
}

#[test]
fn a_will_over_the_limit_is_refused_with_packet_too_large() {
    let mut config = test_config(1);
    config.limits.will_bytes_max = 100;
    let broker = TestBroker::with_config(config);
    let will = |bytes: usize| Will {
        topic: ByteString::from("w"),
        payload: Bytes::from(vec![0u8; bytes]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    expect_refused(
        &mut client,
        connect_packet(Version::V5, "big-will", true, Some(will(100))),
        ReasonCode::PACKET_TOO_LARGE,
    );
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let connack = client.handshake(connect_packet(Version::V5, "ok-will", true, Some(will(99))));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
}

#[test]
fn retained_messages_beyond_the_count_are_dropped_and_counted() {
    let mut config = test_config(1);
    config.limits.retained_messages_max = 2;
    let broker = TestBroker::with_config(config);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V5, "pub", true);
    for topic in ["r/1", "r/2", "r/3"] {
        publisher.publish(topic, b"x", QoS::AtMostOnce, true, None);
    }
    // Replacing a stored one still works when full.
    publisher.publish("r/1", b"y", QoS::AtMostOnce, true, None);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V5, "sub", true);
    sub.subscribe(1, &[("r/#", QoS::AtMostOnce)]);
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(Packet::Publish(p)) = sub.try_recv(Duration::from_millis(500)) {
        got.push((p.topic.to_string(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (String::from("r/1"), b"y".to_vec()),
            (String::from("r/2"), b"x".to_vec())
        ]
    );
}

#[test]
fn connections_over_the_shard_limit_get_server_busy_in_their_version() {
    let mut config = test_config(2);
    // Two shards: each takes half of connections_max.
    config.limits.connections_max = 6;
    let broker = TestBroker::with_config(config);
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(RawClient::connect(broker.shard(0), Version::V5, &format!("c{i}"), true).0);
    }
    let mut v5 = RawClient::connect_tcp(broker.shard(0), Version::V5);
    expect_refused(
        &mut v5,
        connect_packet(Version::V5, "over5", true, None),
        ReasonCode::SERVER_BUSY,
    );
    // 3.1.1 return code 3 (Server unavailable), which decodes as 0x88.
    let mut v3 = RawClient::connect_tcp(broker.shard(0), Version::V3_1_1);
    expect_refused(
        &mut v3,
        connect_packet(Version::V3_1_1, "over3", true, None),
        ReasonCode::SERVER_UNAVAILABLE,
    );
    // The other shard has its own share; a freed slot is usable again.
    RawClient::connect(broker.shard(1), Version::V5, "elsewhere", true);
    if let Some(client) = held.pop() {
        client.disconnect();
    }
    std::thread::sleep(Duration::from_millis(200));
    let (mut again, _) = RawClient::connect(broker.shard(0), Version::V5, "again", true);
    again.send(&Packet::PingReq);
    assert!(matches!(again.recv(), Packet::PingResp));
    assert!(matches!(
        held[0].recv_or_closed(Duration::from_millis(10)),
        Received::Nothing
    ));
}

#[test]
fn offline_sessions_count_against_the_session_limit() {
    let mut config = test_config(1);
    config.limits.connections_per_shard_max = 2;
    config.limits.sessions_per_shard_max = 2;
    let broker = TestBroker::with_config(config);
    for id in ["kept-1", "kept-2"] {
        let (client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, id, false);
        client.disconnect();
    }
    std::thread::sleep(Duration::from_millis(200));
    // Two persistent sessions are held offline: a third session is refused.
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    expect_refused(
        &mut client,
        connect_packet(Version::V5, "third", true, None),
        ReasonCode::QUOTA_EXCEEDED,
    );
    // A clean session ends one of them, which frees its place.
    let (client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "kept-1", true);
    client.disconnect();
    std::thread::sleep(Duration::from_millis(200));
    RawClient::connect(broker.shard(0), Version::V5, "third", true);
}

/// `/metrics` once `done` holds for it (snapshots are taken about once a second), or after 10 s.
fn metrics_when(admin: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = admin_get(admin, "/metrics");
        if done(&metrics) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A series of shard `shard` of a family, with its other labels (`reason="..."`), if any.
fn shard_metric(metrics: &str, family: &str, shard: usize, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        format!("{family}{{shard=\"{shard}\"}} ")
    } else {
        format!("{family}{{shard=\"{shard}\",{labels}}} ")
    };
    metric(metrics, &series)
}

/// Limits small enough to reach in a test: 4 KiB packets, and `queued` bytes held per shard.
fn small_shards(queued: u64) -> ringmq::config::Config {
    let mut config = test_config(4);
    config.limits.packet_bytes_max = 4096;
    config.limits.will_bytes_max = 4096;
    config.limits.queued_bytes_per_shard_max = queued;
    config
}

/// Persistent 3.1.1 sessions subscribed to `filter` with QoS 1 on `shard`, left offline.
fn offline_subscribers(broker: &TestBroker, shard: usize, ids: &[String], filter: &str) {
    for id in ids {
        let (mut client, _) = RawClient::connect(broker.shard(shard), Version::V3_1_1, id, false);
        client.subscribe(1, &[(filter, QoS::AtLeastOnce)]);
        client.disconnect();
    }
}

/// Publishes QoS 1 messages `ids` of `bytes` bytes (each filled with its id) to `topic`, and
/// waits for each PUBACK.
fn publish_acked(
    publisher: &mut RawClient,
    topic: &str,
    ids: std::ops::RangeInclusive<u16>,
    bytes: usize,
) {
    for id in ids {
        publisher.publish(
            topic,
            &vec![id as u8; bytes],
            QoS::AtLeastOnce,
            false,
            Some(id),
        );
        assert!(matches!(publisher.recv(), Packet::PubAck(_)), "PUBACK {id}");
    }
}

/// Receives and acknowledges PUBLISHes until none comes for 500 ms; their first payload bytes.
fn drain(client: &mut RawClient) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(packet) = client.try_recv(Duration::from_millis(500)) {
        let Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        client.ack(&publish);
        got.push(publish.payload.first().copied().unwrap_or(0));
        assert!(got.len() <= 10_000, "no end of messages");
    }
    got
}

#[test]
fn offline_sessions_stop_at_the_shard_cap_and_other_shards_keep_receiving() {
    const CAP: u64 = 32 * 1024;
    const SESSIONS: usize = 10;
    const MESSAGES: u16 = 10;
    let broker = TestBroker::with_config(small_shards(CAP));
    let admin = broker.admin_addr().expect("admin listener");
    let ids: Vec<String> = (0..SESSIONS).map(|i| format!("offline-{i}")).collect();
    offline_subscribers(&broker, 2, &ids, "cap/t");
    let (mut healthy, _) = RawClient::connect(broker.shard(3), Version::V3_1_1, "healthy", true);
    healthy.subscribe(1, &[("cap/t", QoS::AtLeastOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);
    // 10 sessions x 10 messages of about 1 KiB: three times what shard 2 may hold.
    for id in 1..=MESSAGES {
        publish_acked(&mut publisher, "cap/t", id..=id, 1000);
        let got = healthy.recv_publish();
        assert_eq!(
            got.payload.len(),
            1000,
            "message {id} to the healthy subscriber"
        );
        healthy.ack(&got);
    }
    let deliveries = (SESSIONS * usize::from(MESSAGES)) as f64;
    let shard_full = "reason=\"shard_full\"";
    let metrics = metrics_when(admin, |m| {
        let queued = shard_metric(m, "ringmq_queued_messages", 2, "");
        let dropped = shard_metric(m, "ringmq_messages_dropped_total", 2, shard_full);
        queued + dropped == deliveries
    });
    let held = shard_metric(&metrics, "ringmq_queued_messages", 2, "");
    let held_bytes = shard_metric(&metrics, "ringmq_queued_bytes", 2, "");
    let dropped = shard_metric(&metrics, "ringmq_messages_dropped_total", 2, shard_full);
    assert_eq!(held + dropped, deliveries, "{metrics}");
    assert!(
        held > 0.0 && dropped > 0.0,
        "held {held}, dropped {dropped}"
    );
    // Held up to the cap, and the next message would not have fitted.
    assert!(held_bytes <= CAP as f64, "{held_bytes} bytes held");
    assert!(
        held_bytes + held_bytes / held > CAP as f64,
        "{held_bytes} bytes held"
    );
    let queue_full = "reason=\"queue_full\"";
    assert_eq!(
        shard_metric(&metrics, "ringmq_messages_dropped_total", 2, queue_full),
        0.0
    );
    // Every session is far under its own limits: what they get back is what the shard held.
    let mut delivered = 0;
    for id in &ids {
        let (mut client, connack) = RawClient::connect(broker.shard(2), Version::V3_1_1, id, false);
        assert!(connack.session_present, "{id}");
        let got = drain(&mut client);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{id} got {got:?} out of order"
        );
        delivered += got.len();
        client.disconnect();
    }
    assert_eq!(delivered as f64, held);
    // Sent and acknowledged: the shard holds nothing more.
    let metrics = metrics_when(admin, |m| {
        shard_metric(m, "ringmq_queued_bytes", 2, "") == 0.0
    });
    assert_eq!(shard_metric(&metrics, "ringmq_queued_bytes", 2, ""), 0.0);
}

#[test]
fn subscriptions_over_the_shard_cap_get_quota_exceeded_in_their_version() {
    let (granted, q0) = (ReasonCode::GRANTED_QOS_0, QoS::AtMostOnce);
    let broker = TestBroker::with_config({
        let mut config = test_config(4);
        config.limits.subscriptions_per_shard_max = 3;
        config
    });
    let mut others = Bystanders::new(&broker);
    // The bystander's subscription on shard 0 is one of the three.
    let (mut one, _) = RawClient::connect(broker.shard(0), Version::V5, "one", true);
    assert_eq!(one.subscribe(1, &[("a", q0)]), [granted]);
    let (mut two, _) = RawClient::connect(broker.shard(0), Version::V5, "two", true);
    assert_eq!(
        two.subscribe(1, &[("b", q0), ("c", q0)]),
        [granted, ReasonCode::QUOTA_EXCEEDED]
    );
    // 3.1.1 knows one failure code, 0x80.
    let (mut old, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "old", true);
    assert_eq!(
        old.subscribe(1, &[("d", q0)]),
        [ReasonCode::UNSPECIFIED_ERROR]
    );
    // Replacing a subscription held is not one more; an unsubscribe frees a place.
    assert_eq!(
        two.subscribe(2, &[("b", QoS::AtLeastOnce)]),
        [ReasonCode::GRANTED_QOS_1]
    );
    one.send(&Packet::Unsubscribe(ringmq::protocol::Unsubscribe {
        packet_id: common::pid(2),
        properties: Default::default(),
        filters: vec![ByteString::from("a")],
    }));
    assert!(matches!(one.recv(), Packet::UnsubAck(_)));
    assert_eq!(old.subscribe(2, &[("d", q0)]), [granted]);
    // A session that ends gives its subscriptions back.
    two.disconnect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(one.subscribe(3, &[("e", q0)]), [granted]);
    // Each shard has its own count.
    let (mut elsewhere, _) = RawClient::connect(broker.shard(1), Version::V5, "elsewhere", true);
    let filters = [("x", q0), ("y", q0), ("z", q0)];
    assert_eq!(elsewhere.subscribe(1, &filters), [granted; 3]);
    others.still_served("subscriptions per shard");
}

#[test]
fn a_session_moving_in_is_admitted_over_the_session_and_queue_caps() {
    const CAP: u64 = 16 * 1024;
    let mut config = small_shards(CAP);
    config.limits.connections_per_shard_max = 2;
    config.limits.sessions_per_shard_max = 2;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    // The mover's session waits on shard 1 with 5 messages.
    offline_subscribers(&broker, 1, &[String::from("mover")], "mv");
    let (mut publisher, _) = RawClient::connect(broker.shard(3), Version::V3_1_1, "pub", true);
    publish_acked(&mut publisher, "mv", 1..=5, 1000);
    // Shard 0 is full: two sessions, holding its whole queue cap.
    let kept: Vec<String> = (1..=2).map(|i| format!("kept-{i}")).collect();
    offline_subscribers(&broker, 0, &kept, "fill");
    publish_acked(&mut publisher, "fill", 1..=12, 1000);
    let shard_full = "reason=\"shard_full\"";
    let metrics = metrics_when(admin, |m| {
        shard_metric(m, "ringmq_messages_dropped_total", 0, shard_full) > 0.0
    });
    assert!(shard_metric(&metrics, "ringmq_messages_dropped_total", 0, shard_full) > 0.0);
    // New sessions are refused there, whether or not they ask to resume one ...
    for (id, clean) in [("stranger", true), ("stranger", false)] {
        let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
        expect_refused(
            &mut client,
            connect_packet(Version::V5, id, clean, None),
            ReasonCode::QUOTA_EXCEEDED,
        );
    }
    // ... but a client resuming its session from another shard gets it, with all it held.
    let (mut mover, connack) = RawClient::connect(broker.shard(0), Version::V3_1_1, "mover", false);
    assert!(connack.session_present);
    assert_eq!(drain(&mut mover), [1, 2, 3, 4, 5]);
    let metrics = metrics_when(admin, |m| shard_metric(m, "ringmq_sessions", 0, "") == 3.0);
    assert_eq!(shard_metric(&metrics, "ringmq_sessions", 0, ""), 3.0);
}

#[test]
fn a_subscriber_under_its_fair_share_keeps_receiving_on_a_full_shard() {
    const CAP: u64 = 32 * 1024;
    let mut config = small_shards(CAP);
    // A fair share of 32 KiB / 8 sessions = 4 KiB: three messages of about 1 KiB.
    config.limits.sessions_per_shard_max = 8;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    let ids: Vec<String> = (0..4).map(|i| format!("parked-{i}")).collect();
    offline_subscribers(&broker, 2, &ids, "cap/slow");
    let (mut healthy, _) = RawClient::connect(broker.shard(2), Version::V3_1_1, "healthy", true);
    healthy.subscribe(1, &[("cap/live", QoS::AtLeastOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);
    // 4 sessions x 12 messages of about 1 KiB: more than shard 2 may hold.
    publish_acked(&mut publisher, "cap/slow", 1..=12, 1000);
    let shard_full = "reason=\"shard_full\"";
    let metrics = metrics_when(admin, |m| {
        shard_metric(m, "ringmq_messages_dropped_total", 2, shard_full) > 0.0
    });
    assert!(
        shard_metric(&metrics, "ringmq_messages_dropped_total", 2, shard_full) > 0.0,
        "{metrics}"
    );
    // The shard is full, and a subscriber on it that reads at once still gets every message:
    // it never holds its share.
    for id in 1..=40 {
        publish_acked(&mut publisher, "cap/live", id..=id, 1000);
        let got = healthy.recv_publish();
        assert_eq!(got.payload.first(), Some(&(id as u8)), "live message {id}");
        healthy.ack(&got);
    }
    // Its last ack is handled before the first burst, for the reason given below.
    healthy.send(&Packet::PingReq);
    let answer = healthy.recv();
    assert!(matches!(answer, Packet::PingResp), "{answer:?}");
    // In bursts of three (its share) as well.
    for burst in 0..10u16 {
        let first = 41 + 3 * burst;
        publish_acked(&mut publisher, "cap/live", first..=first + 2, 1000);
        for id in first..=first + 2 {
            let got = healthy.recv_publish();
            assert_eq!(got.payload.first(), Some(&(id as u8)), "live message {id}");
            healthy.ack(&got);
        }
        // Its acks are handled before the next burst (a connection's packets are handled in
        // order): the burst is its whole share, so an ack still unread by the shard when the
        // next burst arrives would put it over its share, and a message would rightly drop.
        healthy.send(&Packet::PingReq);
        let answer = healthy.recv();
        assert!(matches!(answer, Packet::PingResp), "{answer:?}");
    }
    // The parked sessions stay stopped; the shard holds at most twice its cap.
    let metrics = metrics_when(admin, |m| {
        shard_metric(m, "ringmq_queued_bytes", 2, "") > 0.0
    });
    let held_bytes = shard_metric(&metrics, "ringmq_queued_bytes", 2, "");
    assert!(held_bytes <= 2.0 * CAP as f64, "{held_bytes} bytes held");
    let parked = 4.0 * 12.0;
    let dropped = shard_metric(&metrics, "ringmq_messages_dropped_total", 2, shard_full);
    let held = shard_metric(&metrics, "ringmq_queued_messages", 2, "");
    assert_eq!(held + dropped, parked, "{metrics}");
}
