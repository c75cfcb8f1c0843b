//! The async shell around each shard: accept loops, the inbox task (mail in), the flush task
//! (mail out), the tick, and graceful shutdown. The broker logic itself is `Shard::handle`; this
//! file only moves events in and carries out what `handle` leaves behind.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SIGINT and SIGTERM caught for `Broker::run_until`.
pub use shards::Signals;
use shards::sync::Notify;
use shards::{
    CpuSet, ListenerSpec, PortPerShard, RuntimeConfig, ShardContext, ShardCount, ShardId, Task,
    TaskClass, Topology,
};

use crate::bridge::set::BridgeSet;
use crate::config::{self, Config};
use crate::connect_rate::ConnectRate;
use crate::connection;
use crate::mail::{Envelope, Stamp};
use crate::metrics::{SnapshotBoard, SnapshotPublisher};
use crate::readiness::Serving;
use crate::security::{Security, Snapshot};
use crate::service::{Service, Supervisor};

mod listener_kind;
mod reloader;
mod shutdown;
mod store_task;
mod urgent_mail;

use crate::shard::{ConnId, Event, Settings, Shard};
use crate::sys::SysState;
pub(crate) use listener_kind::{ListenerKind, TlsListenerKind, WsListenerKind, listener_kinds};
use reloader::{Reloader, reload};
use shutdown::{Rendezvous, shut_down};

/// How often keepalive, CONNECT deadlines and session expiry are checked.
const TICK: Duration = Duration::from_millis(250);
/// Mails moved per ring operation batch.
const MAIL_BATCH: usize = 256;
/// Ticks between two metric snapshots (about a second).
const SNAPSHOT_EVERY_TICKS: u32 = 4;
/// How long `start` waits for every shard to begin serving once its executor runs.
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker: one shard per configured core.
pub struct Broker {
    runtime: shards::Runtime,
    listener_count: usize,
    /// The admin HTTP listener, when enabled; stopped when the broker is dropped.
    admin: Option<crate::admin::Admin>,
    security: Arc<Security>,
    _reloader: Reloader,
    /// The bridge definitions in force (replaced on reload).
    bridges: Arc<BridgeSet>,
    /// Tells systemd (when it started us) that the broker is ready, and keeps its watchdog fed.
    _supervisor: Supervisor,
    /// The NATS link thread of a cluster node; stopped after the shards.
    cluster: Option<crate::cluster::LinkThread>,
}

/// Why the broker did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Start(#[from] shards::StartError),
    #[error(transparent)]
    Runtime(#[from] shards::RuntimeError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("bridges.{name}: {source}; fix the file or the key that names it")]
    Bridge {
        name: String,
        source: Box<crate::tls::TlsError>,
    },
    #[error("cluster: cannot start the NATS link: {0}")]
    Cluster(#[source] std::io::Error),
    #[error(
        "admin.bind = {addr}: cannot listen: {source}; choose a free address or set admin.enabled = false"
    )]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts every shard with its listeners; either all start or none does.
pub fn start(config: Config) -> Result<Broker, BrokerError> {
    start_with(config, Vec::new())
}

