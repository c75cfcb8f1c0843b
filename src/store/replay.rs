//! Records in, state out: what a shard's log says it owned when it stopped. Pure: no files
//! (see `recover` for those), so every rule here is tested with records alone.

use std::collections::{BTreeMap, BTreeSet};

use bytestring::ByteString;

use super::record::{MessageRef, QueuedRecord, Record, SessionRecord, StoredMessage, WillRecord};

/// The maps of a replay hold millions of entries at start: hashed with ahash (keyed per
/// process), several times faster here than the standard SipHash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// One session as its log left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedSession {
    pub meta: SessionRecord,
    /// Left for another shard; kept only if that shard's image did not survive.
    pub moved: bool,
    /// Entries by sequence number, each with its message resolved.
    pub entries: BTreeMap<u64, ReplayedEntry>,
    pub incoming_qos2: BTreeSet<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedEntry {
    pub record: QueuedRecord,
    /// `None` for a released QoS 2 entry (only its packet id is owed).
    pub message: Option<StoredMessage>,
}

/// The state one log (or several merged) describes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub sessions: HashMap<ByteString, ReplayedSession>,
    pub retained: HashMap<ByteString, StoredMessage>,
    pub wills: HashMap<ByteString, WillRecord>,
    /// Records that named something the log did not have (a session or a message): counted,
    /// not fatal; a correct log has none.
    pub orphans: u64,
    /// Client ids whose session ended, with the stamp of the end: an image elsewhere older
    /// than it is stale (the client ended the session after it moved).
    pub ended: HashMap<ByteString, u64>,
    /// The largest message counter seen (the low 48 bits of a message id, whichever shard
    /// made it), so that new ids never repeat one: every shard starts counting above it.
    pub max_message_counter: u64,
    /// Per client id: the stream records its session queued, of batches that may come again.
    pub notes: HashMap<ByteString, BTreeSet<crate::cluster::tags::StreamTag>>,
}

/// Applies records in log order. `last_inline` resolves `MessageRef::Earlier`: a writer names
/// only the message it wrote whole last (`RecordWriter::message_ref`), so that is the one
/// message a replay keeps at hand; any other reference counts as an orphan.
#[derive(Default)]
pub struct Replayer {
    state: Replayed,
    last_inline: Option<StoredMessage>,
}

impl Replayer {
    pub fn new() -> Replayer {
        Replayer::default()
    }

    pub fn apply(&mut self, record: Record) {
        let state = &mut self.state;
        match record {
            Record::SnapshotBegin | Record::SnapshotEnd => {}
            Record::Session(meta) => self.session(meta),
            Record::SessionGone {
                client_id,
                moved,
                stamp,
            } => {
                if moved {
                    if let Some(session) = state.sessions.get_mut(&client_id) {
                        session.moved = true;
                    }
                } else {
                    state.sessions.remove(&client_id);
                    state.notes.remove(&client_id);
                    let ended = state.ended.entry(client_id).or_insert(0);
                    *ended = (*ended).max(stamp);
                }
            }
            Record::Queued(queued) => self.queued(queued),
            Record::Sent {
                client_id,
                seq,
                packet_id,
            } => match self.entry(&client_id, seq) {
                Some(entry) => entry.record.packet_id = Some(packet_id),
                None => self.state.orphans += 1,
            },
            Record::Released { client_id, seq } => match self.entry(&client_id, seq) {
                Some(entry) => entry.record.released = true,
                None => self.state.orphans += 1,
            },
            Record::Done { client_id, seq } => {
                let removed = state
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|session| session.entries.remove(&seq));
                if removed.is_none() {
                    state.orphans += 1;
                }
            }
            Record::IncomingQos2 {
                client_id,
                packet_id,
                awaiting,
            } => match state.sessions.get_mut(&client_id) {
                Some(session) if awaiting => {
                    session.incoming_qos2.insert(packet_id.get());
                }
                Some(session) => {
                    session.incoming_qos2.remove(&packet_id.get());
                }
                None => state.orphans += 1,
            },
            Record::RetainSet(message) => {
                state.max_message_counter = state.max_message_counter.max(counter(message.id));
                state.retained.insert(message.topic.clone(), message);
            }
            Record::RetainClear { topic } => {
                state.retained.remove(&topic);
            }
            Record::WillSet(will) => {
                state.wills.insert(will.client_id.clone(), will);
            }
            Record::WillGone { client_id } => {
                state.wills.remove(&client_id);
            }
            Record::StreamNote { client_id, tag } => {
                state.notes.entry(client_id).or_default().insert(tag);
            }
        }
    }

    /// A session image: a new stamp starts the session afresh (it came back to this shard, or
    /// is a new session); the same stamp updates its own data and keeps what it holds.
    fn session(&mut self, meta: SessionRecord) {
        match self.state.sessions.get_mut(&meta.client_id) {
            Some(session) if session.meta.stamp == meta.stamp => {
                session.meta = meta;
                session.moved = false;
            }
            _ => {
                self.state.sessions.insert(
                    meta.client_id.clone(),
                    ReplayedSession {
                        meta,
                        moved: false,
                        entries: BTreeMap::new(),
                        incoming_qos2: BTreeSet::new(),
                    },
                );
            }
        }
    }

    fn queued(&mut self, mut queued: QueuedRecord) {
        let message = match std::mem::replace(&mut queued.message, MessageRef::Absent) {
            MessageRef::Inline(message) => {
                self.last_inline = Some(message.clone());
                Some(message)
            }
            MessageRef::Earlier(id) => match &self.last_inline {
                Some(message) if message.id == id => Some(message.clone()),
                _ => {
                    self.state.orphans += 1;
                    return;
                }
            },
            MessageRef::Absent => None,
        };
        if let Some(message) = &message {
            queued.message = MessageRef::Earlier(message.id);
            self.state.max_message_counter =
                self.state.max_message_counter.max(counter(message.id));
        }
        match self.state.sessions.get_mut(&queued.client_id) {
            Some(session) => {
                session.entries.insert(
                    queued.seq,
                    ReplayedEntry {
                        record: queued,
                        message,
                    },
                );
            }
            None => self.state.orphans += 1,
        }
    }

    fn entry(&mut self, client_id: &str, seq: u64) -> Option<&mut ReplayedEntry> {
        self.state
            .sessions
            .get_mut(client_id)
            .and_then(|session| session.entries.get_mut(&seq))
    }

    pub fn finish(mut self) -> Replayed {
        // Wills of sessions that no longer exist still fire (a will outlives its session when
        // the delay is longer: it is sent when the session ends).
        for session in self.state.sessions.values() {
            self.state.max_message_counter = session
                .entries
                .values()
                .filter_map(|e| e.message.as_ref().map(|m| counter(m.id)))
                .fold(self.state.max_message_counter, u64::max);
        }
        self.state
    }
}

