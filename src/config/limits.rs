//! `[limits]`: a bound on everything that grows with client input, in messages and in bytes.
//! Every limit is finite: there is no "0 means unlimited", because an unlimited queue is how a slow
//! consumer takes a broker down.

use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

/// The largest Remaining Length MQTT can encode (2.2.3).
const PACKET_BYTES_LIMIT: u64 = 268_435_455;

/// The per-shard budget the documented defaults fit, used when the machine's memory cannot be
/// read (otherwise the budget is derived from it, see `derived`). The default limits need 9.2
/// GiB on one shard in the worst case, now that write buffers, subscription filters and wills
/// have shard-wide caps; a WebSocket listener adds 56 GiB (its frame and message buffers are
/// still per connection). The default is that rounded up, 72 GiB.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 72 << 30;

/// The default of `partial_packet_bytes_per_shard_max`: 64 MiB, room for 48 packets of the default
/// 1 MiB `packet_bytes_max` assembled at once (three quarters of it), or about 2,000 small ones
/// (each reserves what it holds plus up to 16 KiB of read-ahead).
pub const DEFAULT_PARTIAL_PACKET_BYTES_PER_SHARD_MAX: u64 = 64 << 20;

/// Packets above this size being assembled may take only three quarters of
/// `partial_packet_bytes_per_shard_max`; the last quarter is kept for small ones, so that clients
/// sending small packets keep being read while large packets have spent the rest.
pub const LARGE_PARTIAL_PACKET_BYTES: u64 = 32 * 1024;

/// The default of `subscription_bytes_per_shard_max`: 256 MiB, a million filters of 256 bytes.
pub const DEFAULT_SUBSCRIPTION_BYTES_PER_SHARD_MAX: u64 = 256 << 20;

/// The default of `queued_bytes_per_shard_max`: 1 GiB.
pub const DEFAULT_QUEUED_BYTES_PER_SHARD_MAX: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet accepted or sent, in bytes. 5.0: Maximum Packet Size.
    pub packet_bytes_max: u32,
    /// QoS 1 and 2 messages in flight to one client; also the Receive Maximum announced to 5.0
    /// clients.
    pub inflight_messages_max: u16,
    /// QoS 2 packet ids from one MQTT 3.1/3.1.1 client awaiting PUBREL (beyond it the connection
    /// is closed). 5.0 clients are held to `inflight_messages_max`, their Receive Maximum; 3.x
    /// clients are never told a limit, so theirs is higher: 100, rumqttc's window and EMQX's
    /// `max_awaiting_rel`.
    pub incoming_qos2_v3_max: u16,
    /// Messages queued for one session (offline, or beyond the in-flight window).
    pub outbox_messages_max: u32,
    /// Bytes queued for one session.
    pub outbox_bytes_max: u64,
    /// Longest client id accepted, in bytes.
    pub client_id_bytes_max: u16,
    /// Longest topic name or filter accepted, in bytes.
    pub topic_bytes_max: u16,
    /// Most `/`-separated levels in a topic name or filter.
    pub topic_levels_max: u16,
    /// Subscriptions one session may hold.
    pub subscriptions_per_session_max: u32,
    /// Topic filters in one SUBSCRIBE or UNSUBSCRIBE packet.
    pub filters_per_subscribe_max: u32,
    /// User Properties in one packet.
    pub user_properties_max: u32,
    /// Open connections per shard.
    pub connections_per_shard_max: u32,
    /// Sessions per shard, online and offline (offline ones otherwise only end by expiry).
    pub sessions_per_shard_max: u32,
    /// Bytes of messages all sessions of one shard hold for their subscribers together, queued
    /// (online and offline) and in flight; a delivery that would pass it is dropped by
    /// `outbox_drop_policy`.
    pub queued_bytes_per_shard_max: u64,
    /// Messages all sessions of one shard hold together, queued and in flight.
    pub queued_messages_per_shard_max: u64,
    /// Subscriptions of all sessions of one shard together.
    pub subscriptions_per_shard_max: u64,
    /// Open connections in the whole broker.
    pub connections_max: u32,
    /// Retained messages in the whole broker.
    pub retained_messages_max: u64,
    /// Bytes of retained messages in the whole broker.
    pub retained_bytes_max: u64,
    /// Bytes of one will message: topic, payload and properties.
    pub will_bytes_max: u32,
    /// Cross-shard control requests waiting per shard.
    pub control_pending_max: u32,
    /// New connections one shard accepts per second (a token bucket holding 10 ms worth).
    /// Over it, the shard delays `accept`: the kernel backlog holds the rest.
    pub connect_rate_per_shard_max: u32,
    /// Bytes of partly read packets all connections of one shard may hold together (the buffers
    /// a packet larger than one read is assembled in). A connection that needs more waits, not
    /// reading, until there is room; packets over 32 KiB may take only three quarters of it.
    pub partial_packet_bytes_per_shard_max: u64,
    /// Time a packet may take from its first byte to its last; a connection whose packet is still
    /// incomplete then is closed (slow loris).
    pub packet_timeout_ms: u64,
    /// Bytes of topic alias tables (both directions) all connections of one shard may hold
    /// together, topic bytes plus an entry overhead each.
    pub topic_alias_bytes_per_shard_max: u64,
    /// Bytes of topic filters all subscriptions of one shard hold together; a SUBSCRIBE filter
    /// that would pass it gets 0x97 Quota exceeded.
    pub subscription_bytes_per_shard_max: u64,
    /// Bytes of will messages all sessions of one shard hold together; a CONNECT whose will
    /// would pass it gets CONNACK 0x97 Quota exceeded (3.1.1: 0x03 Server unavailable).
    pub will_bytes_per_shard_max: u64,
    /// Bytes of all connections' write buffers and writes under way on one shard. A connection
    /// over its fair share (this divided by `connections_per_shard_max`) gets no more
    /// deliveries while the shard is at it: they wait in its outbox.
    pub write_buffer_bytes_per_shard_max: u64,
    /// What a full outbox does with one more message.
    pub outbox_drop_policy: DropPolicy,
    /// The worst-case memory one shard may need, from the limits above (see `budget`). When the
    /// configuration does not set it, it is `memory_budget_percent` of the machine's memory
    /// divided by the shards, and the caps that are not set are scaled to fit it (`derived`);
    /// this value is then only the reference the documented defaults fit. Set, the broker
    /// refuses to start over it.
    pub memory_budget_bytes: u64,
    /// The share of the machine's memory (`MemTotal`, or the cgroup limit when smaller) that all
    /// shards' budgets take together when `memory_budget_bytes` is not set, in percent.
    pub memory_budget_percent: u64,
}

