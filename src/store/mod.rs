//! Persistence: each shard keeps a log of what it owns (persistent sessions with what they hold,
//! retained messages of its topics, delayed wills), so that a restart or a crash loses nothing
//! that was promised to a client. See docs/PERSISTENCE.md for the format and the guarantees.
//!
//! Map: `record` (the records and their framing), `replay` (records in, state out; pure),
//! `files` (the directory layout, recovery at start, new generations), `journal` (the shard's
//! side: records out of state changes, acknowledgements held until durable). The shard's async
//! shell writes the journal's bytes with `shards::storage` on the shard's own io_uring.
//!
//! In memory nothing changes: the live state stays where it was, and the log is read only at
//! start. So the memory budget is the same with persistence on.

pub mod files;
pub mod journal;
pub mod record;
pub mod replay;
pub mod restore;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::{Will, WillProperties};
use record::{MessageRef, QueuedRecord, Record, SessionRecord, StoredMessage, WillRecord};

pub use files::{RecoveryReport, StoreError};
pub use journal::{Chunk, Journal};
pub use replay::Replayed;

/// When QoS 1 and 2 publishes are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// After their records are synced (group commit).
    Always,
    /// At once; records are synced every interval.
    Periodic(Duration),
}

/// One reading of both clocks: converts deadlines between the monotonic clock the broker runs
/// on and the wall clock the log keeps (so a deadline means the same after a restart).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub instant: Instant,
    pub wall_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock::at(Instant::now())
    }

    pub fn at(instant: Instant) -> Clock {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock { instant, wall_ms }
    }

    pub fn to_wall(&self, at: Instant) -> u64 {
        if at >= self.instant {
            let ahead = at.duration_since(self.instant).as_millis();
            self.wall_ms
                .saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
        } else {
            let behind = self.instant.duration_since(at).as_millis();
            self.wall_ms
                .saturating_sub(u64::try_from(behind).unwrap_or(u64::MAX))
        }
    }

    pub fn to_instant(&self, wall_ms: u64) -> Instant {
        if wall_ms >= self.wall_ms {
            self.instant + Duration::from_millis(wall_ms - self.wall_ms)
        } else {
            let behind = Duration::from_millis(self.wall_ms - wall_ms);
            self.instant.checked_sub(behind).unwrap_or(self.instant)
        }
    }
}

pub fn stored_message(message: &Message, clock: &Clock) -> StoredMessage {
    StoredMessage {
        id: message.id,
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: message.properties.clone(),
        publisher: message.publisher.clone(),
        expires_at_ms: message.expires_at.map(|at| clock.to_wall(at)),
    }
}

pub fn message_from(stored: StoredMessage, clock: &Clock) -> Arc<Message> {
    Arc::new(Message {
        id: stored.id,
        topic: stored.topic,
        payload: stored.payload,
        qos: stored.qos,
        retain: stored.retain,
        properties: stored.properties,
        publisher: stored.publisher,
        received_at: clock.instant,
        expires_at: stored.expires_at_ms.map(|ms| clock.to_instant(ms)),
    })
}

/// A will as a stored message: its PUBLISH-like properties; the delay is kept beside it.
pub fn will_record(
    client_id: ByteString,
    username: Option<ByteString>,
    due: Instant,
    will: &Will,
    clock: &Clock,
) -> WillRecord {
    let properties = will.properties.to_publish();
    WillRecord {
        client_id: client_id.clone(),
        username,
        due_ms: clock.to_wall(due),
        delay_secs: will.properties.will_delay_interval_secs.unwrap_or(0),
        message: StoredMessage {
            id: 0,
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: properties.into(),
            publisher: client_id,
            expires_at_ms: None,
        },
    }
}

pub fn will_from(record: &WillRecord) -> Will {
    let message = &record.message;
    Will {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: WillProperties {
            will_delay_interval_secs: Some(record.delay_secs).filter(|&d| d != 0),
            payload_format_indicator: message.properties.payload_format_indicator,
            message_expiry_interval_secs: message.properties.message_expiry_interval_secs,
            content_type: message.properties.content_type.clone(),
            response_topic: message.properties.response_topic.clone(),
            correlation_data: message.properties.correlation_data.clone(),
            user_properties: message.properties.user_properties.clone(),
        },
    }
}

/// Writes records, naming a message already written since the last snapshot instead of writing
/// it again (a fan-out to many sessions of one shard stores its message once per run of
/// deliveries).
pub struct RecordWriter<'a> {
    pub out: &'a mut Vec<u8>,
    pub last_inline: &'a mut Option<u64>,
}

