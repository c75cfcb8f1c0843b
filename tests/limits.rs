//! Goal: every limit on client input answers as the spec says (5.0 reason code, then close where
//! the spec closes) and leaves the other clients served.

mod common;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::{
    Bystanders, RawClient, Received, TestBroker, connect_packet, expect_disconnect, test_config,
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
