//! Why a frame could not be read or written. Every decode error names one rule of the spec and maps to
//! the MQTT 5.0 reason code that rule calls for (§4.13: 0x81 Malformed Packet or 0x82 Protocol Error
//! unless a more specific code exists). In 3.1 and 3.1.1 every one of them means "close the Network
//! Connection" (§4.8); only [`DecodeError::UnsupportedProtocol`] earns an answer (CONNACK 0x01).

use super::topic::TopicError;
use super::types::{ReasonCode, Version};

/// A rule of the spec that a received frame breaks.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The declared frame (fixed header + remaining length) is over the limit we accept (§3.2.2.3.6).
    #[error("packet of {size} bytes is over the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    /// A Variable Byte Integer with a continuation bit on its fourth byte (§1.5.5, §2.1.4).
    #[error("variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer not in its shortest form (MQTT-1.5.5-1).
    #[error("variable byte integer not minimally encoded")]
    VarIntNotMinimal,
    /// Packet type 0, or 15 (AUTH) before 5.0 (§2.1.2).
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// Fixed-header flags other than the ones the packet type requires (MQTT-2.2.2-2, MQTT-2.1.3-1).
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidHeaderFlags { packet_type: u8, flags: u8 },
    /// QoS 3 in a PUBLISH header, a Will QoS or a subscription option (MQTT-3.3.1-4, MQTT-3.1.2-12).
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// A field runs past the end of the packet.
    #[error("packet ends inside a field")]
    Truncated,
    /// Bytes left over after the last field of the packet.
    #[error("unexpected bytes after the end of the packet")]
    TrailingBytes,
    /// Ill-formed UTF-8 or a surrogate code point (MQTT-1.5.3-1, MQTT-1.5.4-1).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// U+0000 in a string (MQTT-1.5.3-2, MQTT-1.5.4-2).
    #[error("string contains U+0000")]
    NullCharacter,
    /// A property identifier the spec does not define (§2.2.2.2).
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property that is not valid in this packet type (§2.2.2.2).
    #[error("property {id:#04x} is not valid in packet type {packet_type}")]
    PropertyNotAllowed { id: u8, packet_type: u8 },
    /// The property length runs past the end of the packet, or a property past the property length.
    #[error("properties overrun their declared length")]
    PropertyLengthOverrun,
    /// A property that may appear at most once appears again (§2.2.2.2).
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A byte property that must be 0 or 1 has another value (e.g. §3.1.2.11.6, §3.2.2.3.4).
    #[error("property {0:#04x} must be 0 or 1")]
    InvalidBooleanProperty(u8),
    /// Receive Maximum of 0 (§3.1.2.11.3, §3.2.2.3.3).
    #[error("receive maximum of 0")]
    ReceiveMaximumZero,
    /// Maximum Packet Size of 0 (§3.1.2.11.4, §3.2.2.3.6).
    #[error("maximum packet size of 0")]
    MaximumPacketSizeZero,
    /// Topic Alias of 0 (MQTT-3.3.2-8).
    #[error("topic alias of 0")]
    TopicAliasZero,
    /// Subscription Identifier of 0 (§3.8.2.1.2, §3.3.2.3.8).
    #[error("subscription identifier of 0")]
    SubscriptionIdentifierZero,
    /// Authentication Data without Authentication Method (§3.1.2.11.10).
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
    /// A QoS 1 or 2 PUBLISH that ends before its packet identifier (§3.3.2.2).
    #[error("QoS > 0 PUBLISH without a packet identifier")]
    MissingPacketId,
    /// A packet identifier of 0 (MQTT-2.3.1-1, MQTT-2.2.1-3).
    #[error("packet identifier 0")]
    PacketIdZero,
    /// PUBLISH topic name that breaks §4.7 (wildcard, U+0000, empty without a Topic Alias).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// CONNECT reserved flag set (MQTT-3.1.2-3).
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0 (MQTT-3.1.2-11, MQTT-3.1.2-15).
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// Password flag without User Name flag, before 5.0 (MQTT-3.1.2-22).
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// Protocol name or level the broker does not speak (MQTT-3.1.2-1, MQTT-3.1.2-2). The broker
    /// answers CONNACK 0x01 (3.1.1 format) or 0x84 (5.0 format, when `level` is 5) and closes.
    #[error("unsupported protocol (level {level})")]
    UnsupportedProtocol { level: u8 },
    /// CONNACK acknowledge flags with reserved bits set (§3.2.2.1).
    #[error("CONNACK reserved flags are set")]
    ConnAckReservedFlags,
    /// A return code that 3.1/3.1.1 does not define (CONNACK above 5, SUBACK not 0, 1, 2 or 0x80).
    #[error("invalid return code {0:#04x}")]
    InvalidReturnCode(u8),
    /// Reserved bits of a subscription options byte set (MQTT-3.8.3-4, MQTT-3.8.3-5).
    #[error("reserved bits of the subscription options are set")]
    SubscriptionOptionsReserved,
    /// Retain Handling 3 (§3.8.3.1).
    #[error("retain handling 3")]
    RetainHandlingInvalid,
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter (MQTT-3.8.3-3, MQTT-3.10.3-2).
    #[error("no topic filter")]
    NoTopicFilters,
}

