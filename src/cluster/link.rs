//! The NATS link: a thread with a tokio current-thread runtime and one async-nats client. It
//! batches this node's messages per target node, replicates interest (deltas, heartbeats,
//! snapshots, acks: docs/CLUSTER.md) and hands messages from other nodes to the shards. It never
//! waits on a shard: everything it sends them is a `try_send`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, AckKind, consumer};
use async_nats::{Client, ServerAddr};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesOrdered;
use shards::ShardId;

use super::copies::{Copies, Done};
use super::mirror::MirrorRecord;
use super::wire::{self, Control};
use super::{ClusterStats, InterestTable, NODES_MAX, ToLink, stream};
use crate::config::{Cluster, Secret};
use crate::mail::{Mail, SharedPublish, Ticket};

/// A batch for one node is sent once it passes this many bytes (and at the end of every turn).
const BATCH_BYTES: usize = 64 * 1024;
/// Mail taken from the shards in one turn, before batches go out and NATS is read again.
const TURN_MAIL_MAX: usize = 4096;
/// How often barriers, the connection state and the heartbeat clock are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(20);
/// Message ids of messages from other nodes have this above every shard index (see
/// `shard::message_shard`), so they never collide with a shard's own.
const REMOTE_ID_BASE: u64 = 0xFFFF << 48;
/// A barrier whose interest changes are announced at the end of the current turn.
const THIS_TURN: u64 = u64::MAX;
/// Pause before this node's stream readers are opened again after they failed; doubled after
/// each failure to open them (NATS without JetStream), up to `REOPEN_PAUSE_MAX`.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);
const REOPEN_PAUSE_MAX: Duration = Duration::from_secs(30);
/// Stream batches this node remembers having fed to its shards (how many of their records went),
/// so that one delivered again feeds only what did not go (docs/CLUSTER.md, "Exactly once").
const FED_BATCHES_MAX: usize = 16_384;

/// How often the link asks the stream for its consumer's acknowledgement floor while the shards
/// hold notes of stream records, and tells them when it moved (their notes up to it go).
const FLOOR_EVERY: Duration = Duration::from_secs(1);
/// Set in a node's environment (tests only): the link never acknowledges a stream batch, and
/// counts the batches it held back (`ringmq_cluster_stream_batches_total{result="held"}`), so a
/// test can kill the node with batches routed and durable but not acknowledged.
// Not `RINGMQ_`: those are config overrides, and this is not a key.
const HOLD_ACKS_ENV: &str = "RINGMQTEST_HOLD_STREAM_ACKS";

/// A stream batch that did not fit a shard's inbound queue is delivered again after this.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The running link thread; stops it when stopped or dropped.
pub struct LinkThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkThread {
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the cluster link thread panicked");
        }
    }
}

impl Drop for LinkThread {
    fn drop(&mut self) {
        self.stop_now();
    }
}

pub(super) fn spawn(
    config: Cluster,
    from_shards: flume::Receiver<ToLink>,
    to_shards: Vec<flume::Sender<Mail>>,
    interest: Published,
    stats: Arc<ClusterStats>,
    routed_remote: Arc<[AtomicU64]>,
) -> std::io::Result<LinkThread> {
    let mut addrs = Vec::with_capacity(config.nats_urls.len());
    for url in &config.nats_urls {
        let addr = url.parse::<ServerAddr>().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "cluster.nats_urls: {url:?} is not a NATS URL ({error}); write e.g. \"nats://10.0.0.5:4222\""
                ),
            )
        })?;
        addrs.push(addr);
    }
    let options = connect_options(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(String::from("ringmq-cluster"))
        .spawn(move || {
            runtime.block_on(async move {
                let link = Link::new(config, to_shards, interest, stats, routed_remote);
                link.run(options, addrs, from_shards, stopped).await;
            });
        })?;
    Ok(LinkThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The NATS client's credentials and TLS from `[cluster]`. Files are read here, at start, so a
/// missing or unreadable one stops the broker with its key named instead of failing every
/// connection attempt later. Secrets go to the client only, never to a log.
fn connect_options(config: &Cluster) -> std::io::Result<async_nats::ConnectOptions> {
    let unusable = |key: &str, path: &std::path::Path, error: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{key} = {path:?}: {error}; fix the file or the key that names it",
                path = path.display().to_string()
            ),
        )
    };
    for (key, path) in config.files() {
        std::fs::metadata(path).map_err(|error| unusable(key, path, &error))?;
    }
    let read_secret = |key: &str, path: &std::path::Path| {
        let text = std::fs::read_to_string(path).map_err(|error| unusable(key, path, &error))?;
        let secret = text.lines().next().unwrap_or_default().trim().to_owned();
        if secret.is_empty() {
            return Err(unusable(key, path, &"the file's first line is empty"));
        }
        Ok(secret)
    };
    let mut options = async_nats::ConnectOptions::new();
    if let Some(user) = &config.user {
        let password = match (&config.password, &config.password_file) {
            (Some(password), _) => password.expose().to_owned(),
            (None, Some(path)) => read_secret("cluster.password_file", path)?,
            (None, None) => String::new(),
        };
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &config.nkey_seed_file {
        let key = "cluster.nkey_seed_file";
        let seed = Secret::new(read_secret(key, path)?);
        match nkeys::KeyPair::from_seed(seed.expose()) {
            Ok(pair) if matches!(pair.key_pair_type(), nkeys::KeyPairType::User) => {}
            // The seed's decoding error is no secret, but keep even that out of the message.
            _ => {
                return Err(unusable(
                    key,
                    path,
                    &"the first line is not an NKey user seed (SU...)",
                ));
            }
        }
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(path) = &config.credentials_file {
        let key = "cluster.credentials_file";
        let text = Secret::new(
            std::fs::read_to_string(path).map_err(|error| unusable(key, path, &error))?,
        );
        // The parser's errors name what is missing (the JWT or the seed), never the content.
        options = options
            .credentials(text.expose())
            .map_err(|error| unusable(key, path, &error))?;
    }
    // Our own rustls config with the ring provider, always: left to itself the client asks
    // rustls for a process-wide provider, and finding more than one in the build it panics.
    // Without tls_ca_file no server certificate verifies (a server demanding TLS is logged
    // as a handshake error and retried, as a refused login is).
    let tls = match &config.tls_ca_file {
        Some(ca) => {
            let cert_key = config
                .tls_cert_file
                .as_deref()
                .zip(config.tls_key_file.as_deref());
            let built = crate::tls::build_client_config(ca, cert_key, &[]).map_err(|error| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("cluster TLS: {error}; fix the file or the key that names it"),
                )
            })?;
            (*built).clone()
        }
        None => rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    };
    options = options.tls_client_config(tls);
    Ok(options.require_tls(config.tls_required))
}

/// Where the link publishes the other nodes' interest for the shards.
pub(super) struct Published {
    pub table: Arc<ArcSwap<InterestTable>>,
    pub version: Arc<std::sync::atomic::AtomicU64>,
}

/// Another node, as this one knows it.
struct Node {
    incarnation: u64,
    /// The last change of its interest applied here.
    seq: u64,
    /// Its interest is known here (a snapshot was applied for this incarnation).
    synced: bool,
    filters: HashSet<String>,
    last_heard: Instant,
    /// When a snapshot was last asked of it.
    requested: Option<Instant>,
    slot: usize,
    /// Our own interest change it last acknowledged (of our incarnation).
    acked: u64,
}

