//! The bridge's connection to the remote broker: name resolution off the shard's thread, TCP,
//! then TLS when configured, as one stream the bridge task reads and writes.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

/// A connection to the remote broker, plain or TLS.
pub enum RemoteStream {
    Tcp(shards::TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<shards::TcpStream>>),
}

/// Why a connection attempt failed, for the log line.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("TCP connect to {addr} failed: {source}")]
    Tcp { addr: SocketAddr, source: io::Error },
    #[error("`{name}` is not a valid TLS server name")]
    ServerName { name: String },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
}

/// Resolves `host` on a thread of its own (the system resolver blocks), so the shard keeps
/// serving meanwhile.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let address = format!("{host}:{port}");
    let (sender, receiver) = flume::bounded(1);
    let query = address.clone();
    let spawned = std::thread::Builder::new()
        .name(String::from("ringmq-resolve"))
        .spawn(move || {
            let result = std::net::ToSocketAddrs::to_socket_addrs(&query)
                .and_then(|mut addrs| addrs.next().ok_or(io::ErrorKind::NotFound.into()));
            let _ = sender.send(result);
        });
    let result = match spawned {
        Ok(_) => receiver
            .recv_async()
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::Interrupted.into())),
        Err(error) => Err(error),
    };
    result.map_err(|source| ConnectError::Resolve { address, source })
}

/// Opens the stream to `host:port`: TCP, then the TLS handshake with `tls` (its server name
/// `sni`, else the host).
pub async fn open(
    host: &str,
    port: u16,
    tls: Option<&(Arc<rustls::ClientConfig>, Option<String>)>,
) -> Result<RemoteStream, ConnectError> {
    let addr = resolve(host, port).await?;
    let stream = shards::connect(addr)
        .await
        .map_err(|source| ConnectError::Tcp { addr, source })?;
    let _ = stream.set_nodelay(true);
    let Some((config, sni)) = tls else {
        return Ok(RemoteStream::Tcp(stream));
    };
    let name = sni.clone().unwrap_or_else(|| host.to_owned());
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName { name })?;
    let connector = futures_rustls::TlsConnector::from(Arc::clone(config));
    let stream = connector
        .connect(server_name, stream)
        .await
        .map_err(|source| ConnectError::Tls { addr, source })?;
    Ok(RemoteStream::Tls(Box::new(stream)))
}

impl RemoteStream {
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            RemoteStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            RemoteStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            RemoteStream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            RemoteStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            RemoteStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            RemoteStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            RemoteStream::Tcp(stream) => Pin::new(stream).poll_close(cx),
            RemoteStream::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Writes all of `buf` and flushes (TLS records go out).
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let written = poll_fn(|cx| self.poll_write(cx, buf)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(written..).unwrap_or_default();
        }
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    pub async fn close(&mut self) {
        let _ = poll_fn(|cx| self.poll_close(cx)).await;
    }
}