impl DecodeError {
    /// The MQTT 5.0 reason code to close the connection with (DISCONNECT, or CONNACK for a CONNECT).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            VarIntTooLong
            | VarIntNotMinimal
            | InvalidPacketType(_)
            | InvalidHeaderFlags { .. }
            | InvalidQoS
            | Truncated
            | TrailingBytes
            | InvalidUtf8
            | NullCharacter
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | PropertyLengthOverrun
            | ConnectReservedFlag
            | ConnAckReservedFlags
            | InvalidReturnCode(_)
            | SubscriptionOptionsReserved => ReasonCode::MALFORMED_PACKET,
            DuplicateProperty(_)
            | InvalidBooleanProperty(_)
            | ReceiveMaximumZero
            | MaximumPacketSizeZero
            | SubscriptionIdentifierZero
            | AuthDataWithoutMethod
            | MissingPacketId
            | PacketIdZero
            | WillFlagsWithoutWill
            | PasswordWithoutUsername
            | RetainHandlingInvalid
            | NoTopicFilters => ReasonCode::PROTOCOL_ERROR,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            InvalidTopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }

    /// For [`DecodeError::UnsupportedProtocol`]: the version whose CONNACK format the refusal uses
    /// (5.0 when the client said level 5, else 3.1.1, whose CONNACK 0x01 3.1 clients read as well).
    /// For every other error: `None` (the connection is closed, or answered in its own version).
    pub fn refusal_version(&self) -> Option<Version> {
        match self {
            DecodeError::UnsupportedProtocol { level: 5 } => Some(Version::V5),
            DecodeError::UnsupportedProtocol { .. } => Some(Version::V3_1_1),
            _ => None,
        }
    }
}

/// Why a packet could not be written. Nothing is written when encode returns one of these.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet is larger than the peer accepts (§3.1.2.11.4, §3.2.2.3.6): the caller drops it.
    #[error("packet of {size} bytes is over the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    /// The remaining length is over 268,435,455, the largest a Variable Byte Integer holds (§2.1.4).
    #[error("remaining length {0} is over 268435455")]
    RemainingLengthTooLarge(usize),
    /// A QoS 1 or 2 PUBLISH without a packet identifier.
    #[error("QoS > 0 PUBLISH without a packet identifier")]
    MissingPacketId,
    /// A QoS 0 PUBLISH with a packet identifier (it has none on the wire).
    #[error("QoS 0 PUBLISH with a packet identifier")]
    UnexpectedPacketId,
    /// A string or binary field over 65,535 bytes (§1.5.4, §1.5.6).
    #[error("field of {0} bytes is over 65535")]
    FieldTooLong(usize),
    /// A Variable Byte Integer property over 268,435,455 (Subscription Identifier).
    #[error("variable byte integer {0} is over 268435455")]
    VarIntTooLarge(u32),
    /// SUBSCRIBE or UNSUBSCRIBE without a topic filter.
    #[error("no topic filter")]
    NoTopicFilters,
    /// A packet the version cannot carry (AUTH before 5.0).
    #[error("packet not supported in {0:?}")]
    UnsupportedInVersion(Version),
}
