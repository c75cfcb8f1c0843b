//! The Prometheus text exposition format 0.0.4.
//!
//! Every family is prefixed `ringmq_`; counters end in `_total`; units are seconds and bytes.
//! Each series appears once per shard with `shard="N"` and once merged with `shard="all"`. The
//! merged series is labelled rather than bare so that one selector picks it
//! (`{shard="all"}`) and per-shard views exclude it (`{shard!="all"}`); summing a family over all
//! its series would count everything twice, so queries sum `{shard!="all"}` or read `"all"`.
//!
//! Latencies are exported twice: as histograms (`_bucket`/`_sum`/`_count`, buckets from 10 µs to
//! 10 s) that Prometheus can aggregate and rate, and as `_quantile_seconds` gauges computed from
//! the HDR histograms (p50, p90, p99, p99.9 and max as `quantile="1"`), which are exact to 0.1%,
//! once over everything since start and once (`_recent_quantile_seconds`) over the recent window.
//! An empty histogram's quantiles are `NaN`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{
    BUCKET_BOUNDS_MICROS, ConnectRejection, Counts, DropReason, Latencies, LatencyHistogram,
    LimitReached, ListenerCount, ListenerLabel, PacketKind, Path, QUANTILES, ShardSnapshot,
    Transport, merge,
};
use crate::protocol::QoS;

/// A plain family: name (after the prefix), help, and the value of one series.
type Plain = (&'static str, &'static str, fn(&Counts) -> u64);

/// One labelled series source: the `shard` label value and its numbers.
struct Series<'a> {
    shard: String,
    counts: &'a Counts,
    listeners: &'a [ListenerCount],
    latency: &'a Latencies,
    recent: &'a Latencies,
}

/// Renders every metric of every shard, plus the merged series, plus process-wide gauges.
/// `listeners` names the listeners the snapshots count connections of, by index.
pub fn render_prometheus(
    snapshots: &[(usize, Arc<ShardSnapshot>)],
    listeners: &[ListenerLabel],
    uptime: Duration,
    version: &str,
) -> String {
    let all: Vec<Arc<ShardSnapshot>> = snapshots.iter().map(|(_, s)| Arc::clone(s)).collect();
    let merged = merge(&all);
    let mut series: Vec<Series<'_>> = snapshots
        .iter()
        .map(|(index, snapshot)| Series {
            shard: index.to_string(),
            counts: &snapshot.counts,
            listeners: &snapshot.listeners,
            latency: &snapshot.latency,
            recent: &snapshot.recent,
        })
        .collect();
    series.push(Series {
        shard: String::from("all"),
        counts: &merged.counts,
        listeners: &merged.listeners,
        latency: &merged.latency,
        recent: &merged.recent,
    });

    let mut out = Out::default();
    out.family("build_info", "gauge", "Always 1; the version is a label.");
    out.sample("build_info", &[("version", version)], "1");
    out.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    out.sample("uptime_seconds", &[], &uptime.as_secs().to_string());
    out.family(
        "shards",
        "gauge",
        "Shards whose metrics are in this scrape.",
    );
    out.sample("shards", &[], &snapshots.len().to_string());
    render_gauges(&mut out, &series);
    render_counters(&mut out, &series);
    render_listeners(&mut out, &series, listeners);
    render_latencies(&mut out, &series);
    out.text
}

