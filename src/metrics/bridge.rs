//! Per-bridge counters: written by the bridge's task on its shard, read by `/metrics` on the
//! admin thread. One writer each, relaxed atomics: a bridge is one connection, and its counters
//! move at most once per packet batch, not on any client's path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct BridgeStats {
    pub name: String,
    /// 1 while connected to the remote, else 0.
    pub connected: AtomicU64,
    /// Connections made to the remote after the first.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed (unreachable, TLS, refused CONNECT).
    pub connect_failures: AtomicU64,
    pub messages_out: AtomicU64,
    pub messages_in: AtomicU64,
    /// Bytes written to and read from the remote connection.
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Messages not forwarded: no rule matched, or the hop guard stopped them.
    pub dropped: AtomicU64,
    /// Messages queued in the bridge's local session (waiting for the remote).
    pub queued: AtomicU64,
    /// Outbound QoS 1/2 messages sent to the remote and not yet acknowledged.
    pub inflight: AtomicU64,
    /// The remote's acknowledgements (PUBACK, PUBCOMP) and their summed round trip.
    pub acks: AtomicU64,
    pub ack_micros_total: AtomicU64,
    pub ack_micros_last: AtomicU64,
}

impl BridgeStats {
    pub fn new(name: &str) -> BridgeStats {
        BridgeStats {
            name: name.to_owned(),
            ..BridgeStats::default()
        }
    }

    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The Prometheus text of every bridge's counters.
pub fn render(bridges: &[Arc<BridgeStats>]) -> String {
    let mut out = String::new();
    if bridges.is_empty() {
        return out;
    }
    type Field = fn(&BridgeStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Field); 12] = [
        (
            "ringmq_bridge_connected",
            "gauge",
            "1 while the bridge is connected to its remote",
            |b| &b.connected,
        ),
        (
            "ringmq_bridge_reconnects_total",
            "counter",
            "connections to the remote after the first",
            |b| &b.reconnects,
        ),
        (
            "ringmq_bridge_connect_failures_total",
            "counter",
            "failed connection attempts",
            |b| &b.connect_failures,
        ),
        (
            "ringmq_bridge_messages_out_total",
            "counter",
            "messages published to the remote",
            |b| &b.messages_out,
        ),
        (
            "ringmq_bridge_messages_in_total",
            "counter",
            "messages received from the remote and published here",
            |b| &b.messages_in,
        ),
        (
            "ringmq_bridge_bytes_out_total",
            "counter",
            "bytes written to the remote connection",
            |b| &b.bytes_out,
        ),
        (
            "ringmq_bridge_bytes_in_total",
            "counter",
            "bytes read from the remote connection",
            |b| &b.bytes_in,
        ),
        (
            "ringmq_bridge_dropped_total",
            "counter",
            "messages not forwarded (no rule matched, hop guard)",
            |b| &b.dropped,
        ),
        (
            "ringmq_bridge_queued_messages",
            "gauge",
            "messages queued in the bridge's local session",
            |b| &b.queued,
        ),
        (
            "ringmq_bridge_inflight_messages",
            "gauge",
            "QoS 1/2 messages sent to the remote, not yet acknowledged",
            |b| &b.inflight,
        ),
        (
            "ringmq_bridge_acks_total",
            "counter",
            "acknowledgements (PUBACK, PUBCOMP) from the remote",
            |b| &b.acks,
        ),
        (
            "ringmq_bridge_ack_seconds_total",
            "counter",
            "summed round trip of those acknowledgements",
            |b| &b.ack_micros_total,
        ),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} Bridge: {help}.\n# TYPE {name} {kind}");
        for bridge in bridges {
            let value = BridgeStats::get(field(bridge));
            if name == "ringmq_bridge_ack_seconds_total" {
                let _ = writeln!(
                    out,
                    "{name}{{bridge=\"{}\"}} {}",
                    bridge.name,
                    value as f64 / 1e6
                );
            } else {
                let _ = writeln!(out, "{name}{{bridge=\"{}\"}} {value}", bridge.name);
            }
        }
    }
    out
}
