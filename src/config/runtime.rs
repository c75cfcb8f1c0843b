//! `[runtime]`: how many shards, on which CPUs, and what each shard's io_uring gets.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

/// The most shards a broker runs: mailboxes grow with the square of the shard count.
pub const SHARDS_MAX: usize = 256;
/// CPU numbers an affinity mask can name (`CPU_SETSIZE`).
const CPU_NUMBER_LIMIT: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// `"auto"` (one shard per CPU in `cpus`) or a number from 1 to 256.
    pub shards: ShardCount,
    /// `"all"` (every CPU the process may run on) or a list of CPU numbers like `[0, 2, 4]`.
    pub cpus: CpuList,
    /// Pin each shard to its own CPU. `false` lets the kernel place the threads, and so allows
    /// more shards than CPUs.
    pub pin: bool,
    /// Capacity of each cross-shard ring (one per ordered pair of shards), in messages.
    pub mailbox_messages_max: u32,
    /// io_uring buffer memory per shard, in bytes. It is locked memory: shards × this must fit
    /// `ulimit -l`.
    pub io_memory_bytes: u64,
    /// io_uring submission queue entries per shard (a power of two).
    pub ring_depth: u32,
    /// Receive buffers in each shard's pool (a power of two, or 0 for none). A connection
    /// waiting for data holds none: the kernel takes one when data arrives and the read gives it
    /// back once its bytes are copied out. With 0, or on a kernel before 5.19, reads wait for
    /// readiness and then `recv` (one more system call per read).
    pub recv_buffers: u32,
    /// Bytes of each receive buffer: the most one read brings.
    pub recv_buffer_bytes: u32,
    /// How long a graceful shutdown (SIGTERM, SIGINT) may take, in milliseconds: wills
    /// published, DISCONNECT sent, connections closed. The process exits when it has passed.
    pub shutdown_timeout_ms: u32,
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime {
            shards: ShardCount::Auto,
            cpus: CpuList::All,
            pin: true,
            mailbox_messages_max: 4096,
            io_memory_bytes: 262_144,
            ring_depth: 256,
            recv_buffers: 64,
            recv_buffer_bytes: 16_384,
            shutdown_timeout_ms: 10_000,
        }
    }
}

pub(super) const RANGES: &[Range] = &[
    Range {
        key: "runtime.mailbox_messages_max",
        value: |c| c.runtime.mailbox_messages_max.into(),
        min: 16,
        max: 1_048_576,
        unit: "messages",
        fix: "each ordered pair of shards gets a ring this long; e.g. 4096",
    },
    Range {
        key: "runtime.io_memory_bytes",
        value: |c| c.runtime.io_memory_bytes,
        min: 65_536,
        max: 1_073_741_824,
        unit: "bytes",
        fix: "shards × this is locked memory and must fit `ulimit -l`; e.g. 262144",
    },
    Range {
        key: "runtime.ring_depth",
        value: |c| c.runtime.ring_depth.into(),
        min: 8,
        max: 32_768,
        unit: "entries",
        fix: "use a power of two, e.g. 256",
    },
    Range {
        key: "runtime.recv_buffers",
        value: |c| c.runtime.recv_buffers.into(),
        min: 0,
        max: 32_768,
        unit: "buffers",
        fix: "use 0 (no pool) or a power of two, e.g. 64",
    },
    Range {
        key: "runtime.recv_buffer_bytes",
        value: |c| c.runtime.recv_buffer_bytes.into(),
        min: 1024,
        max: 1_048_576,
        unit: "bytes",
        fix: "e.g. 16384 (a read of a busy publisher's socket brings up to this much)",
    },
    Range {
        key: "runtime.shutdown_timeout_ms",
        value: |c| c.runtime.shutdown_timeout_ms.into(),
        min: 100,
        max: 600_000,
        unit: "milliseconds",
        fix: "keep it below the service manager's stop timeout (TimeoutStopSec); e.g. 10000",
    },
];

