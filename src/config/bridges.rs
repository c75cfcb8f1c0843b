//! `[bridges.<name>]`: connections from this broker to other MQTT brokers, in Mosquitto's terms
//! (`address`, `topic pattern direction qos local-prefix remote-prefix`). A bridge is an MQTT
//! client of the remote broker; the messages of its `out` rules go there, those its `in` rules
//! subscribe to come back and are published here. See docs/BRIDGES.md.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// The MQTT version a bridge speaks to its remote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BridgeVersion {
    #[serde(rename = "3.1.1")]
    V311,
    #[default]
    #[serde(rename = "5.0")]
    V5,
}

/// Which way the messages of a topic rule go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local messages are published to the remote.
    #[default]
    Out,
    /// The remote's messages are published here.
    In,
    /// Both: out and in, with loop prevention.
    Both,
}

impl Direction {
    pub fn is_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn is_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One topic rule: Mosquitto's `topic <topic> <direction> <qos> <local_prefix> <remote_prefix>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicRule {
    /// A topic filter (wildcards allowed), e.g. `"sensors/#"`.
    pub topic: String,
    pub direction: Direction,
    /// The highest QoS messages of this rule cross the bridge at (0, 1 or 2); a message keeps a
    /// lower QoS of its own.
    pub qos: u8,
    /// Put before `topic` on this broker: the local topic is `local_prefix + topic`.
    pub local_prefix: String,
    /// Put before `topic` on the remote: the remote topic is `remote_prefix + topic`.
    pub remote_prefix: String,
}

/// One bridge to a remote broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bridge {
    /// The remote's `host:port`, several for failover (tried in order, round robin).
    pub addresses: Vec<String>,
    pub version: BridgeVersion,
    /// The shard the bridge runs on; not set: the hash of the bridge's name picks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// The client id on the remote; not set: `ringmq-bridge-<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Clean start (3.1.1: clean session) on the remote. False keeps the remote session, so the
    /// remote's QoS 1/2 messages for the bridge's subscriptions wait for it across a reconnect.
    pub clean_start: bool,
    /// 5.0: how long the remote keeps the bridge's session after a disconnect, in seconds.
    pub session_expiry_secs: u32,
    /// Keep alive on the remote connection, in seconds (0: off).
    pub keepalive_secs: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// 3.1.1: announce a bridge with Mosquitto's protocol-version bit (0x84), so a Mosquitto
    /// remote does not send the bridge its own messages back. Mosquitto's `try_private`.
    pub try_private: bool,
    /// QoS 1 and 2 messages sent to the remote and not yet acknowledged, at most.
    pub inflight_max: u16,
    /// Waits between connection attempts: exponential from min to max, with jitter, in ms.
    pub reconnect_min_ms: u32,
    pub reconnect_max_ms: u32,
    /// TCP connect, TLS handshake and CONNACK must come within this, in ms.
    pub connect_timeout_ms: u32,
    /// A 5.0 message crossing more bridges than this is not forwarded (user property
    /// `ringmq-bridge-hops`): a guard against loops through several brokers.
    pub hops_max: u8,
    /// TLS to the remote: the CA certificates (PEM) that verify the remote's certificate. Set:
    /// TLS on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the bridge's certificate chain and key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name checked in the remote's certificate (and sent as SNI); not set: the host of
    /// the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// ALPN protocols offered, e.g. `["mqtt"]` (AWS IoT on port 443 wants `x-amzn-mqtt-ca`).
    pub alpn: Vec<String>,
    pub topics: Vec<TopicRule>,
}

impl Default for Bridge {
    fn default() -> Bridge {
        Bridge {
            addresses: Vec::new(),
            version: BridgeVersion::V5,
            shard: None,
            client_id: None,
            clean_start: false,
            session_expiry_secs: 3_600,
            keepalive_secs: 60,
            username: None,
            password: None,
            try_private: true,
            inflight_max: 20,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 30_000,
            connect_timeout_ms: 10_000,
            hops_max: 8,
            ca_file: None,
            cert_file: None,
            key_file: None,
            sni: None,
            alpn: Vec::new(),
            topics: Vec::new(),
        }
    }
}

impl Bridge {
    /// The client id used on the remote.
    pub fn remote_client_id(&self, name: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("ringmq-bridge-{name}"))
    }

    /// True when the remote connection uses TLS.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some()
    }
}

/// The bridges by name.
pub type Bridges = BTreeMap<String, Bridge>;

/// The rules of `[bridges.<name>]`.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    for (name, bridge) in &config.bridges {
        check_bridge(name, bridge, config)?;
    }
    Ok(())
}