/// [`start`] with enhanced-authentication methods (MQTT 5.0 AUTH) for CONNECTs that name one.
pub fn start_with(
    config: Config,
    authenticators: Vec<Arc<dyn crate::security::Authenticator>>,
) -> Result<Broker, BrokerError> {
    let security = Arc::new(Security::load(&config, authenticators)?);
    let runtime_config = runtime_config(&config);
    let store = if config.persistence.enabled {
        let shard_count = shards::planned_shard_count(&runtime_config)?;
        Some(Arc::new(StoreStart::prepare(&config, shard_count)?))
    } else {
        None
    };
    let bridges = Arc::new(BridgeSet::new(bridge_settings(&config)?));
    let (cluster_link, cluster) = if config.cluster.enabled {
        let shard_count = shards::planned_shard_count(&runtime_config)?;
        let started =
            crate::cluster::start(&config.cluster, shard_count).map_err(BrokerError::Cluster)?;
        let shared = ShardsCluster {
            handle: started.handle,
            inboxes: Arc::new(started.inboxes),
        };
        (Some(started.thread), Some(shared))
    } else {
        (None, None)
    };
    let listener_count = runtime_config.listeners.len();
    let admin_config = config.admin.clone();
    // One slot per possible shard: the runtime settles the count, and only slots of running
    // shards are ever filled.
    let board = Arc::new(SnapshotBoard::with_listeners(
        shards::MAX_SHARDS,
        listener_kind::listener_labels(&config),
    ));
    if let Some(cluster) = &cluster {
        board.set_cluster(Arc::clone(&cluster.handle.stats));
    }
    let config = Arc::new(config);
    // Fix the epoch of cross-shard mail stamps before any shard stamps anything.
    crate::mail::epoch();
    let shard_board = Arc::clone(&board);
    let serving = Serving::new();
    let shard_serving = Arc::clone(&serving);
    let shard_security = Arc::clone(&security);
    let service = Service::new(shards::MAX_SHARDS);
    let shard_service = Arc::clone(&service);
    let rendezvous = Arc::new(Rendezvous::default());
    let shard_bridges = Arc::clone(&bridges);
    let runtime = shards::start(runtime_config, move |ctx: ShardContext<Envelope>| {
        let together = Together {
            config: Arc::clone(&config),
            board: Arc::clone(&shard_board),
            serving: Arc::clone(&shard_serving),
            security: Arc::clone(&shard_security),
            service: Arc::clone(&shard_service),
            rendezvous: Arc::clone(&rendezvous),
            store: store.clone(),
            bridges: Arc::clone(&shard_bridges),
            cluster: cluster.clone(),
        };
        async move { run_shard(ctx, together).await }
    })?;
    wait_until_serving(&runtime, &serving);
    let all_serving = serving.all(runtime.shard_count());
    let admin = if admin_config.enabled {
        let handle = runtime.handle();
        let ready_board = Arc::clone(&board);
        // Not ready while a shard cannot write its persistence log: it refuses QoS 1/2 publishes.
        let readiness = move || {
            handle.is_ready() && serving.all(handle.shard_count()) && !ready_board.store_broken()
        };
        let admin = crate::admin::Admin::start(admin_config.bind, Arc::clone(&board), readiness)
            .map_err(|source| BrokerError::Admin {
                addr: admin_config.bind,
                source,
            })?;
        Some(admin)
    } else {
        None
    };
    let reloader = Reloader::start(Arc::clone(&security), Arc::clone(&bridges));
    // READY=1 only once everything that can fail to start has started.
    let supervisor = if all_serving {
        let listening: Vec<String> = (0..listener_count)
            .map(|index| runtime.listener_addr(index).to_string())
            .collect();
        let listening = listening.join(", ");
        Supervisor::start(
            service,
            runtime.shard_count(),
            Arc::clone(&board),
            listening,
        )
    } else {
        tracing::error!("not every shard began serving: not telling the service manager READY=1");
        Supervisor::idle()
    };
    Ok(Broker {
        runtime,
        listener_count,
        admin,
        security,
        _reloader: reloader,
        bridges,
        _supervisor: supervisor,
        cluster: cluster_link,
    })
}

