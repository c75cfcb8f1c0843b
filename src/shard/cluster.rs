//! The shard's hooks into the cluster (docs/CLUSTER.md): a PUBACK or PUBREC of a message that
//! went to the stream for other nodes waits until the stream holds it, after any wait for the
//! local log, and acknowledgements keep their order behind it.

use super::{ConnId, Shard};
use crate::cluster::Routed;
use crate::protocol::Packet;

impl Shard {
    /// Acknowledges a PUBLISH just handled (`routed`: it was routed now, not a repeated QoS 2):
    /// refused when the link could not take it for the other nodes, held for the stream when the
    /// link took it, then through the local log's wait as any acknowledgement.
    pub(super) fn ack_after_cluster(&mut self, conn: ConnId, packet: Packet, routed: bool) {
        if routed && let Some(cluster) = self.cluster.as_mut() {
            match cluster.routed() {
                Routed::Refused => return self.refuse_ack(conn, packet),
                Routed::Stored(number) => {
                    if let Packet::PubAck(ack) | Packet::PubRec(ack) = &packet {
                        cluster.hold(conn, ack.packet_id.get(), number);
                    }
                }
                Routed::Free => {}
            }
        }
        self.ack_when_durable(conn, packet);
    }

    /// Writes an acknowledgement the local log no longer holds, unless it waits for the stream
    /// (or behind one that does).
    pub(super) fn write_ack(&mut self, conn: ConnId, packet: Packet) {
        let passed = match self.cluster.as_mut() {
            Some(cluster) => cluster.pass(conn, packet),
            None => Some((packet, true)),
        };
        match passed {
            Some((packet, true)) => self.write_packet(conn, &packet),
            Some((packet, false)) => self.refuse_ack(conn, packet),
            None => {}
        }
    }

    /// The link's answer for this shard's messages numbered up to `upto`.
    pub(super) fn on_cluster_stored(&mut self, upto: u64, ok: bool) {
        let mut released = Vec::new();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.stored(upto, ok, &mut released);
        }
        for (conn, packet, ok) in released {
            if ok {
                self.write_packet(conn, &packet);
            } else {
                self.refuse_ack(conn, packet);
            }
        }
    }
}
