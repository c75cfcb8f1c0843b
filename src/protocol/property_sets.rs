//! Reading and writing each packet's property struct (§3.x.2.x "Properties"): which identifiers a
//! packet allows (any other is a Malformed Packet) and which may repeat (only User Property, and
//! Subscription Identifier in PUBLISH; any other repeated is a Protocol Error).

use super::error::DecodeError;
use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use super::property::{self as p, Out, Properties, Value, set_once};
use super::wire::Reader;

/// A property struct that can be filled from the wire.
pub trait Decode: Default + Properties {
    /// Stores one property; `Ok(false)` when this packet does not allow `id`.
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError>;
}

/// Reads a property length and the properties of a packet of type `packet_type`.
pub fn decode<P: Decode>(reader: &mut Reader, packet_type: u8) -> Result<P, DecodeError> {
    let mut properties = P::default();
    p::read_all(reader, |id, value| {
        if properties.set(id, value)? {
            Ok(())
        } else {
            Err(DecodeError::PropertyNotAllowed { id, packet_type })
        }
    })?;
    Ok(properties)
}

/// Byte flags are checked to be 0 or 1 when read.
fn flag(value: u8) -> bool {
    value == 1
}

impl Decode for ConnectProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => {
                set_once(&mut self.session_expiry_interval_secs, id, v)?
            }
            (p::RECEIVE_MAXIMUM, Value::U16(v)) => set_once(&mut self.receive_maximum, id, v)?,
            (p::MAXIMUM_PACKET_SIZE, Value::U32(v)) => {
                set_once(&mut self.maximum_packet_size, id, v)?
            }
            (p::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => {
                set_once(&mut self.topic_alias_maximum, id, v)?
            }
            (p::REQUEST_RESPONSE_INFORMATION, Value::Byte(v)) => {
                set_once(&mut self.request_response_information, id, flag(v))?
            }
            (p::REQUEST_PROBLEM_INFORMATION, Value::Byte(v)) => {
                set_once(&mut self.request_problem_information, id, flag(v))?
            }
            (p::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            (p::AUTHENTICATION_METHOD, Value::String(v)) => {
                set_once(&mut self.authentication_method, id, v)?
            }
            (p::AUTHENTICATION_DATA, Value::Binary(v)) => {
                set_once(&mut self.authentication_data, id, v)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for ConnectProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let all = [
            self.session_expiry_interval_secs
                .map(|v| Out::U32(p::SESSION_EXPIRY_INTERVAL, v)),
            p::string(p::AUTHENTICATION_METHOD, &self.authentication_method),
            p::binary(p::AUTHENTICATION_DATA, &self.authentication_data),
            p::flag(
                p::REQUEST_PROBLEM_INFORMATION,
                self.request_problem_information,
            ),
            p::flag(
                p::REQUEST_RESPONSE_INFORMATION,
                self.request_response_information,
            ),
            self.receive_maximum
                .map(|v| Out::U16(p::RECEIVE_MAXIMUM, v)),
            self.topic_alias_maximum
                .map(|v| Out::U16(p::TOPIC_ALIAS_MAXIMUM, v)),
            self.maximum_packet_size
                .map(|v| Out::U32(p::MAXIMUM_PACKET_SIZE, v)),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for WillProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::WILL_DELAY_INTERVAL, Value::U32(v)) => {
                set_once(&mut self.will_delay_interval_secs, id, v)?
            }
            (p::PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                set_once(&mut self.payload_format_indicator, id, flag(v))?
            }
            (p::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => {
                set_once(&mut self.message_expiry_interval_secs, id, v)?
            }
            (p::CONTENT_TYPE, Value::String(v)) => set_once(&mut self.content_type, id, v)?,
            (p::RESPONSE_TOPIC, Value::String(v)) => set_once(&mut self.response_topic, id, v)?,
            (p::CORRELATION_DATA, Value::Binary(v)) => set_once(&mut self.correlation_data, id, v)?,
            (p::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for WillProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let all = [
            p::flag(p::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator),
            self.message_expiry_interval_secs
                .map(|v| Out::U32(p::MESSAGE_EXPIRY_INTERVAL, v)),
            p::string(p::CONTENT_TYPE, &self.content_type),
            p::string(p::RESPONSE_TOPIC, &self.response_topic),
            p::binary(p::CORRELATION_DATA, &self.correlation_data),
            self.will_delay_interval_secs
                .map(|v| Out::U32(p::WILL_DELAY_INTERVAL, v)),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for ConnAckProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        let s = self;
        match (id, value) {
            (p::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => {
                set_once(&mut s.session_expiry_interval_secs, id, v)?
            }
            (p::RECEIVE_MAXIMUM, Value::U16(v)) => set_once(&mut s.receive_maximum, id, v)?,
            (p::MAXIMUM_QOS, Value::Byte(v)) => set_once(&mut s.maximum_qos, id, v)?,
            (p::RETAIN_AVAILABLE, Value::Byte(v)) => {
                set_once(&mut s.retain_available, id, flag(v))?
            }
            (p::MAXIMUM_PACKET_SIZE, Value::U32(v)) => set_once(&mut s.maximum_packet_size, id, v)?,
            (p::ASSIGNED_CLIENT_IDENTIFIER, Value::String(v)) => {
                set_once(&mut s.assigned_client_identifier, id, v)?
            }
            (p::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => set_once(&mut s.topic_alias_maximum, id, v)?,
            (p::REASON_STRING, Value::String(v)) => set_once(&mut s.reason_string, id, v)?,
            (p::USER_PROPERTY, Value::Pair(k, v)) => s.user_properties.push((k, v)),
            (p::WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                set_once(&mut s.wildcard_subscription_available, id, flag(v))?
            }
            (p::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Byte(v)) => {
                set_once(&mut s.subscription_identifiers_available, id, flag(v))?
            }
            (p::SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                set_once(&mut s.shared_subscription_available, id, flag(v))?
            }
            (p::SERVER_KEEP_ALIVE, Value::U16(v)) => {
                set_once(&mut s.server_keep_alive_secs, id, v)?
            }
            (p::RESPONSE_INFORMATION, Value::String(v)) => {
                set_once(&mut s.response_information, id, v)?
            }
            (p::SERVER_REFERENCE, Value::String(v)) => set_once(&mut s.server_reference, id, v)?,
            (p::AUTHENTICATION_METHOD, Value::String(v)) => {
                set_once(&mut s.authentication_method, id, v)?
            }
            (p::AUTHENTICATION_DATA, Value::Binary(v)) => {
                set_once(&mut s.authentication_data, id, v)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for ConnAckProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let s = self;
        let all = [
            s.session_expiry_interval_secs
                .map(|v| Out::U32(p::SESSION_EXPIRY_INTERVAL, v)),
            p::string(p::ASSIGNED_CLIENT_IDENTIFIER, &s.assigned_client_identifier),
            s.server_keep_alive_secs
                .map(|v| Out::U16(p::SERVER_KEEP_ALIVE, v)),
            p::string(p::AUTHENTICATION_METHOD, &s.authentication_method),
            p::binary(p::AUTHENTICATION_DATA, &s.authentication_data),
            p::string(p::RESPONSE_INFORMATION, &s.response_information),
            p::string(p::SERVER_REFERENCE, &s.server_reference),
            p::string(p::REASON_STRING, &s.reason_string),
            s.receive_maximum.map(|v| Out::U16(p::RECEIVE_MAXIMUM, v)),
            s.topic_alias_maximum
                .map(|v| Out::U16(p::TOPIC_ALIAS_MAXIMUM, v)),
            s.maximum_qos.map(|v| Out::Byte(p::MAXIMUM_QOS, v)),
            p::flag(p::RETAIN_AVAILABLE, s.retain_available),
            s.maximum_packet_size
                .map(|v| Out::U32(p::MAXIMUM_PACKET_SIZE, v)),
            p::flag(
                p::WILDCARD_SUBSCRIPTION_AVAILABLE,
                s.wildcard_subscription_available,
            ),
            p::flag(
                p::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                s.subscription_identifiers_available,
            ),
            p::flag(
                p::SHARED_SUBSCRIPTION_AVAILABLE,
                s.shared_subscription_available,
            ),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        p::user_properties(&s.user_properties, out);
    }
}

impl Decode for PublishProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                set_once(&mut self.payload_format_indicator, id, flag(v))?
            }
            (p::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => {
                set_once(&mut self.message_expiry_interval_secs, id, v)?
            }
            (p::TOPIC_ALIAS, Value::U16(v)) => set_once(&mut self.topic_alias, id, v)?,
            (p::RESPONSE_TOPIC, Value::String(v)) => set_once(&mut self.response_topic, id, v)?,
            (p::CORRELATION_DATA, Value::Binary(v)) => set_once(&mut self.correlation_data, id, v)?,
            (p::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            (p::SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => self.subscription_identifiers.push(v),
            (p::CONTENT_TYPE, Value::String(v)) => set_once(&mut self.content_type, id, v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for PublishProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let all = [
            p::flag(p::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator),
            self.message_expiry_interval_secs
                .map(|v| Out::U32(p::MESSAGE_EXPIRY_INTERVAL, v)),
            p::string(p::CONTENT_TYPE, &self.content_type),
            p::string(p::RESPONSE_TOPIC, &self.response_topic),
            p::binary(p::CORRELATION_DATA, &self.correlation_data),
            self.topic_alias.map(|v| Out::U16(p::TOPIC_ALIAS, v)),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        for &id in &self.subscription_identifiers {
            out(Out::VarInt(p::SUBSCRIPTION_IDENTIFIER, id));
        }
        p::user_properties(&self.user_properties, out);
    }
}

/// Reason String and User Property: the properties of every acknowledgement, DISCONNECT aside.
fn set_reason_and_user(
    reason_string: &mut Option<bytestring::ByteString>,
    user_properties: &mut super::properties::UserProperties,
    id: u8,
    value: Value,
) -> Result<bool, DecodeError> {
    match (id, value) {
        (p::REASON_STRING, Value::String(v)) => set_once(reason_string, id, v)?,
        (p::USER_PROPERTY, Value::Pair(k, v)) => user_properties.push((k, v)),
        _ => return Ok(false),
    }
    Ok(true)
}

impl Decode for AckProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        set_reason_and_user(
            &mut self.reason_string,
            &mut self.user_properties,
            id,
            value,
        )
    }
}

impl Properties for AckProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        if let Some(reason) = p::string(p::REASON_STRING, &self.reason_string) {
            out(reason);
        }
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for SubscribeProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => {
                set_once(&mut self.subscription_identifier, id, v)?
            }
            (p::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for SubscribeProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        if let Some(id) = self.subscription_identifier {
            out(Out::VarInt(p::SUBSCRIPTION_IDENTIFIER, id));
        }
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for UnsubscribeProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Properties for UnsubscribeProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for DisconnectProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => {
                set_once(&mut self.session_expiry_interval_secs, id, v)?
            }
            (p::SERVER_REFERENCE, Value::String(v)) => set_once(&mut self.server_reference, id, v)?,
            (id, value) => {
                return set_reason_and_user(
                    &mut self.reason_string,
                    &mut self.user_properties,
                    id,
                    value,
                );
            }
        }
        Ok(true)
    }
}

impl Properties for DisconnectProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let all = [
            self.session_expiry_interval_secs
                .map(|v| Out::U32(p::SESSION_EXPIRY_INTERVAL, v)),
            p::string(p::SERVER_REFERENCE, &self.server_reference),
            p::string(p::REASON_STRING, &self.reason_string),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        p::user_properties(&self.user_properties, out);
    }
}

impl Decode for AuthProperties {
    fn set(&mut self, id: u8, value: Value) -> Result<bool, DecodeError> {
        match (id, value) {
            (p::AUTHENTICATION_METHOD, Value::String(v)) => {
                set_once(&mut self.authentication_method, id, v)?
            }
            (p::AUTHENTICATION_DATA, Value::Binary(v)) => {
                set_once(&mut self.authentication_data, id, v)?
            }
            (id, value) => {
                return set_reason_and_user(
                    &mut self.reason_string,
                    &mut self.user_properties,
                    id,
                    value,
                );
            }
        }
        Ok(true)
    }
}

impl Properties for AuthProperties {
    fn each(&self, out: &mut dyn FnMut(Out<'_>)) {
        let all = [
            p::string(p::AUTHENTICATION_METHOD, &self.authentication_method),
            p::binary(p::AUTHENTICATION_DATA, &self.authentication_data),
            p::string(p::REASON_STRING, &self.reason_string),
        ];
        all.into_iter().flatten().for_each(&mut *out);
        p::user_properties(&self.user_properties, out);
    }
}