/// Waits (bounded) until every shard's serving loop runs, so that a started broker is ready.
fn wait_until_serving(runtime: &shards::Runtime, serving: &Serving) {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    while !serving.all(runtime.shard_count()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Broker {
    /// The shared address of listener `index` (listeners in the order of their names).
    pub fn listener_addr(&self, index: usize) -> SocketAddr {
        self.runtime.listener_addr(index)
    }

    /// The shared address of listener `index`, or `None` past the last listener.
    pub fn listener_addr_checked(&self, index: usize) -> Option<SocketAddr> {
        (index < self.listener_count).then(|| self.runtime.listener_addr(index))
    }

    /// The address that reaches only `shard` on listener `index` (`shard_port_base` set).
    pub fn shard_addr(&self, index: usize, shard: usize) -> Option<SocketAddr> {
        self.runtime.shard_addr(index, ShardId::new(shard))
    }

    pub fn shard_count(&self) -> usize {
        self.runtime.shard_count()
    }

    /// The admin listener's address (`/metrics`, `/health`, `/ready`), when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(crate::admin::Admin::local_addr)
    }

    pub fn handle(&self) -> shards::RuntimeHandle {
        self.runtime.handle()
    }

    /// What SIGHUP does: re-reads the password file, the ACL file and the TLS certificates. On
    /// an error the previous ones stay. Shards take the new tables within a tick (250 ms);
    /// connections stay open.
    pub fn reload(&self) -> Result<(), crate::security::SecurityError> {
        reload(&self.security)
    }

    /// Takes the bridge definitions of `config` (what SIGHUP does with the config file): added
    /// bridges start, removed ones stop (their queue dropped), changed ones restart, within a
    /// tick (250 ms). On an error (a TLS file) the bridges in force stay.
    pub fn reload_bridges(&self, config: &Config) -> Result<(), BrokerError> {
        self.bridges.replace(bridge_settings(config)?);
        Ok(())
    }

    /// The config file SIGHUP reads the bridge definitions from.
    pub fn set_config_file(&self, file: Option<std::path::PathBuf>) {
        self.bridges.set_file(file);
    }

    /// Stops accepting, closes every connection, and waits for the shards.
    pub fn shutdown(self) -> Result<(), BrokerError> {
        self.runtime.handle().shutdown();
        let joined = self.runtime.join();
        if let Some(link) = self.cluster {
            link.stop();
        }
        Ok(joined?)
    }

    /// Runs until SIGINT or SIGTERM (or a shard fails), then shuts down gracefully; the signals
    /// are caught since `signals` was made (before the start, so a stop asked for during it is
    /// graceful too).
    pub fn run_until(self, signals: Signals) -> Result<(), BrokerError> {
        Ok(self.runtime.run_until(signals)?)
    }
}

fn runtime_config(config: &Config) -> RuntimeConfig {
    let runtime = &config.runtime;
    let spec = |bind, backlog, shard_port_base: Option<u16>| ListenerSpec {
        addr: bind,
        backlog,
        port_per_shard: match shard_port_base {
            None => PortPerShard::Off,
            Some(0) => PortPerShard::Ephemeral,
            Some(base) => PortPerShard::Base(base),
        },
    };
    let listeners = config
        .listener_binds()
        .into_iter()
        .map(|(bind, backlog, shard_port_base)| spec(bind, backlog, shard_port_base))
        .collect();
    RuntimeConfig {
        topology: Topology {
            shards: match runtime.shards {
                config::ShardCount::Auto => ShardCount::Auto,
                config::ShardCount::Count(n) => ShardCount::Count(n),
            },
            cpus: match &runtime.cpus {
                config::CpuList::All => CpuSet::All,
                config::CpuList::List(list) => CpuSet::List(list.clone()),
            },
            pin: runtime.pin,
        },
        mailbox_capacity: runtime.mailbox_messages_max as usize,
        io_memory_bytes: runtime.io_memory_bytes as usize,
        ring_depth: runtime.ring_depth as usize,
        recv_buffers: runtime.recv_buffers as usize,
        recv_buffer_bytes: runtime.recv_buffer_bytes as usize,
        listeners,
        name: String::from("ringmq"),
        ..RuntimeConfig::default()
    }
}

/// What one shard's tasks share. Lives on the shard's thread only.
pub(crate) struct ShardShell {
    pub ctx: ShardContext<Envelope>,
    pub shard: RefCell<Shard>,
    /// Wakes each connection's writer.
    pub writers: RefCell<crate::connection::Writers>,
    /// Idle connections parked without a task (`connection::parked`).
    pub parked: RefCell<crate::connection::ParkedConnections>,
    pub mail_ready: Notify,
    next_conn: Cell<ConnId>,
    /// What each listener is, by its index in the runtime's listener list.
    pub listeners: Vec<ListenerKind>,
    pub security: Arc<Security>,
    /// The security tables this shard uses, and the reload generation they came from.
    snapshot: RefCell<Arc<Snapshot>>,
    snapshot_generation: Cell<u64>,
    /// TLS and WebSocket handshakes under way on this shard (they count against
    /// `connections_per_shard_max` before the connection reaches the shard).
    pub handshakes: Cell<usize>,
    /// Reused list of connections to wake after `handle`.
    dirty: RefCell<Vec<ConnId>>,
    /// Wakes the store task (persistence on).
    pub store_ready: Notify,
    /// The flush task holds mail it took from the shard and has not yet put in a ring.
    flushing: Cell<bool>,
    /// The shard's allowance for bytes of partly read packets.
    pub partial: crate::connection::PartialBytes,
    /// The bridges running on this shard, and the generation of definitions they follow.
    pub bridges: RefCell<crate::bridge::set::RunningBridges>,
    pub bridge_generation: Cell<u64>,
}

impl ShardShell {
    /// Runs `handle` for a batch of events, then wakes the writers and the mail flusher.
    pub fn handle_all(&self, events: impl IntoIterator<Item = Event>) {
        self.handle_all_at(events, Instant::now());
    }

    /// `handle_all` with a clock reading the caller already made.
    pub fn handle_all_at(&self, events: impl IntoIterator<Item = Event>, now: Instant) {
        {
            let mut shard = self.shard.borrow_mut();
            for event in events {
                shard.handle(event, now);
            }
            if shard.has_unstamped() {
                shard.stamp_encoded(Instant::now());
            }
        }
        self.after_handle();
    }

    /// Handles the packets one read brought, `read_at` being that read's completion (it dates
    /// the batch and every message in it); each PUBLISH among them gets one value of the handle
    /// stage. One clock reading ends the batch when it held a PUBLISH or encoded a delivery; it
    /// also dates the deliveries encoded (`Shard::stamp_encoded`).
    pub fn handle_read(&self, events: impl IntoIterator<Item = Event>, read_at: Instant) {
        {
            let mut shard = self.shard.borrow_mut();
            let mut publishes = 0;
            for event in events {
                let publish = matches!(
                    event,
                    Event::Packet {
                        packet: crate::protocol::Packet::Publish(_),
                        ..
                    }
                );
                publishes += u64::from(publish);
                shard.handle(event, read_at);
            }
            if publishes > 0 || shard.has_unstamped() {
                let handled_at = Instant::now();
                shard.stamp_encoded(handled_at);
                let micros = crate::metrics::micros_between(read_at, handled_at);
                shard.metrics.record_handle(micros, publishes);
            }
        }
        self.after_handle();
    }

    pub fn handle(&self, event: Event) {
        self.handle_all(std::iter::once(event));
    }

    /// A write of `conn` completed: room in its buffer again, so its queued deliveries may
    /// follow (`Event::Drained`). With nothing queued anywhere the event is skipped, and with
    /// it a clock reading and a pass over the shard's wake-ups per write.
    pub fn drained(&self, conn: ConnId) {
        if self.shard.borrow().drain_pending(conn) {
            self.handle(Event::Drained { conn });
        }
    }

    fn after_handle(&self) {
        let mut dirty = self.dirty.borrow_mut();
        let (has_mail, store_work) = {
            let mut shard = self.shard.borrow_mut();
            if shard.store_enabled() {
                shard.flush_store(&crate::store::Clock::now());
            }
            shard.take_dirty(&mut dirty);
            (shard.has_mail(), shard.store_has_work())
        };
        if store_work {
            self.store_ready.notify_one();
        }
        let mut writers = self.writers.borrow_mut();
        for conn in dirty.drain(..) {
            writers.wake(conn);
        }
        drop(writers);
        if has_mail {
            if self.shard.borrow_mut().take_urgent_mail() {
                self.send_urgent_mail();
            }
            self.mail_ready.notify_one();
        }
    }

    /// The security tables in force on this shard.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// The rustls config of TLS listener `index`.
    pub fn tls_config(&self, index: usize) -> Option<Arc<rustls::ServerConfig>> {
        self.snapshot.borrow().tls.get(index).cloned()
    }

    /// True when a CONNECT must be authenticated by the connection before the shard sees it.
    pub fn checks_connect(&self) -> bool {
        self.security.checks_connect(&self.snapshot.borrow())
    }

    /// Takes the tables of the latest reload, if there was one since the last look.
    fn refresh_security(&self) {
        let generation = self.security.generation();
        if generation == self.snapshot_generation.get() {
            return;
        }
        let snapshot = self.security.snapshot();
        self.shard
            .borrow_mut()
            .set_acl(snapshot.acl.clone(), generation);
        *self.snapshot.borrow_mut() = snapshot;
        self.snapshot_generation.set(generation);
    }

    /// Every mail the shard queued is in a ring (or handled, when it was to this shard).
    fn mail_flushed(&self) -> bool {
        !self.flushing.get() && !self.shard.borrow().has_mail()
    }

    pub fn next_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }
}

