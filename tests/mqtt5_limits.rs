//! Goal: the broker's own limits and the reason codes it answers with, through raw packets where
//! rumqttc checks its limits before sending (so the broker's check never runs): Receive Maximum
//! (0x93), Maximum Packet Size (0x95), keepalive (0x8D), topic alias (0x94), quota (0x97),
//! protocol error (0x82), malformed packet (0x81), Subscription Identifiers when not available
//! (0xA1), a will declared UTF-8 (0x99), DISCONNECT 0x04 publishing the will, and the Session
//! Expiry Interval changed at DISCONNECT.

mod common;

use bytes::Bytes;
use common::{RawClient, TestBroker, connect_packet, pid, test_config};
use ringmq::protocol::{self as raw, ReasonCode, Version};

/// A client of `version` on a broker whose QoS 2 ids awaiting PUBREL are capped at 4 (for that
/// version's key) sends five QoS 2 PUBLISHes without PUBREL: its CONNACK, and what it got
/// before the close.
fn five_qos2_publishes(version: Version) -> (raw::ConnAck, Vec<raw::Packet>) {
    let mut config = test_config(2);
    config.limits.inflight_messages_max = 4;
    config.limits.incoming_qos2_v3_max = 4;
    let broker = TestBroker::with_config(config);
    let (mut client, connack) = RawClient::connect(broker.shard(0), version, "greedy", true);
    // QoS 2 publishes stay unacknowledged until PUBREL: the fifth is one too many.
    for n in 1..=5u16 {
        client.publish("rx", b"x", raw::QoS::ExactlyOnce, false, Some(n));
    }
    (connack, client.expect_closed())
}

#[test]
fn receive_maximum_of_the_broker_is_enforced() {
    let (connack, packets) = five_qos2_publishes(Version::V5);
    assert_eq!(connack.properties.receive_maximum, Some(4));
    let last = packets.last().expect("DISCONNECT");
    assert!(
        matches!(last, raw::Packet::Disconnect(d) if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{packets:?}"
    );
}

#[test]
fn qos_2_ids_awaiting_pubrel_of_a_3_1_1_client_are_capped_too() {
    // Four ids awaiting PUBREL are taken; the fifth closes the connection (3.1.1 has no
    // DISCONNECT from the server and no Receive Maximum to announce).
    let (_, packets) = five_qos2_publishes(Version::V3_1_1);
    let pubrecs = packets
        .iter()
        .filter(|p| matches!(p, raw::Packet::PubRec(_)))
        .count();
    assert_eq!(pubrecs, 4, "{packets:?}");
    assert!(
        !packets
            .iter()
            .any(|p| matches!(p, raw::Packet::Disconnect(_))),
        "{packets:?}"
    );
}

#[test]
fn a_qos_2_publish_refused_at_the_cap_is_routed_when_sent_again_after_reconnecting() {
    // A persistent 3.1.1 session: the fifth PUBLISH closes the connection. Its id must not have
    // been kept, or the copy sent again after the reconnect (the PUBRELs of the four first sent
    // before it) would be taken for a repeat, acknowledged and never routed.
    let mut config = test_config(2);
    config.limits.incoming_qos2_v3_max = 4;
    let broker = TestBroker::with_config(config);
    let (mut subscriber, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "sub", true);
    subscriber.subscribe(1, &[("rx", raw::QoS::AtLeastOnce)]);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "keeper", false);
    for n in 1..=5u16 {
        client.publish("rx", &[n as u8], raw::QoS::ExactlyOnce, false, Some(n));
    }
    client.expect_closed();
    let (mut client, connack) =
        RawClient::connect(broker.shard(0), Version::V3_1_1, "keeper", false);
    assert!(connack.session_present, "{connack:?}");
    for n in 1..=4u16 {
        client.send(&raw::Packet::PubRel(common::response(pid(n))));
        assert!(matches!(client.recv(), raw::Packet::PubComp(_)));
    }
    client.publish("rx", &[5], raw::QoS::ExactlyOnce, false, Some(5));
    assert!(matches!(client.recv(), raw::Packet::PubRec(_)));
    let payloads: Vec<u8> = (0..5)
        .map(|_| {
            let publish = subscriber.recv_publish();
            subscriber.ack(&publish);
            publish.payload[0]
        })
        .collect();
    assert_eq!(payloads, [1, 2, 3, 4, 5]);
}

#[test]
fn maximum_packet_size_of_the_broker_is_enforced() {
    let mut config = test_config(2);
    config.limits.packet_bytes_max = 1024;
    config.limits.will_bytes_max = 1024;
    let broker = TestBroker::with_config(config);
    let (mut client, connack) = RawClient::connect(broker.shard(1), Version::V5, "big", true);
    assert_eq!(connack.properties.maximum_packet_size, Some(1024));
    client.publish("big", &[0u8; 2000], raw::QoS::AtMostOnce, false, None);
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [raw::Packet::Disconnect(d)] if d.reason == ReasonCode::PACKET_TOO_LARGE),
        "{packets:?}"
    );
}

/// Reads until the broker closes; returns the reason of the DISCONNECT that came before.
fn closed_with(client: &mut RawClient) -> ReasonCode {
    let packets = client.expect_closed();
    match packets.last() {
        Some(raw::Packet::Disconnect(d)) => d.reason,
        other => panic!("expected DISCONNECT before the close, got {other:?}"),
    }
}

