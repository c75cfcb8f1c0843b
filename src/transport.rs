//! The two halves of a client connection, plain TCP, TLS or WebSocket (over either), so
//! `connection` reads and writes MQTT bytes without caring which.

use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

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
    /// Writes all of `buf`. Plain TCP writes with `poll_write` in this future itself: it is in
    /// every connection's task, and nested write futures would make it several times larger.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let half = match self {
            Writer::Tcp(half) => half,
            Writer::Tls(half) => return half.write_all(buf).await,
            Writer::Ws(half) => return half.write_all(buf).await,
        };
        while !buf.is_empty() {
            let written = poll_fn(|cx| Pin::new(&mut *half).poll_write(cx, buf)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(written..).unwrap_or_default();
        }
        Ok(())
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
