//! Hand-written frames for every packet type in 3.1, 3.1.1 and 5.0: each decodes to the expected
//! packet and that packet encodes back to the same bytes. `decode_only` rows are valid frames that
//! encode writes in a shorter form. `write_fuzz_seeds` writes the frames out as the fuzz corpus seeds.

use super::*;
use Version::{V3_1, V3_1_1, V5};

fn connect(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn publish(qos: QoS, topic: &str, packet_id: Option<u16>, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s(topic),
        packet_id: packet_id.map(pid),
        properties: Default::default(),
        payload: b(payload),
    }
}

fn response(id: u16, reason: u8) -> PubResponse {
    PubResponse {
        packet_id: pid(id),
        reason: ReasonCode(reason),
        properties: AckProperties::default(),
    }
}

fn user(key: &str, value: &str) -> (ByteString, ByteString) {
    (s(key), s(value))
}

fn connect_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let mut full = connect(V3_1_1, "c");
    full.keep_alive_secs = 10;
    full.will = Some(Will {
        topic: s("w/t"),
        payload: b(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    full.username = Some(s("u"));
    full.password = Some(b(&[1, 2]));
    let mut v5 = connect(V5, "abc");
    v5.properties.session_expiry_interval_secs = Some(120);
    v5.properties.receive_maximum = Some(20);
    v5.properties.user_properties.push(user("k", "v"));
    let mut v5_will = connect(V5, "");
    v5_will.will = Some(Will {
        topic: s("t"),
        payload: b(b"x"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval_secs: Some(10),
            payload_format_indicator: Some(true),
            ..Default::default()
        },
    });
    let mut v5_password_only = connect(V5, "a");
    v5_password_only.password = Some(b(b"p"));
    vec![
        (
            V3_1,
            [
                &[0x10, 0x11, 0, 6][..],
                b"MQIsdp",
                &[3, 2, 0, 60, 0, 3],
                b"abc",
            ]
            .concat(),
            Packet::Connect(Box::new(connect(V3_1, "abc"))),
        ),
        (
            V3_1_1,
            [
                &[0x10, 0x0F, 0, 4][..],
                b"MQTT",
                &[4, 2, 0, 60, 0, 3],
                b"abc",
            ]
            .concat(),
            Packet::Connect(Box::new(connect(V3_1_1, "abc"))),
        ),
        (
            V3_1_1,
            [
                &[0x10, 0x1E, 0, 4][..],
                b"MQTT",
                &[4, 0xEE, 0, 10, 0, 1],
                b"c",
                &[0, 3],
                b"w/t",
                &[0, 3],
                b"bye",
                &[0, 1],
                b"u",
                &[0, 2, 1, 2],
            ]
            .concat(),
            Packet::Connect(Box::new(full)),
        ),
        (
            V5,
            [
                &[0x10, 0x1F, 0, 4][..],
                b"MQTT",
                &[
                    5, 2, 0, 60, 0x0F, 0x11, 0, 0, 0, 120, 0x21, 0, 20, 0x26, 0, 1,
                ],
                b"k",
                &[0, 1],
                b"v",
                &[0, 3],
                b"abc",
            ]
            .concat(),
            Packet::Connect(Box::new(v5)),
        ),
        (
            V5,
            [
                &[0x10, 0x1B, 0, 4][..],
                b"MQTT",
                &[5, 0x06, 0, 60, 0, 0, 0, 7, 0x01, 1, 0x18, 0, 0, 0, 10, 0, 1],
                b"t",
                &[0, 1],
                b"x",
            ]
            .concat(),
            Packet::Connect(Box::new(v5_will)),
        ),
        (
            V5,
            [
                &[0x10, 0x11, 0, 4][..],
                b"MQTT",
                &[5, 0x42, 0, 60, 0, 0, 1],
                b"a",
                &[0, 1],
                b"p",
            ]
            .concat(),
            Packet::Connect(Box::new(v5_password_only)),
        ),
    ]
}

fn connack_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let connack = |session_present, reason| {
        Packet::ConnAck(Box::new(ConnAck {
            session_present,
            reason: ReasonCode(reason),
            properties: ConnAckProperties::default(),
        }))
    };
    let with_properties = Packet::ConnAck(Box::new(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            assigned_client_identifier: Some(s("id")),
            server_keep_alive_secs: Some(30),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(false),
            ..Default::default()
        },
    }));
    vec![
        (V3_1, vec![0x20, 2, 0, 1], connack(false, 0x84)),
        (V3_1_1, vec![0x20, 2, 0, 0], connack(false, 0x00)),
        (V3_1_1, vec![0x20, 2, 1, 0], connack(true, 0x00)),
        (V3_1_1, vec![0x20, 2, 0, 2], connack(false, 0x85)),
        (V3_1_1, vec![0x20, 2, 0, 3], connack(false, 0x88)),
        (V3_1_1, vec![0x20, 2, 0, 4], connack(false, 0x86)),
        (V3_1_1, vec![0x20, 2, 0, 5], connack(false, 0x87)),
        (V5, vec![0x20, 3, 0, 0, 0], connack(false, 0x00)),
        (V5, vec![0x20, 3, 0, 0x87, 0], connack(false, 0x87)),
        (
            V5,
            [
                &[0x20, 0x12, 1, 0, 15, 0x12, 0, 2][..],
                b"id",
                &[0x13, 0, 30, 0x22, 0, 10, 0x24, 1, 0x25, 0],
            ]
            .concat(),
            with_properties,
        ),
    ]
}