/// What a full outbox (`outbox_messages_max` or `outbox_bytes_max` reached) does with one more
/// message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the new message (Mosquitto).
    #[default]
    DropNew,
    /// Make room by dropping queued messages, the oldest QoS 0 first, then the oldest of any
    /// QoS (EMQX).
    DropOldest,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            packet_bytes_max: 1_048_576,
            inflight_messages_max: 32,
            incoming_qos2_v3_max: 100,
            outbox_messages_max: 1_000,
            outbox_bytes_max: 16_777_216,
            client_id_bytes_max: 256,
            topic_bytes_max: 65_535,
            topic_levels_max: 128,
            subscriptions_per_session_max: 1_000,
            filters_per_subscribe_max: 128,
            user_properties_max: 64,
            connections_per_shard_max: 100_000,
            sessions_per_shard_max: 100_000,
            queued_bytes_per_shard_max: DEFAULT_QUEUED_BYTES_PER_SHARD_MAX,
            queued_messages_per_shard_max: 1_000_000,
            subscriptions_per_shard_max: 1_000_000,
            connections_max: 1_000_000,
            retained_messages_max: 1_000_000,
            retained_bytes_max: 1_073_741_824,
            will_bytes_max: 65_536,
            control_pending_max: 1_024,
            connect_rate_per_shard_max: 5_000,
            partial_packet_bytes_per_shard_max: DEFAULT_PARTIAL_PACKET_BYTES_PER_SHARD_MAX,
            packet_timeout_ms: 30_000,
            topic_alias_bytes_per_shard_max: 64 << 20,
            subscription_bytes_per_shard_max: DEFAULT_SUBSCRIPTION_BYTES_PER_SHARD_MAX,
            will_bytes_per_shard_max: 64 << 20,
            write_buffer_bytes_per_shard_max: 256 << 20,
            outbox_drop_policy: DropPolicy::DropNew,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            memory_budget_percent: 50,
        }
    }
}

/// Shorthand for the table below.
const fn range(
    key: &'static str,
    value: fn(&Config) -> u64,
    bounds: (u64, u64),
    unit: &'static str,
    fix: &'static str,
) -> Range {
    Range {
        key,
        value,
        min: bounds.0,
        max: bounds.1,
        unit,
        fix,
    }
}

