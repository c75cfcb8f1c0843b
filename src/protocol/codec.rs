//! Frames (§2.1): the fixed header, and the one dispatch from packet type to packet codec.
//!
//! Fixed header: packet type in the high nibble (0 is reserved, 15 is AUTH and exists only in 5.0),
//! flags in the low nibble: PUBLISH carries DUP/QoS/RETAIN, PUBREL, SUBSCRIBE and UNSUBSCRIBE must
//! be `0010` (MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1), every other type `0000` (MQTT-2.2.2-2).
//! 3.1 clients may set DUP on a resent PUBREL, SUBSCRIBE or UNSUBSCRIBE (`1010`), which 3.1 allowed.
//! Remaining Length is a Variable Byte Integer of at most 4 bytes (§2.1.4). A frame declared larger
//! than `packet_bytes_max` is refused as soon as the fixed header is read, before its body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::connect::{
    connack_len, connect_len, decode_connack, decode_connect, put_connack, put_connect,
};
use super::control::{
    auth_len, decode_auth, decode_disconnect, disconnect_len, put_auth, put_disconnect,
};
use super::error::{DecodeError, EncodeError};
use super::packet::Packet;
use super::publish::{
    PublishRef, decode_pub_response, decode_publish, pub_response_len, publish_first_byte,
    publish_len, put_pub_response, put_publish,
};
use super::subscribe::{
    decode_suback, decode_subscribe, decode_unsuback, decode_unsubscribe, put_suback,
    put_subscribe, put_unsuback, put_unsubscribe, suback_len, subscribe_len, unsuback_len,
    unsubscribe_len,
};
use super::types::Version;
use super::wire::{Reader, VAR_INT_MAX, packet_type as t, put_var_int, read_var_int, var_int_len};

/// The total length of the frame at the start of `buf` (fixed header + remaining length), once the
/// fixed header is complete; `Ok(None)` before. Refuses a frame over `packet_bytes_max`, and while
/// the Remaining Length is still arriving refuses one whose smallest possible size is already over.
pub fn frame_len(buf: &[u8], packet_bytes_max: usize) -> Result<Option<usize>, DecodeError> {
    Ok(frame_header(buf, packet_bytes_max)?.map(|(_, size)| size))
}

/// [`frame_len`], with the length of the fixed header first.
fn frame_header(
    buf: &[u8],
    packet_bytes_max: usize,
) -> Result<Option<(usize, usize)>, DecodeError> {
    let Some((&first, length_bytes)) = buf.split_first() else {
        return Ok(None);
    };
    if first >> 4 == 0 {
        return Err(DecodeError::InvalidPacketType(0));
    }
    match read_var_int(length_bytes)? {
        Some((remaining, len)) => {
            let size = 1 + len + remaining as usize;
            if size > packet_bytes_max {
                return Err(DecodeError::PacketTooLarge {
                    size,
                    max: packet_bytes_max,
                });
            }
            Ok(Some((1 + len, size)))
        }
        None => {
            // Every byte so far has its continuation bit set, so at least one more byte with a
            // value of 1 or more follows (a 0 would be a non-minimal encoding).
            let mut lower_bound: usize = 0;
            for (index, &byte) in length_bytes.iter().enumerate() {
                lower_bound += usize::from(byte & 0x7F) << (7 * index);
            }
            lower_bound += 1 << (7 * length_bytes.len());
            let size = 1 + length_bytes.len() + 1 + lower_bound;
            if size > packet_bytes_max {
                return Err(DecodeError::PacketTooLarge {
                    size,
                    max: packet_bytes_max,
                });
            }
            Ok(None)
        }
    }
}

/// If `buf` starts with a whole frame, splits it off (zero-copy: strings and payload become slices
/// of it) and reads it; `Ok(None)` and `buf` untouched while the frame is incomplete. `version` is
/// how packets other than CONNECT are read; CONNECT names its own version.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    packet_bytes_max: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((header_len, size)) = frame_header(buf, packet_bytes_max)? else {
        return Ok(None);
    };
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size);
    frame.advance(header_len);
    decode_body(first, frame.freeze(), version).map(Some)
}

/// Reads the body of one frame whose first byte was `first`.
pub fn decode_body(first: u8, body: Bytes, version: Version) -> Result<Packet, DecodeError> {
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_flags(packet_type, flags, version)?;
    let mut reader = Reader::new(body);
    let reader = &mut reader;
    let packet = match packet_type {
        t::CONNECT => Packet::Connect(Box::new(decode_connect(reader)?)),
        t::CONNACK => Packet::ConnAck(Box::new(decode_connack(reader, version)?)),
        t::PUBLISH => Packet::Publish(decode_publish(reader, flags, version)?),
        t::PUBACK => Packet::PubAck(decode_pub_response(reader, packet_type, version)?),
        t::PUBREC => Packet::PubRec(decode_pub_response(reader, packet_type, version)?),
        t::PUBREL => Packet::PubRel(decode_pub_response(reader, packet_type, version)?),
        t::PUBCOMP => Packet::PubComp(decode_pub_response(reader, packet_type, version)?),
        t::SUBSCRIBE => Packet::Subscribe(decode_subscribe(reader, version)?),
        t::SUBACK => Packet::SubAck(decode_suback(reader, version)?),
        t::UNSUBSCRIBE => Packet::Unsubscribe(decode_unsubscribe(reader, version)?),
        t::UNSUBACK => Packet::UnsubAck(decode_unsuback(reader, version)?),
        t::PINGREQ => {
            reader.finish()?;
            Packet::PingReq
        }
        t::PINGRESP => {
            reader.finish()?;
            Packet::PingResp
        }
        t::DISCONNECT => Packet::Disconnect(decode_disconnect(reader, version)?),
        t::AUTH => Packet::Auth(Box::new(decode_auth(reader)?)),
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    Ok(packet)
}

fn check_flags(packet_type: u8, flags: u8, version: Version) -> Result<(), DecodeError> {
    let valid = match packet_type {
        0 => return Err(DecodeError::InvalidPacketType(0)),
        t::AUTH if !version.is_v5() => return Err(DecodeError::InvalidPacketType(t::AUTH)),
        t::PUBLISH => true,
        t::PUBREL | t::SUBSCRIBE | t::UNSUBSCRIBE => {
            flags == 0b0010 || (version == Version::V3_1 && flags == 0b1010)
        }
        _ => flags == 0,
    };
    if valid {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { packet_type, flags })
    }
}

