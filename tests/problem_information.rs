//! Goal: Reason Strings on the broker's refusals and errors, and Request Problem Information
//! (5.0 §3.1.2.11.7): acknowledgements carry a Reason String on an error only when the client asked
//! for problem information (the default), never when it set 0; CONNACK and DISCONNECT carry one
//! either way; none pushes a packet over the client's Maximum Packet Size.

mod common;

use bytes::Bytes;
use common::{RawClient, TestBroker, connect_packet, pid, response};
use ringmq::protocol::{
    ConnAck, Disconnect, Packet, Publish, PublishProperties, QoS, ReasonCode, Subscribe,
    SubscribeFilter, Version,
};

/// Connects a 5.0 client on `shard` with Request Problem Information as given (`None`: absent).
fn client(broker: &TestBroker, shard: usize, id: &str, problems: Option<bool>) -> RawClient {
    client_with(broker, shard, id, problems, None)
}

fn client_with(
    broker: &TestBroker,
    shard: usize,
    id: &str,
    problems: Option<bool>,
    packet_bytes_max: Option<u32>,
) -> RawClient {
    let mut client = RawClient::connect_tcp(broker.shard(shard), Version::V5);
    let mut connect = connect_packet(Version::V5, id, true, None);
    connect.properties.request_problem_information = problems;
    connect.properties.maximum_packet_size = packet_bytes_max;
    let connack = client.handshake(connect);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        connack.properties.reason_string, None,
        "no problem, no text"
    );
    client
}

/// A refused CONNACK for `connect`, with Request Problem Information as given.
fn refused(broker: &TestBroker, mut connect: ringmq::protocol::Connect, problems: bool) -> ConnAck {
    connect.properties.request_problem_information = Some(problems);
    let mut client = RawClient::connect_tcp(broker.shard(1), Version::V5);
    let connack = client.handshake(connect);
    client.expect_closed();
    connack
}

/// SUBACK for one invalid and one valid filter.
fn suback_reason_string(client: &mut RawClient) -> Option<String> {
    let filters = ["a/#/b", "ok"].map(|filter| SubscribeFilter {
        filter: filter.into(),
        options: Default::default(),
    });
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: filters.to_vec(),
    }));
    match client.recv() {
        Packet::SubAck(suback) => {
            assert_eq!(
                suback.reasons,
                vec![ReasonCode::TOPIC_FILTER_INVALID, ReasonCode::SUCCESS]
            );
            suback.properties.reason_string.map(|s| s.to_string())
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// PUBCOMP for a PUBREL the broker has no record of (0x92).
fn pubcomp_reason_string(client: &mut RawClient) -> Option<String> {
    client.send(&Packet::PubRel(response(pid(77))));
    match client.recv() {
        Packet::PubComp(pubcomp) => {
            assert_eq!(pubcomp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
            pubcomp.properties.reason_string.map(|s| s.to_string())
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

/// Provokes DISCONNECT 0x94 (a topic alias above the maximum) and returns it.
fn alias_disconnect(client: &mut RawClient) -> Disconnect {
    client.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        properties: PublishProperties {
            topic_alias: Some(u16::MAX),
            ..Default::default()
        }
        .into(),
        payload: Bytes::new(),
    }));
    match client.expect_closed().as_slice() {
        [Packet::Disconnect(disconnect)] => disconnect.clone(),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[test]
fn errors_carry_reason_strings_when_problem_information_is_requested() {
    let broker = TestBroker::start(2);
    for problems in [None, Some(true)] {
        let mut c = client(&broker, 0, "curious", problems);
        let text = suback_reason_string(&mut c).expect("SUBACK reason string");
        assert!(text.contains("topic filter"), "{text}");
        let text = pubcomp_reason_string(&mut c).expect("PUBCOMP reason string");
        assert!(text.contains("not found"), "{text}");
        // 0x11 is not an error: no text.
        c.send(&Packet::Unsubscribe(ringmq::protocol::Unsubscribe {
            packet_id: pid(2),
            properties: Default::default(),
            filters: vec!["never".into()],
        }));
        match c.recv() {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
                assert_eq!(unsuback.properties.reason_string, None);
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let disconnect = alias_disconnect(&mut c);
        assert_eq!(disconnect.reason, ReasonCode::TOPIC_ALIAS_INVALID);
        assert!(disconnect.properties.reason_string.is_some());
    }
}

#[test]
fn acknowledgements_carry_none_when_the_client_declined() {
    let broker = TestBroker::start(2);
    let mut c = client(&broker, 1, "terse", Some(false));
    assert_eq!(suback_reason_string(&mut c), None, "MQTT-3.1.2-29");
    assert_eq!(pubcomp_reason_string(&mut c), None, "MQTT-3.1.2-29");
    // DISCONNECT may carry one regardless (§3.1.2.11.7); this broker says why.
    let disconnect = alias_disconnect(&mut c);
    assert!(disconnect.properties.reason_string.is_some());
}

#[test]
fn refused_connacks_say_why_either_way() {
    let mut config = common::test_config(2);
    config.limits.client_id_bytes_max = 8;
    let broker = TestBroker::with_config(config);
    for problems in [true, false] {
        let long = connect_packet(Version::V5, "much-too-long-an-id", true, None);
        let connack = refused(&broker, long, problems);
        assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        let text = connack.properties.reason_string.expect("reason string");
        assert!(text.contains("client identifier"), "{text}");

        let mut scram = connect_packet(Version::V5, "scram", true, None);
        scram.properties.authentication_method = Some("SCRAM-SHA-256".into());
        let connack = refused(&broker, scram, problems);
        assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
        assert!(connack.properties.reason_string.is_some());
    }
}

#[test]
fn a_reason_string_never_exceeds_the_clients_maximum_packet_size() {
    let broker = TestBroker::start(2);
    // PUBCOMP 0x92 is 6 bytes; with its Reason String it would be 36 (CONNACK is 22).
    let mut c = client_with(&broker, 0, "tiny", Some(true), Some(32));
    assert_eq!(pubcomp_reason_string(&mut c), None);
    // And the connection goes on.
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Packet::PingResp);
}
