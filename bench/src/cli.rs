//! The command line, in emqtt-bench's vocabulary: `conn`, `sub`, `pub`, and `pubsub` (both ends in
//! one process). `-h` is the host as in emqtt-bench, so help is `--help` only.

use crate::tls::TlsFlags;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ringmq-bench",
    about = "MQTT load generator: emqtt-bench's flags, end-to-end latency (HDR), loss/dup/reorder",
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[arg(long, action = ArgAction::Help, global = true, help = "Print help")]
    help: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open connections and hold them (connect rate, bytes per connection on the broker).
    #[command(disable_help_flag = true, args_override_self = true)]
    Conn(ConnArgs),
    /// Subscribe and count what arrives (loss/dup/reorder per publisher, latency on one host).
    #[command(disable_help_flag = true, args_override_self = true)]
    Sub(SubArgs),
    /// Publish at a rate (`-I`, `--rate`) or as fast as the window allows (`-I 0`).
    #[command(disable_help_flag = true, args_override_self = true)]
    Pub(PubArgs),
    /// Subscribers and publishers in one process: end-to-end latency on one clock.
    #[command(disable_help_flag = true, args_override_self = true)]
    Pubsub(PubsubArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic filter; `%i` sequence number, `%c` client id, `%u` username.
    #[arg(short = 't', long = "topic", default_value = "bench/%i")]
    pub topic: String,
    /// Subscription QoS.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
}

#[derive(Args, Debug, Clone)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Args, Debug, Clone)]
pub struct PubsubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Subscriber clients (`-c` counts the publishers). Default: as many as publishers.
    #[arg(long = "subs")]
    pub subscribers: Option<usize>,
    /// Subscribers' topic filter (default: the publish topic `-t`); `$share/g/...` works.
    #[arg(long = "sub-topic")]
    pub sub_topic: Option<String>,
    /// Subscription QoS (default: the publish QoS `-q`).
    #[arg(long = "sub-qos", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
}

