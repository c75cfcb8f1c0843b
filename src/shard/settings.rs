//! The values the broker core reads, resolved once from the config into the types it uses.

use std::time::Duration;

use crate::config::{Config, DropPolicy};
use crate::protocol::QoS;
use crate::session::SessionLimits;

#[derive(Debug, Clone)]
pub struct Settings {
    pub packet_bytes_max: usize,
    pub max_qos: QoS,
    pub retain_available: bool,
    pub wildcard_subscription_available: bool,
    pub shared_subscription_available: bool,
    pub subscription_identifiers_available: bool,
    pub topic_alias_max: u16,
    pub keepalive_max_secs: u16,
    pub connect_timeout: Duration,
    /// Time a packet may take from its first byte to its last (`limits.packet_timeout_ms`).
    pub packet_timeout: Duration,
    pub allow_zero_length_client_id: bool,
    pub assigned_client_id_prefix: String,
    /// 5.0 Response Information prefix (the client id is appended); empty: none is sent.
    pub response_information: String,
    /// Check that payloads with Payload Format Indicator 1 are UTF-8 (5.0 §3.3.2.3.2).
    pub payload_format_check: bool,
    /// Aliases the broker may use towards each 5.0 client (capped by the client's maximum).
    pub topic_alias_to_client_max: u16,
    /// Bytes of topic alias tables, both directions, of all connections of one shard.
    pub topic_alias_bytes_per_shard_max: usize,
    /// QoS 2 packet ids from one 3.x client awaiting PUBREL (5.0: `session.inflight_messages_max`).
    pub incoming_qos2_v3_max: usize,
    pub session_expiry_default_secs: u32,
    pub session_expiry_max_secs: u32,
    pub session: SessionLimits,
    pub client_id_bytes_max: usize,
    pub topic_bytes_max: usize,
    pub topic_levels_max: usize,
    pub filters_per_subscribe_max: usize,
    pub user_properties_max: usize,
    pub connections_per_shard_max: usize,
    pub sessions_per_shard_max: usize,
    /// Subscriptions of all sessions of one shard together.
    pub subscriptions_per_shard_max: usize,
    /// For this shard's partition of the retained store.
    pub retained_messages_max: usize,
    pub retained_bytes_max: usize,
    pub will_bytes_max: usize,
    /// Bytes of wills all sessions of one shard hold together.
    pub will_bytes_per_shard_max: usize,
    /// Bytes of topic filters all subscriptions of one shard hold together.
    pub subscription_bytes_per_shard_max: usize,
    pub control_pending_max: usize,
    /// Queued mail to one peer shard above which publishers on this shard stop reading.
    pub mail_backlog_max: usize,
    /// Bytes waiting in a connection's write buffer above which deliveries wait in the session's
    /// outbox instead (so a slow reader is held to its outbox limits).
    pub write_buffer_bytes_max: usize,
    /// Bytes of all connections' write buffers and writes under way.
    pub write_buffer_bytes_per_shard_max: usize,
    /// One connection's fair share of it: deliveries within it are written even at the cap.
    pub write_share_bytes: usize,
    /// The 3.1.1 answer to a PUBLISH the ACL refuses.
    pub denied_publish_v3: crate::config::DeniedPublish,
}

