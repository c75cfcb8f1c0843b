//! A message as the broker routes it: immutable once received, shared by reference count between
//! every subscriber and every shard it reaches (the one allocation per PUBLISH).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{Publish, PublishProps, QoS};

/// One published message. Properties are kept as received, minus the Topic Alias and Subscription
/// Identifiers, which belong to a hop and not to the message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique in the process: the shard that accepted it and a counter of that shard. Lets a
    /// session that is moving between shards drop a second copy.
    pub id: u64,
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: PublishProps,
    /// The publishing client's id, for No Local (5.0 §3.8.3.1).
    pub publisher: ByteString,
    pub received_at: Instant,
    /// From the Message Expiry Interval (5.0 §3.3.2.3.3).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// The message a PUBLISH carries, received at `now` from `publisher` (a client, or another
    /// node of the cluster); its Topic Alias is dropped.
    pub fn from_publish(
        id: u64,
        publish: Publish,
        publisher: ByteString,
        now: Instant,
    ) -> Arc<Message> {
        // The Topic Alias belongs to the publisher's connection, not to the message.
        let properties = if publish.properties.topic_alias.is_some() {
            let mut properties = publish.properties.into_inner();
            properties.topic_alias = None;
            properties.into()
        } else {
            publish.properties
        };
        let expires_at = properties
            .message_expiry_interval_secs
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        Arc::new(Message {
            id,
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            received_at: now,
            expires_at,
        })
    }

    /// Bytes this message holds beyond its fixed size, for queue accounting.
    pub fn size_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }

    /// At least the bytes of the PUBLISH this message becomes, properties included (the fixed
    /// header, packet id and property lengths are within the 64 of `size_bytes`, the
    /// subscription identifiers within 64 more), for the room in a write buffer.
    pub fn publish_bytes_max(&self) -> usize {
        let properties = &*self.properties;
        if properties.is_empty() {
            return self.size_bytes();
        }
        self.size_bytes()
            + 64
            + properties.response_topic.as_ref().map_or(0, |s| s.len())
            + properties.content_type.as_ref().map_or(0, |s| s.len())
            + properties.correlation_data.as_ref().map_or(0, Bytes::len)
            + properties
                .user_properties
                .iter()
                .map(|(name, value)| name.len() + value.len() + 5)
                .sum::<usize>()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The Message Expiry Interval to forward: the time left, rounded up (5.0 §3.3.2.3.3).
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }
}
