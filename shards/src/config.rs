//! How many shards, on which CPUs, with which listeners and executor options. Every executor
//! option is a field here and is passed explicitly when each executor is built.

use std::net::SocketAddr;
use std::time::Duration;

/// How many shards to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCount {
    /// One shard per CPU in `Topology::cpus`.
    Auto,
    /// Exactly this many; with `pin`, shard `i` runs on the `i % cpus`-th CPU of the set.
    Count(usize),
}

/// Which CPUs the shards may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuSet {
    /// Every CPU this process is allowed to run on (its affinity mask).
    All,
    /// These CPU numbers, in this order. Each must exist and be in the affinity mask.
    List(Vec<usize>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub shards: ShardCount,
    pub cpus: CpuSet,
    /// Pin each shard's thread to its CPU. Off, the kernel schedules the threads freely (tests, or
    /// more shards than cores).
    pub pin: bool,
}

/// Extra listener per shard, so a client can choose its shard (tests, benchmarks, affinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortPerShard {
    Off,
    /// Shard `i` also listens on port `base + i`.
    Base(u16),
    /// Each shard also listens on its own port chosen by the OS (tests).
    Ephemeral,
}

/// One listening address, shared by all shards with SO_REUSEPORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Port 0 lets the OS pick one port, which every shard then shares.
    pub addr: SocketAddr,
    /// The `listen(2)` backlog of each shard's socket.
    pub backlog: u32,
    pub port_per_shard: PortPerShard,
}

/// Static shares of the three task queues of every shard. Under contention a queue gets CPU time
/// in proportion to its shares; an idle queue costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskShares {
    /// Connection reads and writes.
    pub io: usize,
    /// Draining and filling the mailboxes between shards.
    pub mail: usize,
    /// Everything that can wait: expiry sweeps, stats, housekeeping.
    pub background: usize,
}

impl Default for TaskShares {
    fn default() -> TaskShares {
        // Mail is the other half of I/O (a publish read here is written out there), so the two get
        // equal shares; background work gets a tenth so it never competes with clients.
        TaskShares {
            io: 1000,
            mail: 1000,
            background: 100,
        }
    }
}

/// Which task queue a spawned task runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskClass {
    Io,
    Mail,
    Background,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub topology: Topology,
    /// Messages per ordered pair of shards (and for send-to-self). The rings are allocated up front:
    /// `shards² × mailbox_capacity × size_of::<M>()` bytes in all.
    pub mailbox_capacity: usize,
    /// Memory each executor registers with io_uring for storage I/O (at least 64 KiB). It is
    /// pinned and charged to RLIMIT_MEMLOCK twice per shard: see the crate docs.
    pub io_memory_bytes: usize,
    /// Submission queue entries of each of the executor's two io_uring rings (main, and the poll ring of O_DIRECT storage).
    pub ring_depth: usize,
    /// Receive buffers in each executor's pool (a power of two up to 32768; 0: no pool). A
    /// connection waiting for data holds none: the kernel takes one when data arrives and the
    /// read gives it back once its bytes are copied out (`net`). Without a pool, or on a kernel
    /// without provided-buffer rings (before 5.19), reads wait for readiness and then `recv`.
    pub recv_buffers: usize,
    /// Bytes of each pool buffer: the most one receive brings.
    pub recv_buffer_bytes: usize,
    pub listeners: Vec<ListenerSpec>,
    /// Thread name prefix: threads are named `{name}-{index}`.
    pub name: String,
    pub shares: TaskShares,
    /// How long a task queue runs before the scheduler lets another queue in.
    pub preempt_timer: Duration,
    /// Busy-poll this long before parking an idle executor in the kernel. Zero never spins: on a
    /// shared machine, spinning steals the core from other work.
    pub spin_before_park: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            topology: Topology {
                shards: ShardCount::Auto,
                cpus: CpuSet::All,
                pin: true,
            },
            mailbox_capacity: 1024,
            // Nothing does storage I/O yet, so the executor's minimum is enough; persistence
            // will raise it (and the memlock arithmetic in the crate docs says by how much).
            io_memory_bytes: 64 * 1024,
            ring_depth: 128,
            // 64 reads of 16 KiB in flight at once per shard (1 MiB); a receive that finds the
            // pool empty reads with `recv` instead, so this bounds memory, not progress.
            recv_buffers: 64,
            recv_buffer_bytes: 16 * 1024,
            listeners: Vec::new(),
            name: String::from("shard"),
            shares: TaskShares::default(),
            // Short enough that a busy connection queue lets mail through within a millisecond.
            preempt_timer: Duration::from_millis(1),
            spin_before_park: Duration::ZERO,
        }
    }
}
