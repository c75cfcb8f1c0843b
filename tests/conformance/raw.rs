//! Byte-level helpers: what a client reads off the socket, before any decoder interprets it.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::common::RawClient;

/// Reads exactly `n` bytes (or panics after `timeout`).
pub fn read_exact(client: &mut RawClient, n: usize, timeout: Duration) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut filled = 0;
    let deadline = Instant::now() + timeout;
    while filled < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {filled} of {n} bytes within {timeout:?}"
        );
        client.stream.set_read_timeout(Some(left)).unwrap();
        match client.stream.read(&mut out[filled..]) {
            Ok(0) => panic!("closed after {filled} of {n} bytes"),
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {filled} of {n} bytes: {e}"),
        }
    }
    out
}
