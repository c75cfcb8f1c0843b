//! CONNECT (§3.1) and CONNACK (§3.2).
//!
//! CONNECT names its own protocol: `MQIsdp` level 3 is 3.1, `MQTT` level 4 is 3.1.1, `MQTT` level 5
//! is 5.0; anything else is [`DecodeError::UnsupportedProtocol`] (the broker answers CONNACK 0x01, or
//! 0x84 to a level-5 client, and closes: MQTT-3.1.2-2). Connect flags (§3.1.2.3): bit 0 is reserved
//! and must be 0 (MQTT-3.1.2-3); Will QoS and Will Retain must be 0 without the Will flag
//! (MQTT-3.1.2-11, MQTT-3.1.2-15); Will QoS 3 is malformed (MQTT-3.1.2-12); before 5.0 a password
//! needs a user name (MQTT-3.1.2-22). The Will topic must be a valid topic name.
//!
//! CONNACK carries 5.0 reason codes in the model; 3.1/3.1.1 return codes map as documented on
//! [`ConnAck`].

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::{ConnAck, Connect, Will};
use super::property::Properties;
use super::property_sets;
use super::topic::validate_topic_name;
use super::types::{QoS, ReasonCode, Version};
use super::wire::{Reader, field_len, packet_type, put_field};

const FLAG_RESERVED: u8 = 0b0000_0001;
const FLAG_CLEAN_START: u8 = 0b0000_0010;
const FLAG_WILL: u8 = 0b0000_0100;
const FLAG_WILL_QOS_SHIFT: u8 = 3;
const FLAG_WILL_RETAIN: u8 = 0b0010_0000;
const FLAG_PASSWORD: u8 = 0b0100_0000;
const FLAG_USERNAME: u8 = 0b1000_0000;

/// Reads the protocol name and level and returns the version they name.
fn read_version(reader: &mut Reader) -> Result<Version, DecodeError> {
    let name = reader.binary()?;
    let level = reader.u8()?;
    match (&name[..], level) {
        (b"MQIsdp", 3) => Ok(Version::V3_1),
        (b"MQTT", 4) => Ok(Version::V3_1_1),
        (b"MQTT", 5) => Ok(Version::V5),
        _ => Err(DecodeError::UnsupportedProtocol { level }),
    }
}

pub fn decode_connect(reader: &mut Reader) -> Result<Connect, DecodeError> {
    let version = read_version(reader)?;
    let flags = reader.u8()?;
    if flags & FLAG_RESERVED != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & FLAG_WILL != 0;
    let will_qos =
        QoS::from_u8((flags >> FLAG_WILL_QOS_SHIFT) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let will_retain = flags & FLAG_WILL_RETAIN != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let has_username = flags & FLAG_USERNAME != 0;
    let has_password = flags & FLAG_PASSWORD != 0;
    if has_password && !has_username && !version.is_v5() {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive_secs = reader.u16()?;
    let properties = if version.is_v5() {
        let properties: super::properties::ConnectProperties =
            property_sets::decode(reader, packet_type::CONNECT)?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        properties
    } else {
        Default::default()
    };
    let client_id = reader.string()?;
    let will = if will_flag {
        let properties = if version.is_v5() {
            property_sets::decode(reader, packet_type::CONNECT)?
        } else {
            Default::default()
        };
        let topic = reader.string()?;
        validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        let payload = reader.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(reader.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(reader.binary()?)
    } else {
        None
    };
    reader.finish()?;
    Ok(Connect {
        version,
        clean_start: flags & FLAG_CLEAN_START != 0,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// The body length of a CONNECT. The version written is `connect.version`.
pub fn connect_len(connect: &Connect) -> Result<usize, EncodeError> {
    let version = connect.version;
    let mut len = field_len(version.protocol_name().as_bytes())? + 1 + 1 + 2;
    if version.is_v5() {
        len += connect.properties.wire_len()?;
    }
    len += field_len(connect.client_id.as_bytes())?;
    if let Some(will) = &connect.will {
        if version.is_v5() {
            len += will.properties.wire_len()?;
        }
        len += field_len(will.topic.as_bytes())? + field_len(&will.payload)?;
    }
    if let Some(username) = &connect.username {
        len += field_len(username.as_bytes())?;
    }
    if let Some(password) = &connect.password {
        len += field_len(password)?;
    }
    Ok(len)
}

pub fn put_connect(connect: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let version = connect.version;
    put_field(buf, version.protocol_name().as_bytes());
    buf.put_u8(version.level());
    let mut flags = 0;
    if connect.clean_start {
        flags |= FLAG_CLEAN_START;
    }
    if let Some(will) = &connect.will {
        flags |= FLAG_WILL | (will.qos.as_u8() << FLAG_WILL_QOS_SHIFT);
        if will.retain {
            flags |= FLAG_WILL_RETAIN;
        }
    }
    if connect.username.is_some() {
        flags |= FLAG_USERNAME;
    }
    if connect.password.is_some() {
        flags |= FLAG_PASSWORD;
    }
    buf.put_u8(flags);
    buf.put_u16(connect.keep_alive_secs);
    if version.is_v5() {
        connect.properties.put(buf)?;
    }
    put_field(buf, connect.client_id.as_bytes());
    if let Some(will) = &connect.will {
        if version.is_v5() {
            will.properties.put(buf)?;
        }
        put_field(buf, will.topic.as_bytes());
        put_field(buf, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_field(buf, username.as_bytes());
    }
    if let Some(password) = &connect.password {
        put_field(buf, password);
    }
    Ok(())
}

/// 3.1/3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) to the 5.0 reason code of the model.
fn return_code_to_reason(code: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match code {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        other => return Err(DecodeError::InvalidReturnCode(other)),
    })
}

/// The 5.0 reason code of the model to a 3.1/3.1.1 return code; any other failure is 3 (Server
/// unavailable), the one refusal every 3.x client understands.
fn reason_to_return_code(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::SERVER_UNAVAILABLE | ReasonCode::SERVER_BUSY => 3,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED => 5,
        other if other.is_error() => 3,
        _ => 0,
    }
}

pub fn decode_connack(reader: &mut Reader, version: Version) -> Result<ConnAck, DecodeError> {
    let flags = reader.u8()?;
    if flags & !1 != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = reader.u8()?;
    let (reason, properties) = if version.is_v5() {
        let properties = if reader.is_empty() {
            Default::default()
        } else {
            property_sets::decode(reader, packet_type::CONNACK)?
        };
        (ReasonCode(code), properties)
    } else {
        (return_code_to_reason(code)?, Default::default())
    };
    reader.finish()?;
    Ok(ConnAck {
        // 3.1 reserves the whole byte: a bit set there says nothing.
        session_present: flags & 1 != 0 && version != Version::V3_1,
        reason,
        properties,
    })
}

pub fn connack_len(connack: &ConnAck, version: Version) -> Result<usize, EncodeError> {
    Ok(2 + if version.is_v5() {
        connack.properties.wire_len()?
    } else {
        0
    })
}

pub fn put_connack(
    connack: &ConnAck,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    // MQTT 3.1 has no Session Present flag: the whole byte is reserved (3.1 §3.2).
    buf.put_u8(u8::from(
        connack.session_present && version != Version::V3_1,
    ));
    if version.is_v5() {
        buf.put_u8(connack.reason.0);
        connack.properties.put(buf)?;
    } else {
        buf.put_u8(reason_to_return_code(connack.reason));
    }
    Ok(())
}