#[test]
fn disconnect_reason_codes_the_library_cannot_provoke() {
    let mut config = test_config(2);
    config.limits.user_properties_max = 1;
    let broker = TestBroker::with_config(config);

    // 0x8D: no packet within 1.5 x Keep Alive.
    let mut quiet = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "quiet", true, None);
    connect.keep_alive_secs = 1;
    quiet.handshake(connect);

    // 0x94: an alias above the maximum.
    let (mut c, _) = RawClient::connect(broker.shard(1), Version::V5, "alias", true);
    c.send(&raw::Packet::Publish(raw::Publish {
        dup: false,
        qos: raw::QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        properties: raw::PublishProperties {
            topic_alias: Some(65),
            ..Default::default()
        }
        .into(),
        payload: Bytes::new(),
    }));
    assert_eq!(closed_with(&mut c), ReasonCode::TOPIC_ALIAS_INVALID);

    // 0x97: more user properties than allowed.
    let (mut c, _) = RawClient::connect(broker.shard(0), Version::V5, "quota", true);
    c.send(&raw::Packet::Subscribe(raw::Subscribe {
        packet_id: pid(1),
        properties: raw::SubscribeProperties {
            subscription_identifier: None,
            user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        },
        filters: vec![raw::SubscribeFilter {
            filter: "q".into(),
            options: Default::default(),
        }],
    }));
    assert_eq!(closed_with(&mut c), ReasonCode::QUOTA_EXCEEDED);

    // 0x82: a second CONNECT.
    let (mut c, _) = RawClient::connect(broker.shard(1), Version::V5, "twice", true);
    c.send(&raw::Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "twice",
        true,
        None,
    ))));
    assert_eq!(closed_with(&mut c), ReasonCode::PROTOCOL_ERROR);

    // 0x81: a PUBLISH with QoS 3.
    let (mut c, _) = RawClient::connect(broker.shard(0), Version::V5, "bits", true);
    c.send_raw(&[0x36, 0x04, 0x00, 0x01, b't', 0x00]);
    assert_eq!(closed_with(&mut c), ReasonCode::MALFORMED_PACKET);

    assert_eq!(closed_with(&mut quiet), ReasonCode::KEEP_ALIVE_TIMEOUT);
}

#[test]
fn a_will_declared_utf8_is_checked_when_configured() {
    let mut config = test_config(2);
    config.mqtt.payload_format_check = true;
    let broker = TestBroker::with_config(config);
    let will = |payload: &'static [u8]| raw::Will {
        topic: "w".into(),
        payload: Bytes::from_static(payload),
        qos: raw::QoS::AtMostOnce,
        retain: false,
        properties: raw::WillProperties {
            payload_format_indicator: Some(true),
            ..Default::default()
        },
    };
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let connack = c.handshake(connect_packet(Version::V5, "w1", true, Some(will(b"\xff"))));
    assert_eq!(connack.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
    c.expect_closed();
    let mut c = RawClient::connect_tcp(broker.shard(1), Version::V5);
    let connack = c.handshake(connect_packet(Version::V5, "w2", true, Some(will(b"ok"))));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
}

#[test]
fn subscription_identifiers_when_not_available() {
    let mut config = test_config(2);
    config.mqtt.subscription_identifiers_available = false;
    let broker = TestBroker::with_config(config);
    let (mut c, connack) = RawClient::connect(broker.shard(0), Version::V5, "noids", true);
    assert_eq!(
        connack.properties.subscription_identifiers_available,
        Some(false)
    );
    c.send(&raw::Packet::Subscribe(raw::Subscribe {
        packet_id: pid(1),
        properties: raw::SubscribeProperties {
            subscription_identifier: Some(1),
            user_properties: Vec::new(),
        },
        filters: vec![raw::SubscribeFilter {
            filter: "ids".into(),
            options: Default::default(),
        }],
    }));
    assert_eq!(
        closed_with(&mut c),
        ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
    );
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start(2);
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V5, "watcher", true);
    watcher.subscribe(1, &[("last/#", raw::QoS::AtLeastOnce)]);
    let will = raw::Will {
        topic: "last/words".into(),
        payload: Bytes::from_static(b"asked for"),
        qos: raw::QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    c.handshake(connect_packet(Version::V5, "leaving", true, Some(will)));
    c.send(&raw::Packet::Disconnect(raw::Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: Default::default(),
    }));
    assert_eq!(&watcher.recv_publish().payload[..], b"asked for");
}

#[test]
fn session_expiry_set_on_disconnect() {
    let broker = TestBroker::start(2);
    let connect = |id: &str, expiry: Option<u32>, clean: bool| {
        let mut connect = connect_packet(Version::V5, id, clean, None);
        connect.properties.session_expiry_interval_secs = expiry;
        connect
    };
    let disconnect = |expiry| {
        raw::Packet::Disconnect(raw::Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: raw::DisconnectProperties {
                session_expiry_interval_secs: Some(expiry),
                ..Default::default()
            },
        })
    };
    // Expiry 0 at CONNECT cannot become non-zero at DISCONNECT (MQTT-3.14.2-2).
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    c.handshake(connect("zero", None, true));
    c.send(&disconnect(60));
    assert_eq!(closed_with(&mut c), ReasonCode::PROTOCOL_ERROR);

    // 60 at CONNECT, 0 at DISCONNECT: the session ends with the connection.
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    c.handshake(connect("shortened", Some(60), true));
    c.send(&disconnect(0));
    c.expect_closed();
    let mut c = RawClient::connect_tcp(broker.shard(1), Version::V5);
    assert!(
        !c.handshake(connect("shortened", Some(60), false))
            .session_present
    );

    // 10 at CONNECT, 60 at DISCONNECT: kept.
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    c.handshake(connect("lengthened", Some(10), true));
    c.send(&disconnect(60));
    c.expect_closed();
    let mut c = RawClient::connect_tcp(broker.shard(1), Version::V5);
    assert!(
        c.handshake(connect("lengthened", Some(60), false))
            .session_present
    );
}