impl Replayed {
    /// Merges the state of several shards' logs: per client id the newest event wins (images and
    /// ends by stamp; of equal stamps, a session that did not move), so a session that moved
    /// yields to any newer image elsewhere and is dropped if it ended there; retained messages
    /// and wills are per topic and client id, the message with the larger id winning a conflict.
    pub fn merge(parts: Vec<Replayed>) -> Replayed {
        // The first part is the base, as merging it into an empty state would leave it: its
        // entries are not moved again, and the maps grow once for the others.
        let mut parts = parts.into_iter();
        let Some(mut merged) = parts.next() else {
            return Replayed::default();
        };
        let parts: Vec<Replayed> = parts.collect();
        let rest_sessions: usize = parts.iter().map(|p| p.sessions.len()).sum();
        let rest_retained: usize = parts.iter().map(|p| p.retained.len()).sum();
        merged.sessions.reserve(rest_sessions);
        merged.retained.reserve(rest_retained);
        for part in parts {
            merged.orphans += part.orphans;
            merged.max_message_counter = merged.max_message_counter.max(part.max_message_counter);
            for (client_id, stamp) in part.ended {
                let ended = merged.ended.entry(client_id).or_insert(0);
                *ended = (*ended).max(stamp);
            }
            for (client_id, session) in part.sessions {
                let keep_old = merged.sessions.get(&client_id).is_some_and(|old| {
                    (old.moved, std::cmp::Reverse(old.meta.stamp))
                        < (session.moved, std::cmp::Reverse(session.meta.stamp))
                });
                if !keep_old {
                    merged.sessions.insert(client_id, session);
                }
            }
            for (topic, message) in part.retained {
                let newer = merged
                    .retained
                    .get(&topic)
                    .is_none_or(|old| old.id < message.id);
                if newer {
                    merged.retained.insert(topic, message);
                }
            }
            for (client_id, will) in part.wills {
                merged.wills.entry(client_id).or_insert(will);
            }
            for (client_id, tags) in part.notes {
                merged.notes.entry(client_id).or_default().extend(tags);
            }
        }
        let ended = &merged.ended;
        merged.sessions.retain(|client_id, session| {
            ended
                .get(client_id)
                .is_none_or(|&at| at < session.meta.stamp)
        });
        merged
    }
}

/// The per-shard counter part of a message id (`Shard::take_message_id`: shard in the top 16
/// bits, counter below).
fn counter(id: u64) -> u64 {
    id & ((1 << 48) - 1)
}