impl Settings {
    /// Resolves the settings of one shard out of `shard_count`.
    pub fn from_config(config: &Config, shard_count: usize) -> Settings {
        let limits = &config.limits;
        let mqtt = &config.mqtt;
        let shards = shard_count.max(1);
        Settings {
            packet_bytes_max: limits.packet_bytes_max as usize,
            max_qos: QoS::from_u8(mqtt.max_qos).unwrap_or(QoS::ExactlyOnce),
            retain_available: mqtt.retain_available,
            wildcard_subscription_available: mqtt.wildcard_subscription_available,
            shared_subscription_available: mqtt.shared_subscription_available,
            subscription_identifiers_available: mqtt.subscription_identifiers_available,
            topic_alias_max: mqtt.topic_alias_max,
            keepalive_max_secs: mqtt.keepalive_max_secs,
            connect_timeout: Duration::from_millis(mqtt.connect_timeout_ms),
            packet_timeout: Duration::from_millis(limits.packet_timeout_ms),
            allow_zero_length_client_id: mqtt.allow_zero_length_client_id,
            assigned_client_id_prefix: mqtt.assigned_client_id_prefix.clone(),
            response_information: mqtt.response_information.clone(),
            payload_format_check: mqtt.payload_format_check,
            topic_alias_to_client_max: mqtt.topic_alias_to_client_max,
            topic_alias_bytes_per_shard_max: usize::try_from(
                limits.topic_alias_bytes_per_shard_max,
            )
            .unwrap_or(usize::MAX),
            incoming_qos2_v3_max: usize::from(limits.incoming_qos2_v3_max),
            session_expiry_default_secs: config.session.expiry_default_secs,
            session_expiry_max_secs: config.session.expiry_max_secs,
            session: SessionLimits {
                outbox_messages_max: limits.outbox_messages_max as usize,
                outbox_bytes_max: limits.outbox_bytes_max as usize,
                inflight_messages_max: limits.inflight_messages_max as usize,
                subscriptions_max: limits.subscriptions_per_session_max as usize,
                queue_qos0_offline: mqtt.queue_qos0_offline,
                drop_oldest: limits.outbox_drop_policy == DropPolicy::DropOldest,
                shard_messages_max: limits.queued_messages_per_shard_max as usize,
                shard_bytes_max: limits.queued_bytes_per_shard_max as usize,
                shard_share_messages: fair_share(
                    limits.queued_messages_per_shard_max,
                    limits.sessions_per_shard_max.into(),
                ),
                shard_share_bytes: fair_share(
                    limits.queued_bytes_per_shard_max,
                    limits.sessions_per_shard_max.into(),
                ),
            },
            client_id_bytes_max: limits.client_id_bytes_max as usize,
            topic_bytes_max: limits.topic_bytes_max as usize,
            topic_levels_max: limits.topic_levels_max as usize,
            filters_per_subscribe_max: limits.filters_per_subscribe_max as usize,
            user_properties_max: limits.user_properties_max as usize,
            // Each shard takes an equal share of the broker-wide limit: no shared counter to touch.
            connections_per_shard_max: (limits.connections_per_shard_max as usize)
                .min((limits.connections_max as usize).div_ceil(shards)),
            sessions_per_shard_max: limits.sessions_per_shard_max as usize,
            subscriptions_per_shard_max: limits.subscriptions_per_shard_max as usize,
            retained_messages_max: (limits.retained_messages_max as usize).div_ceil(shards),
            retained_bytes_max: (limits.retained_bytes_max as usize).div_ceil(shards),
            will_bytes_max: limits.will_bytes_max as usize,
            will_bytes_per_shard_max: usize::try_from(limits.will_bytes_per_shard_max)
                .unwrap_or(usize::MAX),
            subscription_bytes_per_shard_max: usize::try_from(
                limits.subscription_bytes_per_shard_max,
            )
            .unwrap_or(usize::MAX),
            control_pending_max: limits.control_pending_max as usize,
            mail_backlog_max: config.runtime.mailbox_messages_max as usize,
            write_buffer_bytes_max: crate::config::budget::WRITE_BUFFER_BYTES as usize,
            write_buffer_bytes_per_shard_max: usize::try_from(
                limits.write_buffer_bytes_per_shard_max,
            )
            .unwrap_or(usize::MAX),
            write_share_bytes: fair_share(
                limits.write_buffer_bytes_per_shard_max,
                limits.connections_per_shard_max.into(),
            ),
            denied_publish_v3: config.auth.denied_publish_v3,
        }
    }
}

/// One session's fair share of a shard-wide cap: the cap divided by the sessions a shard may
/// hold, so that all sessions' shares together are at most the cap.
pub fn fair_share(cap: u64, sessions: u64) -> usize {
    usize::try_from(cap / sessions.max(1)).unwrap_or(usize::MAX)
}