/// Appends `packet` in `version`'s wire format (CONNECT in its own `version` field) and returns the
/// bytes written. Writes nothing and fails when the packet would exceed `packet_bytes_max`.
pub fn encode(
    packet: &Packet,
    version: Version,
    buf: &mut BytesMut,
    packet_bytes_max: usize,
) -> Result<usize, EncodeError> {
    let (first, body_len) = match packet {
        Packet::Publish(publish) => {
            return encode_publish(&publish.as_ref(), version, buf, packet_bytes_max);
        }
        Packet::Connect(connect) => (t::CONNECT << 4, connect_len(connect)?),
        Packet::ConnAck(connack) => (t::CONNACK << 4, connack_len(connack, version)?),
        Packet::PubAck(response) => (t::PUBACK << 4, pub_response_len(response, version)?),
        Packet::PubRec(response) => (t::PUBREC << 4, pub_response_len(response, version)?),
        Packet::PubRel(response) => (
            t::PUBREL << 4 | 0b0010,
            pub_response_len(response, version)?,
        ),
        Packet::PubComp(response) => (t::PUBCOMP << 4, pub_response_len(response, version)?),
        Packet::Subscribe(subscribe) => (
            t::SUBSCRIBE << 4 | 0b0010,
            subscribe_len(subscribe, version)?,
        ),
        Packet::SubAck(suback) => (t::SUBACK << 4, suback_len(suback, version)?),
        Packet::Unsubscribe(unsubscribe) => (
            t::UNSUBSCRIBE << 4 | 0b0010,
            unsubscribe_len(unsubscribe, version)?,
        ),
        Packet::UnsubAck(unsuback) => (t::UNSUBACK << 4, unsuback_len(unsuback, version)?),
        Packet::PingReq => (t::PINGREQ << 4, 0),
        Packet::PingResp => (t::PINGRESP << 4, 0),
        Packet::Disconnect(disconnect) => {
            (t::DISCONNECT << 4, disconnect_len(disconnect, version)?)
        }
        Packet::Auth(auth) => (t::AUTH << 4, auth_len(auth, version)?),
    };
    write_frame(first, body_len, buf, packet_bytes_max, |buf| match packet {
        Packet::Connect(connect) => put_connect(connect, buf),
        Packet::ConnAck(connack) => put_connack(connack, version, buf),
        Packet::PubAck(response)
        | Packet::PubRec(response)
        | Packet::PubRel(response)
        | Packet::PubComp(response) => put_pub_response(response, version, buf),
        Packet::Subscribe(subscribe) => put_subscribe(subscribe, version, buf),
        Packet::SubAck(suback) => put_suback(suback, version, buf),
        Packet::Unsubscribe(unsubscribe) => put_unsubscribe(unsubscribe, version, buf),
        Packet::UnsubAck(unsuback) => put_unsuback(unsuback, version, buf),
        Packet::Disconnect(disconnect) => put_disconnect(disconnect, version, buf),
        Packet::Auth(auth) => put_auth(auth, buf),
        Packet::Publish(_) | Packet::PingReq | Packet::PingResp => Ok(()),
    })
}

/// Writes a PUBLISH from borrowed parts: the broker's fan-out path, one call per subscriber.
pub fn encode_publish(
    publish: &PublishRef<'_>,
    version: Version,
    buf: &mut BytesMut,
    packet_bytes_max: usize,
) -> Result<usize, EncodeError> {
    let body_len = publish_len(publish, version)?;
    write_frame(
        publish_first_byte(publish),
        body_len,
        buf,
        packet_bytes_max,
        |buf| put_publish(publish, version, buf),
    )
}

/// Checks the frame size, then writes the fixed header and the body. On any failure `buf` is left
/// as it was.
fn write_frame(
    first: u8,
    body_len: usize,
    buf: &mut BytesMut,
    packet_bytes_max: usize,
    put_body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    if body_len > VAR_INT_MAX as usize {
        return Err(EncodeError::RemainingLengthTooLarge(body_len));
    }
    let size = 1 + var_int_len(body_len) + body_len;
    if size > packet_bytes_max {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: packet_bytes_max,
        });
    }
    let start = buf.len();
    buf.reserve(size);
    buf.put_u8(first);
    put_var_int(buf, body_len);
    if let Err(error) = put_body(buf) {
        buf.truncate(start);
        return Err(error);
    }
    // The size pass and the write pass must agree; a mismatch is our bug, not the peer's.
    assert_eq!(
        buf.len() - start,
        size,
        "encoded size differs from the computed size"
    );
    Ok(size)
}
