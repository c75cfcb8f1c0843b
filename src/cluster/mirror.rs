//! The session mirror (docs/CLUSTER.md, "Persistent sessions surviving a node"): each node keeps
//! its persistent sessions' own data (the store's `Session` record) in a JetStream stream, one
//! message per client id, so that a client whose node died resumes on another node with its
//! subscriptions.
//!
//! A message is `node_len: u8 | node | client_id_len: u16 BE | client_id | record`, the record
//! empty when the session is gone. Decoding never panics on what is on the subject.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::session::SessionState;
use crate::store::record::{self, Record, SessionRecord};

/// A mirror message read back: who wrote it, for which client id, and the session (`None`:
/// gone).
#[derive(Debug)]
pub struct Mirrored {
    pub node: String,
    pub client_id: ByteString,
    pub record: Option<Box<SessionRecord>>,
}

/// The mirror message of `client_id` written by `node`: its session's record, or (`None`) gone.
/// `None` when an id is too long for the format.
pub fn encode(node: &str, client_id: &str, session: Option<&SessionRecord>) -> Option<Bytes> {
    let node_len = u8::try_from(node.len()).ok()?;
    let client_len = u16::try_from(client_id.len()).ok()?;
    let mut record = Vec::new();
    if let Some(session) = session {
        record::encode(&Record::Session(session.clone()), &mut record);
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
            Some(Box::new(session))
        }
        _ => return None,
    };
    Some(Mirrored {
        node,
        client_id,
        record,
    })
}

/// A session made from its mirrored record: its subscriptions, without anything it held.
pub fn state_from(session: SessionRecord) -> SessionState {
    let mut state = SessionState::new(session.client_id, session.version, session.expiry_secs);
    state.username = session.username;
    state.subscriptions = session.subscriptions.into_iter().collect();
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, SubscriptionOptions, Version};
    use crate::session::Subscription;

    fn session() -> SessionRecord {
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
    fn a_session_made_from_its_record_has_its_subscriptions() {
        let state = state_from(session());
        assert_eq!(state.expiry_secs, 600);
        assert_eq!(state.username.as_deref(), Some("user"));
        let subscription = state.subscriptions.get("a/+").unwrap();
        assert_eq!(subscription.identifier, Some(7));
        assert_eq!(subscription.options.qos, QoS::ExactlyOnce);
    }
}
