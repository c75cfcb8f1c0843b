//! MQTT 5.0 properties (§2.2.2), one struct per packet kind so that a property can only be set on a
//! packet where the spec allows it. Absent properties are `None` / empty and cost no allocation.
//! In 3.1 and 3.1.1 every property struct is empty on decode and ignored on encode.

use bytes::Bytes;
use bytestring::ByteString;

/// User Property (0x26) pairs: may repeat, order is kept (MQTT-3.3.2-18).
pub type UserProperties = Vec<(ByteString, ByteString)>;

/// CONNECT properties (§3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    pub session_expiry_interval_secs: Option<u32>,
    /// Never 0 (protocol error).
    pub receive_maximum: Option<u16>,
    /// Never 0 (protocol error).
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: UserProperties,
    pub authentication_method: Option<ByteString>,
    /// Only with an authentication method (protocol error otherwise).
    pub authentication_data: Option<Bytes>,
}

/// Will properties (§3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    pub will_delay_interval_secs: Option<u32>,
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval_secs: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

impl WillProperties {
    /// The properties the will's PUBLISH carries (5.0 §3.1.3.2: all but the Will Delay
    /// Interval).
    pub fn to_publish(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval_secs: self.message_expiry_interval_secs,
            content_type: self.content_type.clone(),
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            ..Default::default()
        }
    }
}

/// CONNACK properties (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    pub session_expiry_interval_secs: Option<u32>,
    pub receive_maximum: Option<u16>,
    /// 0 or 1 on the wire.
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<ByteString>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<ByteString>,
    pub user_properties: UserProperties,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive_secs: Option<u16>,
    pub response_information: Option<ByteString>,
    pub server_reference: Option<ByteString>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH properties (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval_secs: Option<u32>,
    /// Never 0 (MQTT-3.3.2-8).
    pub topic_alias: Option<u16>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
    /// Server to client only; may repeat; each in 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    pub content_type: Option<ByteString>,
}

impl PublishProperties {
    /// True when no property is set (the common case, and always so before 5.0). Field by field,
    /// not a comparison with `EMPTY`, which built and dropped a property set on every call (once
    /// or more per delivery); the destructuring makes a new field a compile error here.
    pub fn is_empty(&self) -> bool {
        let PublishProperties {
            payload_format_indicator,
            message_expiry_interval_secs,
            topic_alias,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers,
            content_type,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval_secs.is_none()
            && topic_alias.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && user_properties.is_empty()
            && subscription_identifiers.is_empty()
            && content_type.is_none()
    }

    /// No property set, as a constant (what an absent [`PublishProps`] reads as).
    pub const EMPTY: PublishProperties = PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval_secs: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };
}

/// The properties of a PUBLISH or a routed message, boxed and only when there are any: one word
/// in the common case of no properties, so a `Publish` or `Message` that moves (decode, event
/// queue, routing, `Arc` construction) copies a few words instead of the whole property set.
/// Reads go through `Deref` (an absent set reads as [`PublishProperties::EMPTY`]); writes take
/// [`PublishProps::make_mut`], which allocates the box when there is none, so that no hidden
/// allocation happens on the hot path.
#[derive(Clone, Default)]
pub struct PublishProps(Option<Box<PublishProperties>>);

impl PublishProps {
    /// No properties (allocates nothing).
    pub const fn none() -> PublishProps {
        PublishProps(None)
    }

    /// The properties to change, boxed on first use.
    pub fn make_mut(&mut self) -> &mut PublishProperties {
        self.0.get_or_insert_with(Default::default)
    }

    /// The properties by value (the box is opened, or an empty set made).
    pub fn into_inner(self) -> PublishProperties {
        self.0.map(|boxed| *boxed).unwrap_or_default()
    }
}

static NO_PUBLISH_PROPERTIES: PublishProperties = PublishProperties::EMPTY;

impl std::ops::Deref for PublishProps {
    type Target = PublishProperties;

    fn deref(&self) -> &PublishProperties {
        self.0.as_deref().unwrap_or(&NO_PUBLISH_PROPERTIES)
    }
}

impl From<PublishProperties> for PublishProps {
    fn from(properties: PublishProperties) -> PublishProps {
        if properties.is_empty() {
            PublishProps(None)
        } else {
            PublishProps(Some(Box::new(properties)))
        }
    }
}

impl PartialEq for PublishProps {
    fn eq(&self, other: &PublishProps) -> bool {
        **self == **other
    }
}

impl Eq for PublishProps {}

impl std::fmt::Debug for PublishProps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK (§3.4.2.2 and siblings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    pub reason_string: Option<ByteString>,
    pub user_properties: UserProperties,
}

/// SUBSCRIBE properties (§3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Never 0 (protocol error); at most 268,435,455.
    pub subscription_identifier: Option<u32>,
    pub user_properties: UserProperties,
}

/// UNSUBSCRIBE properties (§3.10.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    pub user_properties: UserProperties,
}

/// DISCONNECT properties (§3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    pub session_expiry_interval_secs: Option<u32>,
    pub reason_string: Option<ByteString>,
    pub user_properties: UserProperties,
    pub server_reference: Option<ByteString>,
}

/// AUTH properties (§3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<ByteString>,
    pub user_properties: UserProperties,
}

#[cfg(test)]
mod tests {
    use super::PublishProperties;

    /// `is_empty` against the comparison with `EMPTY` it replaced, with each property set alone.
    #[test]
    fn a_publish_property_set_is_empty_only_with_nothing_set() {
        let cases: Vec<PublishProperties> = vec![
            PublishProperties {
                payload_format_indicator: Some(true),
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                message_expiry_interval_secs: Some(0),
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                topic_alias: Some(1),
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                response_topic: Some("r".into()),
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                correlation_data: Some(bytes::Bytes::new()),
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                user_properties: vec![("".into(), "".into())],
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                subscription_identifiers: vec![1],
                ..PublishProperties::EMPTY
            },
            PublishProperties {
                content_type: Some("".into()),
                ..PublishProperties::EMPTY
            },
        ];
        assert!(PublishProperties::EMPTY.is_empty());
        assert!(PublishProperties::default().is_empty());
        for properties in cases {
            assert_eq!(
                properties.is_empty(),
                properties == PublishProperties::EMPTY
            );
            assert!(!properties.is_empty(), "{properties:?}");
        }
    }
}
