//! The validated, resolved run: what every load shard reads. Built from the command line (and a
//! preset) before anything starts; every refusal names the flag and what to do instead.

use crate::cli::{Command, Common, PublishArgs};
use crate::header::HEADER_BYTES;
use crate::tls::Tls;
use anyhow::{Context, bail};
use ringmq::protocol::{QoS, Version};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Conn,
    Sub,
    Pub,
    Pubsub,
}

/// How a publisher paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As fast as the window allows (QoS 0: bytes per write; QoS 1/2: `-F` unacked).
    Closed,
    /// One message every `interval_ns`; latency counts from the scheduled send time.
    Open { interval_ns: u64 },
}

#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub topic: String,
    pub qos: QoS,
    pub payload_bytes: usize,
    pub pacing: Pacing,
    pub limit: Option<u64>,
    pub inflight: usize,
    pub batch_bytes: usize,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub struct SubscribePlan {
    pub topic: String,
    pub qos: QoS,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// Addresses of `-h` (each resolved once), with `-p`.
    pub hosts: Vec<SocketAddr>,
    /// `-S`: every connection is TLS.
    pub tls: Option<Tls>,
    /// `--ws` / `--wss`: every connection is a WebSocket at this request path.
    pub websocket: Option<String>,
    pub shard_port_base: Option<u16>,
    pub broker_shards: usize,
    /// `--sub-shard-offset`: subscriber i connects where client i + this would.
    pub sub_shard_offset: usize,
    pub version: Version,
    /// Publishers (pub, pubsub) or plain connections (conn).
    pub clients: usize,
    pub subscribers: usize,
    pub start_number: u64,
    pub connect_interval: Duration,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keepalive_secs: u16,
    pub clean: bool,
    pub session_expiry_secs: u32,
    pub publish: Option<PublishPlan>,
    pub subscribe: Option<SubscribePlan>,
    pub threads: Option<usize>,
    pub pin: bool,
    /// Busy-poll this long before a load shard sleeps.
    pub spin: std::time::Duration,
    pub duration: Option<Duration>,
    pub drain: Duration,
    pub quiet: bool,
    pub preset: Option<(String, f64)>,
    pub json: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// Which kind of client a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Conn,
    Sub,
    Pub,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Conn => "conn",
            Role::Sub => "sub",
            Role::Pub => "pub",
        }
    }
}

impl Plan {
    pub fn from_command(command: &Command) -> anyhow::Result<Plan> {
        match command {
            Command::Conn(args) => Plan::common(Mode::Conn, &args.common, args.common.count, 0),
            Command::Sub(args) => {
                let mut plan = Plan::common(Mode::Sub, &args.common, 0, args.common.count)?;
                plan.subscribe = Some(SubscribePlan {
                    topic: args.topic.clone(),
                    qos: qos(args.qos)?,
                });
                Ok(plan)
            }
            Command::Pub(args) => {
                let mut plan = Plan::common(Mode::Pub, &args.common, args.common.count, 0)?;
                plan.publish = Some(publish_plan(&args.publish, args.common.count)?);
                Ok(plan)
            }
            Command::Pubsub(args) => {
                let subscribers = args.subscribers.unwrap_or(args.common.count);
                let mut plan =
                    Plan::common(Mode::Pubsub, &args.common, args.common.count, subscribers)?;
                let publish = publish_plan(&args.publish, args.common.count)?;
                plan.subscribe = Some(SubscribePlan {
                    topic: args
                        .sub_topic
                        .clone()
                        .unwrap_or_else(|| args.publish.topic.clone()),
                    qos: qos(args.sub_qos.unwrap_or(args.publish.qos))?,
                });
                plan.publish = Some(publish);
                Ok(plan)
            }
        }
    }

