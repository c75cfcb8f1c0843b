//! Malformed input: each row is a frame that breaks one rule, the error it must produce and the 5.0
//! reason code that error maps to.

use super::*;
use DecodeError as E;
use Version::{V3_1, V3_1_1, V5};

pub const MALFORMED: u8 = 0x81;
pub const PROTOCOL: u8 = 0x82;

/// A frame with a computed (one-byte) remaining length.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    [&[first, body.len() as u8][..], body].concat()
}

pub fn check(version: Version, bytes: &[u8], expected: DecodeError, reason: u8) {
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, version, usize::MAX);
    assert_eq!(result, Err(expected.clone()), "{version:?} {bytes:02x?}");
    assert_eq!(expected.reason_code(), ReasonCode(reason), "{expected:?}");
}

/// CONNECT body for `version` with the given flags and the rest after the keep alive.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    [
        &[0, name.len() as u8][..],
        name,
        &[level, flags, 0, 60],
        rest,
    ]
    .concat()
}

#[test]
fn fixed_header() {
    check(
        V3_1_1,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        E::VarIntTooLong,
        MALFORMED,
    );
    check(
        V5,
        &[0xC0, 0x80, 0x80, 0x80, 0x80, 0x00],
        E::VarIntTooLong,
        MALFORMED,
    );
    check(V3_1_1, &[0xC0, 0x80, 0x00], E::VarIntNotMinimal, MALFORMED);
    check(
        V5,
        &[0x30, 0x83, 0x80, 0x00],
        E::VarIntNotMinimal,
        MALFORMED,
    );
    check(V3_1_1, &[0x00, 0x00], E::InvalidPacketType(0), MALFORMED);
    check(V3_1_1, &[0x0F], E::InvalidPacketType(0), MALFORMED);
    check(V3_1_1, &[0xF0, 0x00], E::InvalidPacketType(15), MALFORMED);
    check(V3_1, &[0xF0, 0x00], E::InvalidPacketType(15), MALFORMED);
    for (first, body) in [
        (0x60u8, &[0u8, 1][..]),
        (0x63, &[0, 1]),
        (0x80, &[0, 1, 0, 1, b'a', 0]),
        (0x8A, &[0, 1, 0, 1, b'a', 0]),
        (0xA0, &[0, 1, 0, 1, b'a']),
        (0x41, &[0, 1]),
        (0x11, &[]),
        (0x28, &[0, 0]),
        (0xC1, &[]),
        (0xD8, &[]),
        (0xE2, &[]),
        (0x94, &[0, 1, 0]),
    ] {
        let flags = first & 0x0F;
        let packet_type = first >> 4;
        check(
            V3_1_1,
            &frame(first, body),
            E::InvalidHeaderFlags { packet_type, flags },
            MALFORMED,
        );
    }
    check(
        V5,
        &[0xF1, 0],
        E::InvalidHeaderFlags {
            packet_type: 15,
            flags: 1,
        },
        MALFORMED,
    );
    check(
        V5,
        &[0x6A, 2, 0, 1],
        E::InvalidHeaderFlags {
            packet_type: 6,
            flags: 0xA,
        },
        MALFORMED,
    );
}

#[test]
fn publish() {
    check(
        V3_1_1,
        &frame(0x36, b"\0\x01a\0\x01"),
        E::InvalidQoS,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x32, b"\0\x03a/b"),
        E::MissingPacketId,
        PROTOCOL,
    );
    check(
        V3_1_1,
        &frame(0x34, b"\0\x03a/b\x01"),
        E::MissingPacketId,
        PROTOCOL,
    );
    check(
        V3_1_1,
        &frame(0x32, b"\0\x03a/b\0\0"),
        E::PacketIdZero,
        PROTOCOL,
    );
    check(
        V5,
        &frame(0x34, b"\0\x03a/b\0\0\0"),
        E::PacketIdZero,
        PROTOCOL,
    );
    let wildcard = E::InvalidTopicName(TopicError::WildcardInName);
    check(V3_1_1, &frame(0x30, b"\0\x03a/+"), wildcard.clone(), 0x90);
    check(V5, &frame(0x30, b"\0\x03a/#\0"), wildcard, 0x90);
    let empty = E::InvalidTopicName(TopicError::EmptyName);
    check(V3_1_1, &frame(0x30, b"\0\0hello"), empty.clone(), 0x90);
    check(V3_1, &frame(0x30, b"\0\0"), empty.clone(), 0x90);
    check(V5, &frame(0x30, b"\0\0\0hello"), empty, 0x90);
    check(V3_1_1, &frame(0x30, b"\0\x05a/b"), E::Truncated, MALFORMED);
    check(V3_1_1, &frame(0x30, b"\0"), E::Truncated, MALFORMED);
}

