//! Wills held by the shard, counted against `limits.will_bytes_per_shard_max`.
//!
//! A will is held from the CONNECT that carries it until it is published or discarded: by its
//! connection, then, when it has a delay, in the shard's table of delayed wills. Each held will
//! adds its bytes to the shard's count when it is taken in and takes them off when it is
//! dropped or handed out for publishing, whatever path lets it go, so the count cannot drift
//! from what is held. A CONNECT whose will does not fit is refused (CONNACK 0x97 Quota
//! exceeded; 3.1.1 0x03 Server unavailable); wills restored from disk are taken in over the cap,
//! since they were accepted before the restart.

use std::cell::Cell;
use std::ops::Deref;
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::{ByteString, QoS, Will, WillProperties};

/// The bytes of all wills a shard holds (shared by the wills, which take theirs off on drop).
#[derive(Debug, Clone, Default)]
pub struct WillBytes(Rc<Cell<usize>>);

impl WillBytes {
    pub fn get(&self) -> usize {
        self.0.get()
    }

    /// `will`, counted, if it fits under `cap` with what is held already.
    pub fn try_hold(&self, will: Will, cap: usize) -> Option<HeldWill> {
        let bytes = cost(&will);
        (self.get().saturating_add(bytes) <= cap).then(|| self.hold(will))
    }

    /// `will`, counted even over the cap (a will restored from disk).
    pub fn hold(&self, will: Will) -> HeldWill {
        self.0.set(self.get().saturating_add(cost(&will)));
        HeldWill(Box::new(Held {
            will,
            count: self.clone(),
        }))
    }
}

/// What a will counts: its topic, payload and the properties that carry bytes.
pub fn cost(will: &Will) -> usize {
    let properties = &will.properties;
    will.topic.len()
        + will.payload.len()
        + properties.content_type.as_ref().map_or(0, |s| s.len())
        + properties.response_topic.as_ref().map_or(0, |s| s.len())
        + properties.correlation_data.as_ref().map_or(0, Bytes::len)
        + properties
            .user_properties
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
}

/// A will the shard holds; its bytes leave the shard's count when it is dropped or published.
/// One pointer, as the boxed will it replaces in a connection's state.
#[derive(Debug)]
pub struct HeldWill(Box<Held>);

#[derive(Debug)]
struct Held {
    will: Will,
    count: WillBytes,
}

impl HeldWill {
    /// The will, to publish: no longer held.
    pub fn into_will(mut self) -> Will {
        let held = &mut *self.0;
        held.release();
        // What is left behind counts nothing when it drops.
        std::mem::replace(&mut held.will, empty())
    }
}

impl Held {
    fn release(&mut self) {
        let held = self.count.get().saturating_sub(cost(&self.will));
        self.count.0.set(held);
    }
}

impl Deref for HeldWill {
    type Target = Will;

    fn deref(&self) -> &Will {
        &self.0.will
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// A will of no bytes, left behind in a `HeldWill` handed out for publishing.
fn empty() -> Will {
    Will {
        topic: ByteString::default(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn will(payload: usize) -> Will {
        Will {
            topic: ByteString::from("t/w"),
            payload: Bytes::from(vec![0; payload]),
            ..empty()
        }
    }

    #[test]
    fn held_wills_count_until_dropped_or_published() {
        let count = WillBytes::default();
        let first = count.try_hold(will(97), 200);
        assert_eq!(count.get(), 100);
        // 100 + 103 is over the cap: refused and not counted.
        assert!(count.try_hold(will(100), 200).is_none());
        assert_eq!(count.get(), 100);
        let second = count.try_hold(will(97), 200);
        assert_eq!(count.get(), 200);
        drop(first);
        assert_eq!(count.get(), 100);
        let published = second.map(HeldWill::into_will);
        assert_eq!(published.map(|w| w.payload.len()), Some(97));
        assert_eq!(count.get(), 0);
        // Restored from disk: taken in over the cap.
        let restored = count.hold(will(1000));
        assert_eq!(count.get(), 1003);
        drop(restored);
        assert_eq!(count.get(), 0);
    }
}
