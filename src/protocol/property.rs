//! One MQTT 5.0 property on the wire (§2.2.2.2): its identifier fixes its type. Which packets allow
//! it and whether it may repeat is decided per packet in `property_sets.rs`.
//!
//! | id   | property                          | type    | packets                        |
//! |------|-----------------------------------|---------|--------------------------------|
//! | 0x01 | Payload Format Indicator          | byte    | PUBLISH, Will                  |
//! | 0x02 | Message Expiry Interval           | u32     | PUBLISH, Will                  |
//! | 0x03 | Content Type                      | string  | PUBLISH, Will                  |
//! | 0x08 | Response Topic                    | string  | PUBLISH, Will                  |
//! | 0x09 | Correlation Data                  | binary  | PUBLISH, Will                  |
//! | 0x0B | Subscription Identifier           | varint  | PUBLISH (repeats), SUBSCRIBE   |
//! | 0x11 | Session Expiry Interval           | u32     | CONNECT, CONNACK, DISCONNECT   |
//! | 0x12 | Assigned Client Identifier        | string  | CONNACK                        |
//! | 0x13 | Server Keep Alive                 | u16     | CONNACK                        |
//! | 0x15 | Authentication Method             | string  | CONNECT, CONNACK, AUTH         |
//! | 0x16 | Authentication Data               | binary  | CONNECT, CONNACK, AUTH         |
//! | 0x17 | Request Problem Information       | byte    | CONNECT                        |
//! | 0x18 | Will Delay Interval               | u32     | Will                           |
//! | 0x19 | Request Response Information      | byte    | CONNECT                        |
//! | 0x1A | Response Information              | string  | CONNACK                        |
//! | 0x1C | Server Reference                  | string  | CONNACK, DISCONNECT            |
//! | 0x1F | Reason String                     | string  | every ack, DISCONNECT, AUTH    |
//! | 0x21 | Receive Maximum                   | u16     | CONNECT, CONNACK               |
//! | 0x22 | Topic Alias Maximum               | u16     | CONNECT, CONNACK               |
//! | 0x23 | Topic Alias                       | u16     | PUBLISH                        |
//! | 0x24 | Maximum QoS                       | byte    | CONNACK                        |
//! | 0x25 | Retain Available                  | byte    | CONNACK                        |
//! | 0x26 | User Property                     | pair    | every packet with properties   |
//! | 0x27 | Maximum Packet Size               | u32     | CONNECT, CONNACK               |
//! | 0x28 | Wildcard Subscription Available   | byte    | CONNACK                        |
//! | 0x29 | Subscription Identifier Available | byte    | CONNACK                        |
//! | 0x2A | Shared Subscription Available     | byte    | CONNACK                        |
//!
//! Values the spec forbids whatever the packet (0 for Receive Maximum, Maximum Packet Size, Topic
//! Alias and Subscription Identifier; anything but 0/1 in a byte flag) are refused here.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::wire::{Reader, VAR_INT_MAX, field_len, put_field, put_var_int, var_int_len};

pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTHENTICATION_METHOD: u8 = 0x15;
pub const AUTHENTICATION_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub const RESPONSE_INFORMATION: u8 = 0x1A;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A decoded property value; the identifier travels beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A byte property; flags are already checked to be 0 or 1.
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    String(ByteString),
    Binary(Bytes),
    Pair(ByteString, ByteString),
}

/// Reads one property: its identifier and its value, with the value rules that hold in every packet.
pub fn read(reader: &mut Reader) -> Result<(u8, Value), DecodeError> {
    let id = reader.u8()?;
    let value = match id {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => match reader.u8()? {
            flag @ (0 | 1) => Value::Byte(flag),
            _ => return Err(DecodeError::InvalidBooleanProperty(id)),
        },
        SERVER_KEEP_ALIVE | TOPIC_ALIAS_MAXIMUM => Value::U16(reader.u16()?),
        RECEIVE_MAXIMUM => match reader.u16()? {
            0 => return Err(DecodeError::ReceiveMaximumZero),
            value => Value::U16(value),
        },
        TOPIC_ALIAS => match reader.u16()? {
            0 => return Err(DecodeError::TopicAliasZero),
            value => Value::U16(value),
        },
        MESSAGE_EXPIRY_INTERVAL | SESSION_EXPIRY_INTERVAL | WILL_DELAY_INTERVAL => {
            Value::U32(reader.u32()?)
        }
        MAXIMUM_PACKET_SIZE => match reader.u32()? {
            0 => return Err(DecodeError::MaximumPacketSizeZero),
            value => Value::U32(value),
        },
        SUBSCRIPTION_IDENTIFIER => match reader.var_int()? {
            0 => return Err(DecodeError::SubscriptionIdentifierZero),
            value => Value::VarInt(value),
        },
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::String(reader.string()?),
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Binary(reader.binary()?),
        USER_PROPERTY => Value::Pair(reader.string()?, reader.string()?),
        _ => return Err(DecodeError::UnknownProperty(id)),
    };
    Ok((id, value))
}

