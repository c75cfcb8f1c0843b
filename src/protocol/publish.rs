//! PUBLISH (§3.3) and its acknowledgements PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7).
//!
//! PUBLISH: QoS 3 is malformed (MQTT-3.3.1-4); a QoS 1/2 PUBLISH has a non-zero packet identifier
//! (MQTT-2.3.1-1); the topic name has no wildcards (MQTT-3.3.2-2) and is non-empty, except in 5.0
//! where an empty topic comes with a Topic Alias (§3.3.2.3.4). Decode is the hot path: the topic and
//! payload are slices of the frame, and a PUBLISH without properties allocates nothing.
//!
//! Whether a client may send a Subscription Identifier (it may not: MQTT-3.3.4-6), or a Topic Alias
//! above the negotiated maximum, is for the session to judge: this codec also reads what servers send.
//!
//! The acknowledgements: in 5.0 a remaining length of 2 means Success without properties, and a
//! reason code without a property length means no properties (§3.4.2.1). Encode uses those short
//! forms when it can.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::{PubResponse, Publish};
use super::properties::{AckProperties, PublishProperties, PublishProps};
use super::property::Properties;
use super::property_sets;
use super::topic::{TopicError, validate_topic_name};
use super::types::{PacketId, QoS, ReasonCode, Version};
use super::wire::{Reader, checked_string, field_len, packet_type, put_field};

/// A PUBLISH made of borrowed parts, so the broker's fan-out writes one per subscriber without
/// building a [`Publish`].
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    pub packet_id: Option<PacketId>,
    pub properties: &'a PublishProperties,
    pub payload: &'a [u8],
}

impl Publish {
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: &self.properties,
            payload: &self.payload,
        }
    }
}

/// Reads a PUBLISH body; `flags` is the low nibble of the fixed header.
pub fn decode_publish(
    reader: &mut Reader,
    flags: u8,
    version: Version,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let topic = checked_string(reader.binary()?)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else if reader.remaining() < 2 {
        return Err(DecodeError::MissingPacketId);
    } else {
        Some(reader.packet_id()?)
    };
    let properties = if version.is_v5() {
        decode_publish_properties(reader)?
    } else {
        PublishProps::none()
    };
    match validate_topic_name(&topic) {
        Ok(()) => {}
        Err(TopicError::EmptyName) if properties.topic_alias.is_some() => {}
        Err(error) => return Err(DecodeError::InvalidTopicName(error)),
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: reader.rest(),
    })
}

/// A PUBLISH's 5.0 properties: a property length of 0 (the usual case) is read without building
/// a property set.
fn decode_publish_properties(reader: &mut Reader) -> Result<PublishProps, DecodeError> {
    if reader.peek_u8() == Some(0) {
        reader.u8()?;
        return Ok(PublishProps::none());
    }
    let properties: PublishProperties = property_sets::decode(reader, packet_type::PUBLISH)?;
    Ok(properties.into())
}

/// The first byte of a PUBLISH fixed header.
pub fn publish_first_byte(publish: &PublishRef<'_>) -> u8 {
    (packet_type::PUBLISH << 4)
        | (u8::from(publish.dup) << 3)
        | (publish.qos.as_u8() << 1)
        | u8::from(publish.retain)
}

/// The remaining length of a PUBLISH, after checking it can be written.
pub fn publish_len(publish: &PublishRef<'_>, version: Version) -> Result<usize, EncodeError> {
    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => return Err(EncodeError::MissingPacketId),
        _ => {}
    }
    let mut len = field_len(publish.topic.as_bytes())? + publish.payload.len();
    if publish.packet_id.is_some() {
        len += 2;
    }
    if version.is_v5() {
        len += if publish.properties.is_empty() {
            1
        } else {
            publish.properties.wire_len()?
        };
    }
    Ok(len)
}

pub fn put_publish(
    publish: &PublishRef<'_>,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_field(buf, publish.topic.as_bytes());
    if let Some(packet_id) = publish.packet_id {
        buf.put_u16(packet_id.get());
    }
    if version.is_v5() {
        if publish.properties.is_empty() {
            buf.put_u8(0);
        } else {
            publish.properties.put(buf)?;
        }
    }
    buf.put_slice(publish.payload);
    Ok(())
}

/// Reads PUBACK, PUBREC, PUBREL or PUBCOMP (the caller knows which from the packet type).
pub fn decode_pub_response(
    reader: &mut Reader,
    packet_type: u8,
    version: Version,
) -> Result<PubResponse, DecodeError> {
    let packet_id = reader.packet_id()?;
    let (reason, properties) = decode_reason_and_properties(reader, packet_type, version)?;
    reader.finish()?;
    Ok(PubResponse {
        packet_id,
        reason,
        properties,
    })
}

/// The optional 5.0 reason code and properties after a packet identifier: absent means Success and
/// no properties. Before 5.0 nothing follows.
pub fn decode_reason_and_properties(
    reader: &mut Reader,
    packet_type: u8,
    version: Version,
) -> Result<(ReasonCode, AckProperties), DecodeError> {
    if !version.is_v5() || reader.is_empty() {
        return Ok((ReasonCode::SUCCESS, AckProperties::default()));
    }
    let reason = ReasonCode(reader.u8()?);
    if reader.is_empty() {
        return Ok((reason, AckProperties::default()));
    }
    Ok((reason, property_sets::decode(reader, packet_type)?))
}

pub fn pub_response_len(response: &PubResponse, version: Version) -> Result<usize, EncodeError> {
    if !version.is_v5() {
        return Ok(2);
    }
    let properties = &response.properties;
    if properties.reason_string.is_none() && properties.user_properties.is_empty() {
        return Ok(if response.reason == ReasonCode::SUCCESS {
            2
        } else {
            3
        });
    }
    Ok(3 + properties.wire_len()?)
}

pub fn put_pub_response(
    response: &PubResponse,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(response.packet_id.get());
    match pub_response_len(response, version)? {
        2 => {}
        3 => buf.put_u8(response.reason.0),
        _ => {
            buf.put_u8(response.reason.0);
            response.properties.put(buf)?;
        }
    }
    Ok(())
}
