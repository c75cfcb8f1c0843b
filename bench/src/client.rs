//! One MQTT client connection over TCP or TLS (`crate::stream`) and ringmq's codec: connect and CONNACK,
//! SUBSCRIBE and SUBACK, and the buffered reads both directions of a running client use.

use crate::plan::{Plan, Role};
use crate::stream::{self, ReadHalf, WriteHalf};
use anyhow::{Context, bail};
use bytes::BytesMut;
use ringmq::protocol::{
    self, ByteString, Bytes, Connect, ConnectProperties, Packet, PacketId, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions, Version,
};
use std::time::Duration;

/// The largest frame MQTT can carry (fixed header + 256 MiB).
pub const PACKET_BYTES_MAX: usize = 268_435_460;
/// How long connecting (with TLS), CONNECT -> CONNACK and SUBSCRIBE -> SUBACK may each take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads start this big and double (up to `READ_BYTES_MAX`) while they come back full, so idle
/// connections stay small and busy ones read many frames per call.
const READ_BYTES_MIN: usize = 8 * 1024;
const READ_BYTES_MAX: usize = 256 * 1024;

pub struct Connection {
    pub read: ReadHalf,
    pub write: WriteHalf,
    pub input: Input,
    pub version: Version,
}

/// The read side's buffer.
pub struct Input {
    pub buf: BytesMut,
    chunk: usize,
}

impl Input {
    pub fn new() -> Input {
        Input {
            buf: BytesMut::new(),
            chunk: READ_BYTES_MIN,
        }
    }

    /// Reads once more into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self, read: &mut ReadHalf) -> std::io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + self.chunk, 0);
        let result = read.read(&mut self.buf[start..]).await;
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        if n == self.chunk {
            self.chunk = (self.chunk * 2).min(READ_BYTES_MAX);
        }
        result
    }

    /// The next whole packet in the buffer, if any.
    pub fn next(&mut self, version: Version) -> anyhow::Result<Option<Packet>> {
        protocol::decode(&mut self.buf, version, PACKET_BYTES_MAX).context("broker sent bad bytes")
    }
}

/// TCP connect (and TLS handshake), CONNECT, and a successful CONNACK.
pub async fn open(plan: &Plan, role: Role, index: usize) -> anyhow::Result<Connection> {
    let (read, write) = shards::time::timeout(HANDSHAKE_TIMEOUT, stream::open(plan, role, index))
        .await
        .context("no connection (TCP and TLS handshake) in time")??;
    let mut connection = Connection {
        read,
        write,
        input: Input::new(),
        version: plan.version,
    };
    let (client_id, _) = plan.client_id(role, index);
    let connect = Connect {
        version: plan.version,
        clean_start: plan.clean,
        keep_alive_secs: plan.keepalive_secs,
        client_id: ByteString::from(client_id),
        will: None,
        username: plan.username.as_deref().map(ByteString::from),
        password: plan.password.as_ref().map(|p| Bytes::from(p.clone())),
        properties: ConnectProperties {
            session_expiry_interval_secs: (plan.session_expiry_secs > 0)
                .then_some(plan.session_expiry_secs),
            ..ConnectProperties::default()
        },
    };
    connection.send(&Packet::Connect(Box::new(connect))).await?;
    let reply = shards::time::timeout(
        HANDSHAKE_TIMEOUT,
        connection.expect(|p| match p {
            Packet::ConnAck(connack) => Some(connack.reason),
            _ => None,
        }),
    )
    .await
    .context("no CONNACK in time")??;
    if reply.is_error() {
        bail!("CONNACK refused with reason 0x{:02X}", reply.0);
    }
    Ok(connection)
}

impl Connection {
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out, PACKET_BYTES_MAX)?;
        self.write.write_all(&out).await.context("write")
    }

    /// Reads until `pick` accepts a packet (others before it are dropped: nothing is expected
    /// before a handshake reply).
    async fn expect<T>(&mut self, pick: impl Fn(&Packet) -> Option<T>) -> anyhow::Result<T> {
        loop {
            while let Some(packet) = self.input.next(self.version)? {
                if let Some(found) = pick(&packet) {
                    return Ok(found);
                }
            }
            if self.input.fill(&mut self.read).await.context("read")? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let packet_id = PacketId::MIN;
        let subscribe = Subscribe {
            packet_id,
            properties: Default::default(),
            filters: vec![SubscribeFilter {
                filter: ByteString::from(filter),
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        };
        self.send(&Packet::Subscribe(subscribe)).await?;
        let reasons = shards::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.expect(|p| match p {
                Packet::SubAck(suback) if suback.packet_id == packet_id => {
                    Some(suback.reasons.clone())
                }
                _ => None,
            }),
        )
        .await
        .context("no SUBACK in time")??;
        match reasons.first() {
            Some(reason) if !reason.is_error() => Ok(()),
            Some(reason) => bail!("SUBACK refused {filter:?} with reason 0x{:02X}", reason.0),
            None => bail!("SUBACK without a reason code"),
        }
    }
}
