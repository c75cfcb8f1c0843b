//! The records of a shard's log, and their framing on disk.
//!
//! A segment file starts with an 8-byte magic and holds records back to back:
//!
//! ```text
//! u32 LE  length of type + body
//! u32 LE  CRC-32 (IEEE) of type + body
//! u8      record type
//! ...     body
//! ```
//!
//! Reading stops at the first record that is cut short or fails its CRC: that is where a crash
//! interrupted a write, and everything after it is discarded. A record type this version does not
//! know is an error, not something to skip: a newer broker wrote the file.
//!
//! Integers are little-endian; strings are a u16 length and UTF-8; byte strings a u32 length. A
//! message is stored as a 5.0 PUBLISH frame (the codec the broker already trusts for untrusted
//! input reads it back) with its id, publisher and expiry in wall-clock milliseconds.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::{
    self, Packet, PacketId, PublishProps, PublishRef, QoS, RetainHandling, SubscriptionOptions,
    Version,
};
use crate::session::Subscription;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"RINGMQ\x01\n";
/// Length and CRC before each record.
pub const HEADER_BYTES: usize = 8;
/// No record is larger: a message is at most 256 MiB, and a session image's parts are bounded by
/// the session limits.
pub const RECORD_BYTES_MAX: usize = 512 << 20;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record cut short")]
    Truncated,
    #[error("record checksum mismatch")]
    BadChecksum,
    #[error("record length {0} is over the limit")]
    TooLarge(usize),
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record body malformed: {0}")]
    Malformed(&'static str),
}

/// A message as stored: what `crate::message::Message` holds, with the expiry as wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: PublishProps,
    pub publisher: ByteString,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// A queued entry's message: written whole, or naming the message written whole last before it
/// in the shard's records (a replay keeps only that one at hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageRef {
    Inline(StoredMessage),
    Earlier(u64),
    /// A released QoS 2 entry: only its packet id is owed.
    Absent,
}

/// A session's own data, without what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Orders the images of one client id across shards' logs: the newest wins.
    pub stamp: u64,
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    pub version: Version,
    pub expiry_secs: u32,
    /// When the session ends if its client stays away (ms since the Unix epoch); `None` while
    /// connected (a crash then counts as the disconnect: the session ends its expiry interval
    /// after the restart).
    pub expires_at_ms: Option<u64>,
    pub next_seq: u64,
    pub subscriptions: Vec<(ByteString, Subscription)>,
}

/// One entry a session holds, queued or in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub client_id: ByteString,
    pub seq: u64,
    pub qos: QoS,
    pub retain: bool,
    /// Set once it was sent (in flight under this id).
    pub packet_id: Option<PacketId>,
    /// QoS 2 after PUBREC: only the packet id is owed.
    pub released: bool,
    pub subscription_identifiers: Vec<u32>,
    /// (filter, group) of a shared subscription.
    pub shared: Option<(ByteString, ByteString)>,
    pub reoffered: bool,
    pub message: MessageRef,
}

impl QueuedRecord {
    /// A QoS 2 entry after PUBREC: only its packet id is owed.
    pub fn released(client_id: ByteString, seq: u64, packet_id: PacketId) -> QueuedRecord {
        QueuedRecord {
            client_id,
            seq,
            qos: QoS::ExactlyOnce,
            retain: false,
            packet_id: Some(packet_id),
            released: true,
            subscription_identifiers: Vec::new(),
            shared: None,
            reoffered: false,
            message: MessageRef::Absent,
        }
    }
}

