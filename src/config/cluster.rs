//! `[cluster]`: several nodes acting as one broker over NATS (docs/CLUSTER.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

/// A password or token: written and read as a plain string, but its `Debug` shows only that it
/// is set, so a config printed for debugging does not show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Longest `name` and `node_id`: they are tokens of NATS subjects.
pub const CLUSTER_TOKEN_BYTES_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// Join the cluster through NATS. Off: the node is a broker on its own.
    pub enabled: bool,
    /// NATS servers to connect to (`nats://host:port`, `tls://host:port`); the client tries
    /// them in turn and reconnects forever.
    pub nats_urls: Vec<String>,
    /// The cluster's name: the nodes of one cluster share it, and it prefixes every subject.
    pub name: String,
    /// This node's id, unique in the cluster. Required when `enabled`.
    pub node_id: String,
    /// Messages and control mail queued from all shards to the NATS link.
    pub link_queue_max: u32,
    /// Messages queued from the NATS link to each shard.
    pub inbound_queue_max: u32,
    /// Milliseconds between two heartbeats of this node.
    pub heartbeat_ms: u32,
    /// A node not heard for this long is forgotten (its interest removed).
    pub node_timeout_ms: u32,
    /// Longest wait of a SUBACK for the other nodes to acknowledge the new interest.
    pub interest_ack_timeout_ms: u32,
    /// QoS 1/2 messages for other nodes go through a JetStream stream (at least once, the
    /// PUBACK/PUBREC waits for the stream); off: core NATS, at most once.
    pub jetstream: bool,
    /// The stream's byte limit; a message that does not fit is refused to its publisher.
    pub stream_max_bytes: u64,
    /// A message no node took from the stream within this many seconds is dropped by NATS.
    pub stream_max_age_s: u32,
    /// Longest wait of a PUBACK/PUBREC for the stream; past it the acknowledgement is refused.
    pub stream_ack_timeout_ms: u32,
    /// NATS user; its password is `password` or the first line of `password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// NATS authentication token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// NKey login: a file whose first line is the user's NKey seed (`SU...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// JWT login (decentralized auth): a `.creds` file holding the user JWT and its NKey seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// TLS to NATS: the CA certificates (PEM) that verify the server's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Mutual TLS: this node's certificate chain and key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a NATS server that does not offer TLS (`tls://` URLs require it too).
    pub tls_required: bool,
}

impl Cluster {
    /// Every file key that is set, with its name.
    pub fn files(&self) -> Vec<(&'static str, &PathBuf)> {
        [
            ("cluster.password_file", &self.password_file),
            ("cluster.nkey_seed_file", &self.nkey_seed_file),
            ("cluster.credentials_file", &self.credentials_file),
            ("cluster.tls_ca_file", &self.tls_ca_file),
            ("cluster.tls_cert_file", &self.tls_cert_file),
            ("cluster.tls_key_file", &self.tls_key_file),
        ]
        .into_iter()
        .filter_map(|(key, path)| path.as_ref().map(|path| (key, path)))
        .collect()
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster {
            enabled: false,
            nats_urls: vec![String::from("nats://127.0.0.1:4222")],
            name: String::from("ringmq"),
            node_id: String::new(),
            link_queue_max: 65_536,
            inbound_queue_max: 16_384,
            heartbeat_ms: 1_000,
            node_timeout_ms: 5_000,
            interest_ack_timeout_ms: 2_000,
            jetstream: true,
            stream_max_bytes: 1 << 30,
            stream_max_age_s: 3_600,
            stream_ack_timeout_ms: 10_000,
            user: None,
            password: None,
            password_file: None,
            token: None,
            nkey_seed_file: None,
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

pub(super) const RANGES: &[Range] = &[
    Range {
        key: "cluster.link_queue_max",
        value: |c| c.cluster.link_queue_max.into(),
        min: 64,
        max: 16_777_216,
        unit: "messages",
        fix: "e.g. 65536: what the shards may queue for NATS while the link is busy",
    },
    Range {
        key: "cluster.inbound_queue_max",
        value: |c| c.cluster.inbound_queue_max.into(),
        min: 64,
        max: 16_777_216,
        unit: "messages",
        fix: "e.g. 16384: what the NATS link may queue for one shard",
    },
    Range {
        key: "cluster.heartbeat_ms",
        value: |c| c.cluster.heartbeat_ms.into(),
        min: 50,
        max: 60_000,
        unit: "milliseconds",
        fix: "e.g. 1000",
    },
    Range {
        key: "cluster.node_timeout_ms",
        value: |c| c.cluster.node_timeout_ms.into(),
        min: 100,
        max: 600_000,
        unit: "milliseconds",
        fix: "e.g. 5000, several heartbeats",
    },
    Range {
        key: "cluster.interest_ack_timeout_ms",
        value: |c| c.cluster.interest_ack_timeout_ms.into(),
        min: 1,
        max: 60_000,
        unit: "milliseconds",
        fix: "e.g. 2000",
    },
    Range {
        key: "cluster.stream_max_bytes",
        value: |c| c.cluster.stream_max_bytes,
        min: 1 << 20,
        max: 1 << 50,
        unit: "bytes",
        fix: "e.g. 1073741824: what the stream may hold for nodes that are slow or down",
    },
    Range {
        key: "cluster.stream_max_age_s",
        value: |c| c.cluster.stream_max_age_s.into(),
        min: 1,
        max: 31_536_000,
        unit: "seconds",
        fix: "e.g. 3600: how long a message waits in the stream for a node that is down",
    },
    Range {
        key: "cluster.stream_ack_timeout_ms",
        value: |c| c.cluster.stream_ack_timeout_ms.into(),
        min: 100,
        max: 600_000,
        unit: "milliseconds",
        fix: "e.g. 10000: how long a publisher's acknowledgement may wait for NATS",
    },
];

/// A NATS subject token: what `name` and `node_id` may be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= CLUSTER_TOKEN_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let cluster = &config.cluster;
    if !is_token(&cluster.name) {
        return Err(ConfigError::invalid(
            "cluster.name",
            format!("{:?}", cluster.name),
            "must be 1 to 64 letters, digits, '-' or '_' (it is part of NATS subjects)",
            "e.g. name = \"ringmq\"; every node of one cluster uses the same name",
        ));
    }
    if cluster.enabled || !cluster.node_id.is_empty() {
        if cluster.node_id.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.node_id",
                "\"\"",
                "required when cluster.enabled = true",
                "give each node its own id, e.g. node_id = \"node-1\"",
            ));
        }
        if !is_token(&cluster.node_id) {
            return Err(ConfigError::invalid(
                "cluster.node_id",
                format!("{:?}", cluster.node_id),
                "must be 1 to 64 letters, digits, '-' or '_' (it is part of NATS subjects)",
                "e.g. node_id = \"node-1\", unique in the cluster",
            ));
        }
    }
    if cluster.enabled && cluster.nats_urls.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.nats_urls",
            "[]",
            "needs at least one NATS server when cluster.enabled = true",
            "e.g. nats_urls = [\"nats://10.0.0.5:4222\"]",
        ));
    }
    check_credentials(cluster)?;
    if cluster.node_timeout_ms <= cluster.heartbeat_ms {
        return Err(ConfigError::invalid(
            "cluster.node_timeout_ms",
            cluster.node_timeout_ms,
            format!(
                "must be longer than cluster.heartbeat_ms ({})",
                cluster.heartbeat_ms
            ),
            "e.g. five heartbeats: node_timeout_ms = 5000 with heartbeat_ms = 1000",
        ));
    }
    Ok(())
}

