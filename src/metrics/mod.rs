//! Broker metrics: what each shard counts, and how a scrape sees it without stalling a shard.
//!
//! Thread-per-core means no shared atomics on the data path. Every shard owns a [`ShardMetrics`]:
//! plain integers and HDR histograms that only its own thread touches. About once a second the
//! shard copies it into a [`ShardSnapshot`] and publishes that on the [`SnapshotBoard`] (one mutex
//! per shard, taken once a second by the shard and once per read by a reader, never on the data
//! path). Readers — the admin HTTP thread and the `$SYS` publisher — [`merge`] the latest
//! snapshots: counters and gauges add up, histograms merge bucket by bucket, so merged percentiles
//! are exact to the histogram's precision instead of averages of per-shard percentiles.
//!
//! Counters are named fields, and per-label families (`reason`, `type`, `qos`) are fixed arrays
//! indexed by an enum: recording is one add, never a string lookup.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod bridge;
mod labels;
mod latency;
mod prometheus;
mod snapshot;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant, SystemTime};

use crate::protocol::QoS;

pub use labels::{ConnectRejection, DropReason, LimitReached, PacketKind, PerLabel, Transport};
pub use latency::{
    BUCKET_BOUNDS_MICROS, LATENCY_HIGHEST_MICROS, Latencies, LatencyHistogram, Path, QUANTILES,
};
pub use prometheus::{render_cluster, render_prometheus};
pub use snapshot::{
    Merged, ShardSnapshot, SnapshotBoard, SnapshotPublisher, WINDOW_STEP_PUBLISHES, merge,
};

/// Counters and gauges of one shard (or, in [`Merged`], of the whole broker).
///
/// Gauges (current values) are fields the shard sets, typically right before taking a snapshot
/// from the sizes of its own tables; counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    // ---- Gauges ----
    /// Open network connections (TCP or TLS), CONNECT done or not.
    pub connections: u64,
    /// Sessions held, online and offline.
    pub sessions: u64,
    /// Non-shared subscriptions held by this shard's sessions.
    pub subscriptions: u64,
    /// Shared-subscription memberships held by this shard's sessions.
    pub shared_subscriptions: u64,
    /// Retained messages in this shard's partition of the retained store.
    pub retained_messages: u64,
    /// Bytes of those retained messages (`Message::size_bytes`).
    pub retained_bytes: u64,
    /// Messages waiting in subscriber outboxes (queued, not yet written), summed over sessions.
    pub queued_messages: u64,
    /// Bytes of messages held for subscribers, queued and in flight (what
    /// `limits.queued_bytes_per_shard_max` bounds).
    pub queued_bytes: u64,
    /// Cross-shard mail this shard has queued for other shards and not yet moved into their rings.
    pub ring_depth: u64,
    /// Bytes of write buffers and writes under way (what
    /// `limits.write_buffer_bytes_per_shard_max` bounds).
    pub write_buffer_bytes: u64,
    /// Bytes of held wills (what `limits.will_bytes_per_shard_max` bounds).
    pub will_bytes: u64,
    /// Bytes of subscription filters (what `limits.subscription_bytes_per_shard_max` bounds).
    pub subscription_bytes: u64,
    /// Buffers of the shard's receive pool holding bytes no read has taken yet (idle
    /// connections hold none).
    pub receive_buffers_held: u64,
    /// Idle connections parked without a task (`connection::parked`).
    pub connections_parked: u64,

    // ---- Counters ----
    pub connections_accepted: u64,
    /// Connections that passed their TLS and WebSocket handshakes, by transport.
    pub connections_opened: PerLabel<{ Transport::COUNT }>,
    pub connections_rejected: PerLabel<{ ConnectRejection::COUNT }>,
    pub sessions_created: u64,
    pub sessions_resumed: u64,
    pub sessions_taken_over: u64,
    pub sessions_expired: u64,
    pub packets_received: PerLabel<{ PacketKind::COUNT }>,
    pub packets_sent: PerLabel<{ PacketKind::COUNT }>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// PUBLISH messages received from clients, by their QoS.
    pub messages_received: PerLabel<3>,
    /// PUBLISH messages written to subscribers, by the QoS they were delivered with.
    pub messages_sent: PerLabel<3>,
    pub messages_dropped: PerLabel<{ DropReason::COUNT }>,
    /// Times a shard-wide memory cap or a deadline stopped a client, by reason.
    pub limits_reached: PerLabel<{ LimitReached::COUNT }>,
    pub authentication_success: u64,
    pub authentication_failure: u64,
    pub mail_sent: u64,
    pub mail_received: u64,
    /// Persistence: writes or syncs of the log that failed.
    pub store_failures: u64,
    /// Persistence: 1 while the shard's log cannot be written (QoS 1/2 publishes refused).
    pub store_broken: u64,
    /// Persistence: acknowledgements waiting for their records to be durable.
    pub store_acks_waiting: u64,
    /// Persistence: what start-up read back (set once, by shard 0).
    pub store_recovered_sessions: u64,
    pub store_recovered_messages: u64,
    pub store_recovered_retained: u64,
    pub store_recovery_millis: u64,
    /// Reads completed into a buffer of the shard's receive pool.
    pub receives_pooled: u64,
    /// Reads that found the receive pool empty and used `recv` instead.
    pub receive_pool_exhausted: u64,
}