#[rustfmt::skip]
pub(super) const RANGES: &[Range] = &[
    range("limits.packet_bytes_max", |c| c.limits.packet_bytes_max.into(), (16, PACKET_BYTES_LIMIT),
        "bytes", "set it to the largest packet you accept, e.g. 1048576"),
    range("limits.inflight_messages_max", |c| c.limits.inflight_messages_max.into(), (1, 65_535),
        "messages", "e.g. 32 (EMQX 32, Mosquitto 20)"),
    range("limits.incoming_qos2_v3_max", |c| c.limits.incoming_qos2_v3_max.into(), (1, 65_535),
        "messages", "e.g. 1000 (above the in-flight window of 3.1.1 clients)"),
    range("limits.outbox_messages_max", |c| c.limits.outbox_messages_max.into(), (1, 10_000_000),
        "messages", "e.g. 1000 (EMQX and Mosquitto 1000)"),
    range("limits.outbox_bytes_max", |c| c.limits.outbox_bytes_max, (16, 1 << 36),
        "bytes", "e.g. 16777216 (16 MiB)"),
    range("limits.client_id_bytes_max", |c| c.limits.client_id_bytes_max.into(), (23, 65_535),
        "bytes", "MQTT requires accepting 23-byte client ids; e.g. 256"),
    range("limits.topic_bytes_max", |c| c.limits.topic_bytes_max.into(), (1, 65_535),
        "bytes", "65535 is the MQTT maximum; e.g. 65535"),
    range("limits.topic_levels_max", |c| c.limits.topic_levels_max.into(), (1, 32_768),
        "levels", "e.g. 128 (EMQX 128)"),
    range("limits.subscriptions_per_session_max", |c| c.limits.subscriptions_per_session_max.into(),
        (1, 10_000_000), "subscriptions", "e.g. 1000"),
    range("limits.filters_per_subscribe_max", |c| c.limits.filters_per_subscribe_max.into(),
        (1, 65_535), "filters", "e.g. 128"),
    range("limits.user_properties_max", |c| c.limits.user_properties_max.into(), (1, 65_535),
        "properties", "e.g. 64"),
    range("limits.connections_per_shard_max", |c| c.limits.connections_per_shard_max.into(),
        (1, 10_000_000), "connections", "e.g. 100000"),
    range("limits.sessions_per_shard_max", |c| c.limits.sessions_per_shard_max.into(),
        (1, 10_000_000), "sessions", "e.g. 100000"),
    range("limits.queued_bytes_per_shard_max", |c| c.limits.queued_bytes_per_shard_max,
        (16, 1 << 44), "bytes", "e.g. 1073741824 (1 GiB)"),
    range("limits.queued_messages_per_shard_max", |c| c.limits.queued_messages_per_shard_max,
        (1, 1 << 32), "messages", "e.g. 1000000"),
    range("limits.subscriptions_per_shard_max", |c| c.limits.subscriptions_per_shard_max,
        (1, 1 << 32), "subscriptions", "e.g. 1000000"),
    range("limits.connections_max", |c| c.limits.connections_max.into(), (1, 100_000_000),
        "connections", "e.g. 1000000"),
    range("limits.retained_messages_max", |c| c.limits.retained_messages_max, (1, 1 << 32),
        "messages", "e.g. 1000000"),
    range("limits.retained_bytes_max", |c| c.limits.retained_bytes_max, (16, 1 << 40),
        "bytes", "e.g. 1073741824 (1 GiB)"),
    range("limits.will_bytes_max", |c| c.limits.will_bytes_max.into(), (1, PACKET_BYTES_LIMIT),
        "bytes", "e.g. 65536"),
    range("limits.control_pending_max", |c| c.limits.control_pending_max.into(), (1, 1_048_576),
        "requests", "e.g. 1024"),
    range("limits.connect_rate_per_shard_max", |c| c.limits.connect_rate_per_shard_max.into(),
        (1, 10_000_000), "connections per second", "e.g. 5000"),
    range("limits.partial_packet_bytes_per_shard_max", |c| c.limits.partial_packet_bytes_per_shard_max,
        (64 * 1024, 1 << 40), "bytes", "e.g. 67108864 (64 MiB)"),
    range("limits.packet_timeout_ms", |c| c.limits.packet_timeout_ms, (100, 3_600_000),
        "milliseconds", "e.g. 30000"),
    range("limits.topic_alias_bytes_per_shard_max", |c| c.limits.topic_alias_bytes_per_shard_max,
        (1024, 1 << 40), "bytes", "e.g. 67108864 (64 MiB)"),
    range("limits.subscription_bytes_per_shard_max", |c| c.limits.subscription_bytes_per_shard_max,
        (1024, 1 << 44), "bytes", "e.g. 268435456 (256 MiB)"),
    range("limits.will_bytes_per_shard_max", |c| c.limits.will_bytes_per_shard_max,
        (1024, 1 << 40), "bytes", "e.g. 67108864 (64 MiB)"),
    range("limits.write_buffer_bytes_per_shard_max", |c| c.limits.write_buffer_bytes_per_shard_max,
        (128 * 1024, 1 << 44), "bytes", "e.g. 268435456 (256 MiB)"),
    range("limits.memory_budget_bytes", |c| c.limits.memory_budget_bytes, (1 << 20, 1 << 50),
        "bytes", "set it to the memory one shard may use, e.g. 4294967296 (4 GiB)"),
    range("limits.memory_budget_percent", |c| c.limits.memory_budget_percent, (1, 100),
        "percent", "the share of the machine's memory the broker may use, e.g. 50"),
];

