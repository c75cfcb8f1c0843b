//! The session mirror (docs/CLUSTER.md, "Persistent sessions surviving a node"): each node keeps
//! its persistent sessions' own data (the store's `Session` record) in a JetStream stream, one
//! message per client id, so that a client whose node died resumes on another node with its
//! subscriptions, and with the QoS 2 exchanges its client started and not finished.
//!
//! A message is `node_len: u8 | node | client_id_len: u16 BE | client_id | records`, the
//! records empty when the session is gone, else its `Session` record followed by one
//! `IncomingQos2` record (awaiting) per packet id of a QoS 2 PUBLISH from its client that
//! awaits PUBREL (none in messages of nodes before this was mirrored, and a node of that
//! version reads the `Session` record and ignores the rest). Decoding never panics on what is
//! on the subject.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::PacketId;
use crate::session::SessionState;
use crate::store::record::{self, Record, SessionRecord};

/// A persistent session as the mirror keeps it: the store's record of its own data, and the
/// packet ids of its client's QoS 2 PUBLISHes awaiting PUBREL (so that on another node a
/// PUBLISH sent again is not routed again, and the PUBREL is answered as known).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRecord {
    pub session: SessionRecord,
    pub incoming_qos2: Vec<u16>,
}

/// A mirror message read back: who wrote it, for which client id, and the session (`None`:
/// gone).
#[derive(Debug)]
pub struct Mirrored {
    pub node: String,
    pub client_id: ByteString,
    pub record: Option<Box<MirrorRecord>>,
}

/// The mirror message of `client_id` written by `node`: its session's record, or (`None`) gone.
/// `None` when an id is too long for the format.
pub fn encode(node: &str, client_id: &str, session: Option<&MirrorRecord>) -> Option<Bytes> {
    let node_len = u8::try_from(node.len()).ok()?;
    let client_len = u16::try_from(client_id.len()).ok()?;
    let mut record = Vec::new();
    if let Some(mirrored) = session {
        let session = &mirrored.session;
        record::encode(&Record::Session(session.clone()), &mut record);
        for packet_id in mirrored
            .incoming_qos2
            .iter()
            .filter_map(|id| PacketId::new(*id))
        {
            let awaiting = Record::IncomingQos2 {
                client_id: session.client_id.clone(),
                packet_id,
                awaiting: true,
            };
            record::encode(&awaiting, &mut record);
        }
    }
    let mut out = BytesMut::with_capacity(3 + node.len() + client_id.len() + record.len());
    out.put_u8(node_len);
    out.put_slice(node.as_bytes());
    out.put_u16(client_len);
    out.put_slice(client_id.as_bytes());
    out.put_slice(&record);
    Some(out.freeze())
}

pub fn decode(mut payload: Bytes) -> Option<Mirrored> {
    if payload.remaining() < 1 {
        return None;
    }
    let node_len = usize::from(payload.get_u8());
    if payload.remaining() < node_len + 2 {
        return None;
    }
    let node = String::from_utf8(payload.split_to(node_len).to_vec()).ok()?;
    let client_len = usize::from(payload.get_u16());
    if payload.remaining() < client_len {
        return None;
    }
    let client_id = ByteString::try_from(payload.split_to(client_len)).ok()?;
    let record = match record::decode(&mut payload) {
        Ok(None) if payload.is_empty() => None,
        Ok(Some(Record::Session(session))) if session.client_id == client_id => {
            let incoming_qos2 = awaiting_ids(&mut payload, &client_id)?;
            Some(Box::new(MirrorRecord {
                session,
                incoming_qos2,
            }))
        }
        _ => return None,
    };
    Some(Mirrored {
        node,
        client_id,
        record,
    })
}

/// The packet ids after a session's record: the awaiting `IncomingQos2` records of the same
/// client id. A whole record of any other kind (one a newer node may add) is skipped, so that
/// the session is kept; a record cut short or failing its checksum refuses the message.
fn awaiting_ids(payload: &mut Bytes, client_id: &ByteString) -> Option<Vec<u16>> {
    let mut ids = Vec::new();
    // At most one record per packet id is written; the bound also covers skipped records.
    for _ in 0..u16::MAX {
        match record::decode(payload) {
            Ok(None) => return Some(ids),
            Ok(Some(Record::IncomingQos2 {
                client_id: of,
                packet_id,
                awaiting: true,
            })) if of == *client_id => ids.push(packet_id.get()),
            // Decoded or of an unknown type, the record was read whole: skipped.
            Ok(Some(_)) | Err(record::RecordError::UnknownType(_)) => {}
            Err(_) => return None,
        }
    }
    payload.is_empty().then_some(ids)
}

