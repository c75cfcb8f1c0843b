//! The packet model: one type per MQTT control packet, shared by 3.1, 3.1.1 and 5.0. Fields that a
//! version cannot carry (properties and reason codes before 5.0) are empty/success after decode and
//! are left out by encode. Strings and payloads are `Bytes`-backed slices of the read buffer.

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProps, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use super::types::{PacketId, QoS, ReasonCode, Version};

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(Box<ConnAck>),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// 5.0 only.
    Auth(Box<Auth>),
}

// Every received packet moves several times between decode and the shard (as an `Event`): the
// large and rare ones (CONNECT, CONNACK, AUTH) and PUBLISH properties are boxed to keep it small.
const _: () = assert!(std::mem::size_of::<Packet>() <= 104);

/// CONNECT (§3.1). The version is the one the client asked for; it decides how every later packet on
/// the connection is read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    /// May be empty (the server then assigns one, or refuses).
    pub client_id: ByteString,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    /// Binary data in 3.1.1 and 5.0.
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// The Will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// CONNACK (§3.2). `reason` uses 5.0 codes; for 3.1/3.1.1 encode maps them to return codes
/// (0x84 -> 1, 0x85 -> 2, 0x88 and 0x89 -> 3, 0x86 -> 4, 0x87 -> 5, any other failure -> 3) and decode
/// maps return codes back to those 5.0 codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: ConnAckProperties,
}

/// PUBLISH (§3.3). `packet_id` is `Some` exactly when `qos` is above 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// A valid topic name; empty only in 5.0 together with a Topic Alias.
    pub topic: ByteString,
    pub packet_id: Option<PacketId>,
    pub properties: PublishProps,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7): same shape, the packet type says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: PacketId,
    /// Always success before 5.0.
    pub reason: ReasonCode,
    pub properties: AckProperties,
}

/// Retain Handling subscription option (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    OnNewSubscription = 1,
    /// Do not send retained messages.
    Never = 2,
}

/// Subscription options byte (§3.8.3.1). Before 5.0 only `qos` is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// One topic filter of a SUBSCRIBE. The filter is valid UTF-8 but not yet checked against the
/// wildcard rules: an invalid filter gets its own SUBACK code (0x8F) in 5.0, so the broker checks it
/// with `topic::TopicFilter::parse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: ByteString,
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE (§3.8): at least one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: SubscribeProperties,
    pub filters: Vec<SubscribeFilter>,
}

/// SUBACK (§3.9): one code per filter. Before 5.0 only 0x00, 0x01, 0x02 and 0x80 exist; encode maps
/// any failure to 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (§3.10): at least one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: UnsubscribeProperties,
    pub filters: Vec<ByteString>,
}

/// UNSUBACK (§3.11). `reasons` is empty before 5.0 (the packet has no payload there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT (§3.14). Before 5.0 it has no body: reason is normal, properties empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: DisconnectProperties,
}

/// AUTH (§3.15), 5.0 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: AuthProperties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}
