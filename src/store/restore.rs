//! From what the log said to what each shard starts with: sessions on the home shard of their
//! client id, retained messages on the home shard of their topic, delayed wills with their
//! session. The same split works for any shard count, so the count may change between runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::record::StoredMessage;
use super::replay::{Replayed, ReplayedSession};
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
}

/// Splits the state over `shard_count` shards by `home`.
pub fn split(
    replayed: Replayed,
    shard_count: usize,
    home: impl Fn(&str) -> usize,
    clock: &Clock,
) -> Vec<Restored> {
    let mut shards: Vec<Restored> = (0..shard_count).map(|_| Restored::default()).collect();
    let floor = replayed.max_message_counter + 1;
    for restored in &mut shards {
        restored.message_id_floor = floor;
    }
    // One `Arc` per message, however many sessions hold it.
    let mut messages: HashMap<u64, Arc<Message>> = HashMap::new();
    let mut arc = |stored: &StoredMessage| {
        Arc::clone(
            messages
                .entry(stored.id)
                .or_insert_with(|| message_from(stored.clone(), clock)),
        )
    };
    for (client_id, session) in replayed.sessions {
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
    for (topic, stored) in replayed.retained {
        let message = message_from(stored, clock);
        if message.is_expired(clock.instant) {
            continue;
        }
        if let Some(shard) = shards.get_mut(home(&topic)) {
            shard.retained.push(message);
        }
    }
    for (client_id, record) in replayed.wills {
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

/// The first snapshot of a shard in a new generation: exactly what it starts with.
pub fn snapshot(restored: &Restored, clock: &Clock) -> Vec<u8> {
    super::write_snapshot(
        restored
            .sessions
            .iter()
            .map(|s| (s.stamp, &s.state, Some(s.expires_at))),
        restored.retained.iter(),
        restored
            .wills
            .iter()
            .map(|w| (&w.client_id, &w.username, w.due, &w.will)),
        clock,
    )
}