/// A session made from its mirrored record: its subscriptions and its client's QoS 2 packet
/// ids awaiting PUBREL, without any message it held (those come from the stream of queued
/// messages).
pub fn state_from(mirrored: MirrorRecord) -> SessionState {
    let MirrorRecord {
        session,
        incoming_qos2,
    } = mirrored;
    let mut state = SessionState::new(session.client_id, session.version, session.expiry_secs);
    state.username = session.username;
    state.subscriptions = session.subscriptions.into_iter().collect();
    for packet_id in incoming_qos2.into_iter().filter_map(PacketId::new) {
        state.receive_qos2(packet_id);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, SubscriptionOptions, Version};
    use crate::session::Subscription;

    fn session() -> MirrorRecord {
        MirrorRecord {
            session: session_record(),
            incoming_qos2: Vec::new(),
        }
    }

    fn session_record() -> SessionRecord {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..Default::default()
        };
        SessionRecord {
            stamp: 0,
            client_id: "client-1".into(),
            username: Some("user".into()),
            version: Version::V5,
            expiry_secs: 600,
            expires_at_ms: Some(1_700_000_000_000),
            next_seq: 1,
            subscriptions: vec![(
                "a/+".into(),
                Subscription {
                    options,
                    identifier: Some(7),
                    read_granted_generation: 0,
                },
            )],
        }
    }

    #[test]
    fn a_mirror_message_reads_back_as_written_and_garbage_is_refused() {
        let written = encode("n1", "client-1", Some(&session())).unwrap();
        let read = decode(written.clone()).unwrap();
        assert_eq!(read.node, "n1");
        assert_eq!(&read.client_id[..], "client-1");
        assert_eq!(read.record.as_deref(), Some(&session()));
        let gone = decode(encode("n2", "client-1", None).unwrap()).unwrap();
        assert_eq!((gone.node.as_str(), gone.record), ("n2", None));
        // A record of another client id under this one, and every cut of a message, are refused.
        assert!(decode(encode("n1", "client-2", Some(&session())).unwrap()).is_none());
        // (Cut right after the client id it reads as the session gone: the record is optional.)
        let ids = 1 + 2 + 2 + 8;
        for cut in 0..written.len() {
            let short = decode(written.slice(..cut));
            assert!(
                short.is_none_or(|m| m.record.is_none() && cut == ids),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn the_qos_2_ids_awaiting_pubrel_read_back_and_come_into_the_session() {
        let mut mirrored = session();
        mirrored.incoming_qos2 = vec![1, 700, 65_535];
        let written = encode("n1", "client-1", Some(&mirrored)).unwrap();
        let read = decode(written.clone()).unwrap();
        assert_eq!(read.record.as_deref(), Some(&mirrored));
        // A cut inside the ids is refused; a cut between records reads the ids before it.
        let whole = encode("n1", "client-1", Some(&session())).unwrap().len();
        for cut in whole..written.len() {
            let short = decode(written.slice(..cut));
            let between = (cut - whole).is_multiple_of((written.len() - whole) / 3);
            assert_eq!(short.is_some(), between, "cut {cut}");
        }
        let mut state = state_from(mirrored);
        let mut ids: Vec<u16> = state.incoming_qos2().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 700, 65_535]);
        assert!(
            !state.receive_qos2(PacketId::new(700).unwrap()),
            "a PUBLISH sent again is known"
        );
        assert!(
            state.release_qos2(PacketId::new(1).unwrap()),
            "a PUBREL is known"
        );
    }

    /// A record after the session's that is not an awaiting id of its client (another kind,
    /// another client id, or a type this node does not know) is skipped: the session and its
    /// ids are kept.
    #[test]
    fn records_of_other_kinds_after_the_session_are_skipped() {
        let mut mirrored = session();
        mirrored.incoming_qos2 = vec![5];
        let mut written = encode("n1", "client-1", Some(&mirrored)).unwrap().to_vec();
        let foreign = Record::IncomingQos2 {
            client_id: "client-2".into(),
            packet_id: PacketId::new(3).unwrap(),
            awaiting: true,
        };
        record::encode(&foreign, &mut written);
        record::encode(&Record::SnapshotEnd, &mut written);
        // A type no node writes yet: length, checksum, then its body.
        let unknown = [0xEE_u8, 1, 2];
        written.extend_from_slice(&u32::try_from(unknown.len()).unwrap().to_le_bytes());
        written.extend_from_slice(&crc32fast::hash(&unknown).to_le_bytes());
        written.extend_from_slice(&unknown);
        let mut after = Vec::new();
        let awaiting = Record::IncomingQos2 {
            client_id: "client-1".into(),
            packet_id: PacketId::new(9).unwrap(),
            awaiting: true,
        };
        record::encode(&awaiting, &mut after);
        written.extend_from_slice(&after);
        let read = decode(Bytes::from(written.clone())).expect("kept");
        mirrored.incoming_qos2 = vec![5, 9];
        assert_eq!(read.record.as_deref(), Some(&mirrored));
        // A record cut short still refuses the message.
        written.truncate(written.len() - 1);
        assert!(decode(Bytes::from(written)).is_none());
    }

    #[test]
    fn a_session_made_from_its_record_has_its_subscriptions() {
        let state = state_from(session());
        assert_eq!(state.expiry_secs, 600);
        assert_eq!(state.username.as_deref(), Some("user"));
        let subscription = state.subscriptions.get("a/+").unwrap();
        assert_eq!(subscription.identifier, Some(7));
        assert_eq!(subscription.options.qos, QoS::ExactlyOnce);
    }
}
