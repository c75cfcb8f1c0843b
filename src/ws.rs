//! MQTT over WebSocket (MQTT 5.0 and 3.1.1 section 6, RFC 6455): one more transport in the
//! shell, next to TCP and TLS. After the opening handshake a connection reads and writes MQTT
//! bytes like any other; the shard never learns the transport.
//!
//! The rules of section 6 and where they hold:
//! - MQTT travels in binary data frames only [MQTT-6.0.0-1]: a text frame closes the connection
//!   (close code 1003) — `stream.rs`.
//! - A frame may hold part of a packet, or several, and a packet may span frames [MQTT-6.0.0-2,
//!   -3]: the read half turns messages into the byte stream the MQTT reader already decodes.
//! - The client offers the subprotocol `mqtt` (`mqttv3.1` from old clients) and the server
//!   echoes the one it accepts [MQTT-6.0.0-4]; a request with neither gets HTTP 400 —
//!   `handshake.rs`, which also answers a path other than the configured one with 404 and an
//!   `Origin` not allowed with 403.
//!
//! The protocol itself (handshake parsing, framing, masking, fragments, ping and close) is
//! async-tungstenite's, over any futures-io stream, so plain TCP and TLS share this code. Bounds:
//! the handshake's bytes (`Socket` refuses more) and time, the frame and message sizes
//! (tungstenite's own checks, close code 1009), and tungstenite's read and write buffers.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod handshake;
mod stream;

use std::time::Duration;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use stream::{Socket, WsReadHalf, WsWriteHalf, split};

/// Bytes tungstenite asks of the socket per read; also the capacity of each connection's read
/// buffer, allocated for the connection's life (a frame larger than it grows it while it lasts).
pub const READ_BUFFER_BYTES: usize = 8 * 1024;
const _: () =
    assert!(READ_BUFFER_BYTES as u64 == crate::config::budget::WEBSOCKET_READ_BUFFER_BYTES);

/// The WebSocket keys of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The only path accepted; `None` accepts any.
    pub path: Option<String>,
    /// The `Origin`s a request may carry; empty accepts any.
    pub allowed_origins: Vec<String>,
    pub frame_bytes_max: usize,
    pub message_bytes_max: usize,
    pub handshake_bytes_max: usize,
    pub handshake_timeout: Duration,
}

impl WsSettings {
    pub fn of(listener: &crate::config::WsListener) -> WsSettings {
        WsSettings {
            path: listener.path.clone(),
            allowed_origins: listener.allowed_origins.clone(),
            frame_bytes_max: listener.frame_bytes_max as usize,
            message_bytes_max: listener.message_bytes_max as usize,
            handshake_bytes_max: listener.handshake_bytes_max as usize,
            handshake_timeout: Duration::from_millis(u64::from(listener.handshake_timeout_ms)),
        }
    }

    /// tungstenite's configuration: every option set here, none left to its defaults.
    fn protocol_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Each write is one batch of packets, flushed at once: nothing to gain by waiting.
            .write_buffer_size(0)
            // The writer waits for each batch to be written before the next, so this buffer
            // holds one batch (bounded by the connection's write buffer) and at most a pong and
            // a close reply: no cap of its own.
            .max_write_buffer_size(usize::MAX)
            .max_frame_size(Some(self.frame_bytes_max))
            .max_message_size(Some(self.message_bytes_max))
            // RFC 6455 5.1: a server must close on an unmasked frame from a client.
            .accept_unmasked_frames(false)
    }
}

/// Why an opening handshake did not give a WebSocket connection.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Answered with an HTTP error status (wrong path, origin or subprotocol).
    #[error("refused with HTTP {status}")]
    Refused { status: u16 },
    #[error("handshake failed: {source}")]
    Handshake {
        source: async_tungstenite::tungstenite::Error,
    },
    #[error("handshake not finished after {after:?}")]
    Timeout { after: Duration },
}

/// Runs the opening handshake on `socket` within `timeout`: a WebSocket connection's two halves,
/// or why not (an HTTP error answer has been sent when the request was wrong).
pub async fn accept(
    socket: Socket,
    settings: &WsSettings,
    timeout: Duration,
) -> Result<(WsReadHalf, WsWriteHalf), WsError> {
    use async_tungstenite::tungstenite::Error;
    let socket = socket.with_handshake_limit(settings.handshake_bytes_max);
    let handshake = async_tungstenite::accept_hdr_async_with_config(
        socket,
        handshake::Check::new(settings),
        Some(settings.protocol_config()),
    );
    match shards::time::timeout(timeout, handshake).await {
        Ok(Ok(mut ws)) => {
            ws.get_mut().handshake_done();
            Ok(split(ws))
        }
        Ok(Err(Error::Http(response))) => Err(WsError::Refused {
            status: response.status().as_u16(),
        }),
        Ok(Err(source)) => Err(WsError::Handshake { source }),
        Err(_) => Err(WsError::Timeout { after: timeout }),
    }
}

#[cfg(test)]
mod tests;
