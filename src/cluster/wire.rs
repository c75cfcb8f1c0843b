//! What the nodes say to each other on NATS (docs/CLUSTER.md, "Subjects and wire format"): batches
//! of messages as MQTT 5.0 PUBLISH frames, and the small tagged records of interest replication.
//! Decoding never panics on what another node (or anything else on the subject) sent.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::{self, Packet, PacketId, PublishRef, QoS, Version};

/// Largest frame a record may carry (NATS's own `max_payload` is lower by default).
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Appends one message record to a batch: origin shard, publisher, the shared subscription it
/// is for (`$share/{group}/{filter}`: one member of that group on the receiving node takes it;
/// empty: every other subscriber there), PUBLISH frame. False (and nothing appended) when the
/// message cannot be encoded.
pub fn put_message(
    batch: &mut BytesMut,
    message: &Message,
    origin_shard: u8,
    share: Option<&str>,
    now: Instant,
) -> bool {
    let mut properties = message.properties.clone();
    let remaining = message.remaining_expiry_secs(now);
    if remaining.is_some() || properties.message_expiry_interval_secs.is_some() {
        properties.make_mut().message_expiry_interval_secs = remaining;
    }
    let publish = PublishRef {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: &message.topic,
        packet_id: (message.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        properties: &properties,
        payload: &message.payload,
    };
    let share = share.unwrap_or_default();
    let (Ok(publisher_len), Ok(share_len)) = (
        u16::try_from(message.publisher.len()),
        u16::try_from(share.len()),
    ) else {
        return false;
    };
    let start = batch.len();
    batch.put_u8(origin_shard);
    batch.put_u16(publisher_len);
    batch.put_slice(message.publisher.as_bytes());
    batch.put_u16(share_len);
    batch.put_slice(share.as_bytes());
    let len_at = batch.len();
    batch.put_u32(0);
    match protocol::encode_publish(&publish, Version::V5, batch, FRAME_BYTES_MAX) {
        Ok(written) => {
            let written = written as u32;
            batch[len_at..len_at + 4].copy_from_slice(&written.to_be_bytes());
            true
        }
        Err(_) => {
            batch.truncate(start);
            false
        }
    }
}

/// One message read from a batch: the origin shard (to pick the receiving shard), the shared
/// subscription it is for, if any, and the message.
pub struct Received {
    pub origin_shard: u8,
    pub share: Option<ByteString>,
    pub message: Arc<Message>,
}

/// Reads the next record of a batch; `None` at its end or at the first record that does not
/// decode (the rest of the batch is dropped: a record boundary cannot be found again).
pub fn next_message(batch: &mut Bytes, id: u64, now: Instant) -> Option<Received> {
    if batch.remaining() < 3 {
        return None;
    }
    let origin_shard = batch.get_u8();
    let publisher_len = usize::from(batch.get_u16());
    if batch.remaining() < publisher_len + 2 {
        return None;
    }
    let publisher = ByteString::try_from(batch.split_to(publisher_len)).ok()?;
    let share_len = usize::from(batch.get_u16());
    if batch.remaining() < share_len + 4 {
        return None;
    }
    let share = ByteString::try_from(batch.split_to(share_len)).ok()?;
    let share = (!share.is_empty()).then_some(share);
    let frame_len = batch.get_u32() as usize;
    if batch.remaining() < frame_len {
        return None;
    }
    let mut frame = BytesMut::from(batch.split_to(frame_len));
    let Ok(Some(Packet::Publish(publish))) =
        protocol::decode(&mut frame, Version::V5, FRAME_BYTES_MAX)
    else {
        return None;
    };
    Some(Received {
        origin_shard,
        share,
        message: Message::from_publish(id, publish, publisher, now),
    })
}

/// Interest replication and its control records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// On the interest subject: a node's interest changed.
    Delta {
        node: String,
        incarnation: u64,
        seq: u64,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// On the interest subject: a node is alive, at this point of its interest.
    Heartbeat {
        node: String,
        incarnation: u64,
        seq: u64,
    },
    /// To a node: send me your whole interest.
    SnapshotRequest { from: String },
    /// To a node that asked: the sender's whole interest at `seq`.
    Snapshot {
        node: String,
        incarnation: u64,
        seq: u64,
        filters: Vec<String>,
    },
    /// To a node: its interest up to `seq` of `incarnation` is in force on `from`.
    Ack {
        from: String,
        incarnation: u64,
        seq: u64,
    },
    /// On the interest subject: `client_id` has connected on `node` at `at_us` (microseconds
    /// since the Unix epoch); any other node ends its older connection and its session of that
    /// client (a client id is unique in the cluster).
    Claim {
        node: String,
        client_id: String,
        at_us: u64,
    },
}

const DELTA: u8 = 1;
const HEARTBEAT: u8 = 2;
const SNAPSHOT_REQUEST: u8 = 3;
const SNAPSHOT: u8 = 4;
const ACK: u8 = 5;
const CLAIM: u8 = 6;

fn put_str(buf: &mut BytesMut, text: &str) {
    // Filters and node ids are at most 65535 bytes (MQTT strings, validated tokens).
    let len = text.len().min(usize::from(u16::MAX));
    buf.put_u16(len as u16);
    buf.put_slice(&text.as_bytes()[..len]);
}

fn put_list(buf: &mut BytesMut, list: &[String]) {
    buf.put_u32(list.len() as u32);
    for item in list {
        put_str(buf, item);
    }
}

fn get_str(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::from(buf.get_u16());
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

fn get_u64(buf: &mut Bytes) -> Option<u64> {
    (buf.remaining() >= 8).then(|| buf.get_u64())
}

fn get_list(buf: &mut Bytes) -> Option<Vec<String>> {
    if buf.remaining() < 4 {
        return None;
    }
    let count = buf.get_u32() as usize;
    // Each item takes at least two bytes: a count beyond that is a lie, not an allocation.
    if count > buf.remaining() / 2 {
        return None;
    }
    (0..count).map(|_| get_str(buf)).collect()
}

impl Control {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Control::Delta {
                node,
                incarnation,
                seq,
                add,
                remove,
            } => {
                buf.put_u8(DELTA);
                put_str(&mut buf, node);
                buf.put_u64(*incarnation);
                buf.put_u64(*seq);
                put_list(&mut buf, add);
                put_list(&mut buf, remove);
            }
            Control::Heartbeat {
                node,
                incarnation,
                seq,
            } => {
                buf.put_u8(HEARTBEAT);
                put_str(&mut buf, node);
                buf.put_u64(*incarnation);
                buf.put_u64(*seq);
            }
            Control::SnapshotRequest { from } => {
                buf.put_u8(SNAPSHOT_REQUEST);
                put_str(&mut buf, from);
            }
            Control::Snapshot {
                node,
                incarnation,
                seq,
                filters,
            } => {
                buf.put_u8(SNAPSHOT);
                put_str(&mut buf, node);
                buf.put_u64(*incarnation);
                buf.put_u64(*seq);
                put_list(&mut buf, filters);
            }
            Control::Ack {
                from,
                incarnation,
                seq,
            } => {
                buf.put_u8(ACK);
                put_str(&mut buf, from);
                buf.put_u64(*incarnation);
                buf.put_u64(*seq);
            }
            Control::Claim {
                node,
                client_id,
                at_us,
            } => {
                buf.put_u8(CLAIM);
                put_str(&mut buf, node);
                put_str(&mut buf, client_id);
                buf.put_u64(*at_us);
            }
        }
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Option<Control> {
        if !buf.has_remaining() {
            return None;
        }
        let buf = &mut buf;
        Some(match buf.get_u8() {
            DELTA => Control::Delta {
                node: get_str(buf)?,
                incarnation: get_u64(buf)?,
                seq: get_u64(buf)?,
                add: get_list(buf)?,
                remove: get_list(buf)?,
            },
            HEARTBEAT => Control::Heartbeat {
                node: get_str(buf)?,
                incarnation: get_u64(buf)?,
                seq: get_u64(buf)?,
            },
            SNAPSHOT_REQUEST => Control::SnapshotRequest {
                from: get_str(buf)?,
            },
            SNAPSHOT => Control::Snapshot {
                node: get_str(buf)?,
                incarnation: get_u64(buf)?,
                seq: get_u64(buf)?,
                filters: get_list(buf)?,
            },
            ACK => Control::Ack {
                from: get_str(buf)?,
                incarnation: get_u64(buf)?,
                seq: get_u64(buf)?,
            },
            CLAIM => Control::Claim {
                node: get_str(buf)?,
                client_id: get_str(buf)?,
                at_us: get_u64(buf)?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::PublishProps;

    #[test]
    fn messages_cross_a_batch_unchanged_with_the_time_left() {
        let now = Instant::now();
        let mut properties = PublishProps::none();
        properties.make_mut().content_type = Some("text/plain".into());
        let topics = ["a/b", "$SYS/x", "a//b", "/", "with.dots/*/>", "ünï/cødé"];
        let mut batch = BytesMut::new();
        for (index, topic) in topics.iter().enumerate() {
            let message = Message {
                id: 1,
                topic: (*topic).into(),
                payload: Bytes::from(vec![index as u8; index * 10]),
                qos: if index % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                },
                retain: index == 1,
                properties: properties.clone(),
                publisher: "client-1".into(),
                received_at: now,
                expires_at: (index == 2).then(|| now + Duration::from_millis(1500)),
            };
            let share = (index == 3).then_some("$share/g/a/+");
            assert!(put_message(&mut batch, &message, index as u8, share, now));
        }
        let mut batch = batch.freeze();
        for (index, topic) in topics.iter().enumerate() {
            let received = next_message(&mut batch, 9, now).expect("a record");
            assert_eq!(received.origin_shard, index as u8);
            let share = received.share.as_deref();
            assert_eq!(share, (index == 3).then_some("$share/g/a/+"));
            let message = received.message;
            assert_eq!(&message.topic[..], *topic);
            assert_eq!(message.payload.len(), index * 10);
            assert_eq!(message.retain, index == 1);
            assert_eq!(message.id, 9);
            assert_eq!(&message.publisher[..], "client-1");
            assert_eq!(
                message.properties.content_type.as_deref(),
                Some("text/plain")
            );
            let expiry = message.properties.message_expiry_interval_secs;
            assert_eq!(expiry, (index == 2).then_some(2), "time left, rounded up");
        }
        assert!(next_message(&mut batch, 9, now).is_none());
    }

    #[test]
    fn control_records_round_trip_and_garbage_is_refused() {
        let records = [
            Control::Delta {
                node: "n1".into(),
                incarnation: 7,
                seq: 3,
                add: vec!["a/#".into(), "+/b".into()],
                remove: vec!["c".into()],
            },
            Control::Heartbeat {
                node: "n1".into(),
                incarnation: 7,
                seq: 3,
            },
            Control::SnapshotRequest { from: "n2".into() },
            Control::Snapshot {
                node: "n1".into(),
                incarnation: 7,
                seq: 3,
                filters: vec!["a/#".into()],
            },
            Control::Ack {
                from: "n2".into(),
                incarnation: 7,
                seq: 3,
            },
            Control::Claim {
                node: "n3".into(),
                client_id: "sensor/7 é".into(),
                at_us: 1_765_000_000_000_000,
            },
        ];
        for record in records {
            let bytes = record.encode();
            assert_eq!(Control::decode(bytes.clone()), Some(record));
            for cut in 0..bytes.len() {
                assert_eq!(Control::decode(bytes.slice(..cut)), None, "cut at {cut}");
            }
        }
        let lying_count = Bytes::from_static(&[
            SNAPSHOT, 0, 1, b'n', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 255, 255, 255,
            255,
        ]);
        assert_eq!(Control::decode(lying_count), None);
        assert_eq!(Control::decode(Bytes::from_static(&[99])), None);
    }
}