/// A will waiting for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    pub due_ms: u64,
    pub delay_secs: u32,
    /// The will as a message (its properties as PUBLISH properties).
    pub message: StoredMessage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A snapshot starts: the state is what the records up to `SnapshotEnd` say.
    SnapshotBegin,
    SnapshotEnd,
    Session(SessionRecord),
    /// The session left this shard: ended, or `moved` to another shard (whose newer image wins;
    /// without one this image is kept). `stamp` orders an end against images on other shards.
    SessionGone {
        client_id: ByteString,
        moved: bool,
        stamp: u64,
    },
    Queued(QueuedRecord),
    Sent {
        client_id: ByteString,
        seq: u64,
        packet_id: PacketId,
    },
    Released {
        client_id: ByteString,
        seq: u64,
    },
    Done {
        client_id: ByteString,
        seq: u64,
    },
    IncomingQos2 {
        client_id: ByteString,
        packet_id: PacketId,
        awaiting: bool,
    },
    RetainSet(StoredMessage),
    RetainClear {
        topic: ByteString,
    },
    WillSet(WillRecord),
    WillGone {
        client_id: ByteString,
    },
    /// The session of `client_id` queued record `tag` of a stream batch from another node
    /// (docs/CLUSTER.md, "Exactly once"): written after the batch's `Queued` records.
    StreamNote {
        client_id: ByteString,
        tag: crate::cluster::tags::StreamTag,
    },
}

mod kind {
    pub const SNAPSHOT_BEGIN: u8 = 1;
    pub const SNAPSHOT_END: u8 = 2;
    pub const SESSION: u8 = 3;
    pub const SESSION_GONE: u8 = 4;
    pub const QUEUED: u8 = 5;
    pub const SENT: u8 = 6;
    pub const RELEASED: u8 = 7;
    pub const DONE: u8 = 8;
    pub const INCOMING_QOS2: u8 = 9;
    pub const RETAIN_SET: u8 = 10;
    pub const RETAIN_CLEAR: u8 = 11;
    pub const WILL_SET: u8 = 12;
    pub const WILL_GONE: u8 = 13;
    pub const STREAM_NOTE: u8 = 14;
}

/// Appends one framed record to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    put_body(record, out);
    let body = out.get(start + HEADER_BYTES..).unwrap_or_default();
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(body);
    if let Some(header) = out.get_mut(start..start + HEADER_BYTES) {
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Reads the record at the front of `buf` and advances past it. `Ok(None)` at the end.
pub fn decode(buf: &mut Bytes) -> Result<Option<Record>, RecordError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < HEADER_BYTES {
        return Err(RecordError::Truncated);
    }
    let len = u32::from_le_bytes(array(&buf[..4])) as usize;
    let crc = u32::from_le_bytes(array(&buf[4..8]));
    if len > RECORD_BYTES_MAX {
        return Err(RecordError::TooLarge(len));
    }
    if len == 0 {
        return Err(RecordError::Malformed("empty record"));
    }
    if buf.len() < HEADER_BYTES + len {
        return Err(RecordError::Truncated);
    }
    let body = buf.slice(HEADER_BYTES..HEADER_BYTES + len);
    if crc32fast::hash(&body) != crc {
        return Err(RecordError::BadChecksum);
    }
    buf.advance(HEADER_BYTES + len);
    let mut reader = Reader(body);
    let record = read_body(&mut reader)?;
    if !reader.0.is_empty() {
        return Err(RecordError::Malformed("trailing bytes"));
    }
    Ok(Some(record))
}

fn array(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(bytes);
    out
}

