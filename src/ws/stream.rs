//! A WebSocket connection as a read half and a write half of MQTT bytes, for the connection's
//! reader and writer tasks.
//!
//! Both halves share the async-tungstenite stream through an `Rc<RefCell<..>>`, borrowed for one
//! poll at a time and never across an await (a shard is one thread). The stream keeps a waker
//! per direction itself (reading may write a pong or a close reply), so each half is woken for
//! its own work. The read half hands out the payload of each binary message as bytes, so a
//! packet may span messages and a message may hold several packets; the write half sends each
//! batch of packets as one binary message.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Bytes, Error, Message};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;

use crate::tls::TlsConnection;

/// Messages without MQTT bytes (pings, pongs, empty ones) one poll of the read half handles
/// before it lets the shard's other tasks run: a client sending nothing but pings cannot hold the
/// shard.
const CONTROL_MESSAGES_PER_POLL: u32 = 64;

/// The connection under the WebSocket: plain TCP or TLS. During the opening handshake it refuses
/// to read more than the handshake may take.
pub struct Socket {
    io: Io,
    /// Bytes the opening handshake may still read; `None` once it is done.
    handshake_bytes_left: Option<usize>,
}

enum Io {
    Tcp(shards::TcpStream),
    Tls(Box<TlsConnection>),
}

impl Socket {
    pub fn tcp(stream: shards::TcpStream) -> Socket {
        Socket {
            io: Io::Tcp(stream),
            handshake_bytes_left: None,
        }
    }

    pub fn tls(connection: TlsConnection) -> Socket {
        Socket {
            io: Io::Tls(Box::new(connection)),
            handshake_bytes_left: None,
        }
    }

    pub(super) fn with_handshake_limit(mut self, bytes: usize) -> Socket {
        self.handshake_bytes_left = Some(bytes);
        self
    }

    pub(super) fn handshake_done(&mut self) {
        self.handshake_bytes_left = None;
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = match &mut this.io {
            Io::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(connection) => Pin::new(connection.as_mut()).poll_read(cx, buf),
        };
        if let (Poll::Ready(Ok(n)), Some(left)) = (&read, &mut this.handshake_bytes_left) {
            if *n > *left {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "opening handshake over listener's handshake_bytes_max",
                )));
            }
            *left -= *n;
        }
        read
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(connection) => Pin::new(connection.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(connection) => Pin::new(connection.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(stream) => Pin::new(stream).poll_close(cx),
            Io::Tls(connection) => Pin::new(connection.as_mut()).poll_close(cx),
        }
    }
}

struct Shared<S> {
    ws: RefCell<WebSocketStream<S>>,
    /// The code of the close frame the write half sends when the connection ends: normal
    /// closure unless the read half saw the client break the WebSocket rules.
    close_code: Cell<CloseCode>,
}

impl<S: Unpin> Shared<S> {
    /// Runs `f` on the stream, borrowed for this call only.
    fn with<R>(&self, f: impl FnOnce(Pin<&mut WebSocketStream<S>>) -> R) -> R {
        let mut ws = self.ws.borrow_mut();
        f(Pin::new(&mut *ws))
    }
}

/// The two halves of a WebSocket connection after its handshake (the broker's, over [`Socket`],
/// or a client's, as `ringmq-bench` uses them).
pub fn split<S>(ws: WebSocketStream<S>) -> (WsReadHalf<S>, WsWriteHalf<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = Rc::new(Shared {
        ws: RefCell::new(ws),
        close_code: Cell::new(CloseCode::Normal),
    });
    (
        WsReadHalf {
            shared: Rc::clone(&shared),
            message: Bytes::new(),
            error: None,
        },
        WsWriteHalf { shared },
    )
}