    fn common(
        mode: Mode,
        common: &Common,
        clients: usize,
        subscribers: usize,
    ) -> anyhow::Result<Plan> {
        if clients + subscribers == 0 {
            bail!("-c 0: nothing to run; give at least one client");
        }
        if common.broker_shards == 0 {
            bail!("--shards 0: the broker has at least one shard");
        }
        if common.threads == Some(0) {
            bail!("--threads 0: give at least one load shard, or leave it out for one per core");
        }
        let connect_interval = match common.connect_rate {
            Some(rate) if rate > 0.0 => Duration::from_secs_f64(1.0 / rate),
            Some(rate) => bail!("-R {rate}: the connect rate must be above 0"),
            None if common.connect_interval_ms >= 0.0 => {
                Duration::from_secs_f64(common.connect_interval_ms / 1000.0)
            }
            None => bail!(
                "-i {}: the interval must not be negative",
                common.connect_interval_ms
            ),
        };
        let hosts = resolve_hosts(&common.host, common.port)?;
        let host_names: Vec<String> = hosts.iter().map(|(name, _)| name.clone()).collect();
        Ok(Plan {
            mode,
            hosts: hosts.into_iter().map(|(_, addr)| addr).collect(),
            tls: Tls::from_flags(&common.tls_flags(), &host_names)?,
            websocket: websocket_path(common)?,
            shard_port_base: common.shard_port_base,
            broker_shards: common.broker_shards,
            sub_shard_offset: common.sub_shard_offset,
            version: version(common.version)?,
            clients,
            subscribers,
            start_number: common.start_number,
            connect_interval,
            prefix: common.prefix.clone(),
            username: common.username.clone(),
            password: common.password.clone(),
            keepalive_secs: common.keepalive_secs,
            clean: common.clean,
            session_expiry_secs: common.session_expiry_secs,
            publish: None,
            subscribe: None,
            threads: common.threads,
            pin: common.pin,
            spin: std::time::Duration::from_micros(common.spin_us),
            duration: seconds("--duration", common.duration_secs)?,
            drain: seconds("--drain", Some(common.drain_secs))?.unwrap_or_default(),
            quiet: common.quiet,
            preset: common.preset.clone().map(|name| (name, common.scale)),
            json: common.json.clone(),
            hgrm: common.hgrm.clone(),
            html: common.html.clone(),
        })
    }

    /// The address client `index` of `role` connects to.
    pub fn target(&self, role: Role, index: usize) -> SocketAddr {
        let index = match role {
            Role::Sub => index.wrapping_add(self.sub_shard_offset),
            Role::Conn | Role::Pub => index,
        };
        let mut addr = self.hosts[index % self.hosts.len()];
        if let Some(base) = self.shard_port_base {
            let offset = (index % self.broker_shards) as u16;
            addr.set_port(base.saturating_add(offset));
        }
        addr
    }

    /// Client id and `%i` of client `index` of `role`.
    pub fn client_id(&self, role: Role, index: usize) -> (String, u64) {
        let seq = self.start_number + index as u64 + 1;
        (format!("{}_{}_{seq}", self.prefix, role.name()), seq)
    }

    /// Publisher `index`'s id in payload headers.
    pub fn publisher_id(&self, index: usize) -> u32 {
        (self.start_number + index as u64) as u32
    }

    /// Every client of the run, in connect order: subscribers first, so that they are subscribed
    /// before any publisher starts.
    pub fn schedule(&self) -> Vec<(Role, usize)> {
        let mut all = Vec::with_capacity(self.clients + self.subscribers);
        all.extend((0..self.subscribers).map(|i| (Role::Sub, i)));
        let role = if self.publish.is_some() {
            Role::Pub
        } else {
            Role::Conn
        };
        all.extend((0..self.clients).map(|i| (role, i)));
        all
    }
}