fn put_body(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::SnapshotBegin => out.put_u8(kind::SNAPSHOT_BEGIN),
        Record::SnapshotEnd => out.put_u8(kind::SNAPSHOT_END),
        Record::Session(session) => {
            out.put_u8(kind::SESSION);
            put_session(session, out);
        }
        Record::SessionGone {
            client_id,
            moved,
            stamp,
        } => {
            out.put_u8(kind::SESSION_GONE);
            put_str(out, client_id);
            out.put_u8(u8::from(*moved));
            out.put_u64_le(*stamp);
        }
        Record::Queued(queued) => {
            out.put_u8(kind::QUEUED);
            put_queued(queued, out);
        }
        Record::Sent {
            client_id,
            seq,
            packet_id,
        } => {
            out.put_u8(kind::SENT);
            put_str(out, client_id);
            out.put_u64_le(*seq);
            out.put_u16_le(packet_id.get());
        }
        Record::Released { client_id, seq } => {
            out.put_u8(kind::RELEASED);
            put_str(out, client_id);
            out.put_u64_le(*seq);
        }
        Record::Done { client_id, seq } => {
            out.put_u8(kind::DONE);
            put_str(out, client_id);
            out.put_u64_le(*seq);
        }
        Record::IncomingQos2 {
            client_id,
            packet_id,
            awaiting,
        } => {
            out.put_u8(kind::INCOMING_QOS2);
            put_str(out, client_id);
            out.put_u16_le(packet_id.get());
            out.put_u8(u8::from(*awaiting));
        }
        Record::RetainSet(message) => {
            out.put_u8(kind::RETAIN_SET);
            put_message(message, out);
        }
        Record::RetainClear { topic } => {
            out.put_u8(kind::RETAIN_CLEAR);
            put_str(out, topic);
        }
        Record::WillSet(will) => {
            out.put_u8(kind::WILL_SET);
            put_str(out, &will.client_id);
            put_opt_str(out, will.username.as_deref());
            out.put_u64_le(will.due_ms);
            out.put_u32_le(will.delay_secs);
            put_message(&will.message, out);
        }
        Record::WillGone { client_id } => {
            out.put_u8(kind::WILL_GONE);
            put_str(out, client_id);
        }
        Record::StreamNote { client_id, tag } => {
            out.put_u8(kind::STREAM_NOTE);
            put_str(out, client_id);
            out.put_u64_le(tag.sequence);
            out.put_u32_le(tag.index);
        }
    }
}

fn read_body(r: &mut Reader) -> Result<Record, RecordError> {
    let record = match r.u8()? {
        kind::SNAPSHOT_BEGIN => Record::SnapshotBegin,
        kind::SNAPSHOT_END => Record::SnapshotEnd,
        kind::SESSION => Record::Session(read_session(r)?),
        kind::SESSION_GONE => Record::SessionGone {
            client_id: r.str()?,
            moved: r.bool()?,
            stamp: r.u64()?,
        },
        kind::QUEUED => Record::Queued(read_queued(r)?),
        kind::SENT => Record::Sent {
            client_id: r.str()?,
            seq: r.u64()?,
            packet_id: r.packet_id()?,
        },
        kind::RELEASED => Record::Released {
            client_id: r.str()?,
            seq: r.u64()?,
        },
        kind::DONE => Record::Done {
            client_id: r.str()?,
            seq: r.u64()?,
        },
        kind::INCOMING_QOS2 => Record::IncomingQos2 {
            client_id: r.str()?,
            packet_id: r.packet_id()?,
            awaiting: r.bool()?,
        },
        kind::RETAIN_SET => Record::RetainSet(read_message(r)?),
        kind::RETAIN_CLEAR => Record::RetainClear { topic: r.str()? },
        kind::WILL_SET => Record::WillSet(WillRecord {
            client_id: r.str()?,
            username: r.opt_str()?,
            due_ms: r.u64()?,
            delay_secs: r.u32()?,
            message: read_message(r)?,
        }),
        kind::WILL_GONE => Record::WillGone {
            client_id: r.str()?,
        },
        kind::STREAM_NOTE => Record::StreamNote {
            client_id: r.str()?,
            tag: crate::cluster::tags::StreamTag {
                sequence: r.u64()?,
                index: r.u32()?,
            },
        },
        other => return Err(RecordError::UnknownType(other)),
    };
    Ok(record)
}

