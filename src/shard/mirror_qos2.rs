//! QoS 2 from a client across the death of its node (docs/CLUSTER.md, "QoS 2 exchanges of a
//! client whose node dies"). MQTT 4.3.3: until the PUBREL, the receiver of a QoS 2 PUBLISH
//! acknowledges the same packet id again without delivering the message onward again, and once
//! it sent PUBCOMP the id is the client's to use for a new message. A client that resumes on
//! another node sends again what its node left unfinished: the PUBLISH whose PUBREC it did not
//! get (DUP), and the PUBREL whose PUBCOMP it did not get.
//!
//! So the packet ids awaiting PUBREL are part of a persistent session's mirror record, and the
//! acknowledgement that changes them waits for the record in the stream: the PUBREC (with the
//! id), as it waits for the message's stream copies, and the PUBCOMP (without it). The node
//! the client resumes on then acknowledges a PUBLISH sent again after its PUBREC without
//! routing it, answers its PUBREL as known, and never keeps an id the client may already use
//! again.

use super::{ConnId, SessionKey, Shard};
use crate::protocol::{Packet, PubResponse};

impl Shard {
    /// After the `route` of a QoS 2 PUBLISH of session `key` (its packet id now awaits PUBREL):
    /// the mirror record with the id, numbered, so that the PUBREC waits for it as for the
    /// route's other stream writes.
    pub(super) fn mirror_received_qos2(&mut self, key: SessionKey) {
        self.mirror_qos2_numbered(key);
    }

    /// PUBCOMP for a PUBREL of session `key`. When the id was known (`released`) and the
    /// session is mirrored, it waits for the mirror record without the id (a refused one
    /// closes the connection: its client sends the PUBREL again).
    pub(super) fn complete_qos2(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        pubcomp: PubResponse,
        released: bool,
    ) {
        let packet_id = pubcomp.packet_id.get();
        let packet = Packet::PubComp(pubcomp);
        let number = released.then(|| self.mirror_qos2_numbered(key)).flatten();
        match (number, self.cluster.as_mut()) {
            (Some(number), Some(cluster)) => {
                cluster.hold(conn, packet_id, number);
                self.write_ack(conn, packet);
            }
            _ => self.write_packet(conn, &packet),
        }
    }

    /// Sends session `key`'s mirror record numbered (none: not mirrored, or not waited for).
    fn mirror_qos2_numbered(&mut self, key: SessionKey) -> Option<u64> {
        let record = self.mirror_record(key)?;
        let me = self.id;
        let client_id = record.session.client_id.clone();
        self.cluster
            .as_mut()?
            .mirror_numbered(client_id, record, me)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use bytestring::ByteString;
    use shards::ShardId;

    use super::super::conn::Phase;
    use super::super::{ConnId, Event, Settings, Shard};
    use crate::cluster::{ClusterHandle, ToLink};
    use crate::config::Config;
    use crate::protocol::{
        Connect, Packet, PacketId, PubResponse, Publish, PublishProps, QoS, ReasonCode, Version,
    };

    const CONN: ConnId = 1;

    fn handle(shard: &mut Shard, packet: Packet) {
        let now = Instant::now();
        shard.handle(Event::Packet { conn: CONN, packet }, now);
        shard.handle_own_mail(now);
    }

    /// A shard with a persistent 5.0 session of client `c` on connection `CONN`, mirrored.
    fn mirrored_shard() -> (Shard, flume::Receiver<ToLink>) {
        let settings = Arc::new(Settings::from_config(&Config::default(), 1));
        let mut shard = Shard::new(ShardId::new(0), 1, settings);
        let (cluster, _, inbox) = ClusterHandle::with_inbox(1);
        cluster.stats.connected.store(true, Ordering::Release);
        shard.set_cluster(cluster);
        let peer = ([127, 0, 0, 1], 1024).into();
        shard.handle(Event::Accepted { conn: CONN, peer }, Instant::now());
        let mut connect = Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive_secs: 60,
            client_id: ByteString::from("c"),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        };
        connect.properties.session_expiry_interval_secs = Some(3600);
        handle(&mut shard, Packet::Connect(Box::new(connect)));
        (shard, inbox)
    }

    fn awaiting(shard: &Shard) -> Vec<u16> {
        let Some(Phase::Active { session }) = shard.conn(CONN).map(|c| &c.phase) else {
            panic!("connection not active");
        };
        shard
            .sessions
            .get(*session)
            .expect("session")
            .state
            .incoming_qos2()
            .collect()
    }

    /// A PUBCOMP whose mirror record the stream refused closes the connection and puts the id
    /// back, in the session and in a mirror record: the PUBREL sent again finds it known.
    #[test]
    fn a_refused_pubcomp_puts_its_packet_id_back() {
        let (mut shard, inbox) = mirrored_shard();
        let id = PacketId::new(7).expect("non-zero");
        let publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: ByteString::from("t"),
            packet_id: Some(id),
            properties: PublishProps::none(),
            payload: bytes::Bytes::from_static(b"x"),
        };
        handle(&mut shard, Packet::Publish(publish));
        assert_eq!(awaiting(&shard), [7]);
        shard.on_cluster_stored(1, true, &[]);
        let pubrel = PubResponse {
            packet_id: id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        };
        handle(&mut shard, Packet::PubRel(pubrel));
        assert!(awaiting(&shard).is_empty(), "released");
        assert!(!shard.conn(CONN).is_some_and(|c| c.is_closing()));
        shard.on_cluster_stored(2, true, &[2]);
        assert!(shard.conn(CONN).is_some_and(|c| c.is_closing()));
        assert_eq!(awaiting(&shard), [7], "the id awaits PUBREL again");
        let last = inbox
            .drain()
            .filter_map(|mail| match mail {
                ToLink::Session { record, .. } => Some(record.map(|r| r.incoming_qos2)),
                _ => None,
            })
            .last();
        assert_eq!(last, Some(Some(vec![7])), "the mirror keeps it again");
    }
}
