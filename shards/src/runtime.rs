//! Starting, supervising and stopping the shards.
//!
//! Control from outside the shards (the caller of `start`, `RuntimeHandle`, the signal watcher,
//! a dying shard) is a crossbeam channel per shard plus that shard's control doorbell: the message
//! goes into the channel, the doorbell wakes the shard's control task through its own reactor
//! (see `doorbell` for why a socket and not a polling timer).

use crate::config::RuntimeConfig;
use crate::context::{Local, Queues, ShardContext, doorbell_loop};
use crate::doorbell::{BellReceiver, Doorbell};
use crate::error::{RuntimeError, StartError};
use crate::id::ShardId;
use crate::mesh::Mesh;
use crate::net::{Bound, BoundSocket, Listener};
use crate::sync::Latch;
use crate::task::spawn_into;
use crossbeam_channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long `start` waits for the next executor to come up. Each one takes milliseconds; the
/// wait restarts whenever one reports, so a start that is slow because the machine is
/// overloaded (every shard waiting for CPU time) still completes, and only a start where no shard
/// made progress for this long is an error. A shard that fails or panics says so at once.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a failed start waits for the shards it already started to stop. One that has not
/// stopped by then is left behind (its thread is detached) so that `start` always returns.
const ABORT_JOIN: Duration = Duration::from_secs(10);
/// How often `run_until_signal` looks at the signal flag between shard events.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

enum Control {
    /// Every shard started: run the entry function.
    Go,
    /// Another shard failed to start: return without running it.
    Abort,
    /// Begin graceful shutdown.
    Shutdown,
}

enum ShardEvent {
    Started,
    Failed(ShardId, String),
    Exited { shard: ShardId, panicked: bool },
}

/// State shared by all shards and the handles, read-mostly.
pub(crate) struct Shared {
    pub(crate) shards: usize,
    pub(crate) inbox: Vec<Doorbell>,
    alive: Vec<AtomicBool>,
    control: Vec<(Sender<Control>, Doorbell)>,
    shutdown: AtomicBool,
    ready: AtomicBool,
}

impl Shared {
    pub(crate) fn is_alive(&self, shard: ShardId) -> bool {
        self.alive
            .get(shard.index())
            .is_some_and(|alive| alive.load(Ordering::Acquire))
    }

    fn tell(&self, control: impl Fn() -> Control) {
        for (sender, bell) in &self.control {
            let _ = sender.send(control());
            bell.ring();
        }
    }

    fn begin_shutdown(&self) {
        if !self.shutdown.swap(true, Ordering::AcqRel) {
            self.tell(|| Control::Shutdown);
        }
    }
}

/// What one shard thread is given.
struct ShardSeed {
    id: ShardId,
    cpu: Option<usize>,
    sockets: Vec<BoundSocket>,
    control: Receiver<Control>,
}

/// The running shards. Dropping it shuts them down and waits for them.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<(ShardId, JoinHandle<()>)>,
    events: Receiver<ShardEvent>,
    /// Events read by `run_until_signal` before `join`.
    seen: Vec<ShardEvent>,
    listener_addrs: Vec<SocketAddr>,
    shard_addrs: Vec<Vec<Option<SocketAddr>>>,
}

/// Controls the runtime from any thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

impl RuntimeHandle {
    /// Begins graceful shutdown: every shard's `shutdown_requested` resolves. Idempotent.
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// True once every shard has started (its listeners are already listening) and until shutdown.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire) && !self.shared.shutdown.load(Ordering::Acquire)
    }

    pub fn shard_count(&self) -> usize {
        self.shared.shards
    }
}

/// Starts the shards, each running `f(context)` on its own executor.
///
/// Checks the host first (kernel, io_uring, memlock, CPUs), binds every listener socket on the
/// calling thread, then starts one executor per shard and waits until all have started. Either
/// everything starts or nothing keeps running: on any error the started shards are stopped and
/// joined before the error is returned. With port 0 the first bind picks the port and every
/// other shard binds that same port.
/// How many shards [`start`] would run with `config` on this machine (the same placement rules),
/// for a caller that prepares per-shard state before starting.
pub fn planned_shard_count(config: &RuntimeConfig) -> Result<usize, StartError> {
    crate::preflight::place(config).map(|placement| placement.cpus.len())
}