fn put_session(session: &SessionRecord, out: &mut Vec<u8>) {
    out.put_u64_le(session.stamp);
    put_str(out, &session.client_id);
    put_opt_str(out, session.username.as_deref());
    out.put_u8(session.version.level());
    out.put_u32_le(session.expiry_secs);
    out.put_u64_le(session.expires_at_ms.map_or(0, |ms| ms.max(1)));
    out.put_u64_le(session.next_seq);
    out.put_u32_le(u32::try_from(session.subscriptions.len()).unwrap_or(u32::MAX));
    for (filter, subscription) in &session.subscriptions {
        put_str(out, filter);
        out.put_u8(options_byte(&subscription.options));
        out.put_u32_le(subscription.identifier.unwrap_or(0));
    }
}

fn read_session(r: &mut Reader) -> Result<SessionRecord, RecordError> {
    let stamp = r.u64()?;
    let client_id = r.str()?;
    let username = r.opt_str()?;
    let version = match r.u8()? {
        3 => Version::V3_1,
        4 => Version::V3_1_1,
        5 => Version::V5,
        _ => return Err(RecordError::Malformed("protocol level")),
    };
    let expiry_secs = r.u32()?;
    let expires_at_ms = Some(r.u64()?).filter(|&ms| ms != 0);
    let next_seq = r.u64()?;
    let count = r.u32()? as usize;
    let mut subscriptions = Vec::with_capacity(count.min(r.0.len() / 7));
    for _ in 0..count {
        let filter = r.str()?;
        let options = read_options(r.u8()?)?;
        let identifier = Some(r.u32()?).filter(|&id| id != 0);
        subscriptions.push((
            filter,
            Subscription {
                options,
                identifier,
                read_granted_generation: 0,
            },
        ));
    }
    Ok(SessionRecord {
        stamp,
        client_id,
        username,
        version,
        expiry_secs,
        expires_at_ms,
        next_seq,
        subscriptions,
    })
}

fn options_byte(options: &SubscriptionOptions) -> u8 {
    options.qos.as_u8()
        | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4
}

fn read_options(byte: u8) -> Result<SubscriptionOptions, RecordError> {
    Ok(SubscriptionOptions {
        qos: read_qos(byte & 0b11)?,
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: match (byte >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(RecordError::Malformed("retain handling")),
        },
    })
}

fn read_qos(value: u8) -> Result<QoS, RecordError> {
    QoS::from_u8(value).ok_or(RecordError::Malformed("QoS"))
}

const QUEUED_SENT: u8 = 1;
const QUEUED_RELEASED: u8 = 2;
const QUEUED_RETAIN: u8 = 4;
const QUEUED_SHARED: u8 = 8;
const QUEUED_REOFFERED: u8 = 16;
const QUEUED_INLINE: u8 = 32;
const QUEUED_ABSENT: u8 = 64;

fn put_queued(queued: &QueuedRecord, out: &mut Vec<u8>) {
    put_str(out, &queued.client_id);
    out.put_u64_le(queued.seq);
    out.put_u8(queued.qos.as_u8());
    let mut flags = 0;
    if queued.packet_id.is_some() {
        flags |= QUEUED_SENT;
    }
    if queued.released {
        flags |= QUEUED_RELEASED;
    }
    if queued.retain {
        flags |= QUEUED_RETAIN;
    }
    if queued.shared.is_some() {
        flags |= QUEUED_SHARED;
    }
    if queued.reoffered {
        flags |= QUEUED_REOFFERED;
    }
    match queued.message {
        MessageRef::Inline(_) => flags |= QUEUED_INLINE,
        MessageRef::Absent => flags |= QUEUED_ABSENT,
        MessageRef::Earlier(_) => {}
    }
    out.put_u8(flags);
    if let Some(packet_id) = queued.packet_id {
        out.put_u16_le(packet_id.get());
    }
    out.put_u16_le(u16::try_from(queued.subscription_identifiers.len()).unwrap_or(u16::MAX));
    for id in queued
        .subscription_identifiers
        .iter()
        .take(usize::from(u16::MAX))
    {
        out.put_u32_le(*id);
    }
    if let Some((filter, group)) = &queued.shared {
        put_str(out, filter);
        put_str(out, group);
    }
    match &queued.message {
        MessageRef::Inline(message) => put_message(message, out),
        MessageRef::Earlier(id) => out.put_u64_le(*id),
        MessageRef::Absent => {}
    }
}