impl RecordWriter<'_> {
    pub fn record(&mut self, record: &Record) {
        record::encode(record, self.out);
    }

    pub fn message_ref(&mut self, message: &Message, clock: &Clock) -> MessageRef {
        if *self.last_inline == Some(message.id) {
            MessageRef::Earlier(message.id)
        } else {
            *self.last_inline = Some(message.id);
            MessageRef::Inline(stored_message(message, clock))
        }
    }

    /// A session's own data (what `SessionRecord` holds).
    pub fn session_meta(
        &mut self,
        stamp: u64,
        state: &crate::session::SessionState,
        expires_at: Option<Instant>,
        clock: &Clock,
    ) {
        self.record(&Record::Session(session_record(
            stamp, state, expires_at, clock,
        )));
    }

    /// A session whole: its data, every entry it holds and its incoming QoS 2 ids.
    pub fn session_image(
        &mut self,
        stamp: u64,
        state: &crate::session::SessionState,
        expires_at: Option<Instant>,
        clock: &Clock,
    ) {
        self.session_meta(stamp, state, expires_at, clock);
        for queued in state.queued() {
            let record = self.queued_record(state, queued.seq, &queued.delivery, None, clock);
            self.record(&Record::Queued(record));
        }
        for entry in state.inflight.iter() {
            let record = match &entry.state {
                crate::session::InflightState::Sent(delivery) => {
                    self.queued_record(state, entry.seq, delivery, Some(entry.packet_id), clock)
                }
                crate::session::InflightState::Released => {
                    QueuedRecord::released(state.client_id.clone(), entry.seq, entry.packet_id)
                }
            };
            self.record(&Record::Queued(record));
        }
        for packet_id in state.incoming_qos2() {
            if let Some(packet_id) = crate::protocol::PacketId::new(packet_id) {
                self.record(&Record::IncomingQos2 {
                    client_id: state.client_id.clone(),
                    packet_id,
                    awaiting: true,
                });
            }
        }
    }

    pub fn queued_record(
        &mut self,
        state: &crate::session::SessionState,
        seq: u64,
        delivery: &crate::session::Delivery,
        packet_id: Option<crate::protocol::PacketId>,
        clock: &Clock,
    ) -> QueuedRecord {
        QueuedRecord {
            client_id: state.client_id.clone(),
            seq,
            qos: delivery.qos,
            retain: delivery.retain,
            packet_id,
            released: false,
            subscription_identifiers: delivery.subscription_identifiers.clone(),
            shared: delivery.shared.as_deref().cloned(),
            reoffered: delivery.reoffered,
            message: self.message_ref(&delivery.message, clock),
        }
    }
}

/// A whole snapshot: the sessions (stamp, state, expiry deadline when offline), the retained
/// messages and the delayed wills (client id, username, due, will) of one shard. `size_hint`
/// (the bytes it is expected to take, e.g. the last snapshot's) sizes the buffer once instead
/// of growing it by copies.
pub fn write_snapshot<'a, R, W>(
    sessions: impl Iterator<Item = (u64, &'a crate::session::SessionState, Option<Instant>)>,
    parts: SnapshotParts<R, W>,
    clock: &Clock,
    size_hint: usize,
) -> Vec<u8>
where
    R: Iterator<Item = &'a Arc<Message>>,
    W: Iterator<Item = (&'a ByteString, &'a Option<ByteString>, Instant, &'a Will)>,
{
    let SnapshotParts {
        retained,
        wills,
        notes,
    } = parts;
    let mut out = Vec::with_capacity(size_hint);
    let mut last_inline = None;
    let mut writer = RecordWriter {
        out: &mut out,
        last_inline: &mut last_inline,
    };
    writer.record(&Record::SnapshotBegin);
    for (stamp, state, expires_at) in sessions {
        writer.session_image(stamp, state, expires_at, clock);
    }
    for message in retained {
        if persists_retained(&message.topic) {
            writer.record(&Record::RetainSet(stored_message(message, clock)));
        }
    }
    for (client_id, username, due, will) in wills {
        let record = will_record(client_id.clone(), username.clone(), due, will, clock);
        writer.record(&Record::WillSet(record));
    }
    for (tag, client_id) in notes {
        writer.record(&Record::StreamNote { client_id, tag });
    }
    writer.record(&Record::SnapshotEnd);
    out
}

/// What a whole snapshot holds besides the sessions: the retained messages, the delayed wills
/// (client id, username, due, will) and the notes of stream records queued (tag, client id).
pub struct SnapshotParts<R, W> {
    pub retained: R,
    pub wills: W,
    pub notes: Vec<(crate::cluster::tags::StreamTag, ByteString)>,
}

/// Whether a retained topic is kept on disk: `$SYS` topics are the broker's own, rewritten every
/// interval, and not worth a record each time.
pub fn persists_retained(topic: &str) -> bool {
    !topic.starts_with("$SYS")
}

/// A session's own data as the store writes it (and the cluster's session mirror keeps it).
pub fn session_record(
    stamp: u64,
    state: &crate::session::SessionState,
    expires_at: Option<Instant>,
    clock: &Clock,
) -> SessionRecord {
    let mut subscriptions: Vec<_> = state
        .subscriptions
        .iter()
        .map(|(filter, subscription)| (filter.clone(), *subscription))
        .collect();
    subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
    SessionRecord {
        stamp,
        client_id: state.client_id.clone(),
        username: state.username.clone(),
        version: state.version,
        expiry_secs: state.expiry_secs,
        expires_at_ms: expires_at.map(|at| clock.to_wall(at)),
        next_seq: state.next_seq(),
        subscriptions,
    }
}