fn publish_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let mut qos1 = publish(QoS::AtLeastOnce, "a/b", Some(10), b"x");
    qos1.dup = true;
    qos1.retain = true;
    let mut full = publish(QoS::AtLeastOnce, "a/b", Some(1), b"p");
    full.properties = PublishProperties {
        payload_format_indicator: Some(true),
        message_expiry_interval_secs: Some(60),
        topic_alias: Some(5),
        response_topic: Some(s("r/t")),
        correlation_data: Some(b(&[1, 2])),
        user_properties: vec![user("k", "v")],
        subscription_identifiers: vec![5, 128],
        content_type: Some(s("text")),
    }
    .into();
    let mut aliased = publish(QoS::AtMostOnce, "", None, b"x");
    aliased.properties.make_mut().topic_alias = Some(1);
    let mut bom = publish(QoS::AtMostOnce, "\u{feff}t\u{1}", None, b"");
    bom.retain = true;
    vec![
        (
            V3_1,
            [&[0x30, 7, 0, 3][..], b"a/bhi"].concat(),
            Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
        ),
        (
            V3_1_1,
            [&[0x30, 7, 0, 3][..], b"a/bhi"].concat(),
            Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
        ),
        (
            V3_1_1,
            [&[0x3B, 8, 0, 3][..], b"a/b", &[0, 10], b"x"].concat(),
            Packet::Publish(qos1),
        ),
        (
            V3_1_1,
            [&[0x34, 8, 0, 3][..], b"a/b", &[0x12, 0x34], b"x"].concat(),
            Packet::Publish(publish(QoS::ExactlyOnce, "a/b", Some(0x1234), b"x")),
        ),
        (
            V3_1_1,
            [&[0x31, 7, 0, 5][..], "\u{feff}t\u{1}".as_bytes()].concat(),
            Packet::Publish(bom),
        ),
        (
            V5,
            [&[0x30, 8, 0, 3][..], b"a/b", &[0], b"hi"].concat(),
            Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
        ),
        (
            V5,
            [
                &[0x32, 49, 0, 3][..],
                b"a/b",
                &[0, 1, 40, 0x01, 1, 0x02, 0, 0, 0, 60, 0x03, 0, 4],
                b"text",
                &[0x08, 0, 3],
                b"r/t",
                &[
                    0x09, 0, 2, 1, 2, 0x23, 0, 5, 0x0B, 5, 0x0B, 0x80, 1, 0x26, 0, 1,
                ],
                b"k",
                &[0, 1],
                b"v",
                b"p",
            ]
            .concat(),
            Packet::Publish(full),
        ),
        (
            V5,
            vec![0x30, 7, 0, 0, 3, 0x23, 0, 1, b'x'],
            Packet::Publish(aliased),
        ),
    ]
}

