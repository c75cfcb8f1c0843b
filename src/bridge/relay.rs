//! The bridge's protocol core: packets between the local session and the remote broker, with
//! topics rewritten by the rules. Pure: packets in, packets out, `now` as an argument.
//!
//! Packet ids pass through unchanged in both directions. Outbound, the local session assigned
//! the id and keeps it in use until the bridge completes the flow locally, which it does only
//! when the remote completed it (PUBACK, PUBCOMP; PUBREC before the local PUBREL): an id is
//! never reused towards the remote while the remote still holds it. Inbound, the remote's id is
//! the id of the local publish, whose acknowledgements go back as the remote's. So QoS 1 and 2
//! hold end to end: the local publisher is acknowledged by its broker as usual, the local
//! session keeps the message until the remote has it, and the bridge's in-flight window
//! (`outflight`) is resent after a reconnect (DUP set; PUBREL for flows past PUBREC).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::rules::Rules;
use crate::protocol::{
    AckProperties, Packet, PacketId, PubResponse, Publish, PublishProps, QoS, ReasonCode, Version,
};

/// The user property counting how many bridges a message crossed (the hop guard, 5.0 only).
pub const HOPS_PROPERTY: &str = "ringmq-bridge-hops";

/// An outbound QoS 1/2 flow the remote has not completed.
#[derive(Debug)]
enum Outflight {
    /// Sent (or to be sent) to the remote; no PUBACK / PUBREC yet, or PUBREC but no local
    /// PUBREL yet.
    Published { publish: Publish, sent_at: Instant },
    /// PUBREL sent to the remote; waiting for PUBCOMP.
    Released { sent_at: Instant },
}

/// What the relay counted, for the bridge's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub messages_out: u64,
    pub messages_in: u64,
    pub payload_bytes_out: u64,
    pub payload_bytes_in: u64,
    /// Messages not forwarded: no rule matched, or the hop guard stopped them.
    pub dropped: u64,
    /// The remote's acknowledgements (PUBACK, PUBCOMP) and their summed round trip.
    pub acks: u64,
    pub ack_micros_total: u64,
    pub ack_micros_last: u64,
}

pub struct Relay {
    rules: Rules,
    remote_version: Version,
    hops_max: u8,
    outflight: BTreeMap<PacketId, Outflight>,
    /// QoS 1/2 publishes beyond the remote's Receive Maximum, in order.
    held: VecDeque<Publish>,
    window: usize,
    pub to_remote: Vec<Packet>,
    pub to_local: Vec<Packet>,
    pub counts: Counts,
}

fn response(packet_id: PacketId, reason: ReasonCode) -> PubResponse {
    PubResponse {
        packet_id,
        reason,
        properties: AckProperties::default(),
    }
}