/// What every shard shares with the others and the broker.
struct Together {
    config: Arc<Config>,
    board: Arc<SnapshotBoard>,
    serving: Arc<Serving>,
    security: Arc<Security>,
    service: Arc<Service>,
    rendezvous: Arc<Rendezvous>,
    store: Option<Arc<StoreStart>>,
    bridges: Arc<BridgeSet>,
    cluster: Option<ShardsCluster>,
}

/// The cluster link as the shards see it: the handle, and each shard's inbox by index.
#[derive(Clone)]
struct ShardsCluster {
    handle: crate::cluster::ClusterHandle,
    inboxes: Arc<Vec<flume::Receiver<crate::mail::Mail>>>,
}

async fn run_shard(ctx: ShardContext<Envelope>, together: Together) {
    let Together {
        config,
        board,
        serving,
        security,
        service,
        rendezvous,
        store,
        bridges,
        cluster,
    } = together;
    let settings = Arc::new(Settings::from_config(&config, ctx.shard_count()));
    let mut shard = Shard::new(ctx.id(), ctx.shard_count(), settings);
    if let Some(cluster) = &cluster {
        shard.set_cluster(cluster.handle.clone());
    }
    let restored = store.as_ref().map(|store| {
        shard.enable_store(store.mode);
        if ctx.id().index() == 0 {
            shard.metrics.counts.set_recovery(&store.report);
        }
        store.take(ctx.id().index())
    });
    let generation = security.generation();
    let snapshot = security.snapshot();
    shard.set_acl(snapshot.acl.clone(), generation);
    let shell = Rc::new(ShardShell {
        ctx: ctx.clone(),
        shard: RefCell::new(shard),
        writers: RefCell::default(),
        mail_ready: Notify::new(),
        next_conn: Cell::new(1),
        listeners: listener_kinds(&config),
        security,
        snapshot: RefCell::new(snapshot),
        snapshot_generation: Cell::new(generation),
        handshakes: Cell::new(0),
        dirty: RefCell::new(Vec::new()),
        store_ready: Notify::new(),
        flushing: Cell::new(false),
        partial: crate::connection::PartialBytes::new(
            config.limits.partial_packet_bytes_per_shard_max,
        ),
        bridges: RefCell::new(Default::default()),
        bridge_generation: Cell::new(0),
        parked: RefCell::new(crate::connection::ParkedConnections::new()),
    });
    let mut accepts = Vec::new();
    let mut tasks: Vec<Task<()>> = Vec::new();
    let stopping = Rc::new(Cell::new(false));
    let mut store_task = None;
    if let (Some(store), Some(restored)) = (&store, restored) {
        let dir = crate::store::files::shard_dir(&store.dir, store.generation, ctx.id().index());
        let files = store_task::StoreFiles::open(dir, 1).await;
        store_task = Some(ctx.spawn(
            TaskClass::Background,
            store_task::store_loop(
                Rc::clone(&shell),
                files,
                store.mode,
                Arc::clone(&store.new_generation),
                Rc::clone(&stopping),
            ),
        ));
        shell.shard.borrow_mut().restore(restored);
        tasks.push(ctx.spawn(TaskClass::Mail, inbox_loop(Rc::clone(&shell))));
        tasks.push(ctx.spawn(TaskClass::Mail, flush_loop(Rc::clone(&shell))));
        shell.handle_all(std::iter::empty());
        wait_for_peers_restored(&shell).await;
    } else {
        tasks.push(ctx.spawn(TaskClass::Mail, inbox_loop(Rc::clone(&shell))));
        tasks.push(ctx.spawn(TaskClass::Mail, flush_loop(Rc::clone(&shell))));
    }
    let cluster_inbox = cluster.and_then(|cluster| cluster.inboxes.get(ctx.id().index()).cloned());
    if let Some(inbox) = cluster_inbox {
        tasks.push(ctx.spawn(
            TaskClass::Mail,
            cluster_inbox_loop(Rc::clone(&shell), inbox),
        ));
    }
    // One bucket for all of this shard's listeners.
    let rate = Rc::new(RefCell::new(ConnectRate::new(
        config.limits.connect_rate_per_shard_max,
        Instant::now(),
    )));
    tasks.push(ctx.spawn(TaskClass::Io, crate::connection::parker(Rc::clone(&shell))));
    for listener in ctx.take_listeners() {
        let shell = Rc::clone(&shell);
        let rate = Rc::clone(&rate);
        accepts.push(ctx.spawn(TaskClass::Io, accept_loop(shell, listener, rate)));
    }
    crate::bridge::set::reconcile(&shell, &bridges, &board);
    let publisher = SnapshotPublisher::new(Arc::clone(&board), ctx.id().index());
    tasks.push(ctx.spawn(
        TaskClass::Background,
        tick_loop(
            Rc::clone(&shell),
            publisher,
            service.clone(),
            (Arc::clone(&bridges), Arc::clone(&board)),
        ),
    ));
    if config.sys.enabled && ctx.id().index() == 0 {
        let interval = Duration::from_secs(u64::from(config.sys.interval_secs));
        tasks.push(ctx.spawn(
            TaskClass::Background,
            sys_loop(Rc::clone(&shell), board, interval),
        ));
    }
    let serving = serving.enter();
    tracing::info!(shard = ctx.id().index(), "shard started");
    ctx.shutdown_requested().await;
    service.stopping();
    drop(serving);
    let timeout = Duration::from_millis(u64::from(config.runtime.shutdown_timeout_ms));
    shut_down(&shell, accepts, tasks, &rendezvous, timeout).await;
    if let Some(task) = store_task {
        // Connections are closed and wills published: what they left is written and synced
        // before the shard stops.
        stopping.set(true);
        shell.handle_all(std::iter::empty());
        shell.store_ready.notify_one();
        let _ = shards::time::timeout(timeout, task).await;
    }
    tracing::info!(shard = ctx.id().index(), "shard stopped");
}