impl Counts {
    /// What persistence read back at start.
    pub fn set_recovery(&mut self, report: &crate::store::RecoveryReport) {
        self.store_recovered_sessions = report.sessions as u64;
        self.store_recovered_messages = report.queued_messages as u64;
        self.store_recovered_retained = report.retained as u64;
        self.store_recovery_millis = (report.seconds * 1000.0) as u64;
    }

    /// Adds `other` into `self`: every counter and every gauge.
    pub fn add(&mut self, other: &Counts) {
        // Destructured without `..` so that a new field cannot be forgotten here.
        let Counts {
            connections,
            sessions,
            subscriptions,
            shared_subscriptions,
            retained_messages,
            retained_bytes,
            queued_messages,
            queued_bytes,
            ring_depth,
            write_buffer_bytes,
            will_bytes,
            subscription_bytes,
            receive_buffers_held,
            connections_parked,
            connections_accepted,
            connections_opened,
            connections_rejected,
            sessions_created,
            sessions_resumed,
            sessions_taken_over,
            sessions_expired,
            packets_received,
            packets_sent,
            bytes_received,
            bytes_sent,
            messages_received,
            messages_sent,
            messages_dropped,
            limits_reached,
            authentication_success,
            authentication_failure,
            mail_sent,
            mail_received,
            store_failures,
            store_broken,
            store_acks_waiting,
            store_recovered_sessions,
            store_recovered_messages,
            store_recovered_retained,
            store_recovery_millis,
            receives_pooled,
            receive_pool_exhausted,
        } = other;
        let sum = |into: &mut u64, value: &u64| *into = into.saturating_add(*value);
        sum(&mut self.connections, connections);
        sum(&mut self.sessions, sessions);
        sum(&mut self.subscriptions, subscriptions);
        sum(&mut self.shared_subscriptions, shared_subscriptions);
        sum(&mut self.retained_messages, retained_messages);
        sum(&mut self.retained_bytes, retained_bytes);
        sum(&mut self.queued_messages, queued_messages);
        sum(&mut self.queued_bytes, queued_bytes);
        sum(&mut self.ring_depth, ring_depth);
        sum(&mut self.write_buffer_bytes, write_buffer_bytes);
        sum(&mut self.will_bytes, will_bytes);
        sum(&mut self.subscription_bytes, subscription_bytes);
        sum(&mut self.receive_buffers_held, receive_buffers_held);
        sum(&mut self.connections_parked, connections_parked);
        sum(&mut self.receives_pooled, receives_pooled);
        sum(&mut self.receive_pool_exhausted, receive_pool_exhausted);
        sum(&mut self.connections_accepted, connections_accepted);
        self.connections_opened.add_all(connections_opened);
        self.connections_rejected.add_all(connections_rejected);
        sum(&mut self.sessions_created, sessions_created);
        sum(&mut self.sessions_resumed, sessions_resumed);
        sum(&mut self.sessions_taken_over, sessions_taken_over);
        sum(&mut self.sessions_expired, sessions_expired);
        self.packets_received.add_all(packets_received);
        self.packets_sent.add_all(packets_sent);
        sum(&mut self.bytes_received, bytes_received);
        sum(&mut self.bytes_sent, bytes_sent);
        self.messages_received.add_all(messages_received);
        self.messages_sent.add_all(messages_sent);
        self.messages_dropped.add_all(messages_dropped);
        self.limits_reached.add_all(limits_reached);
        sum(&mut self.authentication_success, authentication_success);
        sum(&mut self.authentication_failure, authentication_failure);
        sum(&mut self.mail_sent, mail_sent);
        sum(&mut self.mail_received, mail_received);
        sum(&mut self.store_failures, store_failures);
        sum(&mut self.store_broken, store_broken);
        sum(&mut self.store_acks_waiting, store_acks_waiting);
        sum(&mut self.store_recovered_sessions, store_recovered_sessions);
        sum(&mut self.store_recovered_messages, store_recovered_messages);
        sum(&mut self.store_recovered_retained, store_recovered_retained);
        sum(&mut self.store_recovery_millis, store_recovery_millis);
    }

