//! shards: the thread-per-core runtime of ringmq. Each CPU core runs one shard; shards talk only by
//! typed messages over bounded lock-free mailboxes. Knows nothing of MQTT, and is the only crate
//! that names the io_uring executor underneath (glommio).
//!
//! # Model
//!
//! [`start`] runs one executor thread per shard, each running the caller's entry function with a
//! [`ShardContext`]. Everything a shard owns stays on its thread (the context is `!Send`). A shard
//! reaches another only through [`ShardContext::send`] / [`ShardContext::try_send`] /
//! [`ShardContext::broadcast`] and drains its own inbox with [`ShardContext::recv_batch`].
//!
//! * **Start is all or nothing.** Preflight checks (kernel >= 5.8, io_uring allowed, RLIMIT_MEMLOCK,
//!   CPUs that exist) run first, then every listener socket is bound on the calling thread (socket2:
//!   SO_REUSEPORT, SO_REUSEADDR, nonblocking, our own backlog), then the executors start and report
//!   in; only when all have started does any entry function run. Any failure stops and joins the
//!   started shards and returns a [`StartError`] naming the cause and the fix.
//! * **Listeners.** Every shard has its own socket on each shared address (the kernel spreads
//!   connections); with port 0 the first bind picks the port and the rest join it. With
//!   [`PortPerShard`] a shard also has a port of its own, so a client can choose its shard.
//!   [`ShardContext::take_listeners`] hands them out in spec order, shared port first.
//! * **Scheduling.** Each shard has three task queues with static shares ([`TaskShares`]):
//!   connection I/O, mail, background ([`TaskClass`], [`ShardContext::spawn`]). Timers are in
//!   [`time`]. Every executor option (io memory, ring depth, preempt timer, spin) comes from
//!   [`RuntimeConfig`] and is passed explicitly when the executor is built.
//! * **Control from outside** (the caller, [`RuntimeHandle`], signals, a dying shard) goes over a
//!   crossbeam channel per shard plus a doorbell that wakes the shard's control task through the
//!   executor's own cross-thread notifier (an eventfd inside the executor): no polling timer, so an
//!   idle shard sleeps in the kernel. A safety-net re-check every 100 ms bounds any wake-up that
//!   might still be lost.
//! * **Stopping.** [`RuntimeHandle::shutdown`], SIGINT/SIGTERM ([`Runtime::run_until_signal`]) or a
//!   panic in any shard resolves every shard's [`ShardContext::shutdown_requested`]; entry
//!   functions are expected to return then. A panicking shard is marked gone (sends to it give the
//!   message back, so nobody waits on it) and [`Runtime::join`] returns
//!   [`RuntimeError::ShardPanicked`] with the panic message.
//!
//! # Mailboxes
//!
//! One bounded SPSC ring per ordered pair (crossbeam `ArrayQueue`), a local bounded queue for
//! send-to-self, batched drain, wake-ups only for a parked receiver. Chosen by measurement against
//! the executor's `shared_channel` and crossbeam-channel: see the `mesh` module source for the table
//! (`cargo run --release -p shards --example mesh_bench`). In short, on the loaded 2-core VM:
//! mesh 3.8 M msgs/s (batch 1) / 6.7 M (batch 64), one-way p50 13-22 µs, p99 about 45 µs; the
//! executor's channel 8.6 M / 9.5 M msgs/s, p50 28-34 µs, p99 55 µs. The rings win on latency and
//! on what the broker needs (batched drain across senders, `try_send` that hands the message back,
//! shard ids as the only addressing); the executor's channel moves more messages per second on this
//! host. Memory: `shards² × mailbox_capacity × size_of::<M>()`, allocated at start.
//!
//! # Locked memory: how many shards fit under RLIMIT_MEMLOCK
//!
//! Each executor allocates `io_memory_bytes` (rounded up to 4 KiB pages, at least 64 KiB) and
//! registers it as a fixed buffer with each of its two io_uring rings (main, poll). The
//! kernel pins and charges every registration, so one shard costs `2 × io_memory`. Since Linux 5.12
//! the rings themselves are charged to the memory cgroup, not to the memlock limit. The executor also
//! refuses to start below 512 KiB of limit. So
//!
//! ```text
//! needed = max(512 KiB, shards × 2 × max(64 KiB, round_up(io_memory_bytes, 4 KiB)))
//! ```
//!
//! With the default `io_memory_bytes` = 64 KiB: 128 KiB per shard, 4 shards = 512 KiB (measured:
//! `VmPin` = 512 KiB with 4 shards), and an 8 MiB limit holds 64 shards. The executor's own default
//! of 10 MiB would need 20 MiB for one shard. [`memlock_needed_bytes`] computes this, and `start`
//! refuses to run when the limit is lower ([`StartError::MemlockTooLow`] says how to raise it). The
//! kernel accounts locked memory per user, across processes: several brokers (or test runs) of one
//! user share the limit. If a registration fails anyway, the executor logs it and runs without fixed
//! buffers (nothing uses them until storage I/O arrives).
//!
//! # Counters
//!
//! [`live_tasks`] and [`live_connections`] count, per shard, tasks spawned through this crate and
//! accepted connections still open: cheap thread-local counters for leak checks and metrics.

mod config;
mod context;
mod doorbell;
mod error;
mod id;
mod mesh;
mod net;
mod park;
mod preflight;
mod runtime;
pub mod storage;
pub mod sync;
mod task;
pub mod time;

pub use config::{
    CpuSet, ListenerSpec, PortPerShard, RuntimeConfig, ShardCount, TaskClass, TaskShares, Topology,
};
pub use context::ShardContext;
pub use error::{RuntimeError, StartError, TrySendError};
pub use id::{MAX_SHARDS, ShardId, ShardSet, ShardSetIter};
pub use net::{
    Listener, ReadHalf, RecvPoolStats, TcpStream, WriteHalf, connect, live_connections,
    recv_pool_stats,
};
pub use park::{ParkedSocket, Parking};
pub use preflight::memlock_needed_bytes;
pub use runtime::{Runtime, RuntimeHandle, Signals, planned_shard_count, start};
pub use task::{Task, live_tasks, spawn_local, yield_now};
