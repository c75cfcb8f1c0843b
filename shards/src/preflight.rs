//! Checks run on the calling thread before any socket is bound or thread started, so a host that
//! cannot run the shards fails with a message that says why and what to do, instead of a panic deep
//! inside the executor.

use crate::config::{CpuSet, RuntimeConfig, ShardCount};
use crate::error::StartError;
use crate::id::MAX_SHARDS;

/// Where each shard runs: `Some(cpu)` when pinned.
pub(crate) struct Placement {
    pub(crate) cpus: Vec<Option<usize>>,
}

/// Executors register their io memory in each of their two rings (main, poll), and the kernel
/// charges every registration to RLIMIT_MEMLOCK.
pub(crate) const RINGS_PER_EXECUTOR: u64 = 2;
/// The executor rounds io memory up to pages and to at least this.
pub(crate) const IO_MEMORY_MIN: u64 = 64 * 1024;
/// The executor refuses to start below this limit whatever it registers.
pub(crate) const EXECUTOR_MEMLOCK_MIN: u64 = 512 * 1024;

pub(crate) fn check(config: &RuntimeConfig) -> Result<Placement, StartError> {
    check_values(config)?;
    let placement = place(config)?;
    check_kernel()?;
    check_io_uring()?;
    check_memlock(placement.cpus.len(), config.io_memory_bytes)?;
    Ok(placement)
}

fn check_values(config: &RuntimeConfig) -> Result<(), StartError> {
    let problem = |key, problem: &str| {
        Err(StartError::Config {
            key,
            problem: problem.into(),
        })
    };
    if config.mailbox_capacity == 0 {
        return problem("mailbox_capacity", "must be at least 1");
    }
    if config.ring_depth == 0 {
        return problem("ring_depth", "must be at least 1");
    }
    if config.recv_buffers != 0
        && (!config.recv_buffers.is_power_of_two() || config.recv_buffers > 32768)
    {
        return problem(
            "recv_buffers",
            "must be 0 (no pool) or a power of two up to 32768",
        );
    }
    if config.recv_buffers != 0 && !(1..=1 << 30).contains(&config.recv_buffer_bytes) {
        return problem("recv_buffer_bytes", "must be from 1 to 1 GiB");
    }
    if config.shares.io == 0 || config.shares.mail == 0 || config.shares.background == 0 {
        return problem("shares", "every task queue needs at least 1 share");
    }
    Ok(())
}

/// Resolves the shard count and each shard's CPU, rejecting CPUs that are not available.
pub(crate) fn place(config: &RuntimeConfig) -> Result<Placement, StartError> {
    let mut available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    available.sort_unstable();
    let cpus = match &config.topology.cpus {
        CpuSet::All => available.clone(),
        CpuSet::List(list) => {
            let missing: Vec<usize> = list
                .iter()
                .copied()
                .filter(|cpu| !available.contains(cpu))
                .collect();
            if !missing.is_empty() {
                return Err(StartError::NoSuchCpus { missing, available });
            }
            list.clone()
        }
    };
    if cpus.is_empty() {
        return Err(StartError::Config {
            key: "cpus",
            problem: "names no CPU (and the affinity mask could not be read)".into(),
        });
    }
    let count = match config.topology.shards {
        ShardCount::Auto => cpus.len(),
        ShardCount::Count(count) => count,
    };
    if count == 0 || count > MAX_SHARDS {
        return Err(StartError::Config {
            key: "shards",
            problem: format!("is {count}; it must be between 1 and {MAX_SHARDS}"),
        });
    }
    let pinned = |index: usize| config.topology.pin.then(|| cpus[index % cpus.len()]);
    Ok(Placement {
        cpus: (0..count).map(pinned).collect(),
    })
}

fn check_kernel() -> Result<(), StartError> {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return Ok(()); // Unknown: let the executor's own setup decide.
    }
    // SAFETY: uname NUL-terminates the release field.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    match parse_release(&release) {
        Some(version) if version < (5, 8) => Err(StartError::KernelTooOld { release }),
        _ => Ok(()),
    }
}

/// "6.18.44-fc-v445" -> (6, 18).
pub(crate) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_io_uring() -> Result<(), StartError> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let setting: u32 = text.trim().parse().unwrap_or(0);
        if setting == 2 {
            return Err(StartError::IoUringDisabled { setting });
        }
    }
    // Setting 1 allows a group, and seccomp may block the syscall outright: only trying tells.
    // Typically EPERM (seccomp, io_uring_group) or ENOSYS (a kernel built without io_uring).
    probe_io_uring_setup().map_err(|source| StartError::IoUringUnavailable { source })
}

fn probe_io_uring_setup() -> std::io::Result<()> {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) into `params`.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is the ring just created and owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Bytes of RLIMIT_MEMLOCK `shards` executors need (see the crate docs for the arithmetic).
pub fn memlock_needed_bytes(shards: usize, io_memory_bytes: usize) -> u64 {
    let io_memory = (io_memory_bytes as u64).div_ceil(4096) * 4096;
    let per_shard = RINGS_PER_EXECUTOR * io_memory.max(IO_MEMORY_MIN);
    (per_shard * shards as u64).max(EXECUTOR_MEMLOCK_MIN)
}

fn check_memlock(shards: usize, io_memory_bytes: usize) -> Result<(), StartError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    }
    let needed = memlock_needed_bytes(shards, io_memory_bytes);
    if limit.rlim_cur < needed {
        return Err(StartError::MemlockTooLow {
            limit_kib: limit.rlim_cur / 1024,
            needed_kib: needed.div_ceil(1024),
            shards,
            io_memory_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings() {
        for (release, expected) in [
            ("6.18.44-fc-v445", Some((6, 18))),
            ("5.8.0", Some((5, 8))),
            ("4.19.0-generic", Some((4, 19))),
            ("garbage", None),
        ] {
            assert_eq!(parse_release(release), expected, "{release}");
        }
    }

    #[test]
    fn memlock_arithmetic() {
        // Four shards at the default 64 KiB: 4 × 2 × 64 KiB = 512 KiB.
        assert_eq!(memlock_needed_bytes(4, 64 * 1024), 512 * 1024);
        // Small io memory is rounded up to the executor's minimum, and the total to its floor.
        assert_eq!(memlock_needed_bytes(1, 1), 512 * 1024);
        // The executor's default 10 MiB would not fit one shard in 8 MiB.
        assert!(memlock_needed_bytes(1, 10 << 20) > 8 << 20);
    }
}
