//! Malformed input, continued: properties (§2.2.2.2) and bad UTF-8 in every string field
//! (§1.5.4), each with the error it must produce and its 5.0 reason code.

use super::malformed::{MALFORMED, PROTOCOL, check, frame};
use super::*;
use DecodeError as E;
use Version::{V3_1, V3_1_1, V5};

#[test]
fn properties() {
    let publish = |properties: &[u8]| {
        frame(
            0x30,
            &[b"\0\x01t", &[properties.len() as u8][..], properties].concat(),
        )
    };
    check(
        V5,
        &publish(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
        E::DuplicateProperty(0x02),
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x23, 0, 1, 0x23, 0, 1]),
        E::DuplicateProperty(0x23),
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x01, 0, 0x01, 1]),
        E::DuplicateProperty(0x01),
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x03, 0, 1, b'a', 0x03, 0, 1, b'b']),
        E::DuplicateProperty(0x03),
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x01, 2]),
        E::InvalidBooleanProperty(0x01),
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x11, 0, 0, 0, 1]),
        E::PropertyNotAllowed {
            id: 0x11,
            packet_type: 3,
        },
        MALFORMED,
    );
    check(
        V5,
        &publish(&[0x1F, 0, 1, b'r']),
        E::PropertyNotAllowed {
            id: 0x1F,
            packet_type: 3,
        },
        MALFORMED,
    );
    check(V5, &publish(&[0x23, 0, 0]), E::TopicAliasZero, 0x94);
    check(
        V5,
        &publish(&[0x0B, 0]),
        E::SubscriptionIdentifierZero,
        PROTOCOL,
    );
    check(
        V5,
        &publish(&[0x0B, 0x80, 0]),
        E::VarIntNotMinimal,
        MALFORMED,
    );
    check(
        V5,
        &publish(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 1]),
        E::VarIntTooLong,
        MALFORMED,
    );
    // The property length runs past the packet; a property runs past the property length.
    check(
        V5,
        &frame(0x30, b"\0\x01t\x05\x01\x01"),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x30, b"\0\x01t\x02\x02\0payload"),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x30, b"\0\x01t\x03\x26\0\x01kv"),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    // Acknowledgements, SUBSCRIBE, DISCONNECT, AUTH.
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 2, 0x1F, 0]),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 2, 0x26, 0]),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 3, 0x1F, 0, 0, 9]),
        E::TrailingBytes,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 3, 0x02, 0, 0, 0, 0]),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 5, 0x02, 0, 0, 0, 0]),
        E::PropertyNotAllowed {
            id: 2,
            packet_type: 4,
        },
        MALFORMED,
    );
    check(
        V5,
        &frame(0x40, &[0, 1, 0, 6, 0x1F, 0, 0, 0x1F, 0, 0]),
        E::DuplicateProperty(0x1F),
        PROTOCOL,
    );
    check(
        V5,
        &frame(0x82, &[0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]),
        E::SubscriptionIdentifierZero,
        PROTOCOL,
    );
    check(
        V5,
        &frame(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]),
        E::DuplicateProperty(0x0B),
        PROTOCOL,
    );
    check(
        V5,
        &frame(0xE0, &[0, 3, 0x21, 0, 1]),
        E::PropertyNotAllowed {
            id: 0x21,
            packet_type: 14,
        },
        MALFORMED,
    );
    check(
        V5,
        &frame(0xE0, &[0, 3, 0x1F, 0, 0, 7]),
        E::TrailingBytes,
        MALFORMED,
    );
    check(
        V5,
        &frame(0xF0, &[0x18, 3, 0x16, 0, 0]),
        E::AuthDataWithoutMethod,
        PROTOCOL,
    );
    check(
        V5,
        &frame(0xF0, &[0x18, 3, 0x11, 0, 0]),
        E::PropertyLengthOverrun,
        MALFORMED,
    );
    check(
        V5,
        &frame(0xF0, &[0x18, 5, 0x11, 0, 0, 0, 1]),
        E::PropertyNotAllowed {
            id: 0x11,
            packet_type: 15,
        },
        MALFORMED,
    );
    check(
        V5,
        &frame(0x20, &[0, 0, 2, 0x24, 2]),
        E::InvalidBooleanProperty(0x24),
        PROTOCOL,
    );
    check(
        V5,
        &frame(0x20, &[0, 0, 3, 0x21, 0, 0]),
        E::ReceiveMaximumZero,
        PROTOCOL,
    );
}