fn read_queued(r: &mut Reader) -> Result<QueuedRecord, RecordError> {
    let client_id = r.str()?;
    let seq = r.u64()?;
    let qos = read_qos(r.u8()?)?;
    let flags = r.u8()?;
    let packet_id = if flags & QUEUED_SENT != 0 {
        Some(r.packet_id()?)
    } else {
        None
    };
    let count = usize::from(r.u16()?);
    let mut subscription_identifiers = Vec::with_capacity(count.min(r.0.len() / 4));
    for _ in 0..count {
        subscription_identifiers.push(r.u32()?);
    }
    let shared = if flags & QUEUED_SHARED != 0 {
        Some((r.str()?, r.str()?))
    } else {
        None
    };
    let message = if flags & QUEUED_INLINE != 0 {
        MessageRef::Inline(read_message(r)?)
    } else if flags & QUEUED_ABSENT != 0 {
        MessageRef::Absent
    } else {
        MessageRef::Earlier(r.u64()?)
    };
    Ok(QueuedRecord {
        client_id,
        seq,
        qos,
        retain: flags & QUEUED_RETAIN != 0,
        packet_id,
        released: flags & QUEUED_RELEASED != 0,
        subscription_identifiers,
        shared,
        reoffered: flags & QUEUED_REOFFERED != 0,
        message,
    })
}

fn put_message(message: &StoredMessage, out: &mut Vec<u8>) {
    out.put_u64_le(message.id);
    put_str(out, &message.publisher);
    out.put_u64_le(message.expires_at_ms.map_or(0, |ms| ms.max(1)));
    let publish = PublishRef {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: &message.topic,
        packet_id: (message.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        properties: &message.properties,
        payload: &message.payload,
    };
    // One scratch buffer per thread, so that writing a message allocates nothing.
    thread_local! {
        static FRAME: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    FRAME.with(|frame| {
        let mut frame = frame.borrow_mut();
        frame.clear();
        // Cannot fail: no size limit is passed, and a message's parts were checked when it
        // arrived.
        let _ = protocol::encode_publish(&publish, Version::V5, &mut frame, usize::MAX);
        out.put_u32_le(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&frame);
    });
}

fn read_message(r: &mut Reader) -> Result<StoredMessage, RecordError> {
    let id = r.u64()?;
    let publisher = r.str()?;
    let expires_at_ms = Some(r.u64()?).filter(|&ms| ms != 0);
    let frame = r.bytes()?;
    let mut frame = BytesMut::from(&frame[..]);
    let publish = match protocol::decode(&mut frame, Version::V5, usize::MAX) {
        Ok(Some(Packet::Publish(publish))) if frame.is_empty() => publish,
        _ => return Err(RecordError::Malformed("stored PUBLISH")),
    };
    Ok(StoredMessage {
        id,
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        properties: publish.properties,
        publisher,
        expires_at_ms,
    })
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let len = text.len().min(usize::from(u16::MAX));
    out.put_u16_le(len as u16);
    out.extend_from_slice(text.as_bytes().get(..len).unwrap_or_default());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            out.put_u8(1);
            put_str(out, text);
        }
        None => out.put_u8(0),
    }
}

/// Bounds-checked reads from a record body.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.len() < n {
            Err(RecordError::Malformed("field cut short"))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn bool(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Malformed("flag")),
        }
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }

    fn packet_id(&mut self) -> Result<PacketId, RecordError> {
        PacketId::new(self.u16()?).ok_or(RecordError::Malformed("packet id 0"))
    }

    fn str(&mut self) -> Result<ByteString, RecordError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        ByteString::try_from(self.0.split_to(len)).map_err(|_| RecordError::Malformed("UTF-8"))
    }

    fn opt_str(&mut self) -> Result<Option<ByteString>, RecordError> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}
