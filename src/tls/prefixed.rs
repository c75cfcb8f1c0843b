//! A TCP stream whose first bytes were already read (to tell TLS from plain MQTT): reads return
//! those bytes first, then read the socket.

use futures_io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Prefixed {
    head: Vec<u8>,
    /// How much of `head` has been read.
    taken: usize,
    inner: shards::TcpStream,
}

impl Prefixed {
    pub fn new(head: Vec<u8>, inner: shards::TcpStream) -> Prefixed {
        Prefixed {
            head,
            taken: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &shards::TcpStream {
        &self.inner
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let rest = this.head.get(this.taken..).unwrap_or_default();
        if !rest.is_empty() {
            let n = rest.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
                to.copy_from_slice(from);
            }
            this.taken += n;
            if this.taken == this.head.len() {
                this.head = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
