//! What can go wrong starting, running and talking between shards. Start errors name the cause and
//! the fix, since they are read by an operator at a terminal.

use crate::ShardId;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "kernel {release} is too old: io_uring networking needs Linux 5.8 or newer; \
         upgrade the kernel or run on another host"
    )]
    KernelTooOld { release: String },

    #[error(
        "io_uring is disabled by sysctl kernel.io_uring_disabled = {setting}; \
         fix: `sysctl -w kernel.io_uring_disabled=0` (as root) or put this process's group in \
         kernel.io_uring_group when the setting is 1"
    )]
    IoUringDisabled { setting: u32 },

    #[error(
        "io_uring is not available ({source}); a container seccomp profile or a sandbox blocks \
         io_uring_setup: run with a profile that allows io_uring_setup/io_uring_enter/\
         io_uring_register (e.g. docker --security-opt seccomp=<profile>) or on the host"
    )]
    IoUringUnavailable { source: std::io::Error },

    #[error(
        "locked-memory limit too low: RLIMIT_MEMLOCK (`ulimit -l`) is {limit_kib} KiB but \
         {shards} shards with io_memory_bytes = {io_memory_bytes} need {needed_kib} KiB; fix: \
         raise it (`ulimit -l {needed_kib}` in the shell, LimitMEMLOCK={needed_kib}K in the systemd \
         unit, memlock in /etc/security/limits.conf), or use fewer shards or less io memory"
    )]
    MemlockTooLow {
        limit_kib: u64,
        needed_kib: u64,
        shards: usize,
        io_memory_bytes: usize,
    },

    #[error(
        "the configured CPUs {missing:?} do not exist or are not available to this process; \
         available CPUs: {available:?}; fix the cpus list"
    )]
    NoSuchCpus {
        missing: Vec<usize>,
        available: Vec<usize>,
    },

    #[error("invalid runtime configuration: {key} {problem}")]
    Config { key: &'static str, problem: String },

    #[error(
        "cannot listen on {addr}: {source}; fix: choose a free port or address, or stop the \
             process that holds it"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("cannot start the thread of {shard}: {source}")]
    Thread {
        shard: ShardId,
        source: std::io::Error,
    },

    #[error("cannot create the executor of {shard}: {message}")]
    Executor { shard: ShardId, message: String },

    #[error("{shard} panicked while starting: {message}")]
    Panicked { shard: ShardId, message: String },

    #[error("only {started} of {shards} shards started, and none in the last {seconds} s")]
    Timeout {
        seconds: u64,
        started: usize,
        shards: usize,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("{shard} panicked: {message}")]
    ShardPanicked { shard: ShardId, message: String },
    #[error("cannot install the SIGINT/SIGTERM handlers: {message}")]
    Signals { message: String },
}

/// Why `try_send` gave the message back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<M> {
    /// The ring to that shard is full; try later or `send(..).await`.
    Full(M),
    /// That shard has stopped.
    Closed(M),
}

impl<M> TrySendError<M> {
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(m) | TrySendError::Closed(m) => m,
        }
    }
}

impl<M> std::fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M> std::fmt::Display for TrySendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("mailbox full"),
            TrySendError::Closed(_) => f.write_str("shard stopped"),
        }
    }
}

impl<M> std::error::Error for TrySendError<M> {}
