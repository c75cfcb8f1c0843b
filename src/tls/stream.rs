//! TLS over a `shards::TcpStream`: the handshake with a deadline, then a read half and a write
//! half for the connection's reader and writer tasks.
//!
//! Both halves share the rustls stream through an `Rc<RefCell<..>>`, borrowed for one poll at a
//! time and never across an await (a shard is one thread, so a poll of one half never overlaps a
//! poll of the other). TLS couples the directions: reading may have to write (a close_notify or
//! key update reply) and the executor keeps one waker per direction of the socket, so a half
//! could take the other's wake-up. Each half therefore polls the stream with a shared waker that
//! wakes both halves; a spurious wake-up costs one poll that returns `Pending` again.

use super::prefixed::Prefixed;
use super::{TlsError, client_identity};
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use rustls::{ServerConfig, ServerConnection};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Plaintext rustls buffers per connection, in each direction: received but not yet read, and
/// written but not yet encrypted and sent. Beyond it reads stop and writes wait, which bounds a
/// connection's memory whatever the peer does.
pub const PLAINTEXT_BUFFER_BYTES: usize = 64 * 1024;

/// Runs the TLS handshake on an accepted connection, for at most `handshake_timeout`.
pub async fn accept(
    config: Arc<ServerConfig>,
    stream: shards::TcpStream,
    handshake_timeout: Duration,
) -> Result<TlsConnection, TlsError> {
    accept_after(config, Vec::new(), stream, handshake_timeout).await
}

/// [`accept`] on a connection whose first bytes, `head`, were already read from it (to sniff the
/// protocol): the handshake reads them first.
pub async fn accept_after(
    config: Arc<ServerConfig>,
    head: Vec<u8>,
    stream: shards::TcpStream,
    handshake_timeout: Duration,
) -> Result<TlsConnection, TlsError> {
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    let stream = Prefixed::new(head, stream);
    let handshake = acceptor.accept_with(stream, |connection| {
        connection.set_buffer_limit(Some(PLAINTEXT_BUFFER_BYTES));
    });
    match shards::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(stream)) => Ok(TlsConnection { stream }),
        Ok(Err(source)) => Err(TlsError::Handshake { source }),
        Err(_) => Err(TlsError::HandshakeTimeout {
            after: handshake_timeout,
        }),
    }
}

/// A connection after its TLS handshake.
pub struct TlsConnection {
    stream: TlsStream<Prefixed>,
}

impl TlsConnection {
    /// The rustls session: negotiated version, suite, ALPN protocol, peer certificates.
    pub fn session(&self) -> &ServerConnection {
        self.stream.get_ref().1
    }

    /// The verified client certificate's subject CN, else its first DNS name.
    pub fn client_identity(&self) -> Option<String> {
        client_identity(self.session())
    }

    /// The ALPN protocol agreed on, if the client offered one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session().alpn_protocol()
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.get_ref().0.get_ref().peer_addr()
    }

    /// Two halves for two tasks: one may wait in `read` while the other writes. The connection
    /// closes when both are dropped.
    pub fn split(self) -> (TlsReadHalf, TlsWriteHalf) {
        let wakers = Arc::new(HalfWakers::default());
        let shared = Rc::new(Shared {
            stream: RefCell::new(self.stream),
            waker: Waker::from(wakers.clone()),
            wakers,
        });
        (
            TlsReadHalf {
                shared: shared.clone(),
            },
            TlsWriteHalf { shared },
        )
    }
}

/// The whole connection as one stream, for a protocol layered over TLS (WebSocket) that shares
/// it between its reader and writer itself.
impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

struct Shared {
    stream: RefCell<TlsStream<Prefixed>>,
    wakers: Arc<HalfWakers>,
    /// Wakes both halves (`wakers` as a `Waker`).
    waker: Waker,
}

#[derive(Clone, Copy)]
enum Half {
    Read,
    Write,
}

impl Shared {
    /// Polls the stream for one half, borrowed for this poll only.
    fn poll<T>(
        &self,
        half: Half,
        cx: &Context<'_>,
        f: impl FnOnce(Pin<&mut TlsStream<Prefixed>>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.wakers.register(half, cx.waker());
        let mut shared_cx = Context::from_waker(&self.waker);
        let mut stream = self.stream.borrow_mut();
        f(Pin::new(&mut *stream), &mut shared_cx)
    }
}

/// The tasks waiting on either half of one connection.
#[derive(Default)]
struct HalfWakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl HalfWakers {
    fn slot(&self, half: Half) -> &Mutex<Option<Waker>> {
        match half {
            Half::Read => &self.read,
            Half::Write => &self.write,
        }
    }

    fn register(&self, half: Half, waker: &Waker) {
        let mut slot = self
            .slot(half)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl Wake for HalfWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for half in [Half::Read, Half::Write] {
            let waker = self
                .slot(half)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The receiving half of a TLS connection.
pub struct TlsReadHalf {
    shared: Rc<Shared>,
}

impl TlsReadHalf {
    /// Reads decrypted bytes, at least one; `Ok(0)` after the peer's close_notify. A peer that
    /// closes TCP without close_notify gives an `UnexpectedEof` error.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_half(cx, buf)).await
    }

    fn poll_read_half(&self, cx: &Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.shared
            .poll(Half::Read, cx, |stream, cx| stream.poll_read(cx, buf))
    }
}

impl AsyncRead for TlsReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_half(cx, buf)
    }
}

/// The sending half of a TLS connection.
pub struct TlsWriteHalf {
    shared: Rc<Shared>,
}

impl TlsWriteHalf {
    /// Encrypts and sends all of `buf`, then flushes: when this returns, the bytes are with the
    /// kernel.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let written = poll_fn(|cx| {
                self.shared
                    .poll(Half::Write, cx, |stream, cx| stream.poll_write(cx, buf))
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(written..).unwrap_or_default();
        }
        poll_fn(|cx| {
            self.shared
                .poll(Half::Write, cx, |stream, cx| stream.poll_flush(cx))
        })
        .await
    }

    /// Sends close_notify and shuts the socket's sending side (FIN); the read half keeps reading.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            self.shared
                .poll(Half::Write, cx, |stream, cx| stream.poll_close(cx))
        })
        .await
    }
}

impl AsyncWrite for TlsWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.shared
            .poll(Half::Write, cx, |stream, cx| stream.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .poll(Half::Write, cx, |stream, cx| stream.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .poll(Half::Write, cx, |stream, cx| stream.poll_close(cx))
    }
}