    /// Every packet received, of any type (Mosquitto's `messages/received`).
    pub fn packets_received_total(&self) -> u64 {
        self.packets_received.total()
    }

    pub fn packets_sent_total(&self) -> u64 {
        self.packets_sent.total()
    }

    pub fn messages_dropped_total(&self) -> u64 {
        self.messages_dropped.total()
    }
}

/// What one shard measures. Owned by the shard, touched only by its thread; `snapshot` copies it
/// for readers on other threads.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Counters and gauges; gauges are set directly (`metrics.counts.connections = n`).
    pub counts: Counts,
    latency: Latencies,
    /// The last run of equal outbox waits, not yet in `latency`.
    outbox_run: Run,
    /// Connections by listener, indexed like the runtime's listener list; grown on a listener's
    /// first connection, so at most one entry per configured listener.
    listeners: Vec<ListenerCount>,
}

/// What a metrics scrape calls one listener: label `listener` (its config table, for example
/// `ws.browsers`) and `transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLabel {
    pub name: String,
    pub transport: Transport,
}

/// One listener's connections on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerCount {
    /// Connections that passed their handshakes, since start (counter).
    pub opened: u64,
    /// Of those, the ones open now (gauge).
    pub open: u64,
}

impl ListenerCount {
    /// Adds `from` into `into` entry by entry, for the merged series.
    pub fn add_all(into: &mut Vec<ListenerCount>, from: &[ListenerCount]) {
        if into.len() < from.len() {
            into.resize(from.len(), ListenerCount::default());
        }
        for (sum, count) in into.iter_mut().zip(from) {
            sum.opened += count.opened;
            sum.open += count.open;
        }
    }
}

/// `count` equal values waiting to be recorded at once. Outbox waits come in runs of one value: a
/// fan-out writes one message to many subscribers at the same instant, and a batch of messages
/// queued and written at the same instant waits the same; one `record_n` per run costs a
/// fraction of one HDR record per delivery. Readers see the run added to their copy, so every
/// snapshot is exact.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    micros: u64,
    count: u64,
}

impl Run {
    /// Adds one value; the run it ends, if any, is handed back for recording.
    fn push(&mut self, micros: u64) -> Option<Run> {
        if self.count > 0 && self.micros == micros {
            self.count += 1;
            return None;
        }
        let ended = std::mem::replace(self, Run { micros, count: 1 });
        (ended.count > 0).then_some(ended)
    }

