//! Goal: the MQTT 5.0 features of the broker, with publisher, subscriber and session owner on
//! different shards: shared subscriptions, subscription options and identifiers, message expiry,
//! topic aliases, will delay, flow control, maximum packet size, CONNACK properties.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::{RawClient, TestBroker, connect_packet, pid};
use ringmq::protocol::{
    Packet, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeFilter, SubscribeProperties, SubscriptionOptions, Version, Will, WillProperties,
};

fn subscribe_with(
    client: &mut RawClient,
    id: u16,
    filter: &str,
    options: SubscriptionOptions,
    identifier: Option<u32>,
) -> Packet {
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: SubscribeProperties {
            subscription_identifier: identifier,
            user_properties: Vec::new(),
        },
        filters: vec![SubscribeFilter {
            filter: ByteString::from(filter),
            options,
        }],
    }));
    client.recv()
}

fn qos1() -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    }
}

fn publish_v5(
    client: &mut RawClient,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    id: Option<u16>,
    properties: PublishProperties,
) {
    client.send(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: id.map(pid),
        properties: properties.into(),
        payload: Bytes::copy_from_slice(payload),
    }));
}

#[test]
fn shared_subscription_delivers_each_message_to_exactly_one_member() {
    let broker = TestBroker::start(4);
    let mut members: Vec<RawClient> = (0..3)
        .map(|i| {
            let (mut c, _) =
                RawClient::connect(broker.shard(i), Version::V5, &format!("m{i}"), true);
            assert!(matches!(
                subscribe_with(&mut c, 1, "$share/g/work/#", qos1(), None),
                Packet::SubAck(_)
            ));
            c
        })
        .collect();
    // A 3.1.1 member of the same group works too.
    let (mut publisher, _) = RawClient::connect(broker.shard(3), Version::V3_1_1, "p", true);
    let total = 300u16;
    for i in 0..total {
        publisher.publish(
            "work/item",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            false,
            Some(i + 1),
        );
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    let mut seen: HashMap<u16, usize> = HashMap::new();
    let mut per_member = Vec::new();
    for member in &mut members {
        let mut count = 0;
        while let Some(packet) = member.try_recv(Duration::from_millis(300)) {
            let Packet::Publish(publish) = packet else {
                panic!("unexpected {packet:?}")
            };
            member.ack(&publish);
            let n = u16::from_be_bytes([publish.payload[0], publish.payload[1]]);
            *seen.entry(n).or_default() += 1;
            count += 1;
        }
        per_member.push(count);
    }
    assert_eq!(seen.len(), total as usize, "every message delivered");
    assert!(seen.values().all(|&n| n == 1), "each to exactly one member");
    assert!(
        per_member.iter().all(|&n| n >= 50),
        "spread over the members: {per_member:?}"
    );
}

#[test]
fn shared_member_leaving_hands_unacknowledged_messages_to_another() {
    let broker = TestBroker::start(3);
    let (mut lazy, _) = RawClient::connect(broker.shard(0), Version::V5, "lazy", true);
    subscribe_with(&mut lazy, 1, "$share/g/jobs", qos1(), None);
    let (mut publisher, _) = RawClient::connect(broker.shard(2), Version::V5, "p", true);
    publish_v5(
        &mut publisher,
        "jobs",
        b"job-1",
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
    );
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    let got = lazy.recv_publish();
    assert_eq!(&got.payload[..], b"job-1");
    // A second member joins; the first leaves without acknowledging (its session ends).
    let (mut worker, _) = RawClient::connect(broker.shard(1), Version::V5, "worker", true);
    subscribe_with(&mut worker, 1, "$share/g/jobs", qos1(), None);
    drop(lazy);
    let again = worker.recv_publish();
    assert_eq!(&again.payload[..], b"job-1");
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = TestBroker::start(2);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "nl", true);
    let options = SubscriptionOptions {
        no_local: true,
        ..qos1()
    };
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter {
            filter: ByteString::from("$share/g/t"),
            options,
        }],
    }));
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR),
        "{packets:?}"
    );
}

