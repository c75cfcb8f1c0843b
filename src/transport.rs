//! The two halves of a client connection, plain TCP, TLS or WebSocket (over either), so
//! `connection` reads and writes MQTT bytes without caring which.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::AsyncRead;

use crate::tls::{TlsReadHalf, TlsWriteHalf};
use crate::ws::{WsReadHalf, WsWriteHalf};

pub enum Reader {
    Tcp(shards::ReadHalf),
    Tls(TlsReadHalf),
    Ws(WsReadHalf),
}

pub enum Writer {
    Tcp(shards::WriteHalf),
    Tls(TlsWriteHalf),
    Ws(WsWriteHalf),
}

impl Reader {
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Tcp(half) => half.read(buf).await,
            Reader::Tls(half) => half.read(buf).await,
            Reader::Ws(half) => half.read(buf).await,
        }
    }

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
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::Tcp(half) => half.write_all(buf).await,
            Writer::Tls(half) => half.write_all(buf).await,
            Writer::Ws(half) => half.write_all(buf).await,
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
