//! A client's connection to the broker, plain TCP or TLS (`-S`): one enum per half, so the plain
//! path stays a direct call on the shards socket (one branch, no boxing, no rustls buffers).

use crate::plan::{Plan, Role};
use crate::tls::{self, TlsReadHalf, TlsWriteHalf};
use anyhow::Context;
use std::io;

pub enum ReadHalf {
    Tcp(shards::ReadHalf),
    Tls(TlsReadHalf),
}

pub enum WriteHalf {
    Tcp(shards::WriteHalf),
    Tls(TlsWriteHalf),
}

impl ReadHalf {
    /// Reads what is available, at least one byte; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(half) => half.read(buf).await,
            ReadHalf::Tls(half) => half.read(buf).await,
        }
    }
}

impl WriteHalf {
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(half) => half.write_all(buf).await,
            WriteHalf::Tls(half) => half.write_all(buf).await,
        }
    }
}

/// Connects client `index` to its broker address, with the TLS handshake under `-S`.
pub async fn open(plan: &Plan, role: Role, index: usize) -> anyhow::Result<(ReadHalf, WriteHalf)> {
    let addr = plan.target(role, index);
    let stream = shards::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
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
