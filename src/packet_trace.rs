//! The packet trace: one `trace`-level event per MQTT packet received or sent, under the target
//! `ringmq::packets` (`RUST_LOG=ringmq::packets=trace`), for debugging one client's conversation.
//!
//! Each event names the connection, the client id, the direction, the packet type, and what the
//! type carries: packet id, topic (or the filters of a SUBSCRIBE/UNSUBSCRIBE), QoS, flags, reason
//! codes, and the payload cut at 256 characters (text when it is UTF-8, hex otherwise; text fields
//! are quoted and escaped, so a payload cannot forge log lines). A CONNECT
//! shows whether a username and a password are present, never their values.
//!
//! Off, it costs one `enabled` check per batch of packets (a cached per-callsite interest, no
//! clock, no allocation). On, it formats every packet and re-decodes what is written: it is for
//! debugging, not for production traffic.

use std::fmt::{self, Display, Write};

use bytes::Bytes;

use crate::metrics::PacketKind;
use crate::protocol::{Packet, ReasonCode};

/// Characters of payload shown before it is cut.
pub const PAYLOAD_CHARS_MAX: usize = 256;

/// Whether packet trace events are wanted now. Check it once per batch, before any work.
pub fn enabled() -> bool {
    tracing::enabled!(target: "ringmq::packets", tracing::Level::TRACE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Received => "received",
            Direction::Sent => "sent",
        }
    }
}

/// Emits the trace event of one packet.
pub fn packet(direction: Direction, conn: u64, client_id: &str, packet: &Packet) {
    let summary = Summary::of(packet);
    tracing::trace!(
        target: "ringmq::packets",
        conn,
        client_id,
        direction = direction.label(),
        r#type = summary.kind,
        packet_id = %Maybe(summary.packet_id),
        topic = %Quoted(summary.topic.as_deref()),
        qos = %Maybe(summary.qos),
        detail = ?summary.detail,
        payload = %Quoted(summary.payload.as_deref()),
        "packet"
    );
}

/// What a trace event shows of one packet.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub kind: &'static str,
    pub packet_id: Option<u16>,
    /// The topic, or the filters of a SUBSCRIBE or UNSUBSCRIBE separated by spaces.
    pub topic: Option<String>,
    pub qos: Option<u8>,
    /// Flags and reason codes, `key=value` separated by spaces.
    pub detail: String,
    pub payload: Option<String>,
}

impl Summary {
    pub fn of(packet: &Packet) -> Summary {
        let mut summary = Summary {
            kind: PacketKind::of(packet).label(),
            ..Summary::default()
        };
        let detail = &mut summary.detail;
        // Writing to a String cannot fail.
        match packet {
            Packet::Connect(connect) => {
                let _ = write!(
                    detail,
                    "version={:?} clean_start={} keep_alive={} username={} password={}",
                    connect.version,
                    connect.clean_start,
                    connect.keep_alive_secs,
                    present(connect.username.is_some()),
                    present(connect.password.is_some()),
                );
                if let Some(will) = &connect.will {
                    let _ = write!(
                        detail,
                        " will_topic={} will_qos={}",
                        will.topic,
                        will.qos.as_u8()
                    );
                }
            }
            Packet::ConnAck(connack) => {
                let _ = write!(
                    detail,
                    "session_present={} reason={}",
                    connack.session_present,
                    reason(connack.reason)
                );
            }
            Packet::Publish(publish) => {
                summary.packet_id = publish.packet_id.map(|id| id.get());
                summary.topic = Some(publish.topic.to_string());
                summary.qos = Some(publish.qos.as_u8());
                summary.payload = Some(payload_text(&publish.payload));
                let _ = write!(
                    detail,
                    "retain={} dup={} bytes={}",
                    publish.retain,
                    publish.dup,
                    publish.payload.len()
                );
                if let Some(alias) = publish.properties.topic_alias {
                    let _ = write!(detail, " topic_alias={alias}");
                }
            }
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => {
                summary.packet_id = Some(ack.packet_id.get());
                let _ = write!(detail, "reason={}", reason(ack.reason));
            }
            Packet::Subscribe(subscribe) => {
                summary.packet_id = Some(subscribe.packet_id.get());
                let filters = subscribe.filters.iter().map(|f| &*f.filter);
                summary.topic = Some(joined(filters));
                let qos = subscribe.filters.iter().map(|f| f.options.qos.as_u8());
                let _ = write!(detail, "qos={}", joined(qos));
            }
            Packet::SubAck(suback) => {
                summary.packet_id = Some(suback.packet_id.get());
                let _ = write!(
                    detail,
                    "reasons={}",
                    joined(suback.reasons.iter().map(|r| reason(*r)))
                );
            }
            Packet::Unsubscribe(unsubscribe) => {
                summary.packet_id = Some(unsubscribe.packet_id.get());
                summary.topic = Some(joined(unsubscribe.filters.iter()));
            }
            Packet::UnsubAck(unsuback) => {
                summary.packet_id = Some(unsuback.packet_id.get());
                if !unsuback.reasons.is_empty() {
                    let reasons = unsuback.reasons.iter().map(|r| reason(*r));
                    let _ = write!(detail, "reasons={}", joined(reasons));
                }
            }
            Packet::Disconnect(disconnect) => {
                let _ = write!(detail, "reason={}", reason(disconnect.reason));
            }
            Packet::Auth(auth) => {
                let _ = write!(detail, "reason={}", reason(auth.reason));
            }
            Packet::PingReq | Packet::PingResp => {}
        }
        summary
    }
}

/// A payload for a log line: UTF-8 text as is, anything else as hex; cut at
/// `PAYLOAD_CHARS_MAX` characters, with `…` when cut.
pub fn payload_text(payload: &Bytes) -> String {
    let mut text = String::new();
    let cut = match std::str::from_utf8(payload) {
        Ok(utf8) => {
            text.extend(utf8.chars().take(PAYLOAD_CHARS_MAX));
            utf8.chars().nth(PAYLOAD_CHARS_MAX).is_some()
        }
        Err(_) => {
            for byte in payload.iter().take(PAYLOAD_CHARS_MAX / 2) {
                let _ = write!(text, "{byte:02x}");
            }
            payload.len() > PAYLOAD_CHARS_MAX / 2
        }
    };
    if cut {
        text.push('…');
    }
    text
}

fn present(is_present: bool) -> &'static str {
    if is_present { "present" } else { "absent" }
}

fn reason(code: ReasonCode) -> String {
    format!("0x{:02x}", code.0)
}

fn joined<T: Display>(items: impl Iterator<Item = T>) -> String {
    let mut text = String::new();
    for (index, item) in items.enumerate() {
        if index > 0 {
            text.push(' ');
        }
        let _ = write!(text, "{item}");
    }
    text
}

/// An optional text field: quoted and escaped (a payload cannot forge log lines), or `-`.
struct Quoted<T>(Option<T>);

impl<T: fmt::Debug> Display for Quoted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// An optional field: its value, or `-`.
struct Maybe<T>(Option<T>);

impl<T: Display> Display for Maybe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests;
