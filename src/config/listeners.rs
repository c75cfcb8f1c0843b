//! `[listeners.tcp.<name>]`, `[listeners.tls.<name>]`, `[listeners.ws.<name>]` and
//! `[listeners.wss.<name>]`: the addresses the broker accepts MQTT connections on, plain, over
//! TLS, over WebSocket or over WebSocket and TLS (the WebSocket keys are in `websocket.rs`). Every
//! shard
//! listens on every address (SO_REUSEPORT), and the kernel spreads connections over the shards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::runtime::ShardCount;
use super::websocket::{self, WsListener, WssListener};
use super::{Config, ConfigError};

/// The listener tables. A file with a `[listeners]` table (or any `[listeners.tcp.*]`) replaces
/// the built-in set entirely, so a file that names one listener gets exactly that one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Plain TCP listeners by name; the name appears in logs and metrics.
    #[serde(default)]
    pub tcp: BTreeMap<String, TcpListener>,
    /// TLS listeners by name (MQTT over TLS, port 8883 by convention).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tls: BTreeMap<String, TlsListener>,
    /// MQTT over WebSocket listeners by name (port 8083 by convention).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ws: BTreeMap<String, WsListener>,
    /// MQTT over WebSocket over TLS listeners by name (port 8084 by convention).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wss: BTreeMap<String, WssListener>,
}

impl Default for Listeners {
    /// One listener, `default`, on every interface at the MQTT port 1883.
    fn default() -> Listeners {
        let tcp = BTreeMap::from([(String::from("default"), TcpListener::default())]);
        Listeners {
            tcp,
            tls: BTreeMap::new(),
            ws: BTreeMap::new(),
            wss: BTreeMap::new(),
        }
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

/// A TLS listener: the keys of a TCP listener, then the certificate, key and client policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsListener {
    /// IP address and port; 8883 is MQTT over TLS (IANA "secure-mqtt").
    pub bind: SocketAddr,
    pub backlog: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_port_base: Option<u16>,
    pub nodelay: bool,
    /// PEM: the server certificate, then its intermediates (Mosquitto `certfile`). Required.
    pub cert_chain_file: PathBuf,
    /// PEM: the private key of the first certificate (Mosquitto `keyfile`). Required.
    pub key_file: PathBuf,
    /// PEM: the CAs that sign client certificates (Mosquitto `cafile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Clients must present a certificate signed by `ca_file` (mutual TLS).
    pub require_certificate: bool,
    /// The client certificate's subject CN (else its first DNS name) is the MQTT username.
    pub use_identity_as_username: bool,
    /// `"1.2"` or `"1.3"`.
    pub min_version: String,
    /// rustls suite names; empty: every suite of the enabled versions.
    pub cipher_suites: Vec<String>,
    /// ALPN protocols, e.g. `["mqtt"]`; empty: no ALPN.
    pub alpn: Vec<String>,
    /// The TLS handshake must finish within this, in milliseconds.
    pub handshake_timeout_ms: u32,
}

impl Default for TlsListener {
    fn default() -> TlsListener {
        TlsListener {
            bind: SocketAddr::from(([0, 0, 0, 0], 8883)),
            backlog: 1024,
            shard_port_base: None,
            nodelay: true,
            cert_chain_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
            min_version: String::from("1.2"),
            cipher_suites: Vec::new(),
            alpn: Vec::new(),
            handshake_timeout_ms: 10_000,
        }
    }
}

/// The values `min_version` may take (`crate::tls::TlsVersion::parse` accepts each of them).
pub const TLS_VERSIONS: [&str; 2] = ["1.2", "1.3"];

/// What every listener, of any kind, has.
pub(super) struct Common<'a> {
    kind: &'static str,
    name: &'a str,
    pub(super) bind: SocketAddr,
    pub(super) backlog: u32,
    pub(super) shard_port_base: Option<u16>,
}

/// Every listener of every kind: TCP, TLS, WebSocket, secure WebSocket, each kind in name order
/// (the runtime's listener order).
pub(super) fn all(config: &Config) -> Vec<Common<'_>> {
    let tcp = config.listeners.tcp.iter().map(|(name, l)| Common {
        kind: "tcp",
        name,
        bind: l.bind,
        backlog: l.backlog,
        shard_port_base: l.shard_port_base,
    });
    let tls = config.listeners.tls.iter().map(|(name, l)| Common {
        kind: "tls",
        name,
        bind: l.bind,
        backlog: l.backlog,
        shard_port_base: l.shard_port_base,
    });
    let ws = config.listeners.ws.iter().map(|(name, l)| Common {
        kind: "ws",
        name,
        bind: l.bind,
        backlog: l.backlog,
        shard_port_base: l.shard_port_base,
    });
    let wss = config.listeners.wss.iter().map(|(name, l)| Common {
        kind: "wss",
        name,
        bind: l.bind,
        backlog: l.backlog,
        shard_port_base: l.shard_port_base,
    });
    tcp.chain(tls).chain(ws).chain(wss).collect()
}

