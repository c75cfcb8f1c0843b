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