/// The three bad strings, each three bytes long so they can replace a three-byte marker.
const BAD_STRINGS: [(&[u8], DecodeError); 4] = [
    (b"a\0b", E::NullCharacter),
    (&[0xC3, 0x28, b'a'], E::InvalidUtf8),
    (&[0xED, 0xA0, 0x80], E::InvalidUtf8),
    (&[b'a', 0xFF, b'b'], E::InvalidUtf8),
];

/// Encodes `packet` (whose one string field under test is "ZZZ"), replaces the marker with each bad
/// string and checks that decode refuses it.
fn check_strings(version: Version, packet: Packet) {
    let bytes = encode_to_vec(&packet, version);
    let at = bytes
        .windows(3)
        .position(|window| window == b"ZZZ")
        .expect("marker");
    assert_eq!(
        bytes.windows(3).filter(|window| *window == b"ZZZ").count(),
        1
    );
    for (bad, expected) in BAD_STRINGS {
        let mut corrupted = bytes.clone();
        corrupted[at..at + 3].copy_from_slice(bad);
        check(version, &corrupted, expected, MALFORMED);
    }
}

#[test]
fn bad_utf8_in_every_string_field() {
    let connect = |version| Connect {
        version,
        clean_start: true,
        keep_alive_secs: 0,
        client_id: s("c"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let will = |topic: &str| Will {
        topic: s(topic),
        payload: b(b"p"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    for version in [V3_1, V3_1_1, V5] {
        check_strings(
            version,
            Packet::Connect(Box::new(Connect {
                client_id: s("ZZZ"),
                ..connect(version)
            })),
        );
        check_strings(
            version,
            Packet::Connect(Box::new(Connect {
                username: Some(s("ZZZ")),
                ..connect(version)
            })),
        );
        check_strings(
            version,
            Packet::Connect(Box::new(Connect {
                will: Some(will("ZZZ")),
                ..connect(version)
            })),
        );
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("a/ZZZ"),
            packet_id: None,
            properties: Default::default(),
            payload: b(b"payload"),
        };
        check_strings(version, Packet::Publish(publish));
        let filter = SubscribeFilter {
            filter: s("ZZZ/#"),
            options: Default::default(),
        };
        check_strings(
            version,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Default::default(),
                filters: vec![filter],
            }),
        );
        check_strings(
            version,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(1),
                properties: Default::default(),
                filters: vec![s("ZZZ")],
            }),
        );
    }
    let mut connect_v5 = connect(V5);
    connect_v5.properties.authentication_method = Some(s("ZZZ"));
    check_strings(V5, Packet::Connect(Box::new(connect_v5)));
    let mut connect_v5 = connect(V5);
    let mut will_v5 = will("t");
    will_v5.properties.response_topic = Some(s("ZZZ"));
    connect_v5.will = Some(will_v5);
    check_strings(V5, Packet::Connect(Box::new(connect_v5)));
    for (key, value) in [("ZZZ", "v"), ("k", "ZZZ")] {
        let user = vec![(s(key), s(value))];
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("t"),
            packet_id: None,
            properties: PublishProperties {
                user_properties: user.clone(),
                ..Default::default()
            }
            .into(),
            payload: b(b""),
        };
        check_strings(V5, Packet::Publish(publish));
        let properties = AckProperties {
            user_properties: user,
            ..Default::default()
        };
        check_strings(
            V5,
            Packet::PubAck(PubResponse {
                packet_id: pid(1),
                reason: ReasonCode(0x80),
                properties,
            }),
        );
    }
    let reason_string = AckProperties {
        reason_string: Some(s("ZZZ")),
        ..Default::default()
    };
    check_strings(
        V5,
        Packet::PubRec(PubResponse {
            packet_id: pid(1),
            reason: ReasonCode(0x80),
            properties: reason_string,
        }),
    );
    let content_type = PublishProperties {
        content_type: Some(s("ZZZ")),
        ..Default::default()
    };
    check_strings(
        V5,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("t"),
            packet_id: Some(pid(9)),
            properties: content_type.into(),
            payload: b(b"x"),
        }),
    );
    let disconnect = DisconnectProperties {
        server_reference: Some(s("ZZZ")),
        ..Default::default()
    };
    check_strings(
        V5,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode(0x9C),
            properties: disconnect,
        }),
    );
}
