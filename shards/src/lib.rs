//! shards: the thread-per-core runtime of ringmq. Each CPU core runs one shard; shards talk only by
//! typed messages over bounded lock-free mailboxes. Knows nothing of MQTT, and is the only crate
//! that names the io_uring executor underneath.

mod config;
mod context;
mod doorbell;
mod error;
mod id;
mod mesh;
mod net;
mod preflight;
mod runtime;
pub mod sync;
mod task;
pub mod time;

pub use config::{
    CpuSet, ListenerSpec, PortPerShard, RuntimeConfig, ShardCount, TaskClass, TaskShares, Topology,
};
pub use context::ShardContext;
pub use error::{RuntimeError, StartError, TrySendError};
pub use id::{MAX_SHARDS, ShardId, ShardSet, ShardSetIter};
pub use net::{Listener, ReadHalf, TcpStream, WriteHalf, connect, live_connections};
pub use preflight::memlock_needed_bytes;
pub use runtime::{Runtime, RuntimeHandle, start};
pub use task::{Task, live_tasks, spawn_local};