/// The per-shard port bases of every listener, for `Config::shard_count`.
pub(super) fn shard_port_bases(config: &Config) -> Vec<(String, u16)> {
    all(config)
        .into_iter()
        .filter_map(|l| Some((format!("{}.{}", l.kind, l.name), l.shard_port_base?)))
        .collect()
}

/// The rules of `[listeners]`.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let listeners = all(config);
    if listeners.is_empty() {
        return Err(ConfigError::invalid(
            "listeners.tcp",
            "{}",
            "no listener is configured, so no client could connect",
            "add one, e.g. [listeners.tcp.default] with bind = \"0.0.0.0:1883\"",
        ));
    }
    for (index, listener) in listeners.iter().enumerate() {
        check_name(listener.kind, listener.name)?;
        let key = |field: &str| format!("listeners.{}.{}.{field}", listener.kind, listener.name);
        if !(1..=65_535).contains(&listener.backlog) {
            return Err(ConfigError::invalid(
                key("backlog"),
                listener.backlog,
                "must be between 1 and 65535 connections",
                "e.g. 1024 (the kernel also caps it at net.core.somaxconn)",
            ));
        }
        let earlier = listeners
            .iter()
            .take(index)
            .find(|other| other.bind == listener.bind);
        if let Some(other) = earlier {
            return Err(ConfigError::invalid(
                key("bind"),
                format!("\"{}\"", listener.bind),
                format!(
                    "listener `{}.{}` already binds this address",
                    other.kind, other.name
                ),
                "give each listener its own address or port",
            ));
        }
        if let (Some(base), ShardCount::Count(shards)) =
            (listener.shard_port_base, &config.runtime.shards)
        {
            check_shard_ports(
                &format!("{}.{}", listener.kind, listener.name),
                base,
                *shards,
            )?;
        }
    }
    for (name, listener) in &config.listeners.tls {
        check_tls("tls", name, listener)?;
    }
    for (name, listener) in &config.listeners.ws {
        websocket::check("ws", name, listener)?;
    }
    for (name, listener) in &config.listeners.wss {
        check_tls("wss", name, &listener.tls())?;
        websocket::check("wss", name, &listener.websocket())?;
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
        format!("listeners.{name}.shard_port_base"),
        base,
        format!("shard ports {base} to {last} (one per shard, {shards} shards) go past 65535"),
        format!("choose a base of at most {highest}, e.g. 20000, or remove the key"),
    ))
}

fn check_name(kind: &str, name: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !name.is_empty() && name.chars().all(allowed) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        format!("listeners.{kind}"),
        format!("{{ \"{name}\" = ... }}"),
        format!("listener name `{name}` is used in logs and metrics labels"),
        "name it with lowercase letters, digits, '-' and '_', e.g. [listeners.tcp.public]",
    ))
}

/// The TLS keys that can be checked without reading files (the files are read at start).
fn check_tls(kind: &str, name: &str, listener: &TlsListener) -> Result<(), ConfigError> {
    let key = |field: &str| format!("listeners.{kind}.{name}.{field}");
    for (field, path) in [
        ("cert_chain_file", &listener.cert_chain_file),
        ("key_file", &listener.key_file),
    ] {
        if path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                key(field),
                "(not set)",
                "a TLS listener needs its certificate chain and private key",
                format!("set {field} to a PEM file, e.g. \"/etc/ringmq/certs/server.pem\""),
            ));
        }
    }
    if !TLS_VERSIONS.contains(&listener.min_version.as_str()) {
        return Err(ConfigError::invalid(
            key("min_version"),
            format!("\"{}\"", listener.min_version),
            "not a TLS version ringmq offers",
            "write \"1.2\" or \"1.3\"",
        ));
    }
    if listener.require_certificate && listener.ca_file.is_none() {
        return Err(ConfigError::invalid(
            key("require_certificate"),
            true,
            "client certificates cannot be verified without the CAs that sign them",
            "set ca_file to a PEM file of those CAs",
        ));
    }
    if listener.use_identity_as_username && !listener.require_certificate {
        return Err(ConfigError::invalid(
            key("use_identity_as_username"),
            true,
            "a client without a certificate would have no username",
            "also set require_certificate = true (and ca_file)",
        ));
    }
    if !(100..=600_000).contains(&listener.handshake_timeout_ms) {
        return Err(ConfigError::invalid(
            key("handshake_timeout_ms"),
            listener.handshake_timeout_ms,
            "must be between 100 and 600000 milliseconds",
            "e.g. 10000",
        ));
    }
    Ok(())
}
