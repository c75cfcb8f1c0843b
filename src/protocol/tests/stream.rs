//! Frames arriving in pieces and frames arriving together.

use super::*;

/// All spec vectors of `version`, concatenated, with the packets they decode to.
fn stream(version: Version) -> (Vec<u8>, Vec<Packet>) {
    let mut bytes = Vec::new();
    let mut packets = Vec::new();
    for (vector_version, frame, packet) in super::vectors::all() {
        if vector_version == version {
            bytes.extend_from_slice(&frame);
            packets.push(packet);
        }
    }
    (bytes, packets)
}

#[test]
fn one_byte_at_a_time() {
    for version in [Version::V3_1, Version::V3_1_1, Version::V5] {
        let (bytes, expected) = stream(version);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &byte in &bytes {
            buf.extend_from_slice(&[byte]);
            loop {
                let before = buf.clone();
                match decode(&mut buf, version, usize::MAX).unwrap() {
                    Some(packet) => decoded.push(packet),
                    None => {
                        assert_eq!(buf, before, "Ok(None) must leave the buffer untouched");
                        break;
                    }
                }
            }
        }
        assert!(buf.is_empty());
        assert_eq!(decoded, expected, "{version:?}");
    }
}

#[test]
fn several_frames_in_one_buffer() {
    for version in [Version::V3_1, Version::V3_1_1, Version::V5] {
        let (bytes, expected) = stream(version);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoded = Vec::new();
        while let Some(packet) = decode(&mut buf, version, usize::MAX).unwrap() {
            decoded.push(packet);
        }
        assert!(buf.is_empty());
        assert_eq!(decoded, expected, "{version:?}");
    }
}

#[test]
fn remaining_length_larger_than_the_bytes_sent() {
    let frame = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = BytesMut::from(&frame[..5]);
    assert_eq!(decode(&mut buf, Version::V3_1_1, 1024), Ok(None));
    assert_eq!(&buf[..], &frame[..5]);
    assert_eq!(frame_len(&buf, 1024), Ok(Some(9)));
    assert_eq!(frame_len(&[0x30], 1024), Ok(None));
    assert_eq!(frame_len(&[], 1024), Ok(None));
    buf.extend_from_slice(&frame[5..]);
    buf.extend_from_slice(&[0xC0]);
    let packet = decode(&mut buf, Version::V3_1_1, 1024).unwrap().unwrap();
    assert!(matches!(packet, Packet::Publish(ref publish) if &publish.payload[..] == b"hi"));
    assert_eq!(&buf[..], &[0xC0], "the next frame's first byte stays");
    assert_eq!(decode(&mut buf, Version::V3_1_1, 1024), Ok(None));
}

#[test]
fn decoded_publish_is_a_slice_of_the_read_buffer() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'][..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(publish)) = decode(&mut buf, Version::V3_1_1, 1024).unwrap() else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(publish.topic.as_ptr() as usize, start + 4);
    assert_eq!(publish.payload.as_ptr() as usize, start + 7);
}

#[test]
fn encode_refuses_a_packet_over_the_peer_maximum() {
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: Some(pid(1)),
        properties: Default::default(),
        payload: b(&[7; 100]),
    };
    let mut buf = BytesMut::from(&b"kept"[..]);
    let size = 1 + 1 + 5 + 2 + 100;
    let packet = Packet::Publish(publish.clone());
    assert_eq!(
        encode(&packet, Version::V3_1_1, &mut buf, size - 1),
        Err(EncodeError::PacketTooLarge {
            size,
            max: size - 1
        })
    );
    assert_eq!(&buf[..], b"kept");
    assert_eq!(encode(&packet, Version::V3_1_1, &mut buf, size), Ok(size));
    assert_eq!(
        encode_publish(&publish.as_ref(), Version::V3_1_1, &mut buf, size),
        Ok(size)
    );
    assert_eq!(&buf[4..4 + size], &buf[4 + size..]);
}

#[test]
fn encode_refuses_what_the_wire_cannot_carry() {
    let publish = |qos, packet_id: Option<u16>| Publish {
        dup: false,
        qos,
        retain: false,
        topic: s("t"),
        packet_id: packet_id.map(pid),
        properties: Default::default(),
        payload: Bytes::new(),
    };
    let check = |packet: Packet, version, expected: EncodeError| {
        let mut buf = BytesMut::new();
        assert_eq!(
            encode(&packet, version, &mut buf, usize::MAX),
            Err(expected)
        );
        assert!(buf.is_empty());
    };
    check(
        Packet::Publish(publish(QoS::AtLeastOnce, None)),
        Version::V5,
        EncodeError::MissingPacketId,
    );
    check(
        Packet::Publish(publish(QoS::AtMostOnce, Some(1))),
        Version::V5,
        EncodeError::UnexpectedPacketId,
    );
    let mut long = publish(QoS::AtMostOnce, None);
    long.topic = ByteString::from("x".repeat(65_536));
    check(
        Packet::Publish(long),
        Version::V3_1_1,
        EncodeError::FieldTooLong(65_536),
    );
    check(
        Packet::Auth(Box::default()),
        Version::V3_1_1,
        EncodeError::UnsupportedInVersion(Version::V3_1_1),
    );
    let empty = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![],
    };
    check(
        Packet::Subscribe(empty),
        Version::V5,
        EncodeError::NoTopicFilters,
    );
    let mut sub_id = publish(QoS::AtMostOnce, None);
    sub_id.properties.make_mut().subscription_identifiers = vec![VAR_INT_MAX + 1];
    check(
        Packet::Publish(sub_id),
        Version::V5,
        EncodeError::VarIntTooLarge(VAR_INT_MAX + 1),
    );
    let mut huge = publish(QoS::AtMostOnce, None);
    huge.payload = Bytes::from(vec![0; VAR_INT_MAX as usize]);
    check(
        Packet::Publish(huge),
        Version::V3_1_1,
        EncodeError::RemainingLengthTooLarge(VAR_INT_MAX as usize + 3),
    );
}