fn check_bridge(name: &str, bridge: &Bridge, config: &Config) -> Result<(), ConfigError> {
    let key = |k: &str| format!("bridges.{name}.{k}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::invalid(
            format!("bridges.{name}"),
            format!("\"{name}\""),
            "a bridge name is used in topics and metrics",
            "use letters, digits, '-' and '_' only",
        ));
    }
    if bridge.addresses.is_empty() {
        return Err(ConfigError::invalid(
            key("addresses"),
            "[]",
            "a bridge needs the remote broker's address",
            "write e.g. addresses = [\"broker.example.com:1883\"]",
        ));
    }
    for address in &bridge.addresses {
        if split_host_port(address).is_none() {
            return Err(ConfigError::invalid(
                key("addresses"),
                format!("\"{address}\""),
                "not of the form host:port",
                "write e.g. \"broker.example.com:1883\" or \"[::1]:1883\"",
            ));
        }
    }
    if let Some(shard) = bridge.shard
        && let super::ShardCount::Count(count) = config.runtime.shards
        && shard >= count
    {
        return Err(ConfigError::invalid(
            key("shard"),
            shard,
            format!("there are only {count} shards (numbered from 0)"),
            "pick a shard below runtime.shards, or remove the key",
        ));
    }
    if let Some(id) = &bridge.client_id
        && (id.is_empty() || id.len() > 65_535)
    {
        return Err(ConfigError::invalid(
            key("client_id"),
            format!("\"{id}\""),
            "must be 1 to 65535 bytes",
            "write a client id the remote accepts, or remove the key for ringmq-bridge-<name>",
        ));
    }
    if bridge.password.is_some() && bridge.username.is_none() {
        return Err(ConfigError::invalid(
            key("password"),
            "\"...\"",
            "a password without a username",
            "set username too",
        ));
    }
    check_numbers(name, bridge)?;
    check_tls(name, bridge)?;
    if bridge.topics.is_empty() {
        return Err(ConfigError::invalid(
            key("topics"),
            "[]",
            "a bridge without topic rules forwards nothing",
            "add [[bridges.NAME.topics]] with topic = \"sensors/#\" and direction = \"out\"",
        ));
    }
    for (index, rule) in bridge.topics.iter().enumerate() {
        check_rule(&format!("bridges.{name}.topics[{index}]"), rule)?;
    }
    Ok(())
}

fn check_numbers(name: &str, bridge: &Bridge) -> Result<(), ConfigError> {
    let key = |k: &str| format!("bridges.{name}.{k}");
    if bridge.inflight_max == 0 {
        return Err(ConfigError::invalid(
            key("inflight_max"),
            0,
            "no QoS 1 or 2 message could ever be sent",
            "write a number from 1 to 65535, e.g. 20",
        ));
    }
    if bridge.reconnect_min_ms == 0 || bridge.reconnect_min_ms > bridge.reconnect_max_ms {
        return Err(ConfigError::invalid(
            key("reconnect_min_ms"),
            bridge.reconnect_min_ms,
            format!(
                "must be at least 1 and at most reconnect_max_ms ({})",
                bridge.reconnect_max_ms
            ),
            "e.g. reconnect_min_ms = 1000 and reconnect_max_ms = 30000",
        ));
    }
    if bridge.connect_timeout_ms < 100 {
        return Err(ConfigError::invalid(
            key("connect_timeout_ms"),
            bridge.connect_timeout_ms,
            "too short for a connection to a remote broker",
            "write at least 100, e.g. 10000",
        ));
    }
    Ok(())
}

fn check_tls(name: &str, bridge: &Bridge) -> Result<(), ConfigError> {
    let key = |k: &str| format!("bridges.{name}.{k}");
    let tls_only = [
        ("cert_file", bridge.cert_file.is_some()),
        ("key_file", bridge.key_file.is_some()),
        ("sni", bridge.sni.is_some()),
        ("alpn", !bridge.alpn.is_empty()),
    ];
    if !bridge.tls()
        && let Some((k, _)) = tls_only.iter().find(|(_, set)| *set)
    {
        return Err(ConfigError::invalid(
            key(k),
            "(set)",
            "TLS keys need TLS, which ca_file turns on",
            "set ca_file to the CA that signed the remote's certificate",
        ));
    }
    super::error::cert_and_key_together(
        &key(""),
        ("cert_file", bridge.cert_file.is_some()),
        ("key_file", bridge.key_file.is_some()),
    )
}

fn check_rule(key: &str, rule: &TopicRule) -> Result<(), ConfigError> {
    if rule.qos > 2 {
        return Err(ConfigError::invalid(
            format!("{key}.qos"),
            rule.qos,
            "QoS is 0, 1 or 2",
            "write 0, 1 or 2",
        ));
    }
    let filter_ok = |filter: &str| {
        crate::protocol::topic::TopicFilter::parse(crate::protocol::ByteString::from(filter))
            .is_ok()
    };
    if rule.topic.is_empty() && (rule.local_prefix.is_empty() || rule.remote_prefix.is_empty()) {
        return Err(ConfigError::invalid(
            format!("{key}.topic"),
            "\"\"",
            "an empty topic needs both prefixes (it then maps one topic to another)",
            "write a topic filter, e.g. \"sensors/#\"",
        ));
    }
    for (what, prefix) in [
        ("local_prefix", &rule.local_prefix),
        ("remote_prefix", &rule.remote_prefix),
    ] {
        if prefix.contains(['+', '#']) {
            return Err(ConfigError::invalid(
                format!("{key}.{what}"),
                format!("\"{prefix}\""),
                "a prefix may not hold wildcards",
                "write a plain topic prefix, e.g. \"site1/\"",
            ));
        }
        let full = format!("{prefix}{}", rule.topic);
        if !filter_ok(&full) {
            return Err(ConfigError::invalid(
                format!("{key}.topic"),
                format!("\"{full}\""),
                format!("{what} + topic is not a valid topic filter"),
                "wildcards must fill a whole level (\"a/+/c\", \"a/#\"); end a prefix with '/'",
            ));
        }
    }
    Ok(())
}

/// `host:port` split at the last colon (`[::1]:1883` gives `::1`); `None` without a port.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}