/// The batches of one turn going to the stream, and the highest message number per shard they
/// carry: answered to the shards once the stream took all of them (or one failed).
/// With it, what the stream did with the copies of queued messages, and the (shard, number) of
/// the numbered mirror records it did not take (only their acknowledgements are refused).
type Unit = LocalBoxFuture<'static, (Vec<u64>, bool, Vec<(usize, u64)>, Vec<Done>)>;

/// A stream batch handed to the shards: acknowledged to NATS once each shard it fed has routed
/// its part (`routed_remote` at least the mark).
struct Taken {
    message: jetstream::Message,
    marks: Vec<(usize, u64)>,
}

/// What feeding a batch to the shards came to.
enum Fed {
    All,
    Full,
    Undecodable,
}

struct PendingBarrier {
    shard: ShardId,
    ticket: Ticket,
    seq: u64,
    deadline: Instant,
}

struct Link {
    config: Cluster,
    me: String,
    incarnation: u64,
    seq: u64,
    interest_subject: String,
    /// Filter -> shards of this node with a subscriber to it.
    local: HashMap<String, u32>,
    /// Filters announced to the other nodes.
    announced: HashSet<String>,
    /// Filters whose shard count changed this turn.
    changed: HashSet<String>,
    nodes: HashMap<String, Node>,
    slots: Vec<Option<String>>,
    batches: Vec<BytesMut>,
    scratch: BytesMut,
    barriers: Vec<PendingBarrier>,
    acks: Vec<(String, u64, u64)>,
    interest_dirty: bool,
    to_shards: Vec<flume::Sender<Mail>>,
    interest: Published,
    stats: Arc<ClusterStats>,
    next_id: u64,
    last_heartbeat: Instant,
    was_connected: bool,
    /// The stream (None: `cluster.jetstream` off).
    js: Option<jetstream::Context>,
    /// Per target node slot: the batch for the stream being filled this turn.
    stored_batches: Vec<BytesMut>,
    /// Batches waiting for the next unit, in order per subject ((message id, payload)), and per
    /// shard the highest message number in them.
    waiting_stores: HashMap<String, Vec<(String, Bytes)>>,
    /// Per session subject in `waiting_stores`: the (shard, number) of the acknowledgements that
    /// wait for its mirror record, refused alone when the stream does not take it.
    mirror_waiters: HashMap<String, Vec<(usize, u64)>>,
    /// Copies of messages for this node's persistent sessions and their trims, batched per
    /// session for the next unit.
    copies: Copies,
    turn_numbers: Vec<u64>,
    /// The unit the stream is storing: one at a time, so that the batches of one subject are
    /// stored in order even when one must be sent again; what comes meanwhile waits for the next.
    units: FuturesOrdered<Unit>,
    /// Answers to shards whose inbound queue was full: (shard, up to, ok, numbers refused), in
    /// order.
    answers: VecDeque<(usize, u64, bool, Box<[u64]>)>,
    batch_seq: u64,
    /// Per shard: messages from other nodes handed to it, and (written by it) routed by it.
    sent_remote: Vec<u64>,
    routed_remote: Arc<[AtomicU64]>,
    taken: VecDeque<Taken>,
    /// Stream batches fed to the shards, by stream sequence: records handed and the marks they
    /// made; the oldest forgotten beyond `FED_BATCHES_MAX`.
    fed_batches: HashMap<u64, (usize, Vec<(usize, u64)>)>,
    fed_order: VecDeque<u64>,
    /// Retained writes from the retained stream for a home shard whose queue was full, in order.
    /// Mail for a home shard whose queue was full (retained writes from the retained stream,
    /// mirrored sessions), kept in order for the next turn.
    home_waiting: VecDeque<(usize, Mail)>,
    /// The highest acknowledgement floor every shard was told of.
    floor_told: u64,
    /// Tests only (`HOLD_ACKS_ENV`): batches are never acknowledged.
    hold_acks: bool,
    /// Reads of the queued messages of sessions resumed here from the mirror.
    takes:
        futures_util::stream::FuturesUnordered<LocalBoxFuture<'static, (ByteString, Vec<Bytes>)>>,
}

/// This node's readers of the streams: its consumer of the message stream and its ordered
/// reader of the retained stream.
struct Readers {
    stored: consumer::pull::Stream,
    retained: consumer::pull::Ordered,
    sessions: consumer::pull::Ordered,
}

async fn open_readers(
    js: jetstream::Context,
    config: crate::config::Cluster,
) -> Result<Readers, String> {
    Ok(Readers {
        stored: stream::open(js.clone(), config.clone()).await?,
        retained: stream::open_retained(js.clone(), config.clone()).await?,
        sessions: {
            stream::open_queued(js.clone(), config.clone()).await?;
            stream::open_sessions(js, config).await?
        },
    })
}

fn subject_ctl(name: &str, node: &str) -> String {
    format!("ringmq.{name}.node.{node}.ctl")
}

fn subject_msg(name: &str, node: &str) -> String {
    format!("ringmq.{name}.node.{node}.msg")
}

impl Link {
    fn new(
        config: Cluster,
        to_shards: Vec<flume::Sender<Mail>>,
        interest: Published,
        stats: Arc<ClusterStats>,
        routed_remote: Arc<[AtomicU64]>,
    ) -> Link {
        let interest_subject = format!("ringmq.{}.interest", config.name);
        let shards = to_shards.len();
        Link {
            me: config.node_id.clone(),
            incarnation: rand::random::<u64>() | 1,
            seq: 0,
            interest_subject,
            local: HashMap::new(),
            announced: HashSet::new(),
            changed: HashSet::new(),
            nodes: HashMap::new(),
            slots: vec![None; NODES_MAX],
            batches: (0..NODES_MAX).map(|_| BytesMut::new()).collect(),
            scratch: BytesMut::new(),
            barriers: Vec::new(),
            acks: Vec::new(),
            interest_dirty: false,
            to_shards,
            interest,
            stats,
            next_id: 0,
            last_heartbeat: Instant::now(),
            was_connected: false,
            js: None,
            stored_batches: (0..NODES_MAX).map(|_| BytesMut::new()).collect(),
            waiting_stores: HashMap::new(),
            mirror_waiters: HashMap::new(),
            copies: Copies::default(),
            turn_numbers: vec![0; shards],
            units: FuturesOrdered::new(),
            answers: VecDeque::new(),
            batch_seq: 0,
            sent_remote: vec![0; shards],
            routed_remote,
            taken: VecDeque::new(),
            fed_batches: HashMap::new(),
            fed_order: VecDeque::new(),
            home_waiting: VecDeque::new(),
            takes: futures_util::stream::FuturesUnordered::new(),
            floor_told: 0,
            hold_acks: std::env::var_os(HOLD_ACKS_ENV).is_some(),
            config,
        }
    }

