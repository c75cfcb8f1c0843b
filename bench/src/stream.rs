//! A client's connection to the broker, plain TCP, TLS (`-S`) or WebSocket over either (`--ws`,
//! `--wss`): one enum per half, so the plain path stays a direct call on the shards socket (one
//! branch, no boxing, no rustls buffers).

use crate::plan::{Plan, Role};
use crate::tls::{self, TlsReadHalf, TlsWriteHalf};
use crate::ws;
use anyhow::Context;
use std::io;

pub enum ReadHalf {
    Tcp(shards::ReadHalf),
    Tls(TlsReadHalf),
    Ws(ws::ReadHalf),
}

pub enum WriteHalf {
    Tcp(shards::WriteHalf),
    Tls(TlsWriteHalf),
    Ws(ws::WriteHalf),
}

impl ReadHalf {
    /// Reads what is available, at least one byte; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(half) => half.read(buf).await,
            ReadHalf::Tls(half) => half.read(buf).await,
            ReadHalf::Ws(half) => half.read(buf).await,
        }
    }
}

impl WriteHalf {
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(half) => half.write_all(buf).await,
            WriteHalf::Tls(half) => half.write_all(buf).await,
            WriteHalf::Ws(half) => half.write_all(buf).await,
        }
    }
}

/// Connects client `index` to its broker address, with the TLS handshake under `-S` and the
/// WebSocket one under `--ws`.
pub async fn open(plan: &Plan, role: Role, index: usize) -> anyhow::Result<(ReadHalf, WriteHalf)> {
    let addr = plan.target(role, index);
    let stream = shards::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    if let Some(path) = &plan.websocket {
        let socket: ws::Socket = match &plan.tls {
            None => Box::new(stream),
            Some(settings) => {
                let name = settings.server_names[index % settings.server_names.len()].clone();
                Box::new(tls::handshake(settings, name, addr, stream).await?)
            }
        };
        let (read, write) = ws::connect(socket, addr, path, plan.tls.is_some()).await?;
        return Ok((ReadHalf::Ws(read), WriteHalf::Ws(write)));
    }
    match &plan.tls {
        None => {
            let (read, write) = stream.split();
            Ok((ReadHalf::Tcp(read), WriteHalf::Tcp(write)))
        }
        Some(settings) => {
            let name = settings.server_names[index % settings.server_names.len()].clone();
            let (read, write) = tls::connect(settings, name, addr, stream).await?;
            Ok((ReadHalf::Tls(read), WriteHalf::Tls(write)))
        }
    }
}