/// Every bridge's settings, TLS files read: a bad file stops the start with the bridge's name.
pub(crate) fn bridge_settings(
    config: &Config,
) -> Result<Vec<crate::bridge::Settings>, BrokerError> {
    crate::bridge::set::settings_of(config).map_err(|(name, source)| BrokerError::Bridge {
        name,
        source: Box::new(source),
    })
}

/// Accepts in a row before the accept loop lets the shard's other tasks run.
const ACCEPTS_PER_TURN: u32 = 8;

async fn accept_loop(
    shell: Rc<ShardShell>,
    listener: shards::Listener,
    rate: Rc<RefCell<ConnectRate>>,
) {
    let index = listener.spec_index();
    let nodelay = shell.listeners.get(index).is_none_or(ListenerKind::nodelay);
    let kernel_timestamps = shell
        .listeners
        .get(index)
        .is_some_and(ListenerKind::kernel_timestamps);
    let mut accepted = 0u32;
    loop {
        // A full backlog completes every accept at once: let the shard's other tasks run.
        accepted = accepted.wrapping_add(1);
        if accepted.is_multiple_of(ACCEPTS_PER_TURN) {
            shards::yield_now().await;
        }
        // Over the connect rate, wait before accepting: the backlog holds the rest (see
        // `connect_rate`).
        let wait = rate.borrow_mut().take(Instant::now());
        if let Err(wait) = wait {
            shards::time::sleep(wait).await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Accepted sockets have TCP_NODELAY on already (from the listening socket):
                // a system call only for a listener that turns it off.
                if !nodelay && let Err(error) = stream.set_nodelay(false) {
                    tracing::debug!(%peer, %error, "TCP_NODELAY not set");
                }
                if kernel_timestamps && let Err(error) = stream.set_receive_timestamps() {
                    tracing::debug!(%peer, %error, "SO_TIMESTAMPNS not set");
                }
                let conn_shell = Rc::clone(&shell);
                shell
                    .ctx
                    .spawn(
                        TaskClass::Io,
                        connection::run(conn_shell, stream, peer, index),
                    )
                    .detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                shards::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Mail in: drains the rings in batches and hands each mail to the shard.
async fn inbox_loop(shell: Rc<ShardShell>) {
    let mut batch = Vec::with_capacity(MAIL_BATCH);
    loop {
        let moved = shell.ctx.recv_batch(&mut batch, MAIL_BATCH).await;
        if moved == 0 {
            break;
        }
        // One clock read per batch: it dates the ring waits and the handling alike.
        let now = Instant::now();
        let taken = Stamp::at(now);
        {
            let metrics = &mut shell.shard.borrow_mut().metrics;
            for (_, envelope) in &batch {
                metrics.record_ring_wait(taken.micros_since(envelope.posted));
            }
        }
        let events = batch.drain(..).map(|(from, envelope)| Event::Mail {
            from,
            mail: envelope.mail,
        });
        shell.handle_all_at(events, now);
    }
}

/// Mail from the cluster link (messages from other nodes, barrier answers), in batches.
async fn cluster_inbox_loop(shell: Rc<ShardShell>, inbox: flume::Receiver<crate::mail::Mail>) {
    let me = shell.ctx.id();
    let mut batch = Vec::with_capacity(MAIL_BATCH);
    while let Ok(first) = inbox.recv_async().await {
        batch.push(first);
        while batch.len() < MAIL_BATCH {
            let Ok(mail) = inbox.try_recv() else { break };
            batch.push(mail);
        }
        let events = batch.drain(..).map(|mail| Event::Mail { from: me, mail });
        shell.handle_all(events);
    }
}

/// Mail out: moves each shard's queued mail into its ring, FIFO, waiting for space when a ring is
/// full (publishers on this shard stop reading meanwhile: see `Shard::mail_backlogged`).
async fn flush_loop(shell: Rc<ShardShell>) {
    let me = shell.ctx.id();
    let count = shell.ctx.shard_count();
    let mut batch = Vec::with_capacity(MAIL_BATCH);
    loop {
        shell.mail_ready.notified().await;
        loop {
            let mut moved = false;
            for index in 0..count {
                let to = ShardId::new(index);
                shell
                    .shard
                    .borrow_mut()
                    .take_mail(to, &mut batch, MAIL_BATCH);
                if batch.is_empty() {
                    continue;
                }
                moved = true;
                shell.flushing.set(true);
                if to == me {
                    // Mail to ourselves is handled right here, in order.
                    shell.handle_all(batch.drain(..).map(|mail| Event::Mail { from: me, mail }));
                    shell.flushing.set(false);
                    continue;
                }
                // One clock read per batch; waiting for ring space counts as time in the ring.
                let posted = Stamp::at(Instant::now());
                shell.flushing.set(true);
                for mail in batch.drain(..) {
                    if shell.ctx.send(to, Envelope { mail, posted }).await.is_err() {
                        // The peer is gone: the broker is shutting down.
                        shell.flushing.set(false);
                        return;
                    }
                }
                shell.flushing.set(false);
            }
            if !moved {
                break;
            }
        }
    }
}

async fn tick_loop(
    shell: Rc<ShardShell>,
    mut publisher: SnapshotPublisher,
    service: Arc<Service>,
    (bridges, board): (Arc<BridgeSet>, Arc<SnapshotBoard>),
) {
    let shard = shell.ctx.id().index();
    #[cfg(debug_assertions)]
    let mut stall = crate::service::TestStall::from_env(shard);
    let mut ticks: u32 = 0;
    loop {
        shards::time::sleep(TICK).await;
        #[cfg(debug_assertions)]
        if let Some(stall) = stall.as_mut() {
            stall.at_tick();
        }
        // The watchdog's proof that this shard's loop turns (see `service`).
        service.beat(shard);
        shell.refresh_security();
        crate::bridge::set::reconcile(&shell, &bridges, &board);
        shell.handle(Event::Tick);
        if ticks.is_multiple_of(SNAPSHOT_EVERY_TICKS) && shell.shard.borrow().store_broken() {
            // The log cannot be written: try a snapshot about once a second until one works.
            shell
                .shard
                .borrow_mut()
                .retry_store(&crate::store::Clock::now());
            shell.store_ready.notify_one();
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(SNAPSHOT_EVERY_TICKS) {
            // About once a second the admin side gets a copy; a scrape never touches the shard.
            let mut shard = shell.shard.borrow_mut();
            shard.refresh_metrics();
            let pool = shards::recv_pool_stats();
            let parked = shell.parked.borrow().len();
            let counts = &mut shard.metrics.counts;
            counts.connections_parked = parked as u64;
            counts.receive_buffers_held = pool.held as u64;
            counts.receives_pooled = pool.receives;
            counts.receive_pool_exhausted = pool.exhausted;
            publisher.publish(&shard.metrics);
        }
    }
}

/// Shard 0 publishes the `$SYS` topics from the merged snapshots of every shard.
async fn sys_loop(shell: Rc<ShardShell>, board: Arc<SnapshotBoard>, interval: Duration) {
    let mut state = SysState::new();
    loop {
        shards::time::sleep(interval).await;
        let messages = state.tick(
            board.merged(),
            board.uptime(),
            env!("CARGO_PKG_VERSION"),
            interval,
        );
        let now = Instant::now();
        {
            let mut shard = shell.shard.borrow_mut();
            for (topic, payload) in messages {
                shard.publish_sys(topic, payload, now);
            }
        }
        shell.handle_all(std::iter::empty());
    }
}

/// What persistence hands the shards at start: each shard's restored state, and where its log
/// continues.
pub(crate) struct StoreStart {
    dir: std::path::PathBuf,
    generation: u64,
    mode: crate::store::FsyncMode,
    parts: std::sync::Mutex<Vec<Option<crate::store::restore::Restored>>>,
    report: crate::store::RecoveryReport,
    /// Whether the new generation is in force (`store_task::NewGeneration`): until then no
    /// shard's store task writes records, so nothing is reported durable.
    new_generation: Arc<store_task::NewGeneration>,
}

impl StoreStart {
    /// Reads the store back, splits it over `shard_count` shards and writes it as a new
    /// generation (see `store::files`).
    fn prepare(
        config: &Config,
        shard_count: usize,
    ) -> Result<StoreStart, crate::store::StoreError> {
        use crate::store::{Clock, FsyncMode, files, restore};
        let started = Instant::now();
        let persistence = &config.persistence;
        let dir = persistence.dir.clone();
        let (replayed, report) = files::recover(&dir, persistence.ignore_corrupt_storage)?;
        let clock = Clock::now();
        let orphans = replayed.orphans;
        let parts = restore::split(
            replayed,
            shard_count,
            |key| crate::shard::home_of(key, shard_count).index(),
            &clock,
        );
        let generation = report.generation + 1;
        let previous = (report.generation > 0).then_some(report.generation);
        files::begin_generation(&dir, generation, shard_count)?;
        // Each shard writes its part as its first snapshot while it serves (`store_task`); the
        // last to finish puts the new generation in force.
        let new_generation = Arc::new(store_task::NewGeneration::new(
            dir.clone(),
            generation,
            previous,
            report.quarantined,
            shard_count,
        ));
        tracing::info!(
            dir = %dir.display(),
            generation,
            sessions = report.sessions,
            queued_messages = report.queued_messages,
            retained = report.retained,
            wills = report.wills,
            bytes_read = report.bytes_read,
            torn_bytes = report.torn_bytes,
            orphan_records = orphans,
            seconds = report.seconds,
            seconds_to_prepare = started.elapsed().as_secs_f64(),
            "store: recovered"
        );
        let mode = match persistence.fsync {
            config::Fsync::Always => FsyncMode::Always,
            config::Fsync::Periodic => FsyncMode::Periodic(Duration::from_millis(u64::from(
                persistence.fsync_interval_ms,
            ))),
        };
        Ok(StoreStart {
            dir,
            generation,
            mode,
            parts: std::sync::Mutex::new(parts.into_iter().map(Some).collect()),
            report,
            new_generation,
        })
    }

    /// Shard `index`'s part (once).
    fn take(&self, index: usize) -> crate::store::restore::Restored {
        let mut parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        parts
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or_default()
    }
}

/// Waits (bounded) until every other shard has installed its restored state, so that this
/// shard's interest index holds every restored subscription before it takes a client.
async fn wait_for_peers_restored(shell: &Rc<ShardShell>) {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    while !shell.shard.borrow().peers_restored() && Instant::now() < deadline {
        shards::time::sleep(Duration::from_millis(1)).await;
    }
}