#[test]
fn subscription_identifiers_no_local_and_retain_options() {
    let broker = TestBroker::start(3);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "opts", true);
    subscribe_with(&mut client, 1, "s/+", qos1(), Some(7));
    subscribe_with(&mut client, 2, "s/#", qos1(), Some(9));
    let (mut other, _) = RawClient::connect(broker.shard(1), Version::V5, "other", true);
    publish_v5(
        &mut other,
        "s/x",
        b"ids",
        QoS::AtMostOnce,
        None,
        Default::default(),
    );
    let got = client.recv_publish();
    let mut ids = got.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![7, 9], "once, with both identifiers");

    // No Local: our own publish is not sent back.
    let options = SubscriptionOptions {
        no_local: true,
        ..qos1()
    };
    subscribe_with(&mut client, 3, "own", options, None);
    publish_v5(
        &mut client,
        "own",
        b"mine",
        QoS::AtMostOnce,
        None,
        Default::default(),
    );
    publish_v5(
        &mut other,
        "own",
        b"theirs",
        QoS::AtMostOnce,
        None,
        Default::default(),
    );
    assert_eq!(&client.recv_publish().payload[..], b"theirs");

    // Retain As Published keeps RETAIN on live messages; Retain Handling 2 sends no retained.
    other.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: ByteString::from("kept"),
        packet_id: None,
        properties: Default::default(),
        payload: Bytes::from_static(b"r"),
    }));
    std::thread::sleep(Duration::from_millis(100));
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::Never,
        retain_as_published: true,
        ..qos1()
    };
    subscribe_with(&mut client, 4, "kept", never, None);
    assert!(
        client.try_recv(Duration::from_millis(200)).is_none(),
        "retain handling 2"
    );
    other.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: ByteString::from("kept"),
        packet_id: None,
        properties: Default::default(),
        payload: Bytes::from_static(b"live"),
    }));
    let live = client.recv_publish();
    assert!(live.retain, "retain as published");
}

#[test]
fn message_expiry_drops_stale_messages_and_forwards_the_remaining_time() {
    let broker = TestBroker::start(2);
    let mut sub = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "exp", false, None);
    connect.properties.session_expiry_interval_secs = Some(60);
    sub.handshake(connect.clone());
    subscribe_with(&mut sub, 1, "e/#", qos1(), None);
    sub.disconnect();
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "p", true);
    let short = PublishProperties {
        message_expiry_interval_secs: Some(1),
        ..Default::default()
    };
    let long = PublishProperties {
        message_expiry_interval_secs: Some(100),
        ..Default::default()
    };
    publish_v5(
        &mut publisher,
        "e/1",
        b"short",
        QoS::AtLeastOnce,
        Some(1),
        short,
    );
    publish_v5(
        &mut publisher,
        "e/2",
        b"long",
        QoS::AtLeastOnce,
        Some(2),
        long,
    );
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    std::thread::sleep(Duration::from_millis(2100));
    let mut sub = RawClient::connect_tcp(broker.shard(1), Version::V5);
    connect.clean_start = false;
    assert!(sub.handshake(connect).session_present);
    let got = sub.recv_publish();
    assert_eq!(&got.payload[..], b"long");
    let left = got.properties.message_expiry_interval_secs.unwrap();
    assert!(
        (97..=99).contains(&left),
        "remaining time forwarded: {left}"
    );
    assert!(
        sub.try_recv(Duration::from_millis(200)).is_none(),
        "the expired one is gone"
    );
}