fn ack_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let mut with_reason_string = response(1, 0x87);
    with_reason_string.properties.reason_string = Some(s("no"));
    let mut rows = Vec::new();
    for version in [V3_1, V3_1_1, V5] {
        rows.push((version, vec![0x40, 2, 0, 1], Packet::PubAck(response(1, 0))));
        rows.push((version, vec![0x50, 2, 0, 2], Packet::PubRec(response(2, 0))));
        rows.push((version, vec![0x62, 2, 0, 3], Packet::PubRel(response(3, 0))));
        rows.push((
            version,
            vec![0x70, 2, 0xFF, 0xFF],
            Packet::PubComp(response(0xFFFF, 0)),
        ));
        rows.push((version, vec![0xC0, 0], Packet::PingReq));
        rows.push((version, vec![0xD0, 0], Packet::PingResp));
        rows.push((
            version,
            vec![0xE0, 0],
            Packet::Disconnect(Disconnect::default()),
        ));
    }
    rows.extend([
        (
            V5,
            vec![0x40, 3, 0, 1, 0x10],
            Packet::PubAck(response(1, 0x10)),
        ),
        (
            V5,
            [&[0x40, 9, 0, 1, 0x87, 5, 0x1F, 0, 2][..], b"no"].concat(),
            Packet::PubAck(with_reason_string),
        ),
        (
            V5,
            vec![0x50, 3, 0, 1, 0x80],
            Packet::PubRec(response(1, 0x80)),
        ),
        (
            V5,
            vec![0x62, 3, 0, 1, 0x92],
            Packet::PubRel(response(1, 0x92)),
        ),
        (
            V5,
            vec![0x70, 3, 0, 1, 0x92],
            Packet::PubComp(response(1, 0x92)),
        ),
    ]);
    rows
}

