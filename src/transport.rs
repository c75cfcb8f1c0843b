//! The two halves of a client connection, plain TCP, TLS or WebSocket (over either), so
//! `connection` reads and writes MQTT bytes without caring which.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};

use crate::tls::{TlsReadHalf, TlsWriteHalf};
use crate::ws::{WsReadHalf, WsWriteHalf};

/// TLS and WebSocket halves are boxed: the reader lives in every connection's task, and a plain
/// TCP one needs 8 bytes of it.
pub enum Reader {
    Tcp(shards::ReadHalf),
    Tls(Box<TlsReadHalf>),
    Ws(Box<WsReadHalf>),
}

pub enum Writer {
    Tcp(shards::WriteHalf),
    Tls(TlsWriteHalf),
    Ws(WsWriteHalf),
}

impl Reader {
    /// The kernel's receive time (`CLOCK_REALTIME`) of the last byte the last read returned,
    /// when the listener asks for it (`observability.kernel_timestamps`, plain TCP only).
    pub fn last_receive_timestamp(&self) -> Option<std::time::SystemTime> {
        match self {
            Reader::Tcp(half) => half.last_receive_timestamp(),
            Reader::Tls(_) | Reader::Ws(_) => None,
        }
    }

    /// One poll of a read: `Pending` leaves `buf` untouched, so a caller may lend a buffer for
    /// this poll only (no kind hands `buf` to the kernel: a plain TCP read completes into the
    /// shard's receive pool and is copied out at the poll that returns it).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Reader::Tcp(half) => Pin::new(half).poll_read(cx, buf),
            Reader::Tls(half) => Pin::new(half).poll_read(cx, buf),
            Reader::Ws(half) => half.poll_read(cx, buf),
        }
    }
}

impl Writer {
    /// One poll of writing all of `buf`, `*written` bytes of which are already written: `Ready`
    /// once all of it is with the kernel (TLS: encrypted and flushed; WebSocket: sent as one
    /// message, then flushed). The caller keeps only `written` between polls, so a connection's
    /// writer holds no write future while it waits (`connection::write_side`).
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        match self {
            Writer::Tcp(half) => poll_write_from(half, cx, buf, written),
            Writer::Tls(half) => {
                ready!(poll_write_from(half, cx, buf, written))?;
                Pin::new(half).poll_flush(cx)
            }
            Writer::Ws(half) => half.poll_write_all(cx, buf, written),
        }
    }

    /// Ends the sending side only (FIN), so the client reads what was sent and then the end of
    /// the stream while its input is still read: TLS sends close_notify first, WebSocket a close
    /// frame.
    pub async fn close_write(&mut self) {
        let _ = match self {
            Writer::Tcp(half) => half.shutdown(Shutdown::Write).await,
            Writer::Tls(half) => half.shutdown().await,
            Writer::Ws(half) => half.shutdown().await,
        };
    }

    /// Ends the connection: TLS sends close_notify first, WebSocket a close frame before that.
    pub async fn shutdown(&mut self) {
        let _ = match self {
            Writer::Tcp(half) => half.shutdown(Shutdown::Both).await,
            Writer::Tls(half) => half.shutdown().await,
            Writer::Ws(half) => half.shutdown().await,
        };
    }
}

/// Writes `buf` from `*written` on until all of it is written or the write would block.
fn poll_write_from<W: AsyncWrite + Unpin>(
    half: &mut W,
    cx: &mut Context<'_>,
    buf: &[u8],
    written: &mut usize,
) -> Poll<io::Result<()>> {
    while let Some(rest) = buf.get(*written..).filter(|rest| !rest.is_empty()) {
        let n = ready!(Pin::new(&mut *half).poll_write(cx, rest))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *written += n;
    }
    Poll::Ready(Ok(()))
}