#[test]
fn connect() {
    let mqtt = |level, flags, rest: &[u8]| frame(0x10, &connect_body(b"MQTT", level, flags, rest));
    let client = b"\0\x01c";
    check(
        V3_1_1,
        &mqtt(4, 0x03, client),
        E::ConnectReservedFlag,
        MALFORMED,
    );
    check(V3_1_1, &mqtt(4, 0x1E, client), E::InvalidQoS, MALFORMED);
    check(V5, &mqtt(5, 0x1E, client), E::InvalidQoS, MALFORMED);
    check(
        V3_1_1,
        &mqtt(4, 0x0A, client),
        E::WillFlagsWithoutWill,
        PROTOCOL,
    );
    check(
        V3_1_1,
        &mqtt(4, 0x22, client),
        E::WillFlagsWithoutWill,
        PROTOCOL,
    );
    check(
        V3_1_1,
        &mqtt(4, 0x42, b"\0\x01c\0\x01p"),
        E::PasswordWithoutUsername,
        PROTOCOL,
    );
    let v31 = frame(0x10, &connect_body(b"MQIsdp", 3, 0x42, b"\0\x01c\0\x01p"));
    check(V3_1, &v31, E::PasswordWithoutUsername, PROTOCOL);
    let unsupported = |level| E::UnsupportedProtocol { level };
    check(V3_1_1, &mqtt(6, 0x02, client), unsupported(6), 0x84);
    check(V3_1_1, &mqtt(3, 0x02, client), unsupported(3), 0x84);
    check(
        V5,
        &frame(0x10, &connect_body(b"MQIsdp", 4, 2, client)),
        unsupported(4),
        0x84,
    );
    check(
        V5,
        &frame(0x10, &connect_body(b"HTTP", 5, 2, client)),
        unsupported(5),
        0x84,
    );
    assert_eq!(unsupported(5).refusal_version(), Some(V5));
    assert_eq!(unsupported(6).refusal_version(), Some(V3_1_1));
    assert_eq!(E::Truncated.refusal_version(), None);
    // Will topic with a wildcard; truncated will payload; bytes after the password.
    let will = E::InvalidTopicName(TopicError::WildcardInName);
    check(V3_1_1, &mqtt(4, 0x06, b"\0\x01c\0\x01#\0\0"), will, 0x90);
    check(
        V3_1_1,
        &mqtt(4, 0x06, b"\0\x01c\0\x01t\0\x05ab"),
        E::Truncated,
        MALFORMED,
    );
    check(
        V3_1_1,
        &mqtt(4, 0x02, b"\0\x01cX"),
        E::TrailingBytes,
        MALFORMED,
    );
    check(V3_1_1, &frame(0x10, b"\0\x04MQ"), E::Truncated, MALFORMED);
    // 5.0 connect properties.
    let v5 = |properties: &[u8]| {
        mqtt(
            5,
            0x02,
            &[&[properties.len() as u8][..], properties, client].concat(),
        )
    };
    check(V5, &v5(&[0x21, 0, 0]), E::ReceiveMaximumZero, PROTOCOL);
    check(
        V5,
        &v5(&[0x27, 0, 0, 0, 0]),
        E::MaximumPacketSizeZero,
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x21, 0, 1, 0x21, 0, 2]),
        E::DuplicateProperty(0x21),
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x27, 0, 0, 1, 0, 0x27, 0, 0, 1, 0]),
        E::DuplicateProperty(0x27),
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
        E::DuplicateProperty(0x11),
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x17, 2]),
        E::InvalidBooleanProperty(0x17),
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x19, 7]),
        E::InvalidBooleanProperty(0x19),
        PROTOCOL,
    );
    check(
        V5,
        &v5(&[0x16, 0, 1, 9]),
        E::AuthDataWithoutMethod,
        PROTOCOL,
    );
    let not_allowed = |id| E::PropertyNotAllowed { id, packet_type: 1 };
    check(V5, &v5(&[0x23, 0, 1]), not_allowed(0x23), MALFORMED);
    check(V5, &v5(&[0x24, 1]), not_allowed(0x24), MALFORMED);
    check(V5, &v5(&[0x7F, 1]), E::UnknownProperty(0x7F), MALFORMED);
    check(V5, &v5(&[0x80, 1]), E::UnknownProperty(0x80), MALFORMED);
    // Will properties: Will Delay Interval is fine there, Topic Alias is not.
    let will_properties = |properties: &[u8]| {
        mqtt(
            5,
            0x06,
            &[
                &[0, 0, 1, b'c', properties.len() as u8][..],
                properties,
                b"\0\x01t\0\0",
            ]
            .concat(),
        )
    };
    check(
        V5,
        &will_properties(&[0x23, 0, 1]),
        not_allowed(0x23),
        MALFORMED,
    );
    check(
        V5,
        &will_properties(&[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1]),
        E::DuplicateProperty(0x18),
        PROTOCOL,
    );
}