fn subscribe_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let filter = |filter: &str, options: SubscriptionOptions| SubscribeFilter {
        filter: s(filter),
        options,
    };
    let qos = |qos| SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let v3 = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![
            filter("a/b", qos(QoS::AtLeastOnce)),
            filter("#", qos(QoS::ExactlyOnce)),
        ],
    };
    let v3_bytes = [&[0x82, 12, 0, 1, 0, 3][..], b"a/b", &[1, 0, 1], b"#", &[2]].concat();
    let v5 = Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties {
            subscription_identifier: Some(7),
            user_properties: vec![user("k", "v")],
        },
        filters: vec![
            filter(
                "a/+",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            ),
            filter("x", qos(QoS::AtMostOnce)),
        ],
    };
    let suback = |id, reasons: &[u8]| SubAck {
        packet_id: pid(id),
        properties: AckProperties::default(),
        reasons: reasons.iter().map(|&code| ReasonCode(code)).collect(),
    };
    let unsubscribe = |id, filters: &[&str]| Unsubscribe {
        packet_id: pid(id),
        properties: UnsubscribeProperties::default(),
        filters: filters.iter().map(|filter| s(filter)).collect(),
    };
    let unsuback = |id, reasons: &[u8]| UnsubAck {
        packet_id: pid(id),
        properties: AckProperties::default(),
        reasons: reasons.iter().map(|&code| ReasonCode(code)).collect(),
    };
    vec![
        (V3_1, v3_bytes.clone(), Packet::Subscribe(v3.clone())),
        (V3_1_1, v3_bytes, Packet::Subscribe(v3)),
        (
            V5,
            [
                &[0x82, 22, 0, 10, 9, 0x0B, 7, 0x26, 0, 1][..],
                b"k",
                &[0, 1],
                b"v",
                &[0, 3],
                b"a/+",
                &[0x2D, 0, 1],
                b"x",
                &[0],
            ]
            .concat(),
            Packet::Subscribe(v5),
        ),
        (
            V3_1,
            vec![0x90, 4, 0, 1, 0, 2],
            Packet::SubAck(suback(1, &[0, 2])),
        ),
        (
            V3_1_1,
            vec![0x90, 5, 0, 1, 0, 1, 0x80],
            Packet::SubAck(suback(1, &[0, 1, 0x80])),
        ),
        (
            V5,
            vec![0x90, 5, 0, 1, 0, 2, 0x8F],
            Packet::SubAck(suback(1, &[2, 0x8F])),
        ),
        (
            V3_1_1,
            [&[0xA2, 10, 0, 2, 0, 3][..], b"a/b", &[0, 1], b"c"].concat(),
            Packet::Unsubscribe(unsubscribe(2, &["a/b", "c"])),
        ),
        (
            V3_1,
            [&[0xA2, 5, 0, 2, 0, 1][..], b"c"].concat(),
            Packet::Unsubscribe(unsubscribe(2, &["c"])),
        ),
        (
            V5,
            [&[0xA2, 8, 0, 2, 0, 0, 3][..], b"a/b"].concat(),
            Packet::Unsubscribe(unsubscribe(2, &["a/b"])),
        ),
        (
            V3_1,
            vec![0xB0, 2, 0, 5],
            Packet::UnsubAck(unsuback(5, &[])),
        ),
        (
            V3_1_1,
            vec![0xB0, 2, 0, 5],
            Packet::UnsubAck(unsuback(5, &[])),
        ),
        (
            V5,
            vec![0xB0, 5, 0, 5, 0, 0, 0x11],
            Packet::UnsubAck(unsuback(5, &[0, 0x11])),
        ),
    ]
}

fn control_vectors() -> Vec<(Version, Vec<u8>, Packet)> {
    let disconnect = |reason| Disconnect {
        reason: ReasonCode(reason),
        ..Default::default()
    };
    let with_properties = Disconnect {
        reason: ReasonCode(0x04),
        properties: DisconnectProperties {
            session_expiry_interval_secs: Some(10),
            reason_string: Some(s("x")),
            ..Default::default()
        },
    };
    let auth = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("m")),
            authentication_data: Some(b(&[1, 2])),
            ..Default::default()
        },
    };
    vec![
        (
            V5,
            vec![0xE0, 2, 0x8E, 0],
            Packet::Disconnect(disconnect(0x8E)),
        ),
        (
            V5,
            vec![0xE0, 11, 0x04, 9, 0x11, 0, 0, 0, 10, 0x1F, 0, 1, b'x'],
            Packet::Disconnect(with_properties),
        ),
        (V5, vec![0xF0, 0], Packet::Auth(Box::default())),
        (
            V5,
            vec![0xF0, 11, 0x18, 9, 0x15, 0, 1, b'm', 0x16, 0, 2, 1, 2],
            Packet::Auth(Box::new(auth)),
        ),
    ]
}

/// Every vector: version, frame, packet.
pub fn all() -> Vec<(Version, Vec<u8>, Packet)> {
    [
        connect_vectors(),
        connack_vectors(),
        publish_vectors(),
        ack_vectors(),
        subscribe_vectors(),
        control_vectors(),
    ]
    .concat()
}

#[test]
fn spec_vectors_decode_and_encode_back() {
    for (version, bytes, expected) in all() {
        assert_eq!(
            decode_all(&bytes, version),
            Ok(expected.clone()),
            "decode {version:?} {bytes:02x?}"
        );
        assert_eq!(
            encode_to_vec(&expected, version),
            bytes,
            "encode {version:?} {expected:?}"
        );
    }
}

