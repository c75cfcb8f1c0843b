//! From what the log said to what each shard starts with: sessions on the home shard of their
//! client id, retained messages on the home shard of their topic, delayed wills with their
//! session. The same split works for any shard count, so the count may change between runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::record::StoredMessage;
use super::replay::{HashMap, Replayed, ReplayedSession};
use super::{Clock, message_from, will_from};
use crate::message::Message;
use crate::protocol::{PacketId, Will};
use crate::session::{Delivery, SessionState};

/// A session as a shard takes it at start: offline, ending at `expires_at`.
#[derive(Debug)]
pub struct RestoredSession {
    pub state: SessionState,
    pub stamp: u64,
    pub expires_at: Instant,
}

/// A will waiting for its delay, as a shard takes it at start.
#[derive(Debug)]
pub struct RestoredWill {
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    pub due: Instant,
    pub will: Will,
}

/// What one shard starts with.
#[derive(Debug, Default)]
pub struct Restored {
    pub sessions: Vec<RestoredSession>,
    pub retained: Vec<Arc<Message>>,
    pub wills: Vec<RestoredWill>,
    /// Message ids restored anywhere stay below this counter, so new ones never repeat them.
    pub message_id_floor: u64,
    /// The stream records the sessions here queued, of batches that may come again (client id,
    /// tag).
    pub notes: Vec<(ByteString, crate::cluster::tags::StreamTag)>,
}

/// Splits the state over `shard_count` shards by `home`. The sessions and the retained messages
/// are rebuilt on two threads (they share nothing: a retained message is its own copy).
pub fn split(
    replayed: Replayed,
    shard_count: usize,
    home: impl Fn(&str) -> usize + Sync,
    clock: &Clock,
) -> Vec<Restored> {
    let Replayed {
        sessions,
        retained,
        wills,
        max_message_counter,
        notes,
        ..
    } = replayed;
    // The notes go with their sessions to the home shard of the client id.
    let notes: Vec<_> = notes
        .into_iter()
        .filter(|(client_id, _)| sessions.contains_key(client_id))
        .collect();
    let share = |n: usize| n / shard_count.max(1) + n / 16;
    let home = &home;
    let (mut shards, retained) = std::thread::scope(|scope| {
        let retained = scope.spawn(move || {
            let mut parts: Vec<Vec<Arc<Message>>> = (0..shard_count)
                .map(|_| Vec::with_capacity(share(retained.len())))
                .collect();
            for (topic, stored) in retained {
                let message = message_from(stored, clock);
                if message.is_expired(clock.instant) {
                    continue;
                }
                if let Some(part) = parts.get_mut(home(&topic)) {
                    part.push(message);
                }
            }
            parts
        });
        let shards = split_sessions(sessions, shard_count, home, clock);
        (shards, retained.join())
    });
    // A panic on the retained thread is a bug; it is raised here rather than lost.
    let retained = retained.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    for (shard, part) in shards.iter_mut().zip(retained) {
        shard.retained = part;
        shard.message_id_floor = max_message_counter + 1;
    }
    for (client_id, tags) in notes {
        if let Some(shard) = shards.get_mut(home(&client_id)) {
            shard
                .notes
                .extend(tags.into_iter().map(|tag| (client_id.clone(), tag)));
        }
    }
    for (client_id, record) in wills {
        if let Some(shard) = shards.get_mut(home(&client_id)) {
            shard.wills.push(RestoredWill {
                client_id,
                username: record.username.clone(),
                due: clock.to_instant(record.due_ms),
                will: will_from(&record),
            });
        }
    }
    shards
}

/// The sessions of each shard, one `Arc` per message however many sessions hold it.
fn split_sessions(
    sessions: HashMap<ByteString, ReplayedSession>,
    shard_count: usize,
    home: impl Fn(&str) -> usize,
    clock: &Clock,
) -> Vec<Restored> {
    let mut shards: Vec<Restored> = (0..shard_count)
        .map(|_| Restored {
            sessions: Vec::with_capacity(sessions.len() / shard_count.max(1) + sessions.len() / 16),
            ..Restored::default()
        })
        .collect();
    let queued: usize = sessions.values().map(|s| s.entries.len()).sum();
    let mut messages: HashMap<u64, Arc<Message>> =
        HashMap::with_capacity_and_hasher(queued, ahash::RandomState::new());
    let mut arc = |stored: &StoredMessage| {
        Arc::clone(
            messages
                .entry(stored.id)
                .or_insert_with(|| message_from(stored.clone(), clock)),
        )
    };
    for (client_id, session) in sessions {
        let expires_at = session.meta.expires_at_ms.map_or_else(
            || clock.instant + Duration::from_secs(u64::from(session.meta.expiry_secs)),
            |ms| clock.to_instant(ms),
        );
        if expires_at <= clock.instant {
            continue;
        }
        let stamp = session.meta.stamp;
        let state = rebuild(session, &mut arc, clock);
        if let Some(shard) = shards.get_mut(home(&client_id)) {
            shard.sessions.push(RestoredSession {
                state,
                stamp,
                expires_at,
            });
        }
    }
    shards
}

fn rebuild(
    session: ReplayedSession,
    arc: &mut impl FnMut(&StoredMessage) -> Arc<Message>,
    clock: &Clock,
) -> SessionState {
    let meta = session.meta;
    let mut state = SessionState::new(meta.client_id, meta.version, meta.expiry_secs);
    state.username = meta.username;
    state.subscriptions = meta.subscriptions.into_iter().collect();
    let mut queued = Vec::new();
    let mut inflight = Vec::new();
    for (seq, entry) in session.entries {
        let record = entry.record;
        let delivery = entry.message.as_ref().map(|stored| Delivery {
            message: arc(stored),
            qos: record.qos,
            retain: record.retain,
            subscription_identifiers: record.subscription_identifiers.clone(),
            shared: record.shared.clone().map(Box::new),
            reoffered: record.reoffered,
        });
        match (record.packet_id, delivery) {
            (Some(packet_id), delivery) if record.released => {
                inflight.push((seq, packet_id, delivery.filter(|_| false)));
            }
            (Some(packet_id), Some(delivery)) => inflight.push((seq, packet_id, Some(delivery))),
            (None, Some(delivery)) if !delivery.message.is_expired(clock.instant) => {
                queued.push((seq, delivery));
            }
            _ => {}
        }
    }
    let incoming = session.incoming_qos2.into_iter().filter_map(PacketId::new);
    state.restore(queued, inflight, incoming, meta.next_seq, clock.instant)
}
