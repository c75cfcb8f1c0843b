//! The one clock of every timestamp: CLOCK_MONOTONIC in nanoseconds. Its epoch (boot) is shared by
//! every thread and every process on the host, so a `pubsub` run, or a `pub` and a `sub` run on the
//! same machine, compare send and receive times directly.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux kernel
    // that runs io_uring, so the call cannot fail (the result is checked anyway).
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
    seconds * 1_000_000_000 + nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_in_nanoseconds() {
        let first = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = now_ns();
        assert!(second - first >= 2_000_000, "{first} -> {second}");
        assert!(second - first < 2_000_000_000);
    }
}
