//! Waking a parked shard from another thread.
//!
//! A doorbell is a Unix datagram socket pair: any thread sends a one-byte datagram to the sending
//! end; the shard has an io_uring `recv` outstanding on the receiving end, so a parked executor
//! wakes like it does for any socket. An eventfd would be the classic choice, but the executor
//! offers no public way to await a raw eventfd, and polling a timer instead would cost latency (or
//! CPU) on every idle shard. The receive is a completion (`IORING_OP_RECV`, via the executor's
//! datagram type, which works on any datagram fd), not a readiness poll: with readiness-based
//! stream reads we measured lost wake-ups when a pending read was interleaved with other waits.
//! The receiving task lives as long as the shard and never cancels its receive.
//!
//! Safety net: a wait also ends after `RECHECK` without a ring, and the caller re-checks its
//! rings and control channel. Under heavy oversubscription (many executors on 2 cores, as in the
//! test suite) we still observed, rarely, a sent datagram whose receive never completed; the root
//! cause is not found yet (executor or kernel). The net bounds such a loss to `RECHECK` of delay
//! instead of a hang, at the price of 100 idle wake-ups per second per doorbell. The socket costs one `write(2)` per wake-up, and senders only ring a doorbell that
//! is *armed*: its owner sets `armed` just before it parks and clears it when it wakes, so a busy
//! shard receives no wake-up syscalls at all.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering, fence};

/// The longest a lost wake-up can delay a shard (see the module docs).
const RECHECK: std::time::Duration = std::time::Duration::from_millis(10);

pub(crate) struct Doorbell {
    armed: AtomicBool,
    bell: UnixDatagram,
}

impl Doorbell {
    /// A doorbell and the receiving end for its owning shard.
    pub(crate) fn new() -> std::io::Result<(Doorbell, OwnedFd)> {
        let (bell, receiver) = UnixDatagram::pair()?;
        // A full socket buffer means the owner has wake-ups pending already: never block on it.
        bell.set_nonblocking(true)?;
        receiver.set_nonblocking(true)?;
        Ok((
            Doorbell {
                armed: AtomicBool::new(false),
                bell,
            },
            receiver.into(),
        ))
    }

    /// Wakes the owner whether or not it is parked (control messages: rare).
    pub(crate) fn ring(&self) {
        // WouldBlock means unread wake-ups are pending, which is all a ring needs to achieve.
        let _ = self.bell.send(&[1]);
    }

    /// Called by a sender after publishing data: wakes the owner only if it is parked.
    pub(crate) fn ring_if_armed(&self) {
        // Pairs with the fence in `arm`: either the owner sees our data when it re-checks after
        // arming, or we see `armed` here. Without it both could miss (store-load reordering).
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// The owner is about to park: it must re-check for data after this, then wait.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }
}

/// The owner's end of a doorbell, readable through the executor.
pub(crate) struct BellReceiver {
    socket: glommio::net::UdpSocket,
}

impl BellReceiver {
    /// Takes the receiving end over into the current shard's executor. Must run on the shard.
    pub(crate) fn adopt(fd: OwnedFd) -> BellReceiver {
        // The executor's datagram type only ever calls recv(2)/io_uring recv on this fd, which a
        // Unix datagram socket supports like a UDP one.
        let socket = glommio::net::UdpSocket::from(socket2::Socket::from(fd));
        BellReceiver { socket }
    }

    /// Waits for at least one ring (one datagram; later ones wake the next call at once), or for
    /// `RECHECK` at most.
    pub(crate) async fn wait(&mut self) {
        let mut buf = [0u8; 64];
        let Ok(read) = crate::time::timeout(RECHECK, self.socket.recv(&mut buf)).await else {
            return;
        };
        if !matches!(read, Ok(n) if n > 0) {
            // Cannot happen while the runtime (which holds the sending end) lives; do not spin.
            crate::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}