fn publish_plan(args: &PublishArgs, publishers: usize) -> anyhow::Result<PublishPlan> {
    if args.size < HEADER_BYTES {
        bail!(
            "-s {}: payloads carry a {HEADER_BYTES}-byte header (sequence, publisher, send time); \
             use -s {HEADER_BYTES} or more",
            args.size
        );
    }
    if args.inflight == 0 || args.inflight > 32768 {
        bail!("-F {}: the in-flight window is 1 to 32768", args.inflight);
    }
    let pacing = match args.rate {
        Some(rate) if rate > 0.0 => Pacing::Open {
            interval_ns: ((publishers as f64 / rate) * 1e9).max(1.0) as u64,
        },
        Some(rate) => bail!("--rate {rate}: give a rate above 0, or -I 0 for a closed loop"),
        None if args.interval_ms == 0.0 => Pacing::Closed,
        None if args.interval_ms > 0.0 => Pacing::Open {
            interval_ns: (args.interval_ms * 1e6).max(1.0) as u64,
        },
        None => bail!("-I {}: the interval must not be negative", args.interval_ms),
    };
    Ok(PublishPlan {
        topic: args.topic.clone(),
        qos: qos(args.qos)?,
        payload_bytes: args.size,
        pacing,
        limit: args.limit,
        inflight: args.inflight,
        batch_bytes: args.batch_bytes.max(1),
        retain: args.retain,
    })
}

fn qos(value: u8) -> anyhow::Result<QoS> {
    QoS::from_u8(value).with_context(|| format!("-q {value}: QoS is 0, 1 or 2"))
}

fn version(value: u8) -> anyhow::Result<Version> {
    Ok(match value {
        3 => Version::V3_1,
        4 => Version::V3_1_1,
        5 => Version::V5,
        other => bail!("-V {other}: the version is 3 (3.1), 4 (3.1.1) or 5"),
    })
}

fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(secs) if secs >= 0.0 && secs.is_finite() => Ok(Some(Duration::from_secs_f64(secs))),
        Some(secs) => bail!("{flag} {secs}: give a number of seconds, 0 or more"),
    }
}

/// The WebSocket request path under `--ws` or `--wss`.
fn websocket_path(common: &Common) -> anyhow::Result<Option<String>> {
    if !(common.ws || common.wss) {
        return Ok(None);
    }
    if !common.ws_path.starts_with('/') {
        bail!(
            "--ws-path {}: a request path starts with '/', e.g. /mqtt",
            common.ws_path
        );
    }
    Ok(Some(common.ws_path.clone()))
}

/// `-h` items are `host` (with `-p`) or `host:port`; each is resolved once, before the run. Each
/// comes with its host name (the TLS server name): the name as given, or the IP address.
fn resolve_hosts(hosts: &str, port: u16) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut addrs = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, resolved) = match host.parse::<SocketAddr>() {
            Ok(addr) => (addr.ip().to_string(), Some(addr)),
            Err(_) => match host.rsplit_once(':') {
                Some((name, p)) if !name.contains(':') => {
                    let p: u16 = p.parse().with_context(|| format!("-h {host}: bad port"))?;
                    let resolved = (name, p)
                        .to_socket_addrs()
                        .with_context(|| format!("-h {host}: cannot resolve"))?
                        .next();
                    (name.to_owned(), resolved)
                }
                _ => {
                    let resolved = (host, port)
                        .to_socket_addrs()
                        .with_context(|| format!("-h {host}: cannot resolve"))?
                        .next();
                    (host.trim_matches(['[', ']']).to_owned(), resolved)
                }
            },
        };
        addrs.push((
            name,
            resolved.with_context(|| format!("-h {host}: no address"))?,
        ));
    }
    if addrs.is_empty() {
        bail!("-h: give a host");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_an_optional_port() {
        let addrs = resolve_hosts("127.0.0.1, 127.0.0.1:2000,localhost:3000", 1883).unwrap();
        assert_eq!(addrs[0].1, SocketAddr::from(([127, 0, 0, 1], 1883)));
        assert_eq!(addrs[1].1, SocketAddr::from(([127, 0, 0, 1], 2000)));
        assert_eq!(addrs[2].1.port(), 3000);
        let names: Vec<&str> = addrs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1", "127.0.0.1", "localhost"]);
        assert!(resolve_hosts("", 1883).is_err());
        assert!(resolve_hosts("127.0.0.1:x", 1883).is_err());
    }
}
