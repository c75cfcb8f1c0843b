//! MQTT over WebSocket to the broker (`--ws`, `--wss`): the client's opening handshake with
//! async-tungstenite (subprotocol `mqtt`), over plain TCP or the TLS stream, then the same read
//! and write halves of MQTT bytes the broker uses (`ringmq::ws::split`): each write is one binary
//! message, and the read half hands out the payloads of the broker's messages as one byte stream.

use anyhow::{Context, bail};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_io::{AsyncRead, AsyncWrite};
use std::net::SocketAddr;

use crate::client::PACKET_BYTES_MAX;

/// Bytes tungstenite asks of the socket per read (its own default, passed explicitly).
const READ_BUFFER_BYTES: usize = 128 * 1024;

/// The connection under the WebSocket, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

pub type Socket = Box<dyn Io>;
pub type ReadHalf = ringmq::ws::WsReadHalf<Socket>;
pub type WriteHalf = ringmq::ws::WsWriteHalf<Socket>;

/// The opening handshake with the broker at `addr`, asking for `path`; the caller bounds how long
/// it may take.
pub async fn connect(
    socket: Socket,
    addr: SocketAddr,
    path: &str,
    secure: bool,
) -> anyhow::Result<(ReadHalf, WriteHalf)> {
    let scheme = if secure { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{addr}{path}")
        .into_client_request()
        .context("WebSocket request")?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_frame_size(Some(PACKET_BYTES_MAX))
        .max_message_size(Some(PACKET_BYTES_MAX))
        .accept_unmasked_frames(false);
    let (ws, response) = async_tungstenite::client_async_with_config(request, socket, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {addr}{path}"))?;
    let protocol = response.headers().get("sec-websocket-protocol");
    if protocol.is_none_or(|protocol| protocol != "mqtt") {
        bail!("{addr}{path}: the broker did not accept the WebSocket subprotocol mqtt");
    }
    Ok(ringmq::ws::split(ws))
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use crate::plan::Plan;
    use clap::Parser;

    fn plan(flags: &[&str]) -> anyhow::Result<Plan> {
        let mut args = vec!["ringmq-bench", "pubsub", "-h", "127.0.0.1"];
        args.extend_from_slice(flags);
        Plan::from_command(&Cli::try_parse_from(args)?.command)
    }

    #[test]
    fn websocket_flags() {
        let plain = plan(&[]).unwrap();
        assert_eq!(plain.websocket, None);
        let ws = plan(&["--ws"]).unwrap();
        assert_eq!(ws.websocket.as_deref(), Some("/mqtt"));
        assert!(ws.tls.is_none());
        let wss = plan(&["--wss", "--insecure", "--ws-path", "/"]).unwrap();
        assert_eq!(wss.websocket.as_deref(), Some("/"));
        assert!(wss.tls.is_some(), "--wss is --ws over TLS");
        let error = plan(&["--ws", "--ws-path", "mqtt"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--ws-path mqtt"), "{error}");
    }
}