#[test]
fn topic_alias_from_the_client() {
    let broker = TestBroker::start(2);
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V5, "as", true);
    subscribe_with(&mut sub, 1, "long/topic/name", qos1(), None);
    let (mut publisher, connack) = RawClient::connect(broker.shard(1), Version::V5, "ap", true);
    assert!(connack.properties.topic_alias_maximum.unwrap() >= 1);
    let alias = PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    publish_v5(
        &mut publisher,
        "long/topic/name",
        b"first",
        QoS::AtMostOnce,
        None,
        alias.clone(),
    );
    publish_v5(&mut publisher, "", b"second", QoS::AtMostOnce, None, alias);
    assert_eq!(&sub.recv_publish().topic[..], "long/topic/name");
    let second = sub.recv_publish();
    assert_eq!(
        (&second.topic[..], &second.payload[..]),
        ("long/topic/name", &b"second"[..])
    );
    // An alias above the maximum: DISCONNECT 0x94.
    let bad = PublishProperties {
        topic_alias: Some(u16::MAX),
        ..Default::default()
    };
    publish_v5(&mut publisher, "x", b"x", QoS::AtMostOnce, None, bad);
    let packets = publisher.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID),
        "{packets:?}"
    );
}

fn will_with_delay(delay: u32) -> Will {
    Will {
        topic: ByteString::from("w/delayed"),
        payload: Bytes::from_static(b"late"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval_secs: Some(delay),
            ..Default::default()
        },
    }
}

#[test]
fn will_delay_waits_and_is_cancelled_by_a_reconnect() {
    let broker = TestBroker::start(2);
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V5, "watch", true);
    subscribe_with(&mut watcher, 1, "w/#", qos1(), None);
    let mut connect = connect_packet(Version::V5, "willer", false, Some(will_with_delay(1)));
    connect.properties.session_expiry_interval_secs = Some(30);

    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    client.handshake(connect.clone());
    drop(client);
    assert!(
        watcher.try_recv(Duration::from_millis(500)).is_none(),
        "not before the delay"
    );
    let got = watcher.recv_publish();
    assert_eq!(&got.payload[..], b"late");
    watcher.ack(&got);

    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    client.handshake(connect.clone());
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    let mut back = RawClient::connect_tcp(broker.shard(1), Version::V5);
    connect.will = None;
    back.handshake(connect);
    assert!(
        watcher.try_recv(Duration::from_millis(1500)).is_none(),
        "cancelled by the reconnect"
    );
}

#[test]
fn receive_maximum_and_maximum_packet_size_of_the_client_are_respected() {
    let broker = TestBroker::start(2);
    let mut sub = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "small", true, None);
    connect.properties.receive_maximum = Some(2);
    connect.properties.maximum_packet_size = Some(64);
    sub.handshake(connect);
    subscribe_with(&mut sub, 1, "f", qos1(), None);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "p", true);
    publish_v5(
        &mut publisher,
        "f",
        &[0u8; 200],
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
    );
    for i in 0..4u8 {
        publish_v5(
            &mut publisher,
            "f",
            &[i],
            QoS::AtLeastOnce,
            Some(u16::from(i) + 2),
            Default::default(),
        );
    }
    let first = sub.recv_publish();
    let second = sub.recv_publish();
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&[0u8][..], &[1u8][..]),
        "the 200-byte one was dropped"
    );
    assert!(
        sub.try_recv(Duration::from_millis(300)).is_none(),
        "no more than Receive Maximum in flight"
    );
    sub.ack(&first);
    assert_eq!(&sub.recv_publish().payload[..], &[2u8]);
}

#[test]
fn connack_properties_and_authentication_method() {
    let mut config = common::test_config(2);
    config.mqtt.keepalive_max_secs = 100;
    let broker = TestBroker::with_config(config);
    let mut client = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "k", true, None);
    connect.keep_alive_secs = 500;
    let connack = client.handshake(connect);
    let p = &connack.properties;
    assert_eq!(p.receive_maximum, Some(32));
    assert_eq!(p.maximum_packet_size, Some(1_048_576));
    assert_eq!(
        p.shared_subscription_available, None,
        "available is the default: not stated"
    );
    assert_eq!(
        p.server_keep_alive_secs,
        Some(100),
        "keepalive above the maximum is lowered and said"
    );

    let mut client = RawClient::connect_tcp(broker.shard(1), Version::V5);
    let mut connect = connect_packet(Version::V5, "auth", true, None);
    connect.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-256"));
    let connack = client.handshake(connect);
    assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    client.expect_closed();
}

