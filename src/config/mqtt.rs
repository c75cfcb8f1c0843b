//! `[mqtt]`: the protocol features the broker offers and how it answers what clients ask for.
//! In MQTT 5.0 most of these are announced in CONNACK (3.2.2.3).

use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

/// The longest unique part the broker appends to `assigned_client_id_prefix`: the 23 characters
/// every server must accept in a client identifier (MQTT-3.1.3-5).
pub const ASSIGNED_CLIENT_ID_SUFFIX_BYTES_MAX: usize = 23;
/// An MQTT UTF-8 string holds at most this many bytes (1.5.4).
const STRING_BYTES_MAX: usize = 65_535;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Highest QoS granted (0 to 2): granted QoS = min(requested, max_qos). 5.0: Maximum QoS.
    pub max_qos: u8,
    /// Whether clients may publish retained messages. 5.0: Retain Available.
    pub retain_available: bool,
    /// Whether filters may hold `+` and `#`. 5.0: Wildcard Subscription Available.
    pub wildcard_subscription_available: bool,
    /// Whether `$share/<group>/<filter>` subscriptions work. 5.0: Shared Subscription Available.
    pub shared_subscription_available: bool,
    /// Whether 5.0 SUBSCRIBE may carry a Subscription Identifier.
    pub subscription_identifiers_available: bool,
    /// Topic aliases a 5.0 client may use towards the broker; 0 disables topic aliases (this 0 is
    /// the protocol's own "none", not "unlimited"). 5.0: Topic Alias Maximum.
    pub topic_alias_max: u16,
    /// Topic aliases the broker uses towards a 5.0 client, at most, and never more than the
    /// client's own Topic Alias Maximum: the most recently used topics of each connection keep an
    /// alias (least recently used is replaced). 0 turns this off.
    pub topic_alias_to_client_max: u16,
    /// Check that a PUBLISH marked as UTF-8 (Payload Format Indicator 1) carries valid UTF-8, and
    /// close the connection with 0x99 (Payload format invalid) when it does not.
    pub payload_format_check: bool,
    /// Longest keep-alive granted, in seconds; a 5.0 client asking more gets this as Server Keep
    /// Alive.
    pub keepalive_max_secs: u16,
    /// CONNECT must arrive within this many milliseconds of the TCP connection opening.
    pub connect_timeout_ms: u64,
    /// Accept an empty client id (and assign one); `false` refuses it with "identifier rejected".
    pub allow_zero_length_client_id: bool,
    /// Prefix of the client ids the broker assigns.
    pub assigned_client_id_prefix: String,
    /// Queue QoS 0 messages for offline persistent sessions (MQTT allows dropping them).
    pub queue_qos0_offline: bool,
    /// Response Information prefix sent to 5.0 clients that request it; empty sends none.
    pub response_information: String,
}

impl Default for Mqtt {
    fn default() -> Mqtt {
        Mqtt {
            max_qos: 2,
            retain_available: true,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            topic_alias_max: 64,
            topic_alias_to_client_max: 0,
            payload_format_check: false,
            keepalive_max_secs: 65_535,
            connect_timeout_ms: 10_000,
            allow_zero_length_client_id: true,
            assigned_client_id_prefix: String::from("ringmq-"),
            queue_qos0_offline: false,
            response_information: String::new(),
        }
    }
}

pub(super) const RANGES: &[Range] = &[
    Range {
        key: "mqtt.max_qos",
        value: |c| c.mqtt.max_qos.into(),
        min: 0,
        max: 2,
        unit: "",
        fix: "2 grants what clients ask for; 1 or 0 downgrades their subscriptions and publishes",
    },
    Range {
        key: "mqtt.topic_alias_to_client_max",
        value: |c| c.mqtt.topic_alias_to_client_max.into(),
        min: 0,
        max: 65_535,
        unit: "aliases",
        fix: "0 sends full topics; e.g. 16 gives each 5.0 connection 16 aliases for its busiest topics",
    },
    Range {
        key: "mqtt.topic_alias_max",
        value: |c| c.mqtt.topic_alias_max.into(),
        min: 0,
        max: 65_535,
        unit: "aliases",
        fix: "0 disables topic aliases; e.g. 64",
    },
    Range {
        key: "mqtt.keepalive_max_secs",
        value: |c| c.mqtt.keepalive_max_secs.into(),
        min: 1,
        max: 65_535,
        unit: "seconds",
        fix: "65535 grants any keep-alive a client asks for; e.g. 300 finds dead clients sooner",
    },
    Range {
        key: "mqtt.connect_timeout_ms",
        value: |c| c.mqtt.connect_timeout_ms,
        min: 100,
        max: 600_000,
        unit: "milliseconds",
        fix: "e.g. 10000 (10 s)",
    },
];

/// The rules of `[mqtt]` beyond plain ranges.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let mqtt = &config.mqtt;
    let prefix = &mqtt.assigned_client_id_prefix;
    check_string("mqtt.assigned_client_id_prefix", prefix, 64)?;
    let room = usize::from(config.limits.client_id_bytes_max);
    if prefix.len() + ASSIGNED_CLIENT_ID_SUFFIX_BYTES_MAX > room {
        return Err(ConfigError::invalid(
            "mqtt.assigned_client_id_prefix",
            format!("{prefix:?}"),
            format!(
                "with the {ASSIGNED_CLIENT_ID_SUFFIX_BYTES_MAX}-byte unique suffix an assigned id \
                 would exceed limits.client_id_bytes_max ({room})"
            ),
            "shorten the prefix or raise limits.client_id_bytes_max",
        ));
    }
    check_string(
        "mqtt.response_information",
        &mqtt.response_information,
        STRING_BYTES_MAX,
    )
}

/// A string the broker sends to clients: MQTT strings are at most 65535 bytes and hold no U+0000
/// or other control characters (1.5.4).
fn check_string(key: &str, value: &str, bytes_max: usize) -> Result<(), ConfigError> {
    if value.len() > bytes_max {
        return Err(ConfigError::invalid(
            key,
            format!("\"{}…\"", value.chars().take(16).collect::<String>()),
            format!("is {} bytes long, more than {bytes_max}", value.len()),
            "shorten it",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?}"),
            "contains a control character, which MQTT clients must reject",
            "remove it",
        ));
    }
    Ok(())
}