    async fn run(
        mut self,
        options: async_nats::ConnectOptions,
        addrs: Vec<ServerAddr>,
        from_shards: flume::Receiver<ToLink>,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
    ) {
        let events = Arc::clone(&self.stats);
        let options = options
            .name(format!("ringmq {} {}", self.config.name, self.me))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            // Quick retries first: a restarted NATS server is usually back within a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(2_000))
            })
            .event_callback(move |event| {
                let stats = Arc::clone(&events);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("cluster: connected to NATS");
                            stats.connected.store(true, Ordering::Release);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("cluster: disconnected from NATS; reconnecting");
                            stats.connected.store(false, Ordering::Release);
                        }
                        // A refused login (wrong credentials) or a TLS failure: the client
                        // keeps retrying, the operator must fix the config.
                        error @ (async_nats::Event::ServerError(_)
                        | async_nats::Event::ClientError(_)) => {
                            tracing::warn!(event = %error, "cluster: NATS error")
                        }
                        other => tracing::info!(event = %other, "cluster: NATS event"),
                    }
                }
            });
        let client = match options.connect(addrs).await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cluster: cannot set up the NATS client; cluster off");
                return;
            }
        };
        let name = self.config.name.clone();
        let subscribe = |subject: String| {
            let client = client.clone();
            async move { client.subscribe(subject).await }
        };
        let subscribed = (
            subscribe(subject_msg(&name, &self.me)).await,
            subscribe(self.interest_subject.clone()).await,
            subscribe(subject_ctl(&name, &self.me)).await,
        );
        let (Ok(mut data), Ok(mut interest), Ok(mut ctl)) = subscribed else {
            tracing::error!("cluster: cannot subscribe on NATS; cluster off");
            return;
        };
        tracing::info!(node = %self.me, cluster = %name, "cluster link started");
        if self.config.jetstream {
            self.js = Some(jetstream::new(client.clone()));
        }
        // This node's readers of the streams, and their opening while that is under way.
        let mut readers: Option<Readers> = None;
        let mut opening: Option<LocalBoxFuture<'static, Result<Readers, String>>> = None;
        let mut open_after = Instant::now();
        let mut open_pause = REOPEN_PAUSE;
        // The query of the stream's acknowledgement floor under way, and when the next may start.
        let mut floor_query: Option<LocalBoxFuture<'static, Option<u64>>> = None;
        let mut floor_after = Instant::now();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if readers.is_none()
                && opening.is_none()
                && self.connected()
                && Instant::now() >= open_after
                && let Some(js) = &self.js
            {
                opening = Some(Box::pin(open_readers(js.clone(), self.config.clone())));
            }
            // Only while the shards hold notes (none with persistence off).
            if readers.is_some()
                && floor_query.is_none()
                && self.stats.stream_notes.load(Ordering::Relaxed) > 0
                && self.connected()
                && Instant::now() >= floor_after
                && let Some(js) = &self.js
            {
                floor_after = Instant::now() + FLOOR_EVERY;
                floor_query = Some(Box::pin(stream::ack_floor(js.clone(), self.config.clone())));
            }
            tokio::select! {
                _ = &mut stopped => break,
                mail = from_shards.recv_async() => {
                    let Ok(mail) = mail else { break };
                    self.on_shard_mail(&client, mail).await;
                    for _ in 1..TURN_MAIL_MAX {
                        let Ok(mail) = from_shards.try_recv() else { break };
                        self.on_shard_mail(&client, mail).await;
                    }
                }
                Some(message) = data.next() => self.on_data(message.payload),
                Some(message) = interest.next() => self.on_control(&client, message.payload).await,
                Some(message) = ctl.next() => self.on_control(&client, message.payload).await,
                Some((numbers, ok, refused, done)) = self.units.next() => {
                    self.on_unit(&numbers, ok, &refused, done);
                }
                Some((client_id, taken)) = self.takes.next() => {
                    self.on_taken_queued(client_id, taken);
                }
                floor = maybe(&mut floor_query) => {
                    floor_query = None;
                    if let Some(floor) = floor {
                        self.tell_floor(floor);
                    }
                }
                opened = maybe(&mut opening) => {
                    opening = None;
                    match opened {
                        Ok(opened) => {
                            tracing::info!("cluster: reading this node's messages from the stream");
                            readers = Some(opened);
                            self.stats.streams_open.store(true, Ordering::Release);
                            open_pause = REOPEN_PAUSE;
                        }
                        Err(error) => {
                            ClusterStats::add(&self.stats.streams_open_failed, 1);
                            tracing::warn!(
                                %error,
                                retry_in = ?open_pause,
                                "cluster: cannot open the JetStream streams (does NATS run with \
                                 JetStream, `nats-server -js`?); QoS 1/2 acknowledgements for \
                                 other nodes wait, then are refused"
                            );
                            open_after = Instant::now() + open_pause;
                            open_pause = (open_pause * 2).min(REOPEN_PAUSE_MAX);
                        }
                    }
                }
                item = next_read(&mut readers) => match item {
                    Some(Ok(Read::Stored(message))) => self.on_stored(message).await,
                    Some(Ok(Read::Retained(message))) => self.on_retained(&message.payload),
                    Some(Ok(Read::Session(message))) => self.on_mirrored(message.payload.clone()),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "cluster: reading a stream failed; opening it again");
                        readers = None;
                        self.stats.streams_open.store(false, Ordering::Release);
                        open_after = Instant::now() + REOPEN_PAUSE;
                    }
                    None => {
                        readers = None;
                        self.stats.streams_open.store(false, Ordering::Release);
                        open_after = Instant::now() + REOPEN_PAUSE;
                    }
                },
                _ = housekeeping.tick() => self.housekeeping(&client).await,
            }
            self.end_turn(&client).await;
        }
        // What is queued goes out if NATS is there; a link that cannot reach it does not wait.
        if self.connected() {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        }
        tracing::info!("cluster link stopped");
    }

    fn connected(&self) -> bool {
        self.stats.connected.load(Ordering::Acquire)
    }

    async fn on_shard_mail(&mut self, client: &Client, mail: ToLink) {
        match mail {
            ToLink::Publish {
                message,
                nodes,
                shard,
                stored,
                share,
            } => {
                // A message for the stream waits for NATS (its publisher waits for the answer).
                if let Some((from, number)) = stored {
                    if let Some(highest) = self.turn_numbers.get_mut(from.index()) {
                        *highest = number;
                    }
                } else if !self.connected() {
                    ClusterStats::add(&self.stats.dropped_disconnected, 1);
                    return;
                }
                self.scratch.clear();
                let now = Instant::now();
                if !wire::put_message(&mut self.scratch, &message, shard, share.as_deref(), now) {
                    ClusterStats::add(&self.stats.dropped_undecodable, 1);
                    return;
                }
                // A copy for a shared group is not the retained write (its plain copy is).
                if message.retain && share.is_none() && self.js.is_some() {
                    self.store_retained(&message.topic);
                }
                let mut rest = nodes;
                while rest != 0 {
                    let slot = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    let batches = if stored.is_some() {
                        &mut self.stored_batches
                    } else {
                        &mut self.batches
                    };
                    let Some(batch) = batches.get_mut(slot) else {
                        continue;
                    };
                    if self.slots.get(slot).is_none_or(Option::is_none) {
                        continue;
                    }
                    batch.extend_from_slice(&self.scratch);
                    ClusterStats::add(&self.stats.messages_out, 1);
                    if batch.len() >= BATCH_BYTES {
                        if stored.is_some() {
                            self.store_slot(slot);
                        } else {
                            self.flush_slot(client, slot).await;
                        }
                    }
                }
            }
            ToLink::Interest { add, remove } => {
                for filter in add {
                    let filter = String::from(&*filter);
                    *self.local.entry(filter.clone()).or_insert(0) += 1;
                    self.changed.insert(filter);
                }
                for filter in remove {
                    let filter = String::from(&*filter);
                    if let Some(count) = self.local.get_mut(&filter) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.local.remove(&filter);
                        }
                    }
                    self.changed.insert(filter);
                }
            }
            ToLink::Claim { client_id, at } => {
                // Not connected: the claim is lost (the other node keeps its connection).
                if self.connected() {
                    let claim = Control::Claim {
                        node: self.me.clone(),
                        client_id: client_id.to_string(),
                        at_us: unix_us().saturating_sub(micros(at.elapsed())),
                    };
                    match client
                        .publish(self.interest_subject.clone(), claim.encode())
                        .await
                    {
                        Ok(()) => ClusterStats::add(&self.stats.claims_out, 1),
                        Err(error) => tracing::warn!(%error, "cluster: client id claim not sent"),
                    }
                }
            }
            ToLink::Session {
                client_id,
                record,
                stored,
            } => {
                // Answered with the unit that stores it, as a copy is.
                self.answer_with_unit(stored);
                self.store_mirror(&client_id, record.as_deref(), stored);
                if record.is_none() && self.js.is_some() {
                    // The session ended: what was kept for its resume elsewhere goes too.
                    self.copies.trim(client_id, 0);
                }
            }
            ToLink::Queued {
                client_id,
                message,
                stored,
            } => {
                // Answered with the unit that stores it (or with the next, if not stored).
                self.answer_with_unit(stored);
                self.store_queued(&client_id, &message);
            }
            ToLink::TakeQueued { client_id } => self.take_queued(client_id),
            ToLink::DiscardQueued { client_id } => {
                if self.js.is_some() {
                    self.copies.discard(client_id);
                }
            }
            ToLink::PurgeQueued { client_id, keep } => {
                if self.js.is_some() {
                    self.copies.trim(client_id, keep);
                }
            }
            ToLink::Barrier { shard, ticket } => {
                let deadline = Instant::now()
                    + Duration::from_millis(u64::from(self.config.interest_ack_timeout_ms));
                self.barriers.push(PendingBarrier {
                    shard,
                    ticket,
                    seq: THIS_TURN,
                    deadline,
                });
            }
        }
    }

    async fn flush_slot(&mut self, client: &Client, slot: usize) {
        let Some(Some(node)) = self.slots.get(slot) else {
            return;
        };
        let subject = subject_msg(&self.config.name, node);
        let Some(batch) = self.batches.get_mut(slot) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let payload = batch.split().freeze();
        match client.publish(subject, payload).await {
            Ok(()) => ClusterStats::add(&self.stats.batches_out, 1),
            Err(error) => tracing::warn!(%error, "cluster: a batch of messages was not sent"),
        }
    }

    /// Messages from another node over core NATS (at most once): to the shard its origin shard
    /// maps to, in order; a full shard drops its messages.
    fn on_data(&mut self, payload: Bytes) {
        self.feed(payload, None, 0, None);
    }

    /// Feeds a batch to the shards, each message to the shard its origin shard maps to, in
    /// order, after its first `skip` records (fed before). With `marks` (a stream batch) it
    /// stops at the first full shard and records, per shard fed, how many messages it will have
    /// routed once it routed this batch's. Also returns how many records went (with `skip`).
    /// With the batch's stream `sequence`, each message (for the node's subscribers or a shared
    /// group's member) carries its tag (docs/CLUSTER.md, "Exactly once").
    fn feed(
        &mut self,
        mut payload: Bytes,
        mut marks: Option<&mut Vec<(usize, u64)>>,
        skip: usize,
        sequence: Option<u64>,
    ) -> (Fed, usize) {
        let now = Instant::now();
        let shards = self.to_shards.len().max(1);
        let mut handed = 0;
        while !payload.is_empty() {
            self.next_id = (self.next_id + 1) & ((1 << 48) - 1);
            let Some(received) =
                wire::next_message(&mut payload, REMOTE_ID_BASE | self.next_id, now)
            else {
                ClusterStats::add(&self.stats.dropped_undecodable, 1);
                return (Fed::Undecodable, handed);
            };
            if handed < skip {
                handed += 1;
                ClusterStats::add(&self.stats.stream_records_skipped, 1);
                continue;
            }
            let shard = usize::from(received.origin_shard) % shards;
            let tag = sequence.map(|sequence| super::tags::StreamTag {
                sequence,
                index: u32::try_from(handed).unwrap_or(u32::MAX),
            });
            let mail = match (received.share, tag) {
                (None, None) => Mail::Remote(received.message),
                (None, Some(tag)) => Mail::RemoteTagged {
                    message: received.message,
                    tag,
                },
                (Some(share), _) => match super::split_share(&share) {
                    Some((group, filter)) => Mail::RemoteShared(Box::new(SharedPublish {
                        message: received.message,
                        filter: ByteString::from(filter),
                        group: ByteString::from(group),
                        hops: 0,
                        reoffer: None,
                        tag,
                    })),
                    None => {
                        ClusterStats::add(&self.stats.dropped_undecodable, 1);
                        return (Fed::Undecodable, handed);
                    }
                },
            };
            let delivered = self
                .to_shards
                .get(shard)
                .is_some_and(|to| to.try_send(mail).is_ok());
            if !delivered {
                if marks.is_some() {
                    return (Fed::Full, handed);
                }
                ClusterStats::add(&self.stats.dropped_inbound_full, 1);
                continue;
            }
            handed += 1;
            ClusterStats::add(&self.stats.messages_in, 1);
            let Some(sent) = self.sent_remote.get_mut(shard) else {
                continue;
            };
            *sent += 1;
            if let Some(marks) = marks.as_deref_mut() {
                match marks.iter_mut().find(|(fed, _)| *fed == shard) {
                    Some((_, mark)) => *mark = *sent,
                    None => marks.push((shard, *sent)),
                }
            }
        }
        (Fed::All, handed)
    }

    /// Remembers how much of stream batch `sequence` went to the shards, and the marks it made.
    fn remember_fed(&mut self, sequence: u64, handed: usize, marks: &[(usize, u64)]) {
        if self
            .fed_batches
            .insert(sequence, (handed, marks.to_vec()))
            .is_none()
        {
            self.fed_order.push_back(sequence);
            if self.fed_order.len() > FED_BATCHES_MAX
                && let Some(oldest) = self.fed_order.pop_front()
            {
                self.fed_batches.remove(&oldest);
            }
        }
    }

    /// A batch this node took from the stream: to the shards, acknowledged once they routed it
    /// (at the end of a later turn); delivered again later when a shard's queue was full.
    async fn on_stored(&mut self, message: jetstream::Message) {
        ClusterStats::add(&self.stats.stream_in, 1);
        // A batch delivered again (a full shard queue, an acknowledgement lost or later than
        // the stream's wait) feeds only what did not go, and waits for what did.
        let (sequence, again) = message.info().map_or((0, false), |info| {
            (info.stream_sequence, info.delivered > 1)
        });
        let (skip, mut marks) = match self.fed_batches.get(&sequence).filter(|_| again) {
            Some((handed, marks)) => (*handed, marks.clone()),
            None => (0, Vec::new()),
        };
        let tagged = (sequence != 0).then_some(sequence);
        let (fed, handed) = self.feed(message.payload.clone(), Some(&mut marks), skip, tagged);
        if sequence != 0 {
            self.remember_fed(sequence, handed, &marks);
        }
        match fed {
            Fed::All => self.taken.push_back(Taken { message, marks }),
            Fed::Full => {
                // What went in before the full shard is not fed again (above).
                ClusterStats::add(&self.stats.stream_retried, 1);
                if let Err(error) = message.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await {
                    tracing::debug!(%error, "cluster: could not ask the stream again");
                }
            }
            Fed::Undecodable => {
                // Delivering it again would not help: it is dropped (counted).
                if let Err(error) = message.ack().await {
                    tracing::debug!(%error, "cluster: could not acknowledge a batch");
                }
            }
        }
    }

    /// Starts storing a retained write (the record in `scratch`) in the retained stream, with
    /// the time it was made, so a node reading it later counts its expiry from then.
    fn store_retained(&mut self, topic: &str) {
        if self.js.is_none() {
            return;
        }
        let mut payload = BytesMut::with_capacity(8 + self.scratch.len());
        payload.put_u64(unix_ms());
        payload.extend_from_slice(&self.scratch);
        let subject = stream::retained_subject(&self.config.name, topic);
        self.wait_to_store(subject, payload.freeze());
    }

    /// A message queued for a persistent session here: a copy goes to the stream of queued
    /// messages, for the session's resume on another node if this node dies, in the session's
    /// batch for the next unit.
    fn store_queued(&mut self, client_id: &ByteString, message: &crate::message::Message) {
        if self.js.is_none() {
            return;
        }
        let now = Instant::now();
        let copied = self.copies.copy(client_id, |batch| {
            wire::put_message(batch, message, 0, None, now)
        });
        if copied {
            ClusterStats::add(&self.stats.queued_out, 1);
        } else {
            ClusterStats::add(&self.stats.dropped_undecodable, 1);
        }
    }

    /// A session resumed here from the mirror: the messages queued for it on its former node
    /// (every node's copies of it) are read from the stream and purged, then handed to its
    /// home shard.
    fn take_queued(&mut self, client_id: ByteString) {
        let Some(js) = self.js.clone() else {
            return;
        };
        let name = self.config.name.clone();
        let subject = stream::queued_subject(&name, &client_id);
        self.takes.push(Box::pin(async move {
            let taken = stream::take_queued(js, name, subject).await;
            (client_id, taken)
        }));
    }

    /// The queued messages of a resumed session, read from the stream: to the client id's home
    /// shard (which passes them to the session's shard), in order; then purged.
    fn on_taken_queued(&mut self, client_id: ByteString, taken: Vec<Bytes>) {
        let now = Instant::now();
        let home = crate::shard::home_of(&client_id, self.to_shards.len()).index();
        // Each stream message is a batch of copies, in order.
        for mut payload in taken {
            while payload.has_remaining() {
                self.next_id = (self.next_id + 1) & ((1 << 48) - 1);
                let id = REMOTE_ID_BASE | self.next_id;
                let Some(received) = wire::next_message(&mut payload, id, now) else {
                    ClusterStats::add(&self.stats.dropped_undecodable, 1);
                    break;
                };
                ClusterStats::add(&self.stats.queued_in, 1);
                let mail = Mail::QueuedFor {
                    client_id: client_id.clone(),
                    message: received.message,
                };
                self.home_waiting.push_back((home, mail));
            }
        }
        // The copies taken were purged by the take (this node's copies of them are made
        // again as the session queues them).
        self.send_home();
    }

    /// Queues a batch for `subject` for the next unit, with a message id of its own.
    fn wait_to_store(&mut self, subject: String, payload: Bytes) {
        let id = self.next_batch_id();
        self.waiting_stores
            .entry(subject)
            .or_default()
            .push((id, payload));
    }

    /// A message id of its own for the next batch to the stream (`Nats-Msg-Id`).
    fn next_batch_id(&mut self) -> String {
        self.batch_seq += 1;
        format!("{}-{:x}-{}", self.me, self.incarnation, self.batch_seq)
    }

    /// A retained write from the retained stream (any node's, this one's too: every node applies
    /// them in the stream's order, so all end with the stream's last message per topic): to the
    /// topic's home shard.
    fn on_retained(&mut self, payload: &Bytes) {
        let mut payload = payload.clone();
        if payload.remaining() < 8 {
            ClusterStats::add(&self.stats.dropped_undecodable, 1);
            return;
        }
        let age = Duration::from_millis(unix_ms().saturating_sub(payload.get_u64()));
        let now = Instant::now();
        self.next_id = (self.next_id + 1) & ((1 << 48) - 1);
        let Some(received) = wire::next_message(&mut payload, REMOTE_ID_BASE | self.next_id, now)
        else {
            ClusterStats::add(&self.stats.dropped_undecodable, 1);
            return;
        };
        let mut message = received.message;
        if let Some(expires_at) = message.expires_at
            && let Some(unique) = Arc::get_mut(&mut message)
        {
            // Expired while in the stream: what remains is its deletion.
            match expires_at.checked_sub(age).filter(|at| *at > now) {
                Some(at) => unique.expires_at = Some(at),
                None => {
                    unique.payload = Bytes::new();
                    unique.expires_at = None;
                }
            }
        }
        let home = crate::shard::home_of(&message.topic, self.to_shards.len()).index();
        self.home_waiting
            .push_back((home, Mail::RemoteRetain(message)));
        self.send_home();
    }

    /// Mail to home shards, in order; a full queue keeps its mail for the next turn.
    fn send_home(&mut self) {
        let mut blocked = 0_u64;
        for _ in 0..self.home_waiting.len() {
            let Some((home, mail)) = self.home_waiting.pop_front() else {
                break;
            };
            let bit = 1_u64 << (home % 64);
            let mail = if blocked & bit != 0 {
                Some(mail)
            } else {
                self.to_shards
                    .get(home)
                    .and_then(|to| to.try_send(mail).err().map(|error| error.into_inner()))
            };
            if let Some(mail) = mail {
                blocked |= bit;
                self.home_waiting.push_back((home, mail));
            }
        }
    }

    /// A record of the session mirror (any node's): to the client id's home shard, which keeps
    /// the records of other nodes' sessions (`own`: this node's, which removes the entry).
    fn on_mirrored(&mut self, payload: Bytes) {
        let Some(mirrored) = super::mirror::decode(payload) else {
            ClusterStats::add(&self.stats.dropped_undecodable, 1);
            return;
        };
        ClusterStats::add(&self.stats.mirror_in, 1);
        let home = crate::shard::home_of(&mirrored.client_id, self.to_shards.len()).index();
        let mail = Mail::MirroredSession {
            own: mirrored.node == self.me,
            node: mirrored.node.into_boxed_str(),
            client_id: mirrored.client_id,
            record: mirrored.record,
        };
        self.home_waiting.push_back((home, mail));
        self.send_home();
    }

    /// `node` died and this node adopts its persistent sessions: every shard installs those
    /// whose mirrored records it keeps (docs/CLUSTER.md, "Adopting a dead node's sessions").
    fn adopt_sessions_of(&mut self, node: &str) {
        tracing::warn!(%node, "cluster: adopting the persistent sessions of a dead node");
        for shard in 0..self.to_shards.len() {
            let mail = Mail::AdoptSessions { node: node.into() };
            self.home_waiting.push_back((shard, mail));
        }
        self.send_home();
    }

    /// Shard `from`'s number `number` (if any) is answered with the next unit.
    fn answer_with_unit(&mut self, stored: Option<(ShardId, u64)>) {
        if let Some((from, number)) = stored
            && let Some(highest) = self.turn_numbers.get_mut(from.index())
        {
            *highest = number;
        }
    }

    /// Stores a shard's mirror record of `client_id` (`None`: the session is gone); `stored`:
    /// the shard's number an acknowledgement waits for.
    fn store_mirror(
        &mut self,
        client_id: &str,
        record: Option<&MirrorRecord>,
        stored: Option<(ShardId, u64)>,
    ) {
        if self.js.is_none() {
            return;
        }
        let Some(payload) = super::mirror::encode(&self.me, client_id, record) else {
            return;
        };
        let subject = stream::session_subject(&self.config.name, client_id);
        let id = self.next_batch_id();
        // The newer record carries what the older ones' acknowledgements waited for.
        let waiters = self.mirror_waiters.entry(subject.clone()).or_default();
        waiters.extend(stored.map(|(shard, number)| (shard.index(), number)));
        ClusterStats::add(&self.stats.mirror_out, 1);
        if supersede(&mut self.waiting_stores, subject, id, payload) {
            ClusterStats::add(&self.stats.mirror_superseded, 1);
        }
    }

    /// The stream holds every batch up to `floor` acknowledged: the shards forget their notes
    /// of those batches' records (each told again next time when its queue was full).
    fn tell_floor(&mut self, floor: u64) {
        if floor <= self.floor_told {
            return;
        }
        // Every shard is tried, whether or not one before had room.
        let untold = self
            .to_shards
            .iter()
            .filter(|to| to.try_send(Mail::StreamAckFloor(floor)).is_err())
            .count();
        if untold == 0 {
            self.floor_told = floor;
        }
    }

    /// Acknowledges to the stream the batches the shards have routed, oldest first.
    async fn ack_taken(&mut self) {
        if !self.connected() {
            return;
        }
        while let Some(front) = self.taken.front() {
            let routed = front.marks.iter().all(|(shard, mark)| {
                self.routed_remote
                    .get(*shard)
                    .is_some_and(|count| count.load(Ordering::Acquire) >= *mark)
            });
            if !routed {
                break;
            }
            let Some(taken) = self.taken.pop_front() else {
                break;
            };
            if self.hold_acks {
                ClusterStats::add(&self.stats.stream_held, 1);
                continue;
            }
            match taken.message.ack().await {
                Ok(()) => ClusterStats::add(&self.stats.stream_acked, 1),
                // Not acknowledged: delivered again after the wait, a duplicate QoS 1 allows.
                Err(error) => tracing::debug!(%error, "cluster: could not acknowledge a batch"),
            }
        }
    }

    /// Closes the stream batch of `slot`: it waits for the next unit.
    fn store_slot(&mut self, slot: usize) {
        let Some(Some(node)) = self.slots.get(slot) else {
            return;
        };
        let subject = stream::subject(&self.config.name, node);
        let Some(batch) = self.stored_batches.get_mut(slot) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let payload = batch.split().freeze();
        ClusterStats::add(&self.stats.batches_out, 1);
        self.wait_to_store(subject, payload);
    }

    /// When the stream is not storing a unit: what waits goes out as the next unit, each
    /// subject's batches one after the other (a batch sent again stays ahead of later ones),
    /// the subjects side by side.
    fn end_stored_turn(&mut self) {
        for slot in 0..NODES_MAX {
            if self.stored_batches.get(slot).is_some_and(|b| !b.is_empty()) {
                self.store_slot(slot);
            }
        }
        if !self.units.is_empty()
            || (self.waiting_stores.is_empty()
                && self.copies.is_empty()
                && self.turn_numbers.iter().all(|n| *n == 0))
        {
            return;
        }
        let Some(js) = self.js.clone() else {
            return;
        };
        let numbers = std::mem::replace(&mut self.turn_numbers, vec![0; self.to_shards.len()]);
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(self.config.stream_ack_timeout_ms));
        let name = self.config.name.clone();
        let mut mirror_waiters = std::mem::take(&mut self.mirror_waiters);
        let subjects = self.waiting_stores.drain().map(|(subject, batches)| {
            let (js, stats) = (js.clone(), Arc::clone(&self.stats));
            let waiters = mirror_waiters.remove(&subject);
            async move {
                for (id, payload) in batches {
                    let subject = subject.clone();
                    let stats = Arc::clone(&stats);
                    let stored = stream::store(js.clone(), subject, id, payload, deadline, stats);
                    if stored.await.is_none() {
                        // The rest of this subject is not tried: stored after a lost batch, it
                        // would be out of order.
                        return (false, waiters);
                    }
                }
                (true, waiters)
            }
        });
        let stores = futures_util::future::join_all(subjects);
        // Each session's copies side by side with the other subjects.
        let me = &self.me;
        let plans = self
            .copies
            .take_plans(|client_id| stream::queued_node_subject(&name, client_id, me));
        let copies = plans.into_iter().map(|plan| {
            let ids = plan.batches.iter().map(|_| self.next_batch_id()).collect();
            let stats = Arc::clone(&self.stats);
            stream::store_copies(js.clone(), name.clone(), plan, ids, deadline, stats)
        });
        let copies = futures_util::future::join_all(copies.collect::<Vec<_>>());
        self.units.push_back(Box::pin(async move {
            let (stored, copied) = futures_util::future::join(stores, copies).await;
            let copied_ok = copied.iter().all(|(_, ok)| *ok);
            let done = copied.into_iter().map(|(done, _)| done).collect();
            let (stored_ok, refused) = refused_waiters(stored);
            (numbers, copied_ok && stored_ok, refused, done)
        }));
    }

    /// The stream answered a unit: each shard hears up to which number; the copies' batches
    /// and purges are noted.
    /// `refused`: numbered mirror records the stream did not take, whose acknowledgements alone
    /// are refused.
    fn on_unit(&mut self, numbers: &[u64], ok: bool, refused: &[(usize, u64)], done: Vec<Done>) {
        for done in done {
            self.copies.done(done);
        }
        for (shard, number) in numbers.iter().enumerate() {
            let of_shard: Box<[u64]> = refused
                .iter()
                .filter(|(of, _)| *of == shard)
                .map(|(_, number)| *number)
                .collect();
            if *number != 0 || !of_shard.is_empty() {
                self.answers.push_back((shard, *number, ok, of_shard));
            }
        }
    }

    /// Answers go to the shards in order; one whose queue is full gets its answers next turn.
    fn send_answers(&mut self) {
        let mut blocked = 0_u64;
        let to_shards = &self.to_shards;
        self.answers.retain(|(shard, upto, ok, refused)| {
            let (shard, upto, ok) = (*shard, *upto, *ok);
            let bit = 1_u64 << (shard % 64);
            if blocked & bit != 0 {
                return true;
            }
            let answer = Mail::ClusterStored {
                upto,
                ok,
                refused: refused.clone(),
            };
            let sent = to_shards
                .get(shard)
                .is_none_or(|to| to.try_send(answer).is_ok());
            if !sent {
                blocked |= bit;
            }
            !sent
        });
    }

    async fn on_control(&mut self, client: &Client, payload: Bytes) {
        let Some(control) = Control::decode(payload) else {
            tracing::debug!("cluster: a control record that does not decode");
            return;
        };
        let now = Instant::now();
        match control {
            Control::Delta {
                node,
                incarnation,
                seq,
                add,
                remove,
            } => {
                if node == self.me {
                    return;
                }
                let Some(entry) = self.node(&node, incarnation, now) else {
                    return;
                };
                if entry.synced && seq == entry.seq + 1 {
                    entry.seq = seq;
                    for filter in remove {
                        entry.filters.remove(&filter);
                    }
                    entry.filters.extend(add);
                    self.interest_dirty = true;
                    self.acks.push((node, incarnation, seq));
                } else if !entry.synced || seq > entry.seq {
                    self.request_snapshot(client, &node, now).await;
                }
            }
            Control::Heartbeat {
                node,
                incarnation,
                seq,
            } => {
                if node == self.me {
                    return;
                }
                let Some(entry) = self.node(&node, incarnation, now) else {
                    return;
                };
                if !entry.synced || seq > entry.seq {
                    self.request_snapshot(client, &node, now).await;
                }
            }
            Control::SnapshotRequest { from } => {
                let mut filters: Vec<String> = self.announced.iter().cloned().collect();
                filters.sort_unstable();
                let snapshot = Control::Snapshot {
                    node: self.me.clone(),
                    incarnation: self.incarnation,
                    seq: self.seq,
                    filters,
                };
                let subject = subject_ctl(&self.config.name, &from);
                if let Err(error) = client.publish(subject, snapshot.encode()).await {
                    tracing::error!(%error, node = %from, "cluster: interest snapshot not sent");
                }
            }
            Control::Snapshot {
                node,
                incarnation,
                seq,
                filters,
            } => {
                let Some(entry) = self.node(&node, incarnation, now) else {
                    return;
                };
                if entry.synced && seq < entry.seq {
                    return;
                }
                entry.synced = true;
                entry.seq = seq;
                entry.requested = None;
                entry.filters = filters.into_iter().collect();
                self.interest_dirty = true;
                self.acks.push((node, incarnation, seq));
            }
            Control::Claim {
                node,
                client_id,
                at_us,
            } => {
                if node == self.me {
                    return;
                }
                ClusterStats::add(&self.stats.claims_in, 1);
                // When the claim was made, on this node's clock: a connection made here after it
                // is newer and stays (a claim can arrive after the client moved here again).
                let age = Duration::from_micros(unix_us().saturating_sub(at_us));
                let at = now.checked_sub(age).unwrap_or(now);
                // The session lives on one shard, which this link does not know: every shard
                // looks (a full queue loses it there, counted).
                let client_id = bytestring::ByteString::from(client_id);
                for to in &self.to_shards {
                    let claim = Mail::RemoteClaim {
                        client_id: client_id.clone(),
                        at,
                    };
                    if to.try_send(claim).is_err() {
                        ClusterStats::add(&self.stats.dropped_inbound_full, 1);
                    }
                }
            }
            Control::Ack {
                from,
                incarnation,
                seq,
            } => {
                if incarnation != self.incarnation {
                    return;
                }
                if let Some(entry) = self.nodes.get_mut(&from) {
                    entry.acked = entry.acked.max(seq);
                }
            }
        }
    }

    /// The entry of `node`, made (or reset for a new incarnation) as needed; `None` when every
    /// node slot is taken.
    fn node(&mut self, node: &str, incarnation: u64, now: Instant) -> Option<&mut Node> {
        if !self.nodes.contains_key(node) {
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                tracing::error!(%node, "cluster: more than {NODES_MAX} nodes; ignoring this one");
                return None;
            };
            if let Some(free) = self.slots.get_mut(slot) {
                *free = Some(node.to_owned());
            }
            tracing::info!(%node, "cluster: node joined");
            self.nodes.insert(
                node.to_owned(),
                Node {
                    incarnation,
                    seq: 0,
                    synced: false,
                    filters: HashSet::new(),
                    last_heard: now,
                    requested: None,
                    slot,
                    acked: 0,
                },
            );
            self.stats
                .nodes
                .store(self.nodes.len() as u64, Ordering::Relaxed);
        }
        let entry = self.nodes.get_mut(node)?;
        entry.last_heard = now;
        if entry.incarnation != incarnation {
            tracing::info!(%node, "cluster: node restarted");
            entry.incarnation = incarnation;
            entry.seq = 0;
            entry.synced = false;
            entry.requested = None;
            entry.acked = 0;
            // The previous run's interest stays until the new run's snapshot replaces it: a
            // restarted node that restored its sessions misses nothing meanwhile (a filter it
            // no longer has only costs messages it drops).
        }
        Some(entry)
    }

    async fn request_snapshot(&mut self, client: &Client, node: &str, now: Instant) {
        let again_after = Duration::from_millis(u64::from(self.config.heartbeat_ms));
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        if entry
            .requested
            .is_some_and(|at| now.duration_since(at) < again_after)
        {
            return;
        }
        entry.requested = Some(now);
        let request = Control::SnapshotRequest {
            from: self.me.clone(),
        };
        let subject = subject_ctl(&self.config.name, node);
        if let Err(error) = client.publish(subject, request.encode()).await {
            tracing::warn!(%error, %node, "cluster: snapshot request not sent");
        }
    }

    async fn housekeeping(&mut self, client: &Client) {
        let now = Instant::now();
        let connected = self.connected();
        if connected && !self.was_connected {
            ClusterStats::add(&self.stats.reconnects, 1);
            // Tell the others at once that this node is here (and where its interest is).
            self.last_heartbeat = now - Duration::from_millis(u64::from(self.config.heartbeat_ms));
            // Not hearing anyone while cut off says nothing about them: their time starts again.
            for node in self.nodes.values_mut() {
                node.last_heard = now;
            }
        }
        self.was_connected = connected;
        let heartbeat = Duration::from_millis(u64::from(self.config.heartbeat_ms));
        if now.duration_since(self.last_heartbeat) >= heartbeat {
            self.last_heartbeat = now;
            if connected {
                let beat = Control::Heartbeat {
                    node: self.me.clone(),
                    incarnation: self.incarnation,
                    seq: self.seq,
                };
                let _ = client
                    .publish(self.interest_subject.clone(), beat.encode())
                    .await;
            }
            let timeout = Duration::from_millis(u64::from(self.config.node_timeout_ms));
            let gone: Vec<String> = self
                .nodes
                .iter()
                .filter(|_| connected)
                .filter(|(_, node)| now.duration_since(node.last_heard) > timeout)
                .map(|(id, _)| id.clone())
                .collect();
            let adopts = !gone.is_empty() && self.js.is_some();
            for id in &gone {
                if let Some(node) = self.nodes.remove(id) {
                    tracing::warn!(node = %id, "cluster: node not heard; forgetting it");
                    if let Some(slot) = self.slots.get_mut(node.slot) {
                        *slot = None;
                    }
                    if let Some(batch) = self.batches.get_mut(node.slot) {
                        batch.clear();
                    }
                    if let Some(batch) = self.stored_batches.get_mut(node.slot) {
                        batch.clear();
                    }
                    self.interest_dirty = true;
                }
            }
            // The live node whose id sorts first adopts the dead nodes' persistent sessions.
            if adopts && self.nodes.keys().all(|other| *other > self.me) {
                for id in gone {
                    self.adopt_sessions_of(&id);
                }
            }
            self.stats
                .nodes
                .store(self.nodes.len() as u64, Ordering::Relaxed);
        }
    }

    /// After each turn: batches out, this node's interest change announced, the other nodes'
    /// interest published to the shards, then acknowledged, then barriers answered.
    async fn end_turn(&mut self, client: &Client) {
        for slot in 0..NODES_MAX {
            if self.batches.get(slot).is_some_and(|b| !b.is_empty()) {
                self.flush_slot(client, slot).await;
            }
        }
        self.end_stored_turn();
        self.send_answers();
        if !self.home_waiting.is_empty() {
            self.send_home();
        }
        self.ack_taken().await;
        self.announce(client).await;
        if self.interest_dirty {
            self.interest_dirty = false;
            let mut table: HashMap<&str, u64> = HashMap::new();
            for node in self.nodes.values() {
                for filter in &node.filters {
                    *table.entry(filter).or_insert(0) |= 1 << node.slot;
                }
            }
            let table: InterestTable = table
                .into_iter()
                .map(|(filter, nodes)| (filter.to_owned(), nodes))
                .collect();
            self.interest.table.store(Arc::new(table));
            // After the table: a shard that sees the new version loads this table or a newer one.
            self.interest.version.fetch_add(1, Ordering::AcqRel);
        }
        for (node, incarnation, seq) in std::mem::take(&mut self.acks) {
            let ack = Control::Ack {
                from: self.me.clone(),
                incarnation,
                seq,
            };
            let subject = subject_ctl(&self.config.name, &node);
            let _ = client.publish(subject, ack.encode()).await;
        }
        self.answer_barriers();
    }

    async fn announce(&mut self, client: &Client) {
        if self.changed.is_empty() {
            for barrier in &mut self.barriers {
                if barrier.seq == THIS_TURN {
                    barrier.seq = self.seq;
                }
            }
            return;
        }
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for filter in self.changed.drain() {
            let present = self.local.contains_key(&filter);
            if present && !self.announced.contains(&filter) {
                self.announced.insert(filter.clone());
                add.push(filter);
            } else if !present && self.announced.remove(&filter) {
                remove.push(filter);
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            self.seq += 1;
            // Sent even when disconnected it would be lost: the heartbeat's seq tells the others
            // to ask for a snapshot instead.
            if self.connected() {
                let delta = Control::Delta {
                    node: self.me.clone(),
                    incarnation: self.incarnation,
                    seq: self.seq,
                    add,
                    remove,
                };
                if let Err(error) = client
                    .publish(self.interest_subject.clone(), delta.encode())
                    .await
                {
                    tracing::warn!(%error, "cluster: interest change not sent");
                }
            }
        }
        for barrier in &mut self.barriers {
            if barrier.seq == THIS_TURN {
                barrier.seq = self.seq;
            }
        }
    }

    /// Answers every barrier whose interest every known node has acknowledged, all of them
    /// while NATS is unreachable, and those that waited too long.
    fn answer_barriers(&mut self) {
        if self.barriers.is_empty() {
            return;
        }
        let now = Instant::now();
        let connected = self.connected();
        let nodes = &self.nodes;
        let to_shards = &self.to_shards;
        let stats = &self.stats;
        self.barriers.retain(|barrier| {
            if barrier.seq == THIS_TURN {
                return true;
            }
            let acknowledged = nodes.values().all(|node| node.acked >= barrier.seq);
            let late = now >= barrier.deadline;
            if connected && !acknowledged && !late {
                return true;
            }
            if connected && !acknowledged {
                ClusterStats::add(&stats.barrier_timeouts, 1);
            }
            let reply = Mail::BarrierReply {
                ticket: barrier.ticket,
                retained: Vec::new(),
            };
            // A full inbox keeps the barrier for the next turn: a SUBACK must not be lost.
            match to_shards.get(barrier.shard.index()) {
                Some(to) => to.try_send(reply).is_err(),
                None => false,
            }
        });
    }
}

