//! `[listeners.ws.<name>]` and `[listeners.wss.<name>]`: MQTT over WebSocket, plain or over TLS
//! (MQTT 5.0 and 3.1.1 section 6), for browsers and other clients that can only speak
//! WebSocket. A WebSocket listener has the keys of a TCP listener (a secure one those of a TLS
//! listener too) and the WebSocket keys here: the path, the allowed origins, and the bounds of
//! the opening handshake and of frames and messages.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::listeners::TlsListener;

/// tungstenite refuses an opening handshake over 64 KiB whatever we configure.
pub const HANDSHAKE_BYTES_LIMIT: u32 = 65_536;
/// The largest frame or message a listener may allow (the largest MQTT packet and its header).
pub const MESSAGE_BYTES_LIMIT: u32 = 268_435_460;

/// A plain WebSocket listener (`ws://host:8083/mqtt`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsListener {
    /// IP address and port; 8083 is the usual MQTT-over-WebSocket port (EMQX, NanoMQ).
    pub bind: SocketAddr,
    pub backlog: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_port_base: Option<u16>,
    pub nodelay: bool,
    /// The request path clients must ask for, e.g. `"/mqtt"` (others get HTTP 404). Not set:
    /// any path, as Mosquitto does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Origin` values a browser's request may carry (`"https://app.example.com"`); a request
    /// with another gets HTTP 403. Empty: any origin. Requests without `Origin` (clients that
    /// are not browsers) are always accepted.
    pub allowed_origins: Vec<String>,
    /// The largest WebSocket frame payload a client may send, in bytes (larger: close 1009).
    pub frame_bytes_max: u32,
    /// The largest WebSocket message (all fragments of it) a client may send, in bytes.
    pub message_bytes_max: u32,
    /// The largest HTTP upgrade request, in bytes (larger: closed).
    pub handshake_bytes_max: u32,
    /// The opening handshake (TLS, then the HTTP upgrade) must finish within this, in ms.
    pub handshake_timeout_ms: u32,
}

