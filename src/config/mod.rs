//! Broker configuration: the TOML file model, its built-in defaults and validation.
//!
//! The broker runs without a file: `Config::default()` is the documented default
//! (`config/ringmq.toml`, embedded as [`DEFAULT_TOML`]). A file sets any subset of keys; every
//! table rejects keys it does not know, so a typo is an error, not a silently ignored line. After
//! the file, `RINGMQ_<SECTION>__<KEY>` environment variables override single keys (see
//! `environment.rs`). Then [`Config::validate`] checks every range and every relation between keys.
//!
//! Key names are spelled-out nouns with the unit and qualifier last (`packet_bytes_max`,
//! `connect_timeout_ms`); values are plain integers in that unit. Each section lives in its own
//! file, with its range table next to its fields.

mod auth;
pub mod bridges;
pub mod budget;
mod check;
mod cluster;
pub mod derived;
mod environment;
mod error;
mod limits;
mod listeners;
mod log;
pub mod machine;
mod mqtt;
mod observability;
mod persistence;
mod runtime;
mod session;
#[cfg(test)]
mod tests;
mod websocket;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use auth::{Auth, DeniedPublish};
pub use bridges::{Bridge, BridgeVersion, Bridges, Direction, TopicRule};
pub use cluster::{CLUSTER_TOKEN_BYTES_MAX, Cluster, Secret};
pub use error::ConfigError;
pub use limits::{DropPolicy, LARGE_PARTIAL_PACKET_BYTES, Limits};
pub use listeners::{Listeners, TLS_VERSIONS, TcpListener, TlsListener};
pub use log::{Log, LogFormat, LogLevel};
pub use mqtt::{ASSIGNED_CLIENT_ID_SUFFIX_BYTES_MAX, Mqtt};
pub use observability::{Admin, Observability, Sys};
pub use persistence::{Fsync, Persistence};
pub use runtime::{CpuList, Runtime, SHARDS_MAX, ShardCount};
pub use session::Session;
pub use websocket::{WsListener, WssListener};

/// The documented default configuration, as `ringmq print-default-config` prints it. It parses
/// to exactly `Config::default()` (a unit test holds the two together).
pub const DEFAULT_TOML: &str = include_str!("../../config/ringmq.toml");

/// Where the configuration came from when no file is given, for messages.
const BUILT_IN: &str = "built-in defaults";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Shards, CPUs and io_uring.
    pub runtime: Runtime,
    /// Where clients connect.
    pub listeners: Listeners,
    /// Protocol features and what clients are granted.
    pub mqtt: Mqtt,
    /// Session expiry.
    pub session: Session,
    /// Bounds on everything that grows with client input.
    pub limits: Limits,
    /// Logging.
    pub log: Log,
    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`).
    pub admin: Admin,
    /// The `$SYS` topics.
    pub sys: Sys,
    /// What the latency histograms measure.
    pub observability: Observability,
    /// Password file, anonymous clients, ACL file.
    pub auth: Auth,
    /// Sessions, queued and retained messages kept across a restart.
    pub persistence: Persistence,
    /// Connections to other MQTT brokers (`[bridges.<name>]`), none by default.
    #[serde(skip_serializing_if = "Bridges::is_empty")]
    pub bridges: Bridges,
    pub cluster: Cluster,
}

impl Config {
    /// Checks every key's range and the relations between keys. Errors name the key but not the
    /// file (`parse` and `load` add it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::ranges(self)?;
        runtime::check(self)?;
        listeners::check(self)?;
        mqtt::check(self)?;
        session::check(self)?;
        auth::check(self)?;
        bridges::check(self)?;
        cluster::check(self)?;
        limits::check(self)
    }

    /// The number of shards to run on a machine where the process may use `cpus_available` CPUs,
    /// checking what depends on it: with `pin`, a CPU per shard; with `shard_port_base`, a port
    /// per shard.
    pub fn shard_count(&self, cpus_available: usize) -> Result<usize, ConfigError> {
        let cpus = match &self.runtime.cpus {
            CpuList::All => cpus_available.max(1),
            CpuList::List(cpus) => cpus.len(),
        };
        let count = match self.runtime.shards {
            ShardCount::Auto => cpus.min(SHARDS_MAX),
            ShardCount::Count(count) => count,
        };
        if self.runtime.pin {
            runtime::check_pinned_fit(count, cpus)?;
        }
        for (name, base) in listeners::shard_port_bases(self) {
            listeners::check_shard_ports(&name, base, count)?;
        }
        Ok(count)
    }

    /// The address, backlog and per-shard port base of every listener, in the runtime's order
    /// (the one `listener_count` describes).
    pub fn listener_binds(&self) -> Vec<(std::net::SocketAddr, u32, Option<u16>)> {
        listeners::all(self)
            .into_iter()
            .map(|l| (l.bind, l.backlog, l.shard_port_base))
            .collect()
    }

    /// How many listeners each shard opens (not counting per-shard ports): the TCP ones, the
    /// TLS ones, the WebSocket ones, then the secure WebSocket ones, each in name order.
    pub fn listener_count(&self) -> usize {
        let listeners = &self.listeners;
        listeners.tcp.len() + listeners.tls.len() + listeners.ws.len() + listeners.wss.len()
    }
}

/// Reads and validates the configuration in `text`; `origin` names it in errors (a path).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let config = read(text, origin)?;
    config.validate().map_err(|error| error.located(origin))?;
    Ok(config)
}

/// The configuration the broker runs with: the file at `path` (or the built-in defaults), then
/// the `RINGMQ_` overrides among `environment`, validated. Pass `std::env::vars()` in the binary
/// and an explicit list in tests.
pub fn load(
    path: Option<&Path>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    load_with_keys(path, environment).map(|(config, _)| config)
}

/// As [`load`], with the dotted `[limits]` and `[runtime]` keys the file and the environment
/// set: the others take their values from the memory budget (see `derived`).
pub fn load_with_keys(
    path: Option<&Path>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, std::collections::BTreeSet<String>), ConfigError> {
    let (config, origin, mut keys) = match path {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: origin.clone(),
                source,
            })?;
            (read(&text, &origin)?, origin, derived::keys_set(&text))
        }
        None => (
            Config::default(),
            String::from(BUILT_IN),
            std::collections::BTreeSet::new(),
        ),
    };
    let overrides = environment::overrides(environment)?;
    keys.extend(overrides.iter().map(|each| each.key.clone()));
    let config = environment::apply(config, &overrides)?;
    config.validate().map_err(|error| {
        let blamed = error
            .key()
            .and_then(|key| overrides.iter().find(|each| each.key == key));
        let location = match blamed {
            Some(each) => environment::location(each),
            None if overrides.is_empty() => origin,
            None => {
                let names: Vec<&str> = overrides.iter().map(|each| each.name.as_str()).collect();
                format!("{origin} with {}", names.join(", "))
            }
        };
        error.located(&location)
    })?;
    Ok((config, keys))
}

/// Reads a `Config` out of TOML text, without validating it.
fn read(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // Syntax first, so that a broken line is reported as such and not as a type error.
    if let Err(error) = text.parse::<toml::Table>() {
        return Err(ConfigError::Syntax {
            location: error::file_line(origin, text, error.span()),
            message: error.message().trim_end().replace('\n', ": "),
        });
    }
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|error| {
        let location = error::file_line(origin, text, error.inner().span());
        ConfigError::from_serde(error, &location)
    })
}