/// The receiving half: the payloads of the peer's binary messages, as one byte stream.
pub struct WsReadHalf<S = Socket> {
    shared: Rc<Shared<S>>,
    /// What is left of the message being read.
    message: Bytes,
    /// The error that ended the stream after the bytes a read returned.
    error: Option<io::Error>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReadHalf<S> {
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// The bytes of as many of the client's binary messages as are here and fit in `buf`: a
    /// client that sends one packet per message (browsers do) still gets a batch of packets per
    /// read, as on TCP. `Ok(0)` once the client closed; `Pending` leaves `buf` untouched. An
    /// error after some bytes is returned by the next call, after those bytes.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if let Some(error) = self.error.take() {
            return Poll::Ready(Err(error));
        }
        let mut filled = 0;
        let mut empty = 0;
        loop {
            if !self.message.is_empty() {
                let room = buf.get_mut(filled..).unwrap_or_default();
                let n = self.message.len().min(room.len());
                let chunk = self.message.split_to(n);
                if let Some(to) = room.get_mut(..n) {
                    to.copy_from_slice(&chunk);
                }
                filled += n;
                if filled == buf.len() {
                    return Poll::Ready(Ok(filled));
                }
            }
            let next = match self.shared.with(|ws| ws.poll_next(cx)) {
                Poll::Pending if filled == 0 => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(filled)),
                Poll::Ready(next) => next,
            };
            let error = match next {
                // The client's close was answered (tungstenite replies itself), or the
                // connection ended: `None` again on the next call.
                None => return Poll::Ready(Ok(filled)),
                Some(Ok(Message::Binary(payload))) => {
                    self.message = payload;
                    if !self.message.is_empty() {
                        continue;
                    }
                    None
                }
                Some(Ok(Message::Text(_))) => Some(self.failed(
                    CloseCode::Unsupported,
                    "text frame: MQTT travels in binary frames only (MQTT-6.0.0-1)",
                )),
                // Pings are answered by tungstenite; a close is answered on the next poll,
                // which then ends the stream.
                Some(Ok(
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
                )) => None,
                Some(Err(error)) => Some(self.broken(error)),
            };
            if let Some(error) = error {
                if filled == 0 {
                    return Poll::Ready(Err(error));
                }
                self.error = Some(error);
                return Poll::Ready(Ok(filled));
            }
            // A message that brought no bytes: bounded, so that a client sending nothing but
            // pings cannot hold the shard.
            empty += 1;
            if empty >= CONTROL_MESSAGES_PER_POLL {
                if filled > 0 {
                    return Poll::Ready(Ok(filled));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    fn failed(&self, code: CloseCode, why: &'static str) -> io::Error {
        self.shared.close_code.set(code);
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// The error that ended the read: the close code follows its kind.
    fn broken(&self, error: Error) -> io::Error {
        let code = match &error {
            Error::Capacity(_) => CloseCode::Size,
            Error::Protocol(_) => CloseCode::Protocol,
            Error::Utf8(_) => CloseCode::Invalid,
            _ => CloseCode::Normal,
        };
        self.shared.close_code.set(code);
        match error {
            Error::Io(error) => error,
            error => io::Error::new(io::ErrorKind::InvalidData, error),
        }
    }
}

/// The sending half: each write is one binary message.
pub struct WsWriteHalf<S = Socket> {
    shared: Rc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriteHalf<S> {
    /// Sends `buf` as one binary message and flushes it: when this returns, the bytes are with
    /// the kernel (or TLS).
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        poll_fn(|cx| self.poll_write_all(cx, buf, &mut sent)).await
    }

    /// One poll of `write_all`; `*sent` bytes of `buf` are already sent (all of them once the
    /// message is queued: only its flush is left). The message is made between the two waits,
    /// so a caller between polls holds none.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        sent: &mut usize,
    ) -> Poll<io::Result<()>> {
        if let Some(rest) = buf.get(*sent..).filter(|rest| !rest.is_empty()) {
            ready!(self.shared.with(|ws| ws.poll_ready(cx))).map_err(to_io)?;
            let message = Message::Binary(Bytes::copy_from_slice(rest));
            self.shared
                .with(|ws| ws.start_send(message))
                .map_err(to_io)?;
            *sent = buf.len();
        }
        self.shared.with(|ws| ws.poll_flush(cx)).map_err(to_io)
    }

    /// The closing handshake from our side: a close frame (its code says why), then the end of
    /// the connection (close_notify and FIN under TLS, FIN on TCP).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        let frame = CloseFrame {
            code: self.shared.close_code.get(),
            reason: "".into(),
        };
        // The client may have closed first, and tungstenite answered it: nothing more to send.
        let _ = self.send(Message::Close(Some(frame))).await;
        poll_fn(|cx| {
            self.shared
                .with(|ws| Pin::new(ws.get_mut().get_mut()).poll_close(cx))
        })
        .await
    }

    async fn send(&mut self, message: Message) -> Result<(), Error> {
        poll_fn(|cx| self.shared.with(|ws| ws.poll_ready(cx))).await?;
        self.shared.with(|ws| ws.start_send(message))?;
        poll_fn(|cx| self.shared.with(|ws| ws.poll_flush(cx))).await
    }
}

fn to_io(error: Error) -> io::Error {
    match error {
        Error::Io(error) => error,
        error => io::Error::other(error),
    }
}