#[test]
fn v311_and_v5_clients_share_topics() {
    let broker = TestBroker::start(2);
    let (mut old, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "old", true);
    old.subscribe(1, &[("mix", QoS::AtLeastOnce)]);
    let (mut new, _) = RawClient::connect(broker.shard(1), Version::V5, "new", true);
    subscribe_with(&mut new, 1, "mix", qos1(), Some(3));
    let props = PublishProperties {
        content_type: Some(ByteString::from("text/plain")),
        ..Default::default()
    };
    publish_v5(&mut new, "mix", b"from5", QoS::AtLeastOnce, Some(1), props);
    let from5 = old.recv_publish();
    assert_eq!(&from5.payload[..], b"from5");
    assert!(
        from5.properties.content_type.is_none(),
        "3.1.1 carries no properties"
    );
    old.publish("mix", b"from311", QoS::AtMostOnce, false, None);
    let mut payloads = Vec::new();
    while let Some(packet) = new.try_recv(Duration::from_millis(300)) {
        if let Packet::Publish(p) = packet {
            if &p.payload[..] == b"from5" {
                assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
            }
            payloads.push(p.payload.clone());
            new.ack(&p);
        }
    }
    assert!(
        payloads.contains(&Bytes::from_static(b"from311")),
        "{payloads:?}"
    );
}

#[test]
fn topic_aliases_towards_the_client_when_enabled() {
    let mut config = common::test_config(2);
    config.mqtt.topic_alias_to_client_max = 2;
    let broker = TestBroker::with_config(config);
    let mut sub = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "aliased", true, None);
    connect.properties.topic_alias_maximum = Some(5);
    sub.handshake(connect);
    subscribe_with(&mut sub, 1, "t/#", SubscriptionOptions::default(), None);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "p", true);
    for topic in ["t/a", "t/a", "t/b", "t/c", "t/a"] {
        publish_v5(
            &mut publisher,
            topic,
            b"x",
            QoS::AtMostOnce,
            None,
            Default::default(),
        );
    }
    let seen: Vec<(String, Option<u16>)> = (0..5)
        .map(|_| {
            let p = sub.recv_publish();
            (p.topic.to_string(), p.properties.topic_alias)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (String::from("t/a"), Some(1)),
            (String::new(), Some(1)),
            (String::from("t/b"), Some(2)),
            // Two aliases at most: t/c takes the least recently used one (t/a's).
            (String::from("t/c"), Some(1)),
            (String::from("t/a"), Some(2)),
        ]
    );
}

#[test]
fn too_many_user_properties_close_with_quota_exceeded() {
    let mut config = common::test_config(2);
    config.limits.user_properties_max = 2;
    let broker = TestBroker::with_config(config);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "props", true);
    let pair = (ByteString::from("k"), ByteString::from("v"));
    let within = PublishProperties {
        user_properties: vec![pair.clone(); 2],
        ..Default::default()
    };
    publish_v5(&mut client, "p", b"ok", QoS::AtLeastOnce, Some(1), within);
    assert!(
        matches!(client.recv(), Packet::PubAck(_)),
        "two user properties are allowed"
    );
    let over = PublishProperties {
        user_properties: vec![pair; 3],
        ..Default::default()
    };
    publish_v5(&mut client, "p", b"x", QoS::AtLeastOnce, Some(2), over);
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::QUOTA_EXCEEDED),
        "{packets:?}"
    );
}
