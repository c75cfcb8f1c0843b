//! Parked connections. A connection with nothing to do (no partial packet, nothing to write)
//! gives up its stream: the executor's stream, the receive armed in the ring and their
//! allocations, about 500 bytes of the broker's memory per idle connection. It keeps only its
//! socket (`ParkedSocket`, a descriptor), registered with the shard's `Parking`: one epoll
//! instance, itself waited on through the shard's ring with one poll, that reports which
//! parked sockets have input (or an end, or an error) by the token each was parked with.
//! The owner then adopts the socket into a stream again (`unpark`) and reads it as before.
//!
//! Each registration is one-shot (`EPOLLONESHOT`): a socket is reported once, and its
//! registration is withdrawn when it is unparked, whatever woke it. Readiness is
//! level-triggered, so bytes that arrived while the stream was being parked are reported at
//! once. The kernel keeps about 160 bytes per registration in its own memory, not the
//! process's.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use glommio::io::{PollState, PollableFd};
use glommio::net::TcpStream as ExecutorStream;

use crate::net::TcpStream;

/// A parked connection's socket: open, registered with no executor.
#[derive(Debug)]
pub struct ParkedSocket(OwnedFd);

impl ParkedSocket {
    pub(crate) fn from_raw(fd: RawFd) -> ParkedSocket {
        // SAFETY: the caller hands over an open socket it owns (`TcpStream::into_parked`).
        ParkedSocket(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// One shard's wait for input on its parked sockets. Must be made and used on the shard.
pub struct Parking {
    epoll: PollableFd<OwnedFd>,
    wait: RefCell<PollState>,
    events: RefCell<Vec<libc::epoll_event>>,
}

impl Parking {
    /// A wait that reports at most `batch` sockets per `poll_ready`.
    pub fn new(batch: usize) -> io::Result<Parking> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let epoll = PollableFd::new(epoll).map_err(io::Error::from)?;
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Parking {
            epoll,
            wait: RefCell::new(PollState::new()),
            events: RefCell::new(vec![empty; batch.max(1)]),
        })
    }

    /// Reports `socket` by `token` once it has input, an end or an error.
    pub fn park(&self, socket: &ParkedSocket, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        self.control(libc::EPOLL_CTL_ADD, socket.0.as_raw_fd(), &mut event)
    }

    /// The socket as a stream of the current shard again, its registration withdrawn.
    pub fn unpark(&self, socket: ParkedSocket) -> TcpStream {
        let mut unused = libc::epoll_event { events: 0, u64: 0 };
        if let Err(error) = self.control(libc::EPOLL_CTL_DEL, socket.0.as_raw_fd(), &mut unused) {
            // Closing the socket would withdraw it too; this one stays open, so say so.
            tracing::debug!(%error, "parked socket not withdrawn from the shard's epoll");
        }
        // SAFETY: the descriptor is an open TCP socket we own and hand over whole.
        TcpStream::new(unsafe { ExecutorStream::from_raw_fd(socket.0.into_raw_fd()) })
    }

    /// Waits until some parked socket is ready and appends the tokens of those ready now
    /// (at most the batch given to `new`) to `tokens`.
    pub fn poll_ready(&self, cx: &mut Context<'_>, tokens: &mut Vec<u64>) -> Poll<io::Result<()>> {
        loop {
            let mut wait = self.wait.borrow_mut();
            match self.epoll.poll_readable(cx, &mut wait) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(io::Error::from(error))),
                Poll::Ready(Ok(())) => {}
            }
            drop(wait);
            let mut events = self.events.borrow_mut();
            let capacity = i32::try_from(events.len()).unwrap_or(i32::MAX);
            // SAFETY: `events` has room for `capacity` entries; timeout 0 never blocks.
            let ready = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), capacity, 0)
            };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Poll::Ready(Err(error));
            }
            let ready = usize::try_from(ready).unwrap_or(0);
            if ready > 0 {
                tokens.extend(events.iter().take(ready).map(|event| event.u64));
                return Poll::Ready(Ok(()));
            }
            // Reported and taken already: wait again.
        }
    }

    fn control(&self, op: libc::c_int, fd: RawFd, event: &mut libc::epoll_event) -> io::Result<()> {
        // SAFETY: `event` is a live epoll_event; both descriptors are open.
        let done = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, event) };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