    fn record_into(self, histogram: &mut LatencyHistogram) {
        if self.count > 0 {
            histogram.record_n(self.micros, self.count);
        }
    }
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        ShardMetrics::default()
    }

    /// An owned copy for other threads (about 0.8 MiB, mostly histogram buckets). A shard that
    /// publishes every second should use `SnapshotPublisher`, which recycles the buffers.
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut latency = self.latency.clone();
        self.add_runs(&mut latency);
        ShardSnapshot {
            counts: self.counts,
            listeners: self.listeners.clone(),
            recent: latency.clone(),
            latency,
        }
    }

    /// Overwrites `snapshot` with the current values, reusing its histogram buffers. Its
    /// `recent` is everything since start too; `SnapshotPublisher` narrows it to the window.
    pub fn snapshot_into(&self, snapshot: &mut ShardSnapshot) {
        snapshot.counts = self.counts;
        snapshot.listeners.clone_from(&self.listeners);
        snapshot.latency.copy_from(&self.latency);
        self.add_runs(&mut snapshot.latency);
        snapshot.recent.copy_from(&snapshot.latency);
    }

    /// Adds the runs not yet recorded to a copy of `latency`.
    fn add_runs(&self, latency: &mut Latencies) {
        self.outbox_run.record_into(&mut latency.outbox_wait);
    }

    pub fn connection_accepted(&mut self) {
        self.counts.connections_accepted += 1;
    }

    /// A connection of listener `listener` (its index in the runtime's list) passed its
    /// handshakes (TLS, WebSocket) and reads MQTT now.
    pub fn connection_opened(&mut self, transport: Transport, listener: usize) {
        self.counts.connections_opened.add(transport.index(), 1);
        if self.listeners.len() <= listener {
            self.listeners
                .resize(listener + 1, ListenerCount::default());
        }
        if let Some(count) = self.listeners.get_mut(listener) {
            count.opened += 1;
            count.open += 1;
        }
    }

    /// A connection counted by `connection_opened` closed.
    pub fn connection_closed(&mut self, listener: usize) {
        if let Some(count) = self.listeners.get_mut(listener) {
            count.open = count.open.saturating_sub(1);
        }
    }

    pub fn connection_rejected(&mut self, reason: ConnectRejection) {
        self.counts.connections_rejected.add(reason.index(), 1);
    }

    pub fn packet_received(&mut self, kind: PacketKind) {
        self.counts.packets_received.add(kind.index(), 1);
    }

    pub fn packet_sent(&mut self, kind: PacketKind) {
        self.counts.packets_sent.add(kind.index(), 1);
    }

    pub fn bytes_received(&mut self, bytes: usize) {
        self.counts.bytes_received += bytes as u64;
    }

    pub fn bytes_sent(&mut self, bytes: usize) {
        self.counts.bytes_sent += bytes as u64;
    }

    pub fn message_received(&mut self, qos: QoS) {
        self.counts
            .messages_received
            .add(usize::from(qos.as_u8()), 1);
    }

    pub fn message_sent(&mut self, qos: QoS) {
        self.counts.messages_sent.add(usize::from(qos.as_u8()), 1);
    }

    pub fn messages_dropped(&mut self, reason: DropReason, messages: u64) {
        self.counts.messages_dropped.add(reason.index(), messages);
    }

    pub fn limit_reached(&mut self, reason: LimitReached) {
        self.counts.limits_reached.add(reason.index(), 1);
    }

    pub fn authentication(&mut self, success: bool) {
        if success {
            self.counts.authentication_success += 1;
        } else {
            self.counts.authentication_failure += 1;
        }
    }

    /// `count` deliveries whose PUBLISH was read `micros` before the write that carried them to
    /// a subscriber completed, by delivered QoS and path. Called by the writer once per run of
    /// deliveries that share their read (see `shard::unsent`), not once per message.
    pub fn record_delivery(&mut self, qos: QoS, path: Path, micros: u64, count: u64) {
        self.latency.delivery_mut(qos, path).record_n(micros, count);
    }

    /// `count` PUBLISH packets of one read, handled `micros` after the read completed.
    pub fn record_handle(&mut self, micros: u64, count: u64) {
        if count > 0 {
            self.latency.handle.record_n(micros, count);
        }
    }

    /// The start of a read's bytes on the broker's clock, when the kernel stamped them
    /// (`observability.kernel_timestamps`): the read's completion moved back by the time they
    /// waited in the socket, recorded in `socket_wait`. The stamp is `CLOCK_REALTIME`, so the
    /// wait is the wall clock now minus the stamp, read once per read here, next to the
    /// monotonic `completed_at`; a wall-clock step backwards reads as no wait, and waits are
    /// capped at the histograms' highest value.
    pub fn record_socket_wait(&mut self, completed_at: Instant, stamp: SystemTime) -> Instant {
        let waited = SystemTime::now()
            .duration_since(stamp)
            .unwrap_or_default()
            .min(Duration::from_micros(latency::LATENCY_HIGHEST_MICROS));
        let start = completed_at.checked_sub(waited).unwrap_or(completed_at);
        self.latency
            .socket_wait
            .record(micros_between(start, completed_at));
        start
    }

    /// `count` deliveries encoded `micros` before the write that carried them completed.
    pub fn record_write(&mut self, micros: u64, count: u64) {
        self.latency.write.record_n(micros, count);
    }

    /// Time a mail waited in a cross-shard ring (sent -> taken by the receiving shard).
    pub fn record_ring_wait(&mut self, micros: u64) {
        self.latency.ring_wait.record(micros);
    }

    /// Time a message waited in a subscriber's outbox (queued -> written).
    pub fn record_outbox_wait(&mut self, micros: u64) {
        if let Some(ended) = self.outbox_run.push(micros) {
            ended.record_into(&mut self.latency.outbox_wait);
        }
    }

    /// CONNECT received -> CONNACK written.
    pub fn record_connect_latency(&mut self, micros: u64) {
        self.latency.connect.record(micros);
    }
}

/// Whole microseconds from `earlier` to `later`; 0 if the clock order is reversed.
pub fn micros_between(earlier: Instant, later: Instant) -> u64 {
    // Called twice per delivered message, most often with one instant twice (received, queued
    // and written in one batch): a comparison answers that. Otherwise in u64 (`as_micros` is
    // u128).
    if later <= earlier {
        return 0;
    }
    let elapsed = later.saturating_duration_since(earlier);
    elapsed
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(elapsed.subsec_micros()))
}