fn hops_of(publish: &Publish) -> u8 {
    publish
        .properties
        .user_properties
        .iter()
        .find(|(key, _)| key == HOPS_PROPERTY)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

impl Relay {
    pub fn new(rules: Rules, remote_version: Version, hops_max: u8, window: usize) -> Relay {
        Relay {
            rules,
            remote_version,
            hops_max,
            outflight: BTreeMap::new(),
            held: VecDeque::new(),
            window: window.max(1),
            to_remote: Vec::new(),
            to_local: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Outbound QoS 1/2 messages not yet completed by the remote (sent or held).
    pub fn inflight(&self) -> usize {
        self.outflight.len() + self.held.len()
    }

    /// A packet id no outbound flow uses now, for the SUBSCRIBE of the `in` rules
    /// (MQTT-2.2.1-3: a new packet takes an unused id).
    pub fn free_packet_id(&self) -> PacketId {
        let held = |id: PacketId| self.held.iter().any(|p| p.packet_id == Some(id));
        (1..=u16::MAX)
            .filter_map(PacketId::new)
            .find(|id| !self.outflight.contains_key(id) && !held(*id))
            .unwrap_or(PacketId::MIN)
    }

    /// The remote connected: its Receive Maximum (capped by ours) and whether it kept the
    /// session. Every unfinished flow goes again: a PUBLISH with DUP set, or the PUBREL when the
    /// remote kept the session and had received the message.
    pub fn connected(&mut self, remote_window: usize, session_present: bool, now: Instant) {
        self.window = remote_window.max(1);
        // Flows queued before this connection (read while the bridge started or was away) are
        // all in `outflight` and go again below: a queued copy would reach the remote twice.
        self.to_remote.retain(|packet| match packet {
            Packet::Publish(publish) => publish.packet_id.is_none(),
            Packet::PubRel(_) => false,
            _ => true,
        });
        for (&packet_id, flow) in &mut self.outflight {
            match flow {
                Outflight::Published { publish, sent_at } => {
                    let mut again = publish.clone();
                    again.dup = true;
                    *sent_at = now;
                    self.to_remote.push(Packet::Publish(again));
                }
                Outflight::Released { sent_at } => {
                    *sent_at = now;
                    // Without the session the remote answers PUBCOMP with 0x92 (5.0), or just
                    // PUBCOMP: either completes the flow here.
                    let _ = session_present;
                    self.to_remote
                        .push(Packet::PubRel(response(packet_id, ReasonCode::SUCCESS)));
                }
            }
        }
        self.release_held(now);
    }

    fn release_held(&mut self, now: Instant) {
        while self.outflight.len() < self.window {
            let Some(publish) = self.held.pop_front() else {
                return;
            };
            self.send_tracked(publish, now);
        }
    }

    fn send_tracked(&mut self, publish: Publish, now: Instant) {
        if let Some(packet_id) = publish.packet_id {
            self.outflight.insert(
                packet_id,
                Outflight::Published {
                    publish: publish.clone(),
                    sent_at: now,
                },
            );
        }
        self.to_remote.push(Packet::Publish(publish));
    }

    /// A packet the local session wrote for the bridge.
    pub fn from_local(&mut self, packet: Packet, now: Instant) {
        match packet {
            Packet::Publish(publish) => self.outbound(publish, now),
            // Acknowledgements of inbound messages, in the remote's packet ids.
            packet @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                self.to_remote.push(packet);
            }
            Packet::PubRel(rel) => {
                let packet_id = rel.packet_id;
                match self.outflight.get_mut(&packet_id) {
                    Some(flow) => {
                        *flow = Outflight::Released { sent_at: now };
                        self.to_remote.push(Packet::PubRel(rel));
                    }
                    // Not known here: a flow of a previous run of the bridge (a restart, a
                    // reload) that the remote may hold, or one the bridge completed itself (a
                    // dropped message). The remote decides: PUBCOMP when it held the message,
                    // 0x92 (or a plain PUBCOMP, 3.1.1) when not; either completes it locally.
                    None => {
                        self.outflight
                            .insert(packet_id, Outflight::Released { sent_at: now });
                        self.to_remote.push(Packet::PubRel(rel));
                    }
                }
            }
            Packet::SubAck(suback) => {
                if let Some(reason) = suback.reasons.iter().find(|r| r.is_error()) {
                    tracing::warn!(
                        reason = reason.0,
                        "bridge: a local subscription was refused (check the ACL for the bridge's client id)"
                    );
                }
            }
            _ => {}
        }
    }

    fn outbound(&mut self, mut publish: Publish, now: Instant) {
        let rule = publish
            .properties
            .subscription_identifiers
            .first()
            .and_then(|id| usize::try_from(*id).ok())
            .and_then(|id| id.checked_sub(1));
        let hops = hops_of(&publish);
        let remote_topic = self.rules.outbound(rule, &publish.topic);
        let Some(remote_topic) =
            remote_topic.filter(|_| self.hops_max == 0 || hops < self.hops_max)
        else {
            self.counts.dropped += 1;
            self.complete_locally(&publish);
            return;
        };
        publish.topic = ByteString::from(remote_topic);
        publish.dup = false;
        publish.properties = if self.remote_version == Version::V5 {
            let mut properties = std::mem::take(&mut publish.properties).into_inner();
            properties.subscription_identifiers.clear();
            properties.topic_alias = None;
            if self.hops_max > 0 {
                properties
                    .user_properties
                    .retain(|(key, _)| key != HOPS_PROPERTY);
                properties.user_properties.push((
                    ByteString::from_static(HOPS_PROPERTY),
                    ByteString::from((hops + 1).to_string()),
                ));
            }
            PublishProps::from(properties)
        } else {
            PublishProps::none()
        };
        self.counts.messages_out += 1;
        self.counts.payload_bytes_out += publish.payload.len() as u64;
        if publish.qos == QoS::AtMostOnce {
            self.to_remote.push(Packet::Publish(publish));
        } else if self.outflight.len() < self.window && self.held.is_empty() {
            self.send_tracked(publish, now);
        } else {
            self.held.push_back(publish);
        }
    }

    /// Acknowledges locally a message the bridge does not forward.
    fn complete_locally(&mut self, publish: &Publish) {
        let Some(packet_id) = publish.packet_id else {
            return;
        };
        let ack = response(packet_id, ReasonCode::SUCCESS);
        self.to_local.push(match publish.qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        });
    }

    /// A packet from the remote broker. False when the remote ends the connection.
    pub fn from_remote(&mut self, packet: Packet, now: Instant) -> bool {
        match packet {
            Packet::Publish(publish) => self.inbound(publish),
            Packet::PubAck(ack) => {
                self.finish(ack.packet_id, now);
                self.to_local.push(Packet::PubAck(ack));
            }
            Packet::PubRec(rec) => {
                if rec.reason.is_error() {
                    self.finish(rec.packet_id, now);
                }
                self.to_local.push(Packet::PubRec(rec));
            }
            Packet::PubComp(comp) => {
                self.finish(comp.packet_id, now);
                self.to_local.push(Packet::PubComp(comp));
            }
            Packet::PubRel(rel) => self.to_local.push(Packet::PubRel(rel)),
            Packet::SubAck(suback) => {
                if let Some(reason) = suback.reasons.iter().find(|r| r.is_error()) {
                    tracing::warn!(
                        reason = reason.0,
                        "bridge: the remote refused a subscription of an `in` rule"
                    );
                }
            }
            Packet::Disconnect(disconnect) => {
                tracing::warn!(
                    reason = disconnect.reason.0,
                    "bridge: the remote sent DISCONNECT"
                );
                return false;
            }
            _ => {}
        }
        true
    }

    fn finish(&mut self, packet_id: PacketId, now: Instant) {
        let sent_at = match self.outflight.remove(&packet_id) {
            Some(Outflight::Published { sent_at, .. } | Outflight::Released { sent_at }) => sent_at,
            None => return,
        };
        let micros =
            u64::try_from(now.saturating_duration_since(sent_at).as_micros()).unwrap_or(u64::MAX);
        self.counts.acks += 1;
        self.counts.ack_micros_total = self.counts.ack_micros_total.saturating_add(micros);
        self.counts.ack_micros_last = micros;
        self.release_held(now);
    }

    fn inbound(&mut self, mut publish: Publish) {
        let Some(local_topic) = self.rules.inbound(&publish.topic) else {
            // Nothing of ours subscribed to it: acknowledge so the remote lets it go.
            self.counts.dropped += 1;
            if let Some(packet_id) = publish.packet_id {
                let ack = response(packet_id, ReasonCode::SUCCESS);
                self.to_remote.push(match publish.qos {
                    QoS::ExactlyOnce => Packet::PubRec(ack),
                    _ => Packet::PubAck(ack),
                });
            }
            return;
        };
        publish.topic = ByteString::from(local_topic);
        if !publish.properties.is_empty() {
            let mut properties = std::mem::take(&mut publish.properties).into_inner();
            properties.subscription_identifiers.clear();
            properties.topic_alias = None;
            publish.properties = PublishProps::from(properties);
        }
        self.counts.messages_in += 1;
        self.counts.payload_bytes_in += publish.payload.len() as u64;
        self.to_local.push(Packet::Publish(publish));
    }

    /// The oldest unacknowledged flow's age, for the keepalive check of a silent remote.
    pub fn oldest_sent(&self, now: Instant) -> Duration {
        self.outflight
            .values()
            .map(|flow| match flow {
                Outflight::Published { sent_at, .. } | Outflight::Released { sent_at } => {
                    now.saturating_duration_since(*sent_at)
                }
            })
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