impl Default for WsListener {
    fn default() -> WsListener {
        WsListener {
            bind: SocketAddr::from(([0, 0, 0, 0], 8083)),
            backlog: 1024,
            shard_port_base: None,
            nodelay: true,
            path: None,
            allowed_origins: Vec::new(),
            frame_bytes_max: 262_144,
            message_bytes_max: 262_144,
            handshake_bytes_max: 16_384,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// A WebSocket listener over TLS (`wss://host:8084/mqtt`): the keys of a TLS listener and of a
/// WebSocket listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WssListener {
    /// IP address and port; 8084 is the usual MQTT-over-secure-WebSocket port (EMQX).
    pub bind: SocketAddr,
    pub backlog: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_port_base: Option<u16>,
    pub nodelay: bool,
    pub cert_chain_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    pub min_version: String,
    pub cipher_suites: Vec<String>,
    /// ALPN protocols; browsers offer `http/1.1`, so a list that does not hold it refuses them.
    pub alpn: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub allowed_origins: Vec<String>,
    pub frame_bytes_max: u32,
    pub message_bytes_max: u32,
    pub handshake_bytes_max: u32,
    pub handshake_timeout_ms: u32,
}

impl Default for WssListener {
    fn default() -> WssListener {
        let tls = TlsListener::default();
        let ws = WsListener::default();
        WssListener {
            bind: SocketAddr::from(([0, 0, 0, 0], 8084)),
            backlog: ws.backlog,
            shard_port_base: None,
            nodelay: ws.nodelay,
            cert_chain_file: tls.cert_chain_file,
            key_file: tls.key_file,
            ca_file: tls.ca_file,
            require_certificate: tls.require_certificate,
            use_identity_as_username: tls.use_identity_as_username,
            min_version: tls.min_version,
            cipher_suites: tls.cipher_suites,
            alpn: tls.alpn,
            path: ws.path,
            allowed_origins: ws.allowed_origins,
            frame_bytes_max: ws.frame_bytes_max,
            message_bytes_max: ws.message_bytes_max,
            handshake_bytes_max: ws.handshake_bytes_max,
            handshake_timeout_ms: ws.handshake_timeout_ms,
        }
    }
}

impl WssListener {
    /// The TLS part of this listener, as a TLS listener on the same address would have it.
    pub fn tls(&self) -> TlsListener {
        TlsListener {
            bind: self.bind,
            backlog: self.backlog,
            shard_port_base: self.shard_port_base,
            nodelay: self.nodelay,
            cert_chain_file: self.cert_chain_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
            min_version: self.min_version.clone(),
            cipher_suites: self.cipher_suites.clone(),
            alpn: self.alpn.clone(),
            handshake_timeout_ms: self.handshake_timeout_ms,
        }
    }

    /// The WebSocket part of this listener, as a plain WebSocket listener would have it.
    pub fn websocket(&self) -> WsListener {
        WsListener {
            bind: self.bind,
            backlog: self.backlog,
            shard_port_base: self.shard_port_base,
            nodelay: self.nodelay,
            path: self.path.clone(),
            allowed_origins: self.allowed_origins.clone(),
            frame_bytes_max: self.frame_bytes_max,
            message_bytes_max: self.message_bytes_max,
            handshake_bytes_max: self.handshake_bytes_max,
            handshake_timeout_ms: self.handshake_timeout_ms,
        }
    }
}

/// The WebSocket keys of listener `listeners.<kind>.<name>`.
pub(super) fn check(kind: &str, name: &str, listener: &WsListener) -> Result<(), ConfigError> {
    let key = |field: &str| format!("listeners.{kind}.{name}.{field}");
    if let Some(path) = &listener.path
        && (!path.starts_with('/') || path.contains(char::is_whitespace))
    {
        return Err(ConfigError::invalid(
            key("path"),
            format!("\"{path}\""),
            "a request path starts with '/' and has no spaces",
            "write e.g. \"/mqtt\", or remove the key to accept any path",
        ));
    }
    for origin in &listener.allowed_origins {
        if !origin.contains("://") || origin.ends_with('/') || origin.contains(char::is_whitespace)
        {
            return Err(ConfigError::invalid(
                key("allowed_origins"),
                format!("\"{origin}\""),
                "an origin is a scheme, host and optional port, as browsers send it",
                "write e.g. \"https://dashboard.example.com\" (no path, no trailing '/')",
            ));
        }
    }
    let ranges = [
        (
            "frame_bytes_max",
            listener.frame_bytes_max,
            16,
            MESSAGE_BYTES_LIMIT,
        ),
        (
            "message_bytes_max",
            listener.message_bytes_max,
            16,
            MESSAGE_BYTES_LIMIT,
        ),
        (
            "handshake_bytes_max",
            listener.handshake_bytes_max,
            1024,
            HANDSHAKE_BYTES_LIMIT,
        ),
        (
            "handshake_timeout_ms",
            listener.handshake_timeout_ms,
            100,
            600_000,
        ),
    ];
    for (field, value, low, high) in ranges {
        if !(low..=high).contains(&value) {
            return Err(ConfigError::invalid(
                key(field),
                value,
                format!("must be between {low} and {high}"),
                format!("e.g. {}", default_of(field)),
            ));
        }
    }
    if listener.message_bytes_max < listener.frame_bytes_max {
        return Err(ConfigError::invalid(
            key("message_bytes_max"),
            listener.message_bytes_max,
            format!(
                "smaller than frame_bytes_max ({}): a message is one or more frames",
                listener.frame_bytes_max
            ),
            "raise message_bytes_max or lower frame_bytes_max",
        ));
    }
    Ok(())
}

fn default_of(field: &str) -> u32 {
    let default = WsListener::default();
    match field {
        "frame_bytes_max" => default.frame_bytes_max,
        "message_bytes_max" => default.message_bytes_max,
        "handshake_bytes_max" => default.handshake_bytes_max,
        _ => default.handshake_timeout_ms,
    }
}
