//! Retained messages across shards: a retained write accepted on one shard is visible to every
//! SUBSCRIBE whose client saw the write acknowledged (MQTT-3.3.1-5, 5.0 §3.3.1.3).
//!
//! The store is partitioned: `home_of(topic)` holds the topic's retained message, and a
//! SUBSCRIBE's barrier asks every shard. A write from another shard reaches the home by mail, on
//! a different ring than the SUBSCRIBE's query, so the query may overtake it even though the
//! publisher had its PUBACK before the subscriber sent SUBSCRIBE. The publishing shard therefore
//! keeps each write it sent (`retained_sending`, one per topic) and answers barrier queries from
//! those as well: the barrier reaches the publishing shard after the write, since the shard
//! handled the write before the PUBACK.
//!
//! When may the publishing shard forget a write? The home confirms it once stored
//! (`Mail::RetainStored`), but a barrier the home answered before storing it may still be on its
//! way here behind that confirmation. So a confirmed write is forgotten only after a barrier that
//! this shard started after the confirmation has completed: each shard answers that barrier
//! behind every earlier mail to here on the same FIFO ring, including its own earlier SUBSCRIBE
//! barriers; and a SUBSCRIBE barrier sent after that answer reaches the home after the store.
//! Confirmations are batched, one settle barrier in flight at a time.
//!
//! The subscribing shard then keeps, per filter and topic, the newest answer (arrival time, then
//! message id); a newest answer that deletes (empty payload) leaves none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::Shard;
use super::subscribe::BarrierKind;
use crate::mail::Mail;
use crate::message::Message;

impl Shard {
    /// Sends a retained write to its topic's home shard and keeps it until it is settled.
    pub(super) fn send_retained(&mut self, home: ShardId, message: Arc<Message>) {
        self.retained_sending
            .insert(message.topic.clone(), Arc::clone(&message));
        self.send_mail(home, Mail::Retain(message));
    }

    /// At the topic's home: stores the write and confirms it to the sender.
    pub(super) fn on_retain(&mut self, from: ShardId, message: Arc<Message>) {
        let (topic, id) = (message.topic.clone(), message.id);
        self.store_retained(message);
        self.send_mail(from, Mail::RetainStored { topic, id });
    }

    /// The home stored write `id`: it goes once a barrier started from now on has completed.
    pub(super) fn on_retain_stored(&mut self, topic: ByteString, id: u64, now: Instant) {
        self.retained_confirmed.push((topic, id));
        if !self.retained_settling {
            self.start_settle_barrier(now);
        }
    }

    fn start_settle_barrier(&mut self, now: Instant) {
        let writes = std::mem::take(&mut self.retained_confirmed);
        self.retained_settling = true;
        self.start_flush_barrier(BarrierKind::RetainedSettled { writes }, now);
    }

    /// The settle barrier completed: its writes are forgotten (unless replaced meanwhile).
    pub(super) fn retained_settled(&mut self, writes: Vec<(ByteString, u64)>, now: Instant) {
        for (topic, id) in writes {
            if self
                .retained_sending
                .get(&topic)
                .is_some_and(|m| m.id == id)
            {
                self.retained_sending.remove(&topic);
            }
        }
        self.retained_settling = false;
        if !self.retained_confirmed.is_empty() {
            self.start_settle_barrier(now);
        }
    }

    /// Unconfirmed writes matching `filter`, deletions included (they hide an older stored one).
    pub(super) fn retained_sending_matching(
        &self,
        index: usize,
        filter: &str,
        now: Instant,
        found: &mut Vec<(usize, Arc<Message>)>,
    ) {
        for (topic, message) in &self.retained_sending {
            if crate::protocol::matches(filter, topic) && !message.is_expired(now) {
                found.push((index, Arc::clone(message)));
            }
        }
    }
}

/// One retained message per query and topic, the newest; none where the newest deletes. Order
/// is kept otherwise.
pub(super) fn newest_retained(found: Vec<(usize, Arc<Message>)>) -> Vec<(usize, Arc<Message>)> {
    let mut newest: Vec<(usize, Arc<Message>)> = Vec::with_capacity(found.len());
    let mut at: HashMap<(usize, ByteString), usize> = HashMap::with_capacity(found.len());
    for (index, message) in found {
        match at.get(&(index, message.topic.clone())) {
            Some(&slot) => {
                if let Some(kept) = newest.get_mut(slot)
                    && (message.received_at, message.id) > (kept.1.received_at, kept.1.id)
                {
                    kept.1 = message;
                }
            }
            None => {
                at.insert((index, message.topic.clone()), newest.len());
                newest.push((index, message));
            }
        }
    }
    newest.retain(|(_, message)| !message.payload.is_empty());
    newest
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::protocol::QoS;

    fn message(id: u64, topic: &str, payload: &'static [u8], at: Instant) -> Arc<Message> {
        Arc::new(Message {
            id,
            topic: ByteString::from(topic),
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            publisher: ByteString::from_static("p"),
            received_at: at,
            expires_at: None,
        })
    }

    fn ids(found: &[(usize, Arc<Message>)]) -> Vec<(usize, u64)> {
        found.iter().map(|(i, m)| (*i, m.id)).collect()
    }

    #[test]
    fn the_newest_answer_per_query_and_topic_wins() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let stored = message(1, "a", b"old", t0);
        let sending = message(2, "a", b"new", t1);
        let deleting = message(3, "b", b"", t1);
        let other = message(4, "b", b"kept", t0);
        let check = |found: Vec<(usize, Arc<Message>)>, expected: Vec<(usize, u64)>| {
            assert_eq!(ids(&newest_retained(found)), expected);
        };
        // An unconfirmed newer write replaces the stored one, whichever answered first.
        check(
            vec![(0, stored.clone()), (0, sending.clone())],
            vec![(0, 2)],
        );
        check(
            vec![(0, sending.clone()), (0, stored.clone())],
            vec![(0, 2)],
        );
        // The same message from both shards comes once.
        check(
            vec![(0, sending.clone()), (0, sending.clone())],
            vec![(0, 2)],
        );
        // A newer deletion hides the stored message; an older one does not.
        check(vec![(0, other.clone()), (0, deleting.clone())], vec![]);
        check(
            vec![
                (0, message(5, "b", b"", t0)),
                (0, message(6, "b", b"x", t1)),
            ],
            vec![(0, 6)],
        );
        // Each query gets its own answer.
        check(vec![(0, stored.clone()), (1, stored)], vec![(0, 1), (1, 1)]);
    }
}