/// Reads the property length and hands each property in it to `set`. A property running past the
/// declared length, or the length running past the packet, is [`DecodeError::PropertyLengthOverrun`].
pub fn read_all(
    reader: &mut Reader,
    mut set: impl FnMut(u8, Value) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = reader.var_int()? as usize;
    if len == 0 {
        return Ok(());
    }
    let bytes = reader
        .take(len)
        .map_err(|_| DecodeError::PropertyLengthOverrun)?;
    let mut properties = Reader::new(bytes);
    while !properties.is_empty() {
        let (id, value) = read(&mut properties).map_err(|error| match error {
            DecodeError::Truncated => DecodeError::PropertyLengthOverrun,
            other => other,
        })?;
        set(id, value)?;
    }
    Ok(())
}

/// Stores a property that may appear only once.
pub fn set_once<T>(slot: &mut Option<T>, id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// A property to write, borrowed from a property struct.
#[derive(Debug, Clone, Copy)]
pub enum Out<'a> {
    Byte(u8, u8),
    U16(u8, u16),
    U32(u8, u32),
    VarInt(u8, u32),
    Bytes(u8, &'a [u8]),
    Pair(&'a str, &'a str),
}

impl Out<'_> {
    /// Bytes on the wire, identifier included.
    pub fn len(self) -> Result<usize, EncodeError> {
        Ok(1 + match self {
            Out::Byte(..) => 1,
            Out::U16(..) => 2,
            Out::U32(..) => 4,
            Out::VarInt(_, value) if value > VAR_INT_MAX => {
                return Err(EncodeError::VarIntTooLarge(value));
            }
            Out::VarInt(_, value) => var_int_len(value as usize),
            Out::Bytes(_, data) => field_len(data)?,
            Out::Pair(key, value) => field_len(key.as_bytes())? + field_len(value.as_bytes())?,
        })
    }

    /// Writes the property; [`Out::len`] has checked it.
    pub fn put(self, buf: &mut BytesMut) {
        match self {
            Out::Byte(id, value) => {
                buf.put_u8(id);
                buf.put_u8(value);
            }
            Out::U16(id, value) => {
                buf.put_u8(id);
                buf.put_u16(value);
            }
            Out::U32(id, value) => {
                buf.put_u8(id);
                buf.put_u32(value);
            }
            Out::VarInt(id, value) => {
                buf.put_u8(id);
                put_var_int(buf, value as usize);
            }
            Out::Bytes(id, data) => {
                buf.put_u8(id);
                put_field(buf, data);
            }
            Out::Pair(key, value) => {
                buf.put_u8(USER_PROPERTY);
                put_field(buf, key.as_bytes());
                put_field(buf, value.as_bytes());
            }
        }
    }
}

/// A property struct that can list its properties for writing.
pub trait Properties {
    /// Calls `out` for each property that is set, in identifier order.
    fn each(&self, out: &mut dyn FnMut(Out<'_>));

    /// Size of the properties without the property length prefix.
    fn body_len(&self) -> Result<usize, EncodeError> {
        let mut total = Ok(0usize);
        self.each(&mut |property| {
            if let Ok(sum) = total {
                total = property.len().map(|len| sum + len);
            }
        });
        total
    }

    /// Size with the property length prefix.
    fn wire_len(&self) -> Result<usize, EncodeError> {
        let body = self.body_len()?;
        Ok(var_int_len(body) + body)
    }

    /// Writes the property length and the properties.
    fn put(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_var_int(buf, self.body_len()?);
        self.each(&mut |property| property.put(buf));
        Ok(())
    }
}

/// Helpers for [`Properties::each`] implementations.
pub fn flag(id: u8, value: Option<bool>) -> Option<Out<'static>> {
    value.map(|value| Out::Byte(id, u8::from(value)))
}

pub fn string(id: u8, value: &Option<ByteString>) -> Option<Out<'_>> {
    value.as_ref().map(|value| Out::Bytes(id, value.as_bytes()))
}

pub fn binary(id: u8, value: &Option<Bytes>) -> Option<Out<'_>> {
    value.as_ref().map(|value| Out::Bytes(id, value))
}

pub fn user_properties(pairs: &[(ByteString, ByteString)], out: &mut dyn FnMut(Out<'_>)) {
    for (key, value) in pairs {
        out(Out::Pair(key, value));
    }
}