/// The rules of `[runtime]` beyond plain ranges.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let runtime = &config.runtime;
    if let ShardCount::Count(count) = runtime.shards
        && !(1..=SHARDS_MAX).contains(&count)
    {
        return Err(ConfigError::invalid(
            "runtime.shards",
            count,
            "must be \"auto\" or between 1 and 256",
            "write \"auto\" for one shard per CPU, or a number like 4",
        ));
    }
    if !runtime.ring_depth.is_power_of_two() {
        return Err(ConfigError::invalid(
            "runtime.ring_depth",
            runtime.ring_depth,
            "must be a power of two (the kernel rounds it up anyway)",
            "e.g. 256",
        ));
    }
    if runtime.recv_buffers != 0 && !runtime.recv_buffers.is_power_of_two() {
        return Err(ConfigError::invalid(
            "runtime.recv_buffers",
            runtime.recv_buffers,
            "must be 0 (no pool) or a power of two (the kernel's buffer ring is one)",
            "e.g. 64",
        ));
    }
    if let CpuList::List(cpus) = &runtime.cpus {
        check_cpu_list(cpus)?;
        if runtime.pin
            && let ShardCount::Count(count) = runtime.shards
        {
            check_pinned_fit(count, cpus.len())?;
        }
    }
    Ok(())
}

fn check_cpu_list(cpus: &[usize]) -> Result<(), ConfigError> {
    let shown = CpuList::List(cpus.to_vec());
    if cpus.is_empty() {
        return Err(ConfigError::invalid(
            "runtime.cpus",
            shown,
            "must list at least one CPU",
            "list CPU numbers like [0, 1], or write \"all\"",
        ));
    }
    if cpus.len() > SHARDS_MAX {
        return Err(ConfigError::invalid(
            "runtime.cpus",
            shown,
            format!(
                "lists {} CPUs, more than the {SHARDS_MAX} shards a broker runs",
                cpus.len()
            ),
            "list at most 256 CPUs",
        ));
    }
    for (index, cpu) in cpus.iter().enumerate() {
        if *cpu >= CPU_NUMBER_LIMIT {
            return Err(ConfigError::invalid(
                "runtime.cpus",
                shown,
                format!("CPU {cpu} is beyond the {CPU_NUMBER_LIMIT} CPUs an affinity mask holds"),
                "list CPU numbers as `lscpu` shows them",
            ));
        }
        if cpus.get(..index).is_some_and(|before| before.contains(cpu)) {
            return Err(ConfigError::invalid(
                "runtime.cpus",
                shown,
                format!("lists CPU {cpu} twice"),
                "list each CPU once",
            ));
        }
    }
    Ok(())
}

/// With pinning, every shard needs a CPU of its own.
pub(super) fn check_pinned_fit(shards: usize, cpus: usize) -> Result<(), ConfigError> {
    if shards <= cpus {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "runtime.shards",
        shards,
        format!("runtime.pin = true gives each shard its own CPU, but only {cpus} are available"),
        format!(
            "lower runtime.shards to {cpus}, make more CPUs available in runtime.cpus, \
             or set runtime.pin = false"
        ),
    ))
}

/// How many shards to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCount {
    /// One shard per CPU in `cpus`. Written `"auto"`.
    Auto,
    /// Exactly this many (1 to 256).
    Count(usize),
}

/// Which CPUs the shards run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuList {
    /// Every CPU the process is allowed to run on. Written `"all"`.
    All,
    /// These CPU numbers, in this order: shard `i` runs on the `i`-th.
    List(Vec<usize>),
}

impl Serialize for ShardCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardCount::Auto => serializer.serialize_str("auto"),
            ShardCount::Count(count) => serializer.serialize_u64(*count as u64),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ShardCount, D::Error> {
        deserializer.deserialize_any(ShardCountVisitor)
    }
}

struct ShardCountVisitor;

impl Visitor<'_> for ShardCountVisitor {
    type Value = ShardCount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or a number of shards from 1 to 256")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ShardCount, E> {
        match value {
            "auto" => Ok(ShardCount::Auto),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ShardCount, E> {
        usize::try_from(value)
            .map(ShardCount::Count)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ShardCount, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
        }
    }
}

impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CpuList::All => serializer.serialize_str("all"),
            CpuList::List(cpus) => cpus.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CpuList, D::Error> {
        deserializer.deserialize_any(CpuListVisitor)
    }
}

struct CpuListVisitor;

impl<'de> Visitor<'de> for CpuListVisitor {
    type Value = CpuList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"all\" or a list of CPU numbers like [0, 2, 4]")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<CpuList, E> {
        match value {
            "all" => Ok(CpuList::All),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CpuList, A::Error> {
        // Bounded by the document, which is bounded by the file an operator wrote.
        let mut cpus = Vec::new();
        while let Some(cpu) = seq.next_element::<usize>()? {
            cpus.push(cpu);
        }
        Ok(CpuList::List(cpus))
    }
}

impl fmt::Display for CpuList {
    /// As written in TOML.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuList::All => f.write_str("\"all\""),
            CpuList::List(cpus) => {
                let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
                write!(f, "[{}]", cpus.join(", "))
            }
        }
    }
}