pub fn start<M, F, Fut>(config: RuntimeConfig, f: F) -> Result<Runtime, StartError>
where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let placement = crate::preflight::check(&config)?;
    // glommio registers the process for membarrier once, lazily, when the first executor is
    // built; with other threads already running that takes a long and variable time (glommio's
    // `early_init` docs; the kernel synchronizes with every CPU running one of them), longer still
    // on a busy machine, and the other shards wait for it. Done here it is outside the handshake.
    glommio::early_init();
    let shards = placement.cpus.len();
    let bound = crate::net::bind_all(&config.listeners, shards)?;
    let Bound {
        sockets,
        shared: listener_addrs,
        per_shard: shard_addrs,
    } = bound;
    let (shared, mut seeds) = wire(shards, placement.cpus, sockets)?;
    let mesh = Arc::new(Mesh::<M>::new(shards, config.mailbox_capacity));
    let (events_tx, events) = crossbeam_channel::unbounded();
    let config = Arc::new(config);
    let f = Arc::new(f);
    let mut runtime = Runtime {
        shared: Arc::clone(&shared),
        threads: Vec::with_capacity(shards),
        events,
        seen: Vec::new(),
        listener_addrs,
        shard_addrs,
    };
    for seed in seeds.drain(..) {
        let id = seed.id;
        let (shared, mesh, config, f) = (shared.clone(), mesh.clone(), config.clone(), f.clone());
        let events_tx = events_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-{}", config.name, id.index()))
            .spawn(move || shard_thread(seed, shared, mesh, config, events_tx, f));
        match thread {
            Ok(thread) => runtime.threads.push((id, thread)),
            Err(source) => return Err(runtime.abort(StartError::Thread { shard: id, source })),
        }
    }
    drop(events_tx);
    runtime.wait_started()?;
    shared.tell(|| Control::Go);
    shared.ready.store(true, Ordering::Release);
    Ok(runtime)
}

/// Creates the doorbells and control channels of every shard.
fn wire(
    shards: usize,
    cpus: Vec<Option<usize>>,
    mut sockets: Vec<Vec<BoundSocket>>,
) -> Result<(Arc<Shared>, Vec<ShardSeed>), StartError> {
    let mut inbox = Vec::with_capacity(shards);
    let mut control = Vec::with_capacity(shards);
    let mut seeds = Vec::with_capacity(shards);
    for (index, cpu) in cpus.into_iter().enumerate() {
        let id = ShardId::new(index);
        let (inbox_bell, control_bell) = (Doorbell::default(), Doorbell::default());
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        inbox.push(inbox_bell);
        control.push((control_tx, control_bell));
        let sockets = sockets
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        seeds.push(ShardSeed {
            id,
            cpu,
            sockets,
            control: control_rx,
        });
    }
    let shared = Shared {
        shards,
        inbox,
        alive: (0..shards).map(|_| AtomicBool::new(true)).collect(),
        control,
        shutdown: AtomicBool::new(false),
        ready: AtomicBool::new(false),
    };
    Ok((Arc::new(shared), seeds))
}

