//! `[listeners.tcp.<name>]`: the addresses the broker accepts MQTT connections on. Every shard
//! listens on every address (SO_REUSEPORT), and the kernel spreads connections over the shards.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::runtime::ShardCount;
use super::{Config, ConfigError};

/// The listener tables. A file with a `[listeners]` table (or any `[listeners.tcp.*]`) replaces
/// the built-in set entirely, so a file that names one listener gets exactly that one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Plain TCP listeners by name; the name appears in logs and metrics.
    #[serde(default)]
    pub tcp: BTreeMap<String, TcpListener>,
}

impl Default for Listeners {
    /// One listener, `default`, on every interface at the MQTT port 1883.
    fn default() -> Listeners {
        let tcp = BTreeMap::from([(String::from("default"), TcpListener::default())]);
        Listeners { tcp }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListener {
    /// IP address and port, e.g. `"0.0.0.0:1883"` or `"[::]:1883"`. Port 0 lets the OS choose.
    pub bind: SocketAddr,
    /// `listen(2)` backlog of each shard's socket.
    pub backlog: u32,
    /// When set, shard `i` also listens on `shard_port_base + i`, so a client can pick its shard.
    /// 0 gives each shard its own extra port chosen by the OS (as port 0 does in `bind`; tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_port_base: Option<u16>,
    /// TCP_NODELAY: the broker batches its own writes, so Nagle's algorithm only adds latency.
    pub nodelay: bool,
}

impl Default for TcpListener {
    fn default() -> TcpListener {
        TcpListener {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            backlog: 1024,
            shard_port_base: None,
            nodelay: true,
        }
    }
}

/// The rules of `[listeners]`.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let tcp = &config.listeners.tcp;
    if tcp.is_empty() {
        return Err(ConfigError::invalid(
            "listeners.tcp",
            "{}",
            "no listener is configured, so no client could connect",
            "add one, e.g. [listeners.tcp.default] with bind = \"0.0.0.0:1883\"",
        ));
    }
    for (index, (name, listener)) in tcp.iter().enumerate() {
        check_name(name)?;
        let key = |field: &str| format!("listeners.tcp.{name}.{field}");
        if !(1..=65_535).contains(&listener.backlog) {
            return Err(ConfigError::invalid(
                key("backlog"),
                listener.backlog,
                "must be between 1 and 65535 connections",
                "e.g. 1024 (the kernel also caps it at net.core.somaxconn)",
            ));
        }
        let earlier = tcp
            .iter()
            .take(index)
            .find(|(_, other)| other.bind == listener.bind);
        if let Some((other, _)) = earlier {
            return Err(ConfigError::invalid(
                key("bind"),
                format!("\"{}\"", listener.bind),
                format!("listener `{other}` already binds this address"),
                "give each listener its own address or port",
            ));
        }
        if let (Some(base), ShardCount::Count(shards)) =
            (listener.shard_port_base, &config.runtime.shards)
        {
            check_shard_ports(name, base, *shards)?;
        }
    }
    Ok(())
}

/// Shard ports `base..base + shards` must be real ports (base 0 lets the OS choose each one).
pub(super) fn check_shard_ports(name: &str, base: u16, shards: usize) -> Result<(), ConfigError> {
    let last = usize::from(base) + shards.saturating_sub(1);
    if base == 0 || last <= usize::from(u16::MAX) {
        return Ok(());
    }
    let highest = (usize::from(u16::MAX) + 1).saturating_sub(shards.max(1));
    Err(ConfigError::invalid(
        format!("listeners.tcp.{name}.shard_port_base"),
        base,
        format!("shard ports {base} to {last} (one per shard, {shards} shards) go past 65535"),
        format!("choose a base of at most {highest}, e.g. 20000, or remove the key"),
    ))
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !name.is_empty() && name.chars().all(allowed) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "listeners.tcp",
        format!("{{ \"{name}\" = ... }}"),
        format!("listener name `{name}` is used in logs and metrics labels"),
        "name it with lowercase letters, digits, '-' and '_', e.g. [listeners.tcp.public]",
    ))
}
