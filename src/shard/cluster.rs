//! The shard's hooks into the cluster (docs/CLUSTER.md): a PUBACK or PUBREC of a message that
//! went to the stream for other nodes waits until the stream holds it, after any wait for the
//! local log, and acknowledgements keep their order behind it.

use std::time::Instant;

use bytestring::ByteString;

use super::conn::Phase;
use super::{ConnId, Shard};
use crate::cluster::{Routed, ToLink};
use crate::protocol::{Disconnect, Packet, ReasonCode};

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

    /// Refuses an acknowledgement the local log could not keep, through the link's order when
    /// the cluster is on (so its entry there goes too).
    pub(super) fn refuse_ack_in_order(&mut self, conn: ConnId, packet: Packet) {
        let passed = match self.cluster.as_mut() {
            Some(cluster) => cluster.pass_refused(conn, packet),
            None => Some(packet),
        };
        if let Some(packet) = passed {
            self.refuse_ack(conn, packet);
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

    /// Tells the link that one more message from another node is routed and durable here.
    pub(super) fn count_routed_remote(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.routed_remote(self.id);
        }
    }

    /// A client connected here (its CONNECT arrived `at`): the other nodes end their older
    /// connection of it (a client id is unique in the cluster; docs/CLUSTER.md).
    pub(super) fn cluster_claim(&self, client_id: &ByteString, at: Instant) {
        if let Some(cluster) = &self.cluster {
            cluster.handle().control(ToLink::Claim {
                client_id: client_id.clone(),
                at,
            });
        }
    }

    /// `client_id` connected on another node at `at`: its connection here, if older, is taken
    /// over (5.0: DISCONNECT 0x8E), its will is due, and its session here ends (it does not
    /// move: the client finds a new session on the other node unless that node had one).
    pub(super) fn on_remote_claim(&mut self, client_id: ByteString, at: Instant, now: Instant) {
        let Some(key) = self.sessions_by_client.get(&client_id).copied() else {
            return;
        };
        let newer = self
            .sessions
            .get(key)
            .and_then(|s| s.conn)
            .and_then(|conn| self.conns.get(&conn))
            .is_some_and(|conn| conn.connect_at >= at);
        if newer {
            return;
        }
        self.metrics.counts.sessions_taken_over += 1;
        if let Some(conn_id) = self.sessions.get(key).and_then(|s| s.conn) {
            let is_v5 = self
                .conns
                .get(&conn_id)
                .is_some_and(|c| c.version.is_v5() && matches!(c.phase, Phase::Active { .. }));
            if is_v5 {
                let disconnect = Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SESSION_TAKEN_OVER,
                    properties: Default::default(),
                });
                self.write_packet(conn_id, &disconnect);
            }
            self.will_on_takeover(conn_id, client_id, false, now);
            self.end_connection_taken_over(conn_id, now);
        }
        self.end_session(key, now);
    }
}