/// The relations between `[limits]` keys.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let limits = &config.limits;
    let packet = u64::from(limits.packet_bytes_max);
    at_least_one_packet(
        "limits.outbox_bytes_max",
        limits.outbox_bytes_max,
        packet,
        "queued",
    )?;
    at_least_one_packet(
        "limits.queued_bytes_per_shard_max",
        limits.queued_bytes_per_shard_max,
        packet,
        "queued",
    )?;
    at_least_one_packet(
        "limits.retained_bytes_max",
        limits.retained_bytes_max,
        packet,
        "retained",
    )?;
    // A packet of the largest size must fit in the part of the allowance large packets may use,
    // with the read beyond it.
    let large_share = limits.partial_packet_bytes_per_shard_max / 4 * 3;
    if large_share < packet + super::budget::READ_CHUNK_BYTES {
        return Err(ConfigError::invalid(
            "limits.partial_packet_bytes_per_shard_max",
            limits.partial_packet_bytes_per_shard_max,
            format!(
                "three quarters of it ({large_share}) must hold a packet of \
                 limits.packet_bytes_max ({packet}) and one read more (16 KiB), or such a packet \
                 could never be read"
            ),
            "raise it to at least 4/3 x (packet_bytes_max + 16384), or lower limits.packet_bytes_max",
        ));
    }
    if u64::from(limits.will_bytes_max) > limits.will_bytes_per_shard_max {
        return Err(ConfigError::invalid(
            "limits.will_bytes_per_shard_max",
            limits.will_bytes_per_shard_max,
            format!(
                "must be at least limits.will_bytes_max ({}), or a will of that size could never \
                 be held",
                limits.will_bytes_max
            ),
            "raise it or lower limits.will_bytes_max",
        ));
    }
    // A delivery of the largest size must fit when the shard's write buffers are empty.
    let write_needed = packet + super::budget::WRITE_BUFFER_BYTES;
    if limits.write_buffer_bytes_per_shard_max < write_needed {
        return Err(ConfigError::invalid(
            "limits.write_buffer_bytes_per_shard_max",
            limits.write_buffer_bytes_per_shard_max,
            format!(
                "must be at least limits.packet_bytes_max + 64 KiB ({write_needed}), or a \
                 message of the largest size could never be written"
            ),
            "raise it or lower limits.packet_bytes_max",
        ));
    }
    if u64::from(limits.topic_bytes_max) > limits.subscription_bytes_per_shard_max {
        return Err(ConfigError::invalid(
            "limits.subscription_bytes_per_shard_max",
            limits.subscription_bytes_per_shard_max,
            format!(
                "must be at least limits.topic_bytes_max ({}), or a filter of that length could \
                 never be held",
                limits.topic_bytes_max
            ),
            "raise it or lower limits.topic_bytes_max",
        ));
    }
    if u64::from(limits.will_bytes_max) > packet {
        return Err(ConfigError::invalid(
            "limits.will_bytes_max",
            limits.will_bytes_max,
            format!(
                "must not exceed limits.packet_bytes_max ({packet}): a will arrives in CONNECT"
            ),
            "lower it or raise limits.packet_bytes_max",
        ));
    }
    if limits.sessions_per_shard_max < limits.connections_per_shard_max {
        return Err(ConfigError::invalid(
            "limits.sessions_per_shard_max",
            limits.sessions_per_shard_max,
            format!(
                "must be at least limits.connections_per_shard_max ({}): every connection has a \
                 session",
                limits.connections_per_shard_max
            ),
            "raise it or lower limits.connections_per_shard_max",
        ));
    }
    if limits.connections_per_shard_max > limits.connections_max {
        return Err(ConfigError::invalid(
            "limits.connections_per_shard_max",
            limits.connections_per_shard_max,
            format!(
                "must not exceed limits.connections_max ({})",
                limits.connections_max
            ),
            "lower it or raise limits.connections_max",
        ));
    }
    Ok(())
}

/// A byte budget must hold at least one packet of the largest size, or that packet is dropped.
fn at_least_one_packet(key: &str, bytes: u64, packet: u64, what: &str) -> Result<(), ConfigError> {
    if bytes >= packet {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        bytes,
        format!(
            "must be at least limits.packet_bytes_max ({packet}), or a packet of the largest size \
             could never be {what}"
        ),
        "raise it or lower limits.packet_bytes_max",
    ))
}