/// Connections per listener: open now, and opened since start.
fn render_listeners(out: &mut Out, series: &[Series<'_>], listeners: &[ListenerLabel]) {
    type Get = fn(&ListenerCount) -> u64;
    let families: [(&str, &str, &str, Get); 2] = [
        (
            "listener_connections",
            "gauge",
            "Open connections that passed their handshakes, by listener.",
            |c| c.open,
        ),
        (
            "listener_connections_opened_total",
            "counter",
            "Connections that passed their TLS and WebSocket handshakes, by listener.",
            |c| c.opened,
        ),
    ];
    for (name, kind, help, get) in families {
        out.family(name, kind, help);
        for s in series {
            for (index, listener) in listeners.iter().enumerate() {
                let count = s.listeners.get(index).copied().unwrap_or_default();
                let labels = [
                    ("shard", s.shard.as_str()),
                    ("listener", listener.name.as_str()),
                    ("transport", listener.transport.label()),
                ];
                out.sample(name, &labels, &get(&count).to_string());
            }
        }
    }
}

fn render_gauges(out: &mut Out, series: &[Series<'_>]) {
    let gauges: [Plain; 20] = [
        ("connections", "Open network connections.", |c| {
            c.connections
        }),
        ("sessions", "Sessions held, online and offline.", |c| {
            c.sessions
        }),
        ("subscriptions", "Non-shared subscriptions.", |c| {
            c.subscriptions
        }),
        (
            "shared_subscriptions",
            "Shared-subscription memberships.",
            |c| c.shared_subscriptions,
        ),
        ("retained_messages", "Retained messages stored.", |c| {
            c.retained_messages
        }),
        (
            "retained_bytes",
            "Bytes of retained messages stored.",
            |c| c.retained_bytes,
        ),
        (
            "queued_messages",
            "Messages waiting in subscriber outboxes.",
            |c| c.queued_messages,
        ),
        (
            "queued_bytes",
            "Bytes of messages held for subscribers, queued and in flight.",
            |c| c.queued_bytes,
        ),
        (
            "write_buffer_bytes",
            "Bytes of write buffers and writes under way.",
            |c| c.write_buffer_bytes,
        ),
        ("will_bytes", "Bytes of held wills.", |c| c.will_bytes),
        (
            "subscription_bytes",
            "Bytes of subscription filters.",
            |c| c.subscription_bytes,
        ),
        (
            "ring_depth_messages",
            "Cross-shard mail queued for other shards, not yet in their rings.",
            |c| c.ring_depth,
        ),
        (
            "receive_buffers_held",
            "Buffers of the shard's receive pool holding bytes no read has taken yet.",
            |c| c.receive_buffers_held,
        ),
        (
            "connections_parked",
            "Idle connections parked without a task: a socket and a table entry each.",
            |c| c.connections_parked,
        ),
        (
            "store_broken",
            "1 while the shard's persistence log cannot be written (QoS 1/2 publishes refused).",
            |c| c.store_broken,
        ),
        (
            "store_acks_waiting",
            "Acknowledgements waiting for their records to be synced (fsync = always).",
            |c| c.store_acks_waiting,
        ),
        (
            "store_recovered_sessions",
            "Sessions read back from the store at start.",
            |c| c.store_recovered_sessions,
        ),
        (
            "store_recovered_messages",
            "Queued and in-flight messages read back from the store at start.",
            |c| c.store_recovered_messages,
        ),
        (
            "store_recovered_retained",
            "Retained messages read back from the store at start.",
            |c| c.store_recovered_retained,
        ),
        (
            "store_recovery_milliseconds",
            "Time start-up took to read the store back.",
            |c| c.store_recovery_millis,
        ),
    ];
    for (name, help, get) in gauges {
        out.family(name, "gauge", help);
        for s in series {
            out.sample(name, &[("shard", &s.shard)], &get(s.counts).to_string());
        }
    }
}

fn render_counters(out: &mut Out, series: &[Series<'_>]) {
    let counters: [Plain; 12] = [
        ("connections_accepted_total", "Connections accepted.", |c| {
            c.connections_accepted
        }),
        ("sessions_created_total", "New sessions.", |c| {
            c.sessions_created
        }),
        (
            "sessions_resumed_total",
            "Sessions resumed by a reconnect.",
            |c| c.sessions_resumed,
        ),
        (
            "sessions_taken_over_total",
            "Sessions taken over by a new connection with the same client id.",
            |c| c.sessions_taken_over,
        ),
        ("sessions_expired_total", "Offline sessions expired.", |c| {
            c.sessions_expired
        }),
        ("bytes_received_total", "Bytes read from clients.", |c| {
            c.bytes_received
        }),
        ("bytes_sent_total", "Bytes written to clients.", |c| {
            c.bytes_sent
        }),
        ("mail_sent_total", "Cross-shard mails sent.", |c| {
            c.mail_sent
        }),
        ("mail_received_total", "Cross-shard mails received.", |c| {
            c.mail_received
        }),
        (
            "store_write_failures_total",
            "Writes or syncs of the persistence log that failed.",
            |c| c.store_failures,
        ),
        (
            "receives_pooled_total",
            "Reads completed into a buffer of the shard's receive pool.",
            |c| c.receives_pooled,
        ),
        (
            "receive_pool_exhausted_total",
            "Reads that found the receive pool empty and used recv instead.",
            |c| c.receive_pool_exhausted,
        ),
    ];
    for (name, help, get) in counters {
        out.family(name, "counter", help);
        for s in series {
            out.sample(name, &[("shard", &s.shard)], &get(s.counts).to_string());
        }
    }
    let rejections: Vec<&str> = ConnectRejection::ALL.iter().map(|r| r.label()).collect();
    let kinds: Vec<&str> = PacketKind::ALL.iter().map(|k| k.label()).collect();
    let drops: Vec<&str> = DropReason::ALL.iter().map(|r| r.label()).collect();
    let transports: Vec<&str> = Transport::ALL.iter().map(|t| t.label()).collect();
    let limits: Vec<&str> = LimitReached::ALL.iter().map(|r| r.label()).collect();
    let labelled: [Labelled<'_>; 8] = [
        Labelled {
            name: "connections_opened_total",
            help: "Connections that passed their TLS and WebSocket handshakes, by transport.",
            label: "transport",
            values: &transports,
            get: |c| &c.connections_opened.values()[..],
        },
        Labelled {
            name: "connections_rejected_total",
            help: "Connections refused before or at CONNACK, by reason.",
            label: "reason",
            values: &rejections,
            get: |c| &c.connections_rejected.values()[..],
        },
        Labelled {
            name: "packets_received_total",
            help: "MQTT packets received, by type.",
            label: "type",
            values: &kinds,
            get: |c| &c.packets_received.values()[..],
        },
        Labelled {
            name: "packets_sent_total",
            help: "MQTT packets sent, by type.",
            label: "type",
            values: &kinds,
            get: |c| &c.packets_sent.values()[..],
        },
        Labelled {
            name: "messages_received_total",
            help: "PUBLISH messages received from clients, by QoS.",
            label: "qos",
            values: &["0", "1", "2"],
            get: |c| &c.messages_received.values()[..],
        },
        Labelled {
            name: "messages_sent_total",
            help: "PUBLISH messages delivered to subscribers, by delivered QoS.",
            label: "qos",
            values: &["0", "1", "2"],
            get: |c| &c.messages_sent.values()[..],
        },
        Labelled {
            name: "messages_dropped_total",
            help: "Messages not delivered or not stored, by reason.",
            label: "reason",
            values: &drops,
            get: |c| &c.messages_dropped.values()[..],
        },
        Labelled {
            name: "limits_reached_total",
            help: "Times a shard-wide memory cap or a deadline stopped a client, by reason.",
            label: "reason",
            values: &limits,
            get: |c| &c.limits_reached.values()[..],
        },
    ];
    for family in &labelled {
        family.render(out, series);
    }
    out.family(
        "authentications_total",
        "counter",
        "Authentication outcomes at CONNECT.",
    );
    for s in series {
        let outcomes = [
            ("success", s.counts.authentication_success),
            ("failure", s.counts.authentication_failure),
        ];
        for (result, value) in outcomes {
            let labels = [("shard", s.shard.as_str()), ("result", result)];
            out.sample("authentications_total", &labels, &value.to_string());
        }
    }
}

/// A counter family with one extra label whose values index a `PerLabel`.
struct Labelled<'a> {
    name: &'a str,
    help: &'a str,
    label: &'a str,
    values: &'a [&'a str],
    get: fn(&Counts) -> &[u64],
}

impl Labelled<'_> {
    fn render(&self, out: &mut Out, series: &[Series<'_>]) {
        out.family(self.name, "counter", self.help);
        for s in series {
            for (value, count) in self.values.iter().zip((self.get)(s.counts)) {
                let labels = [("shard", s.shard.as_str()), (self.label, value)];
                out.sample(self.name, &labels, &count.to_string());
            }
        }
    }
}

/// One row of the latency table: a family, its extra labels, and which histogram of a
/// `Latencies` the row's series read.
struct LatencyRow {
    name: &'static str,
    help: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    get: Box<dyn Fn(&Latencies) -> &LatencyHistogram>,
}

/// Which histogram of a `Latencies` a series reads.
type Getter = fn(&Latencies) -> &LatencyHistogram;

fn latency_rows() -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for path in Path::ALL {
            rows.push(LatencyRow {
                name: "delivery_latency",
                help: "Read completion that brought a PUBLISH's last byte -> completion of the \
                    write that carried it to a subscriber, by delivered QoS and by path (local: \
                    published on this shard; cross_shard: came through a ring).",
                labels: vec![("qos", qos_label(qos)), ("path", path.label())],
                get: Box::new(move |l: &Latencies| l.delivery(qos, path)),
            });
        }
    }
    let stages: [(&'static str, &'static str, Getter); 6] = [
        (
            "handle_latency",
            "Stage: read completion (with kernel timestamps: the kernel's receive stamp) -> the \
                packets it brought handled (decoded, routed, encoded for local subscribers), one \
                value per PUBLISH.",
            |l| &l.handle,
        ),
        (
            "socket_wait",
            "Kernel receive timestamp of a read's bytes -> the read's completion: time they \
                waited in the socket (observability.kernel_timestamps), one value per read.",
            |l| &l.socket_wait,
        ),
        (
            "ring_wait",
            "Stage: time a cross-shard mail waited in a ring.",
            |l| &l.ring_wait,
        ),
        (
            "outbox_wait",
            "Stage: time a message waited in a subscriber's outbox.",
            |l| &l.outbox_wait,
        ),
        (
            "write_latency",
            "Stage: delivery encoded into the write buffer -> the write carrying it completed.",
            |l| &l.write,
        ),
        (
            "connect_latency",
            "CONNECT received -> CONNACK written.",
            |l| &l.connect,
        ),
    ];
    for (name, help, get) in stages {
        rows.push(LatencyRow {
            name,
            help,
            labels: Vec::new(),
            get: Box::new(get),
        });
    }
    rows
}

