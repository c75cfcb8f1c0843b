//! Opening a connection on a WebSocket listener: TLS first on a secure one, then the WebSocket
//! opening handshake, both within the listener's `handshake_timeout_ms`.

use std::net::SocketAddr;
use std::time::Instant;

use shards::TcpStream;

use super::{Handshake, Opened, tls_handshake};
use crate::server::{ShardShell, WsListenerKind};
use crate::transport::{Reader, Writer};
use crate::ws::{self, Socket};

pub(super) async fn open(
    shell: &ShardShell,
    listener: &WsListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Opened> {
    let _handshake = Handshake::start(shell, peer, &listener.name)?;
    let started = Instant::now();
    let (socket, identity) = match &listener.tls {
        None => (Socket::tcp(stream), None),
        Some(tls) => {
            let (connection, identity) = tls_handshake(shell, tls, stream, peer).await?;
            (Socket::tls(connection), identity)
        }
    };
    let timeout = listener
        .settings
        .handshake_timeout
        .saturating_sub(started.elapsed());
    match ws::accept(socket, &listener.settings, timeout).await {
        Ok((reader, writer)) => Some(Opened {
            reader: Reader::Ws(Box::new(reader)),
            writer: Writer::Ws(writer),
            identity,
        }),
        Err(error) => {
            tracing::info!(%peer, listener = %listener.name, %error,
                "WebSocket handshake failed: closed");
            None
        }
    }
}