/// The next output of `future`, or never when there is none.
async fn maybe<T>(future: &mut Option<LocalBoxFuture<'static, T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// What a stream reader gave.
enum Read {
    Stored(jetstream::Message),
    Retained(jetstream::Message),
    Session(jetstream::Message),
}

/// The next message of either stream reader, or never when they are not open.
async fn next_read(readers: &mut Option<Readers>) -> Option<Result<Read, String>> {
    let Some(readers) = readers else {
        return std::future::pending().await;
    };
    tokio::select! {
        item = readers.stored.next() => {
            item.map(|read| read.map(Read::Stored).map_err(|error| error.to_string()))
        }
        item = readers.retained.next() => {
            item.map(|read| read.map(Read::Retained).map_err(|error| error.to_string()))
        }
        item = readers.sessions.next() => {
            item.map(|read| read.map(Read::Session).map_err(|error| error.to_string()))
        }
    }
}

/// Milliseconds since the Unix epoch (the nodes' clocks are assumed roughly in step).
fn unix_ms() -> u64 {
    unix_us() / 1_000
}

/// Microseconds since the Unix epoch.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, micros)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Queues `payload` as the only batch waiting for `subject`: the session mirror keeps one
/// message per subject, so an older record still waiting would be replaced in the stream
/// anyway. Without this, a session whose client sends QoS 2 PUBLISHes faster than the stream
/// stores them would queue one whole record per PUBLISH. The acknowledgements that waited for
/// the older record wait for the unit that carries the newer one, which holds all they need.
/// True when it superseded one.
fn supersede(
    waiting: &mut HashMap<String, Vec<(String, Bytes)>>,
    subject: String,
    id: String,
    payload: Bytes,
) -> bool {
    let batches = waiting.entry(subject).or_default();
    let superseded = !batches.is_empty();
    batches.clear();
    batches.push((id, payload));
    superseded
}

/// What storing one subject of a unit came to: stored, and for a session's mirror record the
/// (shard, number) of the acknowledgements that waited for it.
type SubjectStored = (bool, Option<Vec<(usize, u64)>>);

/// Whether every subject of a unit that is not a session's mirror record was stored, and the
/// (shard, number) of the acknowledgements that waited for a mirror record not stored: one
/// session's record the stream refuses (too large, say) refuses its own acknowledgements, not
/// every shard's of the unit.
fn refused_waiters(stored: Vec<SubjectStored>) -> (bool, Vec<(usize, u64)>) {
    let mut all_ok = true;
    let mut refused = Vec::new();
    for (ok, waiters) in stored {
        match (ok, waiters) {
            (true, _) => {}
            (false, Some(waiters)) => refused.extend(waiters),
            (false, None) => all_ok = false,
        }
    }
    (all_ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_mirror_record_refuses_only_its_own_acknowledgements() {
        let check = |stored: Vec<SubjectStored>, expected| {
            assert_eq!(refused_waiters(stored.clone()), expected, "{stored:?}");
        };
        check(
            vec![(true, None), (true, Some(vec![(0, 3)]))],
            (true, vec![]),
        );
        // A mirror record refused: its waiters alone, even with none (an unnumbered record).
        check(
            vec![
                (true, None),
                (false, Some(vec![(0, 3), (1, 5)])),
                (false, Some(vec![])),
            ],
            (true, vec![(0, 3), (1, 5)]),
        );
        // A batch for a node refused: the whole unit.
        check(
            vec![(false, None), (false, Some(vec![(1, 2)]))],
            (false, vec![(1, 2)]),
        );
    }

    #[test]
    fn a_mirror_record_waiting_is_superseded_by_the_next_of_its_subject() {
        let mut waiting = HashMap::new();
        let batch = |n: u8| (format!("id-{n}"), Bytes::from(vec![n]));
        for n in 1..=3 {
            let (id, payload) = batch(n);
            let superseded = supersede(&mut waiting, "sessions.a".into(), id, payload);
            assert_eq!(superseded, n > 1);
        }
        let (id, payload) = batch(9);
        assert!(!supersede(&mut waiting, "sessions.b".into(), id, payload));
        assert_eq!(waiting.get("sessions.a"), Some(&vec![batch(3)]));
        assert_eq!(waiting.get("sessions.b"), Some(&vec![batch(9)]));
        assert_eq!(waiting.len(), 2);
    }
}
