//! Opening a connection to the remote: the stream (TCP, TLS), CONNECT, CONNACK, and the
//! SUBSCRIBE of the `in` rules.

use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;

use super::Settings;
use super::remote::{self, ConnectError, RemoteStream};
use super::rules::Rules;
use crate::config::bridges::split_host_port;
use crate::protocol::{
    self, Bytes, Connect, ConnectProperties, Packet, ReasonCode, RetainHandling, Subscribe,
    SubscribeFilter, SubscribeProperties, SubscriptionOptions, Version,
};

/// The protocol level of a 3.1.1 CONNECT with Mosquitto's bridge bit (0x80 | 4).
const LEVEL_BRIDGE_311: u8 = 0x84;
/// Bytes read from the remote per read.
pub const READ_CHUNK: usize = 16 * 1024;

/// A remote connection after a successful CONNACK.
pub struct Connection {
    pub stream: RemoteStream,
    pub session_present: bool,
    /// The remote's Receive Maximum (5.0; else 65535).
    pub receive_maximum: u16,
    /// Bytes read after the CONNACK, not yet decoded.
    pub buf: BytesMut,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad address `{0}`")]
    Address(String),
    #[error("the remote closed the connection before CONNACK")]
    Closed,
    #[error("the remote's answer does not decode: {0}")]
    Decode(#[from] protocol::DecodeError),
    #[error("the remote sent {0} instead of CONNACK")]
    Unexpected(&'static str),
    #[error(
        "the remote refused the connection: reason 0x{0:02x} ({1}); check the bridge's \
         username, password, client_id and the remote's ACL"
    )]
    Refused(u8, &'static str),
    /// 3.1.1 with the bridge bit refused as an unacceptable protocol version.
    #[error("the remote refused the bridge protocol bit")]
    ProtocolRefused,
    #[error("no CONNACK within {0:?}")]
    Timeout(Duration),
}

fn refusal_text(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => "bad user name or password",
        ReasonCode::NOT_AUTHORIZED => "not authorized",
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => "client identifier not valid",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        ReasonCode::SERVER_UNAVAILABLE | ReasonCode::SERVER_BUSY => "server unavailable",
        ReasonCode::BANNED => "banned",
        _ => "see the remote's log",
    }
}

fn connect_packet(settings: &Settings) -> Connect {
    let bridge = &settings.bridge;
    let v5 = settings.version == Version::V5;
    Connect {
        version: settings.version,
        clean_start: bridge.clean_start,
        keep_alive_secs: bridge.keepalive_secs,
        client_id: ByteString::from(bridge.remote_client_id(&settings.name)),
        will: None,
        username: bridge.username.as_deref().map(ByteString::from),
        password: bridge
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes())),
        properties: if v5 {
            ConnectProperties {
                session_expiry_interval_secs: Some(bridge.session_expiry_secs),
                receive_maximum: Some(u16::MAX),
                ..ConnectProperties::default()
            }
        } else {
            ConnectProperties::default()
        },
    }
}

/// Sets the protocol level byte of the encoded CONNECT at the start of `buf`.
fn set_connect_level(buf: &mut BytesMut, level: u8) {
    // Fixed header: type byte, then the remaining length (1-4 bytes, high bit = more).
    let length_bytes = buf
        .iter()
        .skip(1)
        .take(4)
        .position(|byte| byte & 0x80 == 0)
        .map_or(4, |last| last + 1);
    // Then the protocol name "MQTT" with its 2-byte length, then the level.
    if let Some(byte) = buf.get_mut(1 + length_bytes + 6) {
        *byte = level;
    }
}

/// The `in` rules as one SUBSCRIBE with `packet_id`: No Local and Retain As Published on every
/// filter (5.0).
pub fn subscribe_packet(rules: &Rules, packet_id: crate::protocol::PacketId) -> Option<Packet> {
    let filters: Vec<SubscribeFilter> = rules
        .remote_filters()
        .into_iter()
        .map(|filter| SubscribeFilter {
            filter: ByteString::from(filter.filter),
            options: SubscriptionOptions {
                qos: filter.qos,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::OnSubscribe,
            },
        })
        .collect();
    (!filters.is_empty()).then(|| {
        Packet::Subscribe(Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            filters,
        })
    })
}

/// Connects to `address`: stream, CONNECT, CONNACK (checked), SUBSCRIBE of the `in` rules
/// with `subscribe_id` (an id no outbound flow uses).
pub async fn connect(
    settings: &Settings,
    address: &str,
    try_private: bool,
    subscribe_id: crate::protocol::PacketId,
) -> Result<Connection, Failure> {
    let (host, port) =
        split_host_port(address).ok_or_else(|| Failure::Address(address.to_owned()))?;
    let mut stream = remote::open(&host, port, settings.tls.as_ref()).await?;
    let mut out = BytesMut::new();
    let connect = Packet::Connect(Box::new(connect_packet(settings)));
    protocol::encode(&connect, settings.version, &mut out, usize::MAX)
        .map_err(|_| Failure::Unexpected("an unencodable CONNECT"))?;
    if try_private {
        set_connect_level(&mut out, LEVEL_BRIDGE_311);
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let connack = loop {
        if let Some(packet) =
            protocol::decode(&mut buf, settings.version, settings.packet_bytes_max)?
        {
            break packet;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Failure::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let Packet::ConnAck(connack) = connack else {
        return Err(Failure::Unexpected("another packet"));
    };
    if connack.reason.is_error() {
        if try_private && connack.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
            return Err(Failure::ProtocolRefused);
        }
        return Err(Failure::Refused(
            connack.reason.0,
            refusal_text(connack.reason),
        ));
    }
    let rules = Rules::new(settings.bridge.topics.clone());
    if let Some(subscribe) = subscribe_packet(&rules, subscribe_id) {
        out.clear();
        protocol::encode(&subscribe, settings.version, &mut out, usize::MAX)
            .map_err(|_| Failure::Unexpected("an unencodable SUBSCRIBE"))?;
        stream.write_all(&out).await?;
    }
    Ok(Connection {
        stream,
        session_present: connack.session_present,
        receive_maximum: connack.properties.receive_maximum.unwrap_or(u16::MAX),
        buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_bit_is_set_in_the_protocol_level() {
        let connect = Connect {
            version: Version::V3_1_1,
            clean_start: true,
            keep_alive_secs: 60,
            client_id: ByteString::from("b"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        let mut out = BytesMut::new();
        protocol::encode(
            &Packet::Connect(Box::new(connect)),
            Version::V3_1_1,
            &mut out,
            usize::MAX,
        )
        .unwrap();
        assert_eq!(out[8], 4);
        set_connect_level(&mut out, LEVEL_BRIDGE_311);
        assert_eq!(&out[2..9], b"\x00\x04MQTT\x84");
    }
}
