//! The floor reference for `mqtt_relay`: the same relay (the same MQTT subset, `common/relay.rs`)
//! on one thread with level-triggered epoll instead of the shards runtime. Each wake-up is an
//! `epoll_wait`; each readable connection is read once with `recv`, and what it publishes goes
//! straight to the subscriber's socket with one `send` (bytes a full socket does not take wait
//! for `EPOLLOUT`). What `mqtt_relay` spends per message above this is the runtime's.
//!
//! Run (pinned to CPU 0, port 19991), then load it like a broker:
//!   cargo run --release -p shards --example epoll_relay -- 19991 0
//!   ringmq-bench pubsub -V 4 -i 1 --threads 1 -c 16 --subs 16 -t 'bench/%i' -q 0 \
//!     --rate 20000 -s 64 --duration 10 -p 19991

#[path = "common/relay.rs"]
mod relay;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    /// Bytes the socket did not take yet; `EPOLLOUT` is armed while there are some.
    out: Vec<u8>,
}

fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32) {
    let mut event = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    let rc = unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) };
    assert!(
        rc == 0 || op == libc::EPOLL_CTL_DEL,
        "epoll_ctl: {}",
        std::io::Error::last_os_error()
    );
}

/// Sends `bytes` (after whatever already waits) to `conn`; false if the connection failed.
fn send(epoll: RawFd, fd: RawFd, conn: &mut Conn, bytes: &[u8]) -> bool {
    if !conn.out.is_empty() {
        conn.out.extend_from_slice(bytes);
        return true;
    }
    let mut sent = 0;
    while sent < bytes.len() {
        match conn.stream.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                conn.out.extend_from_slice(&bytes[sent..]);
                let events = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                ctl(epoll, libc::EPOLL_CTL_MOD, fd, events);
                return true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes what waits for `EPOLLOUT`; false if the connection failed.
fn flush(epoll: RawFd, fd: RawFd, conn: &mut Conn) -> bool {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => drop(conn.out.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    ctl(epoll, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32);
    true
}

/// The relay's state: its epoll instance, connections by fd, and subscriptions.
struct Relay {
    epoll: RawFd,
    conns: HashMap<RawFd, Conn>,
    topics: HashMap<Vec<u8>, RawFd>,
    reply: Vec<u8>,
    forward: Vec<(RawFd, Vec<u8>)>,
}

impl Relay {
    /// One read of a readable connection and what it asks for; false if it is to be closed.
    fn serve(&mut self, fd: RawFd) -> bool {
        let epoll = self.epoll;
        let Some(conn) = self.conns.get_mut(&fd) else {
            return true;
        };
        let filled = conn.filled;
        let n = match conn.stream.read(&mut conn.buf[filled..]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                return true;
            }
            Err(_) => return false,
        };
        conn.filled += n;
        let handled = relay::handle(
            &conn.buf[..conn.filled],
            &fd,
            &mut self.topics,
            &mut self.reply,
            &mut self.forward,
            |a, b| a == b,
        );
        let Some(at) = handled else {
            self.reply.clear();
            self.forward.clear();
            return false;
        };
        conn.buf.copy_within(at..conn.filled, 0);
        conn.filled -= at;
        if conn.filled == conn.buf.len() {
            return false;
        }
        let replied = self.reply.is_empty() || send(epoll, fd, conn, &self.reply);
        self.reply.clear();
        for (to, bytes) in self.forward.drain(..) {
            if let Some(sink) = self.conns.get_mut(&to)
                && !send(epoll, to, sink, &bytes)
            {
                // The subscriber's own read will see the failure and close it.
                sink.out.clear();
            }
        }
        replied
    }

    fn close(&mut self, fd: RawFd) {
        ctl(self.epoll, libc::EPOLL_CTL_DEL, fd, 0);
        self.conns.remove(&fd);
        self.topics.retain(|_, to| *to != fd);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(19991);
    if let Some(cpu) = args.next().and_then(|a| a.parse().ok()) {
        assert!(
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
            "pin to CPU {cpu}"
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the relay's port");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    // SAFETY: plain system call; the result is checked.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(
        epoll >= 0,
        "epoll_create1: {}",
        std::io::Error::last_os_error()
    );
    let lfd = listener.as_raw_fd();
    ctl(epoll, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32);
    println!("epoll relay listening on 127.0.0.1:{port}");

    let mut relay = Relay {
        epoll,
        conns: HashMap::new(),
        topics: HashMap::new(),
        reply: Vec::new(),
        forward: Vec::new(),
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // SAFETY: `events` has room for the 64 entries the kernel may fill.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 64, -1) };
        if n < 0 {
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                ErrorKind::Interrupted
            );
            continue;
        }
        for event in &events[..n as usize] {
            let fd = event.u64 as RawFd;
            if fd == lfd {
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    stream.set_nonblocking(true).expect("non-blocking stream");
                    let cfd = stream.as_raw_fd();
                    ctl(epoll, libc::EPOLL_CTL_ADD, cfd, libc::EPOLLIN as u32);
                    let buf = vec![0u8; 64 * 1024];
                    let conn = Conn {
                        stream,
                        buf,
                        filled: 0,
                        out: Vec::new(),
                    };
                    relay.conns.insert(cfd, conn);
                }
                continue;
            }
            let mut ok = true;
            if event.events & libc::EPOLLOUT as u32 != 0 {
                ok = relay
                    .conns
                    .get_mut(&fd)
                    .is_none_or(|conn| flush(epoll, fd, conn));
            }
            if ok && event.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                ok = relay.serve(fd);
            }
            if !ok {
                relay.close(fd);
            }
        }
    }
}