fn qos_label(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

fn render_latencies(out: &mut Out, series: &[Series<'_>]) {
    let rows = latency_rows();
    // Families with `qos` and `path` labels span several rows; each name is rendered once.
    let mut names: Vec<(&str, &str)> = Vec::new();
    for row in &rows {
        if !names.iter().any(|(seen, _)| *seen == row.name) {
            names.push((row.name, row.help));
        }
    }
    for (name, help) in &names {
        let family: Vec<&LatencyRow> = rows.iter().filter(|row| row.name == *name).collect();
        let histogram_name = format!("{name}_seconds");
        out.family(&histogram_name, "histogram", help);
        for s in series {
            for row in &family {
                histogram(
                    out,
                    &histogram_name,
                    &s.shard,
                    &row.labels,
                    (row.get)(s.latency),
                );
            }
        }
        let since_start = format!("{help} Quantiles since start from HDR; quantile 1 is max.");
        let name_since_start = format!("{name}_quantile_seconds");
        quantile_family(out, &name_since_start, &since_start, series, &family, |s| {
            s.latency
        });
        let recent = format!(
            "{help} Quantiles over the last 30 to 60 s (since start when younger) from HDR; \
                quantile 1 is max."
        );
        let name_recent = format!("{name}_recent_quantile_seconds");
        quantile_family(out, &name_recent, &recent, series, &family, |s| s.recent);
    }
}

/// One family of quantile gauges: every row of `family` for every series, from the histograms
/// `window` picks (since start or recent).
fn quantile_family(
    out: &mut Out,
    name: &str,
    help: &str,
    series: &[Series<'_>],
    family: &[&LatencyRow],
    window: for<'a> fn(&Series<'a>) -> &'a Latencies,
) {
    out.family(name, "gauge", help);
    for s in series {
        for row in family {
            quantiles(out, name, &s.shard, &row.labels, (row.get)(window(s)));
        }
    }
}

fn histogram(out: &mut Out, name: &str, shard: &str, extra: &[(&str, &str)], h: &LatencyHistogram) {
    let bucket = format!("{name}_bucket");
    let labels: Vec<(&str, &str)> = [&[("shard", shard)], extra].concat();
    for (bound, count) in BUCKET_BOUNDS_MICROS.iter().zip(h.cumulative_buckets()) {
        let le = micros_as_seconds(*bound);
        let with_le = [labels.as_slice(), &[("le", le.as_str())]].concat();
        out.sample(&bucket, &with_le, &count.to_string());
    }
    let count = h.count().to_string();
    let with_inf = [labels.as_slice(), &[("le", "+Inf")]].concat();
    out.sample(&bucket, &with_inf, &count);
    out.sample(
        &format!("{name}_sum"),
        &labels,
        &micros_as_seconds(h.sum_micros()),
    );
    out.sample(&format!("{name}_count"), &labels, &count);
}

fn quantiles(out: &mut Out, name: &str, shard: &str, extra: &[(&str, &str)], h: &LatencyHistogram) {
    for (quantile, label) in QUANTILES {
        let labels: Vec<(&str, &str)> =
            [&[("shard", shard)], extra, &[("quantile", label)]].concat();
        let value = h
            .quantile_micros(quantile)
            .map_or_else(|| String::from("NaN"), micros_as_seconds);
        out.sample(name, &labels, &value);
    }
}

/// Microseconds as an exact decimal number of seconds: 10 -> "0.00001", 2_500_000 -> "2.5".
pub(super) fn micros_as_seconds(micros: u64) -> String {
    let seconds = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return seconds.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{seconds}.{}", digits.trim_end_matches('0'))
}

/// The cluster link's series (docs/CLUSTER.md): its state, the nodes it knows, messages to and
/// from other nodes, and what it dropped, by reason.
pub fn render_cluster(stats: &crate::cluster::ClusterStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Out::default();
    out.family(
        "cluster_connected",
        "gauge",
        "1 while the cluster link is connected to NATS.",
    );
    let connected = stats.connected.load(std::sync::atomic::Ordering::Acquire);
    out.sample("cluster_connected", &[], if connected { "1" } else { "0" });
    out.family(
        "cluster_streams_open",
        "gauge",
        "1 while this node reads the cluster's JetStream streams.",
    );
    let open = stats
        .streams_open
        .load(std::sync::atomic::Ordering::Acquire);
    out.sample("cluster_streams_open", &[], if open { "1" } else { "0" });
    out.family(
        "cluster_streams_open_failures_total",
        "counter",
        "Attempts to open the cluster's JetStream streams that failed (the log says why).",
    );
    out.sample(
        "cluster_streams_open_failures_total",
        &[],
        &stats.streams_open_failed.load(Relaxed).to_string(),
    );
    out.family("cluster_nodes", "gauge", "Other nodes this node hears.");
    out.sample("cluster_nodes", &[], &stats.nodes.load(Relaxed).to_string());
    out.family(
        "cluster_messages_total",
        "counter",
        "Messages sent to other nodes (once per target node) and received from them.",
    );
    for (direction, counter) in [("out", &stats.messages_out), ("in", &stats.messages_in)] {
        let value = counter.load(Relaxed).to_string();
        out.sample(
            "cluster_messages_total",
            &[("direction", direction)],
            &value,
        );
    }
    out.family(
        "cluster_batches_sent_total",
        "counter",
        "NATS messages carrying batches of messages to other nodes.",
    );
    let batches = stats.batches_out.load(Relaxed).to_string();
    out.sample("cluster_batches_sent_total", &[], &batches);
    out.family(
        "cluster_dropped_total",
        "counter",
        "Messages (or interest changes) the cluster link could not pass on, by reason.",
    );
    labelled_counters(
        &mut out,
        "cluster_dropped_total",
        "reason",
        &[
            ("link_full", &stats.dropped_link_full),
            ("control_full", &stats.dropped_control_full),
            ("disconnected", &stats.dropped_disconnected),
            ("inbound_full", &stats.dropped_inbound_full),
            ("undecodable", &stats.dropped_undecodable),
        ],
    );
    out.family(
        "cluster_barrier_timeouts_total",
        "counter",
        "SUBACKs sent before every node acknowledged the new interest (interest_ack_timeout_ms).",
    );
    let timeouts = stats.barrier_timeouts.load(Relaxed).to_string();
    out.sample("cluster_barrier_timeouts_total", &[], &timeouts);
    out.family(
        "cluster_connects_total",
        "counter",
        "Times the cluster link (re)connected to NATS.",
    );
    let connects = stats.reconnects.load(Relaxed).to_string();
    out.sample("cluster_connects_total", &[], &connects);
    out.family(
        "cluster_claims_total",
        "counter",
        "Client ids claimed: sent (a client connected here) and received from other nodes.",
    );
    labelled_counters(
        &mut out,
        "cluster_claims_total",
        "direction",
        &[("out", &stats.claims_out), ("in", &stats.claims_in)],
    );
    out.family(
        "cluster_session_mirror_total",
        "counter",
        "Records of the cluster's session mirror: written by this node (a persistent session \
         here changed or ended), those of them replaced by a newer one of their session before \
         they went to the stream (superseded), and read (any node's).",
    );
    labelled_counters(
        &mut out,
        "cluster_session_mirror_total",
        "direction",
        &[
            ("out", &stats.mirror_out),
            ("superseded", &stats.mirror_superseded),
            ("in", &stats.mirror_in),
        ],
    );
    out.family(
        "cluster_queued_messages_total",
        "counter",
        "QoS 1/2 messages queued for persistent sessions here (connected or not), copied to the \
         cluster's stream of queued messages (out), those copies the stream took (stored), and taken \
         back from it for sessions resumed here from another node (in).",
    );
    labelled_counters(
        &mut out,
        "cluster_queued_messages_total",
        "direction",
        &[
            ("out", &stats.queued_out),
            ("stored", &stats.queued_stored),
            ("in", &stats.queued_in),
        ],
    );
    out.family(
        "cluster_sessions_adopted_total",
        "counter",
        "Persistent sessions of dead nodes this node installed as its own offline sessions from \
         the cluster's session mirror.",
    );
    out.sample(
        "cluster_sessions_adopted_total",
        &[],
        &stats.sessions_adopted.load(Relaxed).to_string(),
    );
    out.family(
        "cluster_stream_batches_total",
        "counter",
        "Batches of QoS 1/2 messages through the JetStream stream: stored for other nodes, not \
         stored in time (their PUBACK/PUBREC refused), taken by this node, acknowledged to the \
         stream, asked again because a shard's queue was full, and held back unacknowledged \
         (tests only: RINGMQTEST_HOLD_STREAM_ACKS).",
    );
    labelled_counters(
        &mut out,
        "cluster_stream_batches_total",
        "result",
        &[
            ("stored", &stats.stream_stored),
            ("failed", &stats.stream_failed),
            ("taken", &stats.stream_in),
            ("acked", &stats.stream_acked),
            ("retried", &stats.stream_retried),
            ("held", &stats.stream_held),
        ],
    );
    out.family(
        "cluster_stream_records_skipped_total",
        "counter",
        "Messages of stream batches delivered again that this node had already handed to its \
         shards, not routed a second time.",
    );
    out.sample(
        "cluster_stream_records_skipped_total",
        &[],
        &stats.stream_records_skipped.load(Relaxed).to_string(),
    );
    out.family(
        "cluster_stream_notes",
        "gauge",
        "Notes this node keeps of messages of stream batches queued for its persistent sessions, \
         until the stream's acknowledgement floor passes their batch (docs/CLUSTER.md, Exactly \
         once).",
    );
    out.sample(
        "cluster_stream_notes",
        &[],
        &stats.stream_notes.load(Relaxed).to_string(),
    );
    out.family(
        "cluster_stream_deliveries_skipped_total",
        "counter",
        "Deliveries of messages of stream batches delivered again (after a restart of this node) \
         that a session here had already queued before: not queued a second time.",
    );
    out.sample(
        "cluster_stream_deliveries_skipped_total",
        &[],
        &stats.stream_deliveries_skipped.load(Relaxed).to_string(),
    );
    out.text
}

/// One sample of counter family `name` per (label value, counter).
fn labelled_counters(
    out: &mut Out,
    name: &str,
    label: &str,
    counters: &[(&str, &std::sync::atomic::AtomicU64)],
) {
    for (value, counter) in counters {
        let count = counter
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string();
        out.sample(name, &[(label, value)], &count);
    }
}

/// The text being built.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP ringmq_{name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE ringmq_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        let _ = write!(self.text, "ringmq_{name}");
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