impl Runtime {
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shared.shards
    }

    /// The shared address of `RuntimeConfig::listeners[listener]`, with its port resolved.
    ///
    /// # Panics
    /// If `listener` is not an index into the configured listeners.
    pub fn listener_addr(&self, listener: usize) -> SocketAddr {
        self.listener_addrs[listener]
    }

    /// The address only `shard` listens on for that listener, if `port_per_shard` is on.
    pub fn shard_addr(&self, listener: usize, shard: ShardId) -> Option<SocketAddr> {
        *self.shard_addrs.get(listener)?.get(shard.index())?
    }

    /// Waits for every shard to return. If any panicked, returns the first panic (in time).
    pub fn join(mut self) -> Result<(), RuntimeError> {
        self.join_all()
    }

    /// Runs until SIGINT or SIGTERM, or until a shard returns or panics; then shuts down
    /// gracefully and joins. A second signal during shutdown exits the process at once.
    /// Signals are watched from this call on; [`Signals::watch`] before the start covers the
    /// start too.
    pub fn run_until_signal(mut self) -> Result<(), RuntimeError> {
        match Signals::watch() {
            Ok(signals) => self.run_until(signals),
            Err(error) => {
                self.handle().shutdown();
                let _ = self.join_all();
                Err(error)
            }
        }
    }

    /// As [`Runtime::run_until_signal`], with signals watched since `signals` was made: a
    /// SIGTERM that came during the start (a service manager stopping the broker right after
    /// it said it was ready) stops it gracefully as soon as this is called.
    pub fn run_until(mut self, signals: Signals) -> Result<(), RuntimeError> {
        while !signals.signalled.load(Ordering::Acquire) {
            match self.events.recv_timeout(SIGNAL_POLL) {
                Ok(event @ ShardEvent::Exited { .. }) => {
                    self.seen.push(event);
                    break;
                }
                Ok(event) => self.seen.push(event),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.handle().shutdown();
        let result = self.join_all();
        drop(signals);
        result
    }

    fn join_all(&mut self) -> Result<(), RuntimeError> {
        let mut messages: Vec<(ShardId, String)> = Vec::new();
        for (shard, thread) in self.threads.drain(..) {
            if let Err(payload) = thread.join() {
                messages.push((shard, panic_message(payload.as_ref())));
            }
        }
        self.seen.extend(self.events.try_iter());
        let first = self.seen.iter().find_map(|event| match event {
            ShardEvent::Exited {
                shard,
                panicked: true,
            } => Some(*shard),
            _ => None,
        });
        let first = first.or_else(|| messages.first().map(|(shard, _)| *shard));
        match first {
            None => Ok(()),
            Some(shard) => {
                let message = messages
                    .into_iter()
                    .find(|(s, _)| *s == shard)
                    .map(|(_, message)| message)
                    .unwrap_or_else(|| String::from("(panic message lost)"));
                Err(RuntimeError::ShardPanicked { shard, message })
            }
        }
    }

    /// Waits for every shard's `Started`; on a failure stops the others and reports it.
    fn wait_started(&mut self) -> Result<(), StartError> {
        let mut started = 0;
        while started < self.shared.shards {
            let error = match self.events.recv_timeout(START_TIMEOUT) {
                Ok(ShardEvent::Started) => {
                    started += 1;
                    continue;
                }
                Ok(ShardEvent::Failed(shard, message)) => StartError::Executor { shard, message },
                Ok(ShardEvent::Exited { shard, .. }) => {
                    let message = String::from("exited before it started");
                    StartError::Panicked { shard, message }
                }
                Err(_) => StartError::Timeout {
                    seconds: START_TIMEOUT.as_secs(),
                    started,
                    shards: self.shared.shards,
                },
            };
            return Err(self.abort(error));
        }
        Ok(())
    }

    /// Stops every started shard before their entry functions run, joins them, returns `error`
    /// (with the panic message if a shard panicked while starting).
    fn abort(&mut self, error: StartError) -> StartError {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.tell(|| Control::Abort);
        let deadline = std::time::Instant::now() + ABORT_JOIN;
        while self.threads.iter().any(|(_, thread)| !thread.is_finished())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A shard that cannot even take the abort is stuck; waiting for it would turn a start
        // error into a hang, so its thread is detached and the error returned.
        self.threads.retain(|(_, thread)| thread.is_finished());
        match (self.join_all(), error) {
            (Err(RuntimeError::ShardPanicked { shard, message }), StartError::Panicked { .. }) => {
                StartError::Panicked { shard, message }
            }
            (_, error) => error,
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.begin_shutdown();
            let _ = self.join_all();
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        String::from("(non-string panic payload)")
    }
}

/// Marks the shard gone when its thread ends, however it ends; a panic stops every shard.
struct ExitGuard {
    shard: ShardId,
    shared: Arc<Shared>,
    events: Sender<ShardEvent>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        if let Some(alive) = self.shared.alive.get(self.shard.index()) {
            alive.store(false, Ordering::Release);
        }
        if panicked {
            self.shared.begin_shutdown();
        }
        let _ = self.events.send(ShardEvent::Exited {
            shard: self.shard,
            panicked,
        });
    }
}

fn shard_thread<M, F, Fut>(
    seed: ShardSeed,
    shared: Arc<Shared>,
    mesh: Arc<Mesh<M>>,
    config: Arc<RuntimeConfig>,
    events: Sender<ShardEvent>,
    f: Arc<F>,
) where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let id = seed.id;
    let _guard = ExitGuard {
        shard: id,
        shared: Arc::clone(&shared),
        events: events.clone(),
    };
    let executor = match build_executor(&config, seed.cpu, id) {
        Ok(executor) => executor,
        Err(message) => {
            let _ = events.send(ShardEvent::Failed(id, message));
            return;
        }
    };
    executor.run(async move {
        let ShardSeed {
            sockets, control, ..
        } = seed;
        let go = Rc::new(Latch::default());
        let abort = Rc::new(Cell::new(false));
        let shutdown = Rc::new(Latch::default());
        let queues = create_queues(&config);
        crate::net::register_recv_pool(&config);
        let bell = match shared.control.get(id.index()) {
            Some((_, doorbell)) => BellReceiver::install(doorbell).await,
            None => return,
        };
        let inbox = match shared.inbox.get(id.index()) {
            Some(doorbell) => BellReceiver::install(doorbell).await,
            None => return,
        };
        let control_task = control_loop(bell, control, go.clone(), abort.clone(), shutdown.clone());
        let _control = crate::task::spawn_local(control_task);
        let inbox_notify = Rc::new(crate::sync::Notify::new());
        let doorbell = doorbell_loop(inbox, inbox_notify.clone());
        let _doorbell = spawn_into(doorbell, queues.mail);
        let local = Local {
            id,
            shared,
            mesh,
            capacity: config.mailbox_capacity,
            self_queue: RefCell::new(VecDeque::new()),
            inbox_notify: inbox_notify.clone(),
            shutdown,
            queues,
            listeners: RefCell::new(sockets.into_iter().map(Listener::adopt).collect()),
            next_sender: Cell::new(0),
        };
        let context = ShardContext::new(local);
        let _ = events.send(ShardEvent::Started);
        go.wait().await;
        if !abort.get() {
            f(context).await;
        }
    });
}