#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Topic; `%i` sequence number, `%c` client id, `%u` username.
    #[arg(short = 't', long = "topic", default_value = "bench/%i")]
    pub topic: String,
    /// Publish QoS.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes (at least 20: the header of sequence number, publisher id and send time).
    #[arg(short = 's', long = "size", default_value_t = 256)]
    pub size: usize,
    /// Publish interval per publisher in ms (open loop); 0 = closed loop, as fast as allowed.
    #[arg(short = 'I', long = "interval_of_msg", default_value_t = 1000.0)]
    pub interval_ms: f64,
    /// Total messages per second over all publishers (open loop; overrides `-I`).
    #[arg(long = "rate")]
    pub rate: Option<f64>,
    /// Messages per publisher, then it stops.
    #[arg(short = 'L', long = "limit")]
    pub limit: Option<u64>,
    /// QoS 1/2 messages in flight per publisher (closed loop waits for acks beyond it).
    #[arg(short = 'F', long = "inflight", default_value_t = 1)]
    pub inflight: usize,
    /// QoS 0, closed loop: bytes encoded per write (the bound on what one connection buffers).
    #[arg(long = "batch-bytes", default_value_t = 64 * 1024)]
    pub batch_bytes: usize,
    /// Set the retain flag.
    #[arg(short = 'r', long = "retain", default_value_t = false)]
    pub retain: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker host(s), comma-separated, each `host` or `host:port`; client i uses entry i % count.
    #[arg(short = 'h', long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long = "port", default_value_t = 1883)]
    pub port: u16,
    /// MQTT version: 3 (3.1), 4 (3.1.1) or 5.
    #[arg(short = 'V', long = "version", default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub version: u8,
    /// Clients (publishers in `pub`/`pubsub`, subscribers in `sub`, connections in `conn`).
    #[arg(short = 'c', long = "count", default_value_t = 200)]
    pub count: usize,
    /// First sequence number (`%i` of client k is n + k + 1; publisher ids start at n).
    #[arg(short = 'n', long = "startnumber", default_value_t = 0)]
    pub start_number: u64,
    /// Connections per second over all clients (overrides `-i`).
    #[arg(short = 'R', long = "connrate")]
    pub connect_rate: Option<f64>,
    /// Interval between connects in ms.
    #[arg(short = 'i', long = "interval", default_value_t = 10.0)]
    pub connect_interval_ms: f64,
    /// Client id prefix: ids are `<prefix>_<pub|sub|conn>_<seq>`.
    #[arg(long = "prefix", default_value = "bench")]
    pub prefix: String,
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    #[arg(short = 'P', long = "password")]
    pub password: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 300)]
    pub keepalive_secs: u16,
    /// Clean session / clean start.
    #[arg(short = 'C', long = "clean", default_value_t = true, action = ArgAction::Set)]
    pub clean: bool,
    /// Session expiry interval in seconds (5.0).
    #[arg(short = 'x', long = "session-expiry", default_value_t = 0)]
    pub session_expiry_secs: u32,
    /// Client i connects to port base + (i % shards): spreads clients over a ringmq's shards.
    #[arg(long = "shard-port-base")]
    pub shard_port_base: Option<u16>,
    /// The broker's shard count, for `--shard-port-base`.
    #[arg(long = "shards", default_value_t = 1)]
    pub broker_shards: usize,
    /// Subscriber i connects where client i + K would (`-h` list or `--shard-port-base`): with
    /// K = 1 and two shards, each pair's publisher and subscriber are on different shards.
    #[arg(long = "sub-shard-offset", default_value_t = 0)]
    pub sub_shard_offset: usize,
    /// Load shards (threads, one per core); default: one per CPU this process may use.
    #[arg(long = "threads")]
    pub threads: Option<usize>,
    /// Pin load shards to their cores.
    #[arg(long = "pin", default_value_t = true, action = ArgAction::Set)]
    pub pin: bool,
    /// Microseconds an idle load shard busy-polls before it sleeps (needs `--pin true`). At low
    /// rates this keeps the generator's own wake-ups out of the latency it measures.
    #[arg(long = "spin-us", default_value_t = 0)]
    pub spin_us: u64,
    /// Seconds of publishing (pub/pubsub) or holding (conn/sub); default: until -L or Ctrl-C.
    #[arg(long = "duration")]
    pub duration_secs: Option<f64>,
    /// Seconds to wait for in-flight messages after publishing stops.
    #[arg(long = "drain", default_value_t = 5.0)]
    pub drain_secs: f64,
    /// A scaled EMQ Open MQTT Benchmark Suite scenario: p2p, fanout, sharedsub, conn.
    #[arg(long = "preset")]
    pub preset: Option<String>,
    /// Scale of the preset's client counts and rates.
    #[arg(long = "scale", default_value_t = 1.0)]
    pub scale: f64,
    /// Machine-readable report.
    #[arg(long = "json")]
    pub json: Option<PathBuf>,
    /// Latency percentile distribution in HdrHistogram's text format.
    #[arg(long = "hgrm")]
    pub hgrm: Option<PathBuf>,
    /// One self-contained HTML page with the latency and rate charts.
    #[arg(long = "html")]
    pub html: Option<PathBuf>,
    /// No per-second lines.
    #[arg(long = "quiet", default_value_t = false)]
    pub quiet: bool,
    /// Connect over TLS (needs --cacertfile or --insecure).
    #[arg(short = 'S', long = "ssl", default_value_t = false)]
    pub ssl: bool,
    /// PEM file of the CA(s) the broker's certificate must chain to.
    #[arg(long = "cacertfile")]
    pub cacertfile: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one (mutual TLS).
    #[arg(long = "certfile")]
    pub certfile: Option<PathBuf>,
    /// PEM private key of --certfile.
    #[arg(long = "keyfile")]
    pub keyfile: Option<PathBuf>,
    /// TLS without verifying the broker's certificate (emqtt-bench's default; test brokers only).
    #[arg(long = "insecure", default_value_t = false)]
    pub insecure: bool,
    /// MQTT over WebSocket (`ws://host:port/<--ws-path>`, subprotocol `mqtt`), as emqtt-bench's
    /// `--ws`; with -S over TLS. Each write of a client is one binary message.
    #[arg(long = "ws", default_value_t = false)]
    pub ws: bool,
    /// MQTT over secure WebSocket: `--ws -S`.
    #[arg(long = "wss", default_value_t = false)]
    pub wss: bool,
    /// The request path of `--ws` and `--wss`.
    #[arg(long = "ws-path", default_value = "/mqtt")]
    pub ws_path: String,
}

impl Common {
    pub fn tls_flags(&self) -> TlsFlags {
        TlsFlags {
            ssl: self.ssl || self.wss,
            cacertfile: self.cacertfile.clone(),
            certfile: self.certfile.clone(),
            keyfile: self.keyfile.clone(),
            insecure: self.insecure,
        }
    }
}