/// Valid frames that encode writes shorter (or, for 3.x codes, canonically).
#[test]
fn decode_only() {
    let check = |version, bytes: &[u8], expected: Packet| {
        assert_eq!(
            decode_all(bytes, version),
            Ok(expected),
            "{version:?} {bytes:02x?}"
        );
    };
    check(
        V5,
        &[0xE0, 2, 0, 0],
        Packet::Disconnect(Disconnect::default()),
    );
    check(V5, &[0xF0, 1, 0], Packet::Auth(Box::default()));
    // A lone reason code (§3.14.2.2.1); encode adds the property length for rumqttc's sake.
    let taken_over = Disconnect {
        reason: ReasonCode::SESSION_TAKEN_OVER,
        properties: Default::default(),
    };
    check(V5, &[0xE0, 1, 0x8E], Packet::Disconnect(taken_over));
    check(V5, &[0x40, 4, 0, 1, 0, 0], Packet::PubAck(response(1, 0)));
    check(V5, &[0x40, 3, 0, 1, 0], Packet::PubAck(response(1, 0)));
    check(
        V5,
        &[0x20, 2, 0, 0],
        Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        })),
    );
    // 3.1 clients may set DUP on a resent PUBREL / SUBSCRIBE / UNSUBSCRIBE.
    check(V3_1, &[0x6A, 2, 0, 3], Packet::PubRel(response(3, 0)));
    // A PUBLISH whose user property repeats a key keeps both, in order (MQTT-3.3.2-18).
    let mut repeated = publish(QoS::AtMostOnce, "t", None, b"");
    repeated.properties.make_mut().user_properties = vec![user("k", "1"), user("k", "2")];
    check(
        V5,
        &[
            0x30, 18, 0, 1, b't', 14, 0x26, 0, 1, b'k', 0, 1, b'1', 0x26, 0, 1, b'k', 0, 1, b'2',
        ],
        Packet::Publish(repeated),
    );
}

#[test]
fn connack_and_suback_codes_map_to_3_1_1() {
    let check = |reason: u8, expected: u8| {
        let packet = Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason: ReasonCode(reason),
            properties: Default::default(),
        }));
        assert_eq!(
            encode_to_vec(&packet, V3_1_1),
            [0x20, 2, 0, expected],
            "reason {reason:#x}"
        );
    };
    for (reason, expected) in [
        (0x00, 0),
        (0x84, 1),
        (0x85, 2),
        (0x88, 3),
        (0x89, 3),
        (0x86, 4),
        (0x87, 5),
        (0x80, 3),
        (0x8C, 3),
        (0x9F, 3),
    ] {
        check(reason, expected);
    }
    let suback = Packet::SubAck(SubAck {
        packet_id: pid(1),
        properties: AckProperties {
            reason_string: Some(s("dropped before 5.0")),
            ..Default::default()
        },
        reasons: vec![ReasonCode(0x87), ReasonCode(0x8F), ReasonCode(0x01)],
    });
    assert_eq!(
        encode_to_vec(&suback, V3_1_1),
        [0x90, 5, 0, 1, 0x80, 0x80, 0x01]
    );
}

/// Writes each vector, prefixed with its version selector (0: 3.1, 1: 3.1.1, 2: 5.0), as a seed of
/// the fuzz corpus: `cargo test --lib protocol::tests::vectors::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes fuzz/seeds/; run on demand"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode");
    std::fs::create_dir_all(&dir).unwrap();
    for (index, (version, bytes, _)) in all().into_iter().enumerate() {
        let selector = match version {
            V3_1 => 0u8,
            V3_1_1 => 1,
            V5 => 2,
        };
        let seed = [&[selector][..], &bytes].concat();
        std::fs::write(dir.join(format!("vector-{index:03}")), seed).unwrap();
    }
}