/// At most one way to authenticate, a user with one password, no empty path, a client
/// certificate with its key. Secrets are never part of a message.
fn check_credentials(cluster: &Cluster) -> Result<(), ConfigError> {
    let ways = [
        ("cluster.user", cluster.user.is_some()),
        ("cluster.token", cluster.token.is_some()),
        ("cluster.nkey_seed_file", cluster.nkey_seed_file.is_some()),
        (
            "cluster.credentials_file",
            cluster.credentials_file.is_some(),
        ),
    ];
    let mut set = ways.iter().filter(|(_, set)| *set).map(|(key, _)| *key);
    if let (Some(first), Some(second)) = (set.next(), set.next()) {
        return Err(ConfigError::invalid(
            second,
            "(set)",
            format!("NATS takes one way to authenticate, and {first} is set too"),
            "keep one of cluster.user with its password, cluster.token, cluster.nkey_seed_file \
             and cluster.credentials_file",
        ));
    }
    let password_keys = (cluster.password.is_some(), cluster.password_file.is_some());
    if password_keys == (true, true) {
        return Err(ConfigError::invalid(
            "cluster.password_file",
            "(set)",
            "cluster.password is set too",
            "keep one of cluster.password and cluster.password_file",
        ));
    }
    if cluster.user.is_none() && (password_keys.0 || password_keys.1) {
        let key = if password_keys.0 {
            "cluster.password"
        } else {
            "cluster.password_file"
        };
        return Err(ConfigError::invalid(
            key,
            "(set)",
            "a password needs cluster.user",
            "set cluster.user to the NATS user it belongs to",
        ));
    }
    if cluster.user.is_some() && password_keys == (false, false) {
        return Err(ConfigError::invalid(
            "cluster.user",
            format!("{:?}", cluster.user.as_deref().unwrap_or_default()),
            "a NATS user needs a password",
            "set cluster.password, or cluster.password_file to a file holding it",
        ));
    }
    if let Some((key, _)) = cluster
        .files()
        .into_iter()
        .find(|(_, path)| path.as_os_str().is_empty())
    {
        return Err(ConfigError::invalid(
            key,
            "\"\"",
            "an empty path names no file",
            "give the file's path, or remove the key",
        ));
    }
    let tls_needing_ca = [
        ("cluster.tls_cert_file", cluster.tls_cert_file.is_some()),
        ("cluster.tls_key_file", cluster.tls_key_file.is_some()),
        ("cluster.tls_required", cluster.tls_required),
        (
            "cluster.nats_urls",
            cluster
                .nats_urls
                .iter()
                .any(|url| url.starts_with("tls://")),
        ),
    ];
    if cluster.tls_ca_file.is_none()
        && let Some((key, _)) = tls_needing_ca.iter().find(|(_, set)| *set)
    {
        return Err(ConfigError::invalid(
            *key,
            "(set)",
            "TLS to NATS needs cluster.tls_ca_file to verify the server",
            "set cluster.tls_ca_file to the CA (PEM) that signed the NATS server's certificate",
        ));
    }
    super::error::cert_and_key_together(
        "",
        ("cluster.tls_cert_file", cluster.tls_cert_file.is_some()),
        ("cluster.tls_key_file", cluster.tls_key_file.is_some()),
    )
}