#[test]
fn subscribe_and_unsubscribe() {
    check(V3_1_1, &frame(0x82, &[0, 1]), E::NoTopicFilters, PROTOCOL);
    check(V5, &frame(0x82, &[0, 1, 0]), E::NoTopicFilters, PROTOCOL);
    check(
        V3_1_1,
        &frame(0x82, b"\0\x01\0\x03a/b"),
        E::Truncated,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x82, b"\0\x01\0\x03a/"),
        E::Truncated,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x82, b"\0\x01\0\x01a\x04"),
        E::SubscriptionOptionsReserved,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x82, b"\0\x01\0\x01a\x81"),
        E::SubscriptionOptionsReserved,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x82, b"\0\x01\0\x01a\x03"),
        E::InvalidQoS,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x82, b"\0\x01\0\0\x01a\x40"),
        E::SubscriptionOptionsReserved,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x82, b"\0\x01\0\0\x01a\x80"),
        E::SubscriptionOptionsReserved,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x82, b"\0\x01\0\0\x01a\x03"),
        E::InvalidQoS,
        MALFORMED,
    );
    check(
        V5,
        &frame(0x82, b"\0\x01\0\0\x01a\x30"),
        E::RetainHandlingInvalid,
        PROTOCOL,
    );
    check(
        V5,
        &frame(0x82, b"\0\x01\0\0\x01a\x01\0\x01b\x31"),
        E::RetainHandlingInvalid,
        PROTOCOL,
    );
    check(
        V3_1_1,
        &frame(0x82, b"\0\0\0\x01a\x01"),
        E::PacketIdZero,
        PROTOCOL,
    );
    check(V3_1_1, &frame(0xA2, &[0, 1]), E::NoTopicFilters, PROTOCOL);
    check(V5, &frame(0xA2, &[0, 1, 0]), E::NoTopicFilters, PROTOCOL);
    check(
        V3_1_1,
        &frame(0xA2, b"\0\x01\0\x02a"),
        E::Truncated,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x90, &[0, 1, 3]),
        E::InvalidReturnCode(3),
        MALFORMED,
    );
}

#[test]
fn other_packets() {
    check(V3_1_1, &frame(0x40, &[0, 0]), E::PacketIdZero, PROTOCOL);
    check(V3_1_1, &frame(0x40, &[0]), E::Truncated, MALFORMED);
    check(
        V3_1_1,
        &frame(0x40, &[0, 1, 0]),
        E::TrailingBytes,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x62, &[0, 1, 0, 0]),
        E::TrailingBytes,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0xB0, &[0, 1, 0]),
        E::TrailingBytes,
        MALFORMED,
    );
    check(V3_1_1, &frame(0xC0, &[0]), E::TrailingBytes, MALFORMED);
    check(V5, &frame(0xD0, &[0]), E::TrailingBytes, MALFORMED);
    check(V3_1_1, &frame(0xE0, &[0]), E::TrailingBytes, MALFORMED);
    check(
        V3_1_1,
        &frame(0x20, &[2, 0]),
        E::ConnAckReservedFlags,
        MALFORMED,
    );
    check(
        V3_1_1,
        &frame(0x20, &[0, 6]),
        E::InvalidReturnCode(6),
        MALFORMED,
    );
    check(V3_1_1, &frame(0x20, &[0]), E::Truncated, MALFORMED);
    check(
        V3_1_1,
        &frame(0x20, &[0, 0, 0]),
        E::TrailingBytes,
        MALFORMED,
    );
}

#[test]
fn declared_size_over_the_limit_is_refused_from_the_header() {
    let too_large = |bytes: &[u8], max: usize, size: usize| {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode(&mut buf, V3_1_1, max),
            Err(E::PacketTooLarge { size, max }),
            "{bytes:02x?}"
        );
        assert_eq!(frame_len(bytes, max), Err(E::PacketTooLarge { size, max }));
        assert_eq!(
            E::PacketTooLarge { size, max }.reason_code(),
            ReasonCode::PACKET_TOO_LARGE
        );
    };
    too_large(&[0x30, 0x7F], 100, 129);
    too_large(&[0x30, 0xFF, 0x7F], 1000, 16_386);
    too_large(&[0x30, 0xFF, 0xFF, 0x7F], 100_000, 2_097_155);
    too_large(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 1 << 20, 268_435_460);
    // While the Remaining Length is still arriving: its smallest possible value is already too big.
    too_large(&[0x30, 0xFF], 100, 1 + 1 + 1 + 127 + 128);
    too_large(&[0x30, 0x80, 0x80], 10_000, 1 + 2 + 1 + (1 << 14));
    // At the limit exactly is fine.
    assert_eq!(frame_len(&[0x30, 0x7F], 129), Ok(Some(129)));
    assert_eq!(frame_len(&[0x30, 0xFF], 258), Ok(None));
}
