//! The label values of per-label metric families (`type`, `reason`), as enums that index fixed
//! arrays: recording stays one add, and the set of label values is closed and documented.

use crate::protocol::{Packet, ReasonCode};

/// Defines a label enum with its Prometheus label values, in the order of its array index.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            pub const COUNT: usize = $name::ALL.len();

            /// The Prometheus label value.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// MQTT control packet types (all 15), label `type`.
    pub enum PacketKind {
        Connect => "connect",
        ConnAck => "connack",
        Publish => "publish",
        PubAck => "puback",
        PubRec => "pubrec",
        PubRel => "pubrel",
        PubComp => "pubcomp",
        Subscribe => "subscribe",
        SubAck => "suback",
        Unsubscribe => "unsubscribe",
        UnsubAck => "unsuback",
        PingReq => "pingreq",
        PingResp => "pingresp",
        Disconnect => "disconnect",
        Auth => "auth",
    }
}

label_enum! {
    /// Why a connection was refused before or at CONNACK, label `reason`.
    pub enum ConnectRejection {
        /// Malformed CONNECT, unsupported protocol version, or a packet other than CONNECT first.
        BadProtocol => "bad_protocol",
        IdentifierRejected => "identifier_rejected",
        BadCredentials => "bad_credentials",
        NotAuthorized => "not_authorized",
        /// Busy, unavailable, or over a connection quota or rate.
        ServerBusy => "server_busy",
        /// No CONNECT within the connect timeout.
        ConnectTimeout => "connect_timeout",
        /// Any other CONNACK failure code, so that the reasons add up to the total.
        Other => "other",
    }
}

label_enum! {
    /// Why a message was not delivered to a subscriber (or not stored), label `reason`.
    pub enum DropReason {
        /// The subscriber's outbox was at its limit in messages or bytes.
        QueueFull => "queue_full",
        /// The sessions of the subscriber's shard held `limits.queued_*_per_shard_max` together.
        ShardFull => "shard_full",
        /// The Message Expiry Interval passed while it waited.
        Expired => "expired",
        /// A PUBLISH matched no subscriber anywhere.
        NoSubscribers => "no_subscribers",
        /// Larger than the subscriber's Maximum Packet Size (5.0 §3.1.2.11.4).
        TooLargeForClient => "too_large",
        /// The client exceeded the server's Receive Maximum (5.0 §3.3.4).
        ReceiveMaximum => "receive_maximum",
        /// The publisher may not publish to the topic.
        NotAuthorized => "not_authorized",
        /// QoS 0 for an offline session, which queues only QoS 1 and 2.
        Qos0Offline => "qos0_offline",
        /// The session the subscription belonged to was gone when the message arrived.
        NoSession => "no_session",
        /// The retained store was at its limit in messages or bytes.
        RetainedFull => "retained_full",
    }
}

label_enum! {
    /// Which memory cap or deadline stopped a client, label `reason`.
    pub enum LimitReached {
        /// A packet's body did not arrive within `limits.packet_timeout_ms`: connection closed.
        PacketTimeout => "packet_timeout",
        /// The shard's allowance for partly read packets was spent: reading paused.
        PartialBytes => "partial_bytes",
        /// The shard's topic alias tables were full: a new alias refused.
        TopicAliases => "topic_aliases",
        /// The shard's wills were at `limits.will_bytes_per_shard_max`: a CONNECT refused.
        WillBytes => "will_bytes",
        /// The shard's subscription filters were at `limits.subscription_bytes_per_shard_max`:
        /// a filter refused.
        SubscriptionBytes => "subscription_bytes",
        /// The shard's write buffers were at `limits.write_buffer_bytes_per_shard_max`: a
        /// connection's deliveries wait in its outbox.
        WriteBytes => "write_bytes",
    }
}

label_enum! {
    /// What a client connection runs over, label `transport`: the kind of its listener.
    pub enum Transport {
        Tcp => "tcp",
        Tls => "tls",
        WebSocket => "ws",
        SecureWebSocket => "wss",
    }
}

impl PacketKind {
    pub fn of(packet: &Packet) -> PacketKind {
        match packet {
            Packet::Connect(_) => PacketKind::Connect,
            Packet::ConnAck(_) => PacketKind::ConnAck,
            Packet::Publish(_) => PacketKind::Publish,
            Packet::PubAck(_) => PacketKind::PubAck,
            Packet::PubRec(_) => PacketKind::PubRec,
            Packet::PubRel(_) => PacketKind::PubRel,
            Packet::PubComp(_) => PacketKind::PubComp,
            Packet::Subscribe(_) => PacketKind::Subscribe,
            Packet::SubAck(_) => PacketKind::SubAck,
            Packet::Unsubscribe(_) => PacketKind::Unsubscribe,
            Packet::UnsubAck(_) => PacketKind::UnsubAck,
            Packet::PingReq => PacketKind::PingReq,
            Packet::PingResp => PacketKind::PingResp,
            Packet::Disconnect(_) => PacketKind::Disconnect,
            Packet::Auth(_) => PacketKind::Auth,
        }
    }
}

impl ConnectRejection {
    /// The rejection a CONNACK failure code stands for (3.1.1 return codes are mapped to 5.0
    /// codes by the codec, so one table serves both). `None` for success codes.
    pub fn from_reason_code(reason: ReasonCode) -> Option<ConnectRejection> {
        if !reason.is_error() {
            return None;
        }
        Some(match reason {
            ReasonCode::MALFORMED_PACKET
            | ReasonCode::PROTOCOL_ERROR
            | ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => ConnectRejection::BadProtocol,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => ConnectRejection::IdentifierRejected,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::BAD_AUTHENTICATION_METHOD => {
                ConnectRejection::BadCredentials
            }
            ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => ConnectRejection::NotAuthorized,
            ReasonCode::SERVER_UNAVAILABLE
            | ReasonCode::SERVER_BUSY
            | ReasonCode::QUOTA_EXCEEDED
            | ReasonCode::CONNECTION_RATE_EXCEEDED => ConnectRejection::ServerBusy,
            _ => ConnectRejection::Other,
        })
    }
}

/// One counter per label value, indexed by the label enum's `index()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerLabel<const N: usize>([u64; N]);

impl<const N: usize> Default for PerLabel<N> {
    fn default() -> Self {
        PerLabel([0; N])
    }
}

impl<const N: usize> PerLabel<N> {
    /// Adds `n` to the counter at `index`. Indices come from label enums, which are sized to `N`
    /// (checked by the tests); an out-of-range index is ignored rather than risked on a hot path.
    pub fn add(&mut self, index: usize, n: u64) {
        if let Some(counter) = self.0.get_mut(index) {
            *counter = counter.saturating_add(n);
        }
    }

    pub fn get(&self, index: usize) -> u64 {
        self.0.get(index).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    pub fn values(&self) -> &[u64; N] {
        &self.0
    }

    pub(super) fn add_all(&mut self, other: &PerLabel<N>) {
        for (into, value) in self.0.iter_mut().zip(other.0.iter()) {
            *into = into.saturating_add(*value);
        }
    }
}