fn build_executor(
    config: &RuntimeConfig,
    cpu: Option<usize>,
    id: ShardId,
) -> Result<glommio::LocalExecutor, String> {
    let placement = match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let mut builder = glommio::LocalExecutorBuilder::new(placement.clone())
        .name(&format!("{}-{}", config.name, id.index()))
        .io_memory(config.io_memory_bytes)
        .ring_depth(config.ring_depth)
        .preempt_timer(config.preempt_timer)
        .record_io_latencies(false)
        // The blocking pool (file metadata calls) shares the shard's CPU.
        .blocking_thread_pool_placement(glommio::PoolPlacement::from(placement));
    if !config.spin_before_park.is_zero() {
        builder = builder.spin_before_park(config.spin_before_park);
    }
    builder.make().map_err(|error| error.to_string())
}

fn create_queues(config: &RuntimeConfig) -> Queues {
    use glommio::{Latency, Shares};
    let executor = glommio::executor();
    let shares = config.shares;
    Queues {
        io: executor.create_task_queue(Shares::Static(shares.io), Latency::NotImportant, "io"),
        mail: executor.create_task_queue(
            Shares::Static(shares.mail),
            Latency::NotImportant,
            "mail",
        ),
        background: executor.create_task_queue(
            Shares::Static(shares.background),
            Latency::NotImportant,
            "background",
        ),
    }
}

/// Applies control messages; runs until the runtime drops the channel.
async fn control_loop(
    mut bell: BellReceiver,
    control: Receiver<Control>,
    go: Rc<Latch>,
    abort: Rc<Cell<bool>>,
    shutdown: Rc<Latch>,
) {
    loop {
        loop {
            match control.try_recv() {
                Ok(Control::Go) => go.set(),
                Ok(Control::Abort) => {
                    abort.set(true);
                    go.set();
                }
                Ok(Control::Shutdown) => shutdown.set(),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        bell.wait().await;
    }
}

/// SIGINT and SIGTERM caught into a flag, from [`Signals::watch`] until dropped; a second one
/// after the first exits the process at once (status 130).
pub struct Signals {
    signalled: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Starts catching SIGINT and SIGTERM (their default action would end the process).
    pub fn watch() -> Result<Signals, RuntimeError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = Signals {
            signalled: Arc::new(AtomicBool::new(false)),
            ids: Vec::new(),
        };
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag before the second registration sets it.
            let second = signal_hook::flag::register_conditional_shutdown(
                signal,
                130,
                signals.signalled.clone(),
            );
            let first = signal_hook::flag::register(signal, signals.signalled.clone());
            let mut failed = None;
            for registered in [second, first] {
                match registered {
                    Ok(id) => signals.ids.push(id),
                    Err(error) => failed = Some(error),
                }
            }
            if let Some(error) = failed {
                // Dropping `signals` takes back what was registered.
                return Err(RuntimeError::Signals {
                    message: error.to_string(),
                });
            }
        }
        Ok(signals)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
