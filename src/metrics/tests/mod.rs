//! Metrics: recording, merging, and the text format read back by a small independent parser.

mod docs;
mod exposition;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::protocol::{Packet, QoS, ReasonCode};
use exposition::{Exposition, parse};

fn snapshot_with(fill: impl FnOnce(&mut ShardMetrics)) -> Arc<ShardSnapshot> {
    let mut metrics = ShardMetrics::new();
    fill(&mut metrics);
    Arc::new(metrics.snapshot())
}

fn render(shards: &[Arc<ShardSnapshot>]) -> Exposition {
    let indexed: Vec<(usize, Arc<ShardSnapshot>)> = shards.iter().cloned().enumerate().collect();
    let text = render_prometheus(&indexed, &[], Duration::from_secs(42), "1.2.3");
    parse(&text)
}

fn two_shards() -> Vec<Arc<ShardSnapshot>> {
    let first = snapshot_with(|m| {
        m.counts.connections = 3;
        m.counts.retained_bytes = 1000;
        for _ in 0..3 {
            m.connection_accepted();
        }
        m.connection_rejected(ConnectRejection::BadCredentials);
        m.connection_rejected(ConnectRejection::BadCredentials);
        m.packet_received(PacketKind::Publish);
        m.packet_sent(PacketKind::ConnAck);
        m.message_received(QoS::AtLeastOnce);
        m.messages_dropped(DropReason::QueueFull, 5);
        m.authentication(false);
        m.bytes_received(100);
        for micros in [5, 10, 11, 100, 1_500, 2_000_000] {
            m.record_delivery(QoS::AtLeastOnce, Path::Local, micros, 1);
        }
    });
    let second = snapshot_with(|m| {
        m.counts.connections = 4;
        for _ in 0..4 {
            m.connection_accepted();
        }
        m.connection_rejected(ConnectRejection::ConnectTimeout);
        m.packet_received(PacketKind::Publish);
        m.packet_received(PacketKind::Auth);
        m.message_received(QoS::AtLeastOnce);
        m.message_sent(QoS::ExactlyOnce);
        m.messages_dropped(DropReason::QueueFull, 1);
        m.messages_dropped(DropReason::Qos0Offline, 2);
        m.authentication(true);
        m.bytes_received(23);
        m.record_delivery(QoS::AtLeastOnce, Path::Local, 20, 1);
        m.record_ring_wait(7);
    });
    vec![first, second]
}

#[test]
fn counters_and_gauges_per_shard_and_merged() {
    let exposition = render(&two_shards());
    let check = |name: &str, labels: &[(&str, &str)], expected: f64| {
        assert_eq!(exposition.get(name, labels), expected, "{name} {labels:?}");
    };
    check("ringmq_uptime_seconds", &[], 42.0);
    check("ringmq_build_info", &[("version", "1.2.3")], 1.0);
    check("ringmq_shards", &[], 2.0);
    check("ringmq_connections", &[("shard", "0")], 3.0);
    check("ringmq_connections", &[("shard", "1")], 4.0);
    check("ringmq_connections", &[("shard", "all")], 7.0);
    check("ringmq_retained_bytes", &[("shard", "all")], 1000.0);
    check(
        "ringmq_connections_accepted_total",
        &[("shard", "all")],
        7.0,
    );
    let rejected = "ringmq_connections_rejected_total";
    check(
        rejected,
        &[("shard", "0"), ("reason", "bad_credentials")],
        2.0,
    );
    check(
        rejected,
        &[("shard", "1"), ("reason", "connect_timeout")],
        1.0,
    );
    check(
        rejected,
        &[("shard", "all"), ("reason", "bad_credentials")],
        2.0,
    );
    check(
        rejected,
        &[("shard", "all"), ("reason", "server_busy")],
        0.0,
    );
    let received = "ringmq_packets_received_total";
    check(received, &[("shard", "all"), ("type", "publish")], 2.0);
    check(received, &[("shard", "1"), ("type", "auth")], 1.0);
    check(
        "ringmq_packets_sent_total",
        &[("shard", "0"), ("type", "connack")],
        1.0,
    );
    check(
        "ringmq_messages_received_total",
        &[("shard", "all"), ("qos", "1")],
        2.0,
    );
    check(
        "ringmq_messages_sent_total",
        &[("shard", "all"), ("qos", "2")],
        1.0,
    );
    let dropped = "ringmq_messages_dropped_total";
    check(dropped, &[("shard", "all"), ("reason", "queue_full")], 6.0);
    check(
        dropped,
        &[("shard", "all"), ("reason", "qos0_offline")],
        2.0,
    );
    let auth = "ringmq_authentications_total";
    check(auth, &[("shard", "all"), ("result", "success")], 1.0);
    check(auth, &[("shard", "all"), ("result", "failure")], 1.0);
    check("ringmq_bytes_received_total", &[("shard", "all")], 123.0);
    assert_eq!(
        exposition
            .types
            .get("ringmq_connections_accepted_total")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        exposition
            .types
            .get("ringmq_delivery_latency_seconds")
            .map(String::as_str),
        Some("histogram")
    );
}

#[test]
fn histogram_buckets_are_cumulative_with_exact_values() {
    let exposition = render(&two_shards());
    let bucket = "ringmq_delivery_latency_seconds_bucket";
    let le = |shard: &str, le: &str| {
        exposition.get(
            bucket,
            &[
                ("shard", shard),
                ("qos", "1"),
                ("path", "local"),
                ("le", le),
            ],
        )
    };
    // Shard 0 recorded 5, 10, 11, 100, 1500 µs and 2 s.
    let expected = [
        ("0.00001", 2.0),
        ("0.000025", 3.0),
        ("0.0001", 4.0),
        ("0.001", 4.0),
        ("0.0025", 5.0),
        ("1", 5.0),
        ("2.5", 6.0),
        ("10", 6.0),
        ("+Inf", 6.0),
    ];
    for (bound, count) in expected {
        assert_eq!(le("0", bound), count, "le={bound}");
    }
    let sum = exposition.get(
        "ringmq_delivery_latency_seconds_sum",
        &[("shard", "0"), ("qos", "1"), ("path", "local")],
    );
    assert_eq!(sum, 2.001626);
    // Merged: shard 1 added 20 µs.
    assert_eq!(le("all", "0.000025"), 4.0);
    assert_eq!(le("all", "+Inf"), 7.0);
    assert_eq!(
        exposition.get("ringmq_ring_wait_seconds_count", &[("shard", "all")]),
        1.0
    );
}

#[test]
fn every_histogram_is_cumulative_and_inf_equals_count() {
    let exposition = render(&two_shards());
    let histograms: Vec<&String> = exposition
        .types
        .iter()
        .filter(|(_, kind)| *kind == "histogram")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(histograms.len(), 7);
    for name in histograms {
        for (count_key, count) in exposition.matching(&format!("{name}_count"), ("shard", "")) {
            let labels = &count_key[count_key.find('{').unwrap()..];
            let prefix = format!("{name}_bucket{}", &labels[..labels.len() - 1]);
            let mut bounds: Vec<(f64, f64)> = exposition
                .samples
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && k.contains("le=\""))
                .map(|(k, v)| {
                    let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                    (le.parse::<f64>().unwrap(), *v)
                })
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(bounds.len(), BUCKET_BOUNDS_MICROS.len() + 1, "{prefix}");
            assert!(bounds.windows(2).all(|w| w[0].1 <= w[1].1), "{prefix}");
            assert_eq!(bounds.last().unwrap(), &(f64::INFINITY, count), "{prefix}");
        }
    }
}

#[test]
fn merged_series_equal_the_sum_of_shards() {
    let exposition = render(&two_shards());
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut merged: BTreeMap<String, f64> = BTreeMap::new();
    for (key, value) in &exposition.samples {
        if key.contains("_quantile_seconds") || !key.contains("shard=\"") {
            continue;
        }
        let general = key
            .replace("shard=\"0\"", "shard=\"*\"")
            .replace("shard=\"1\"", "shard=\"*\"")
            .replace("shard=\"all\"", "shard=\"*\"");
        if key.contains("shard=\"all\"") {
            merged.insert(general, *value);
        } else {
            *sums.entry(general).or_default() += value;
        }
    }
    assert!(merged.len() > 200);
    for (key, value) in &merged {
        let sum = sums.get(key).copied().unwrap_or(0.0);
        assert!((sum - value).abs() < 1e-9, "{key}: {sum} != {value}");
    }
}

#[test]
fn families_are_contiguous() {
    let exposition = render(&two_shards());
    let mut seen: Vec<&String> = Vec::new();
    for family in &exposition.order {
        if seen.last() != Some(&family) {
            assert!(!seen.contains(&family), "{family} split");
            seen.push(family);
        }
    }
}

#[test]
fn quantiles_merge_as_histograms_not_as_averages() {
    // Shard 0: 100 values of 10 µs; shard 1: 900 values of 1000 µs. The merged median is 1 ms;
    // the mean of the two shard medians would be 505 µs.
    let first = snapshot_with(|m| (0..100).for_each(|_| m.record_outbox_wait(10)));
    let second = snapshot_with(|m| (0..900).for_each(|_| m.record_outbox_wait(1_000)));
    let exposition = render(&[first, second]);
    let q = |shard: &str, quantile: &str| {
        let labels = [("shard", shard), ("quantile", quantile)];
        exposition.get("ringmq_outbox_wait_quantile_seconds", &labels)
    };
    assert_eq!(q("0", "0.5"), 0.00001);
    assert_eq!(q("1", "0.5"), 0.001);
    assert_eq!(q("all", "0.5"), 0.001);
    assert_eq!(q("0", "1"), 0.00001);
    assert_eq!(q("all", "1"), 0.001);
}

#[test]
fn quantiles_of_a_known_distribution() {
    let mut histogram = LatencyHistogram::new();
    (1..=1000).for_each(|micros| histogram.record(micros));
    let check = |quantile: f64, expected: u64| {
        assert_eq!(
            histogram.quantile_micros(quantile),
            Some(expected),
            "q={quantile}"
        );
    };
    check(0.5, 500);
    check(0.9, 900);
    check(0.99, 990);
    check(0.999, 999);
    check(1.0, 1000);
    assert_eq!(histogram.sum_micros(), 500_500);
    assert_eq!(LatencyHistogram::new().quantile_micros(0.5), None);
}

#[test]
fn empty_histograms_export_nan_quantiles_and_zero_counts() {
    let text = render_prometheus(&[(0, snapshot_with(|_| ()))], &[], Duration::ZERO, "0");
    assert!(
        text.contains(
            "ringmq_connect_latency_quantile_seconds{shard=\"0\",quantile=\"0.99\"} NaN\n"
        )
    );
    assert!(text.contains("ringmq_connect_latency_seconds_count{shard=\"0\"} 0\n"));
    assert!(text.contains("ringmq_connect_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 0\n"));
}

#[test]
fn no_shards_yet_still_renders_merged_zeroes() {
    let exposition = render(&[]);
    assert_eq!(exposition.get("ringmq_shards", &[]), 0.0);
    assert_eq!(
        exposition.get("ringmq_connections", &[("shard", "all")]),
        0.0
    );
}

#[test]
fn values_past_the_range_are_clamped() {
    let mut histogram = LatencyHistogram::new();
    histogram.record(u64::MAX);
    histogram.record(0);
    assert_eq!(histogram.count(), 2);
    assert_eq!(histogram.sum_micros(), LATENCY_HIGHEST_MICROS);
    assert_eq!(histogram.cumulative_buckets()[0], 1);
    assert_eq!(histogram.cumulative_buckets()[18], 1);
}

#[test]
fn seconds_are_exact_decimals() {
    let check = |micros: u64, expected: &str| {
        assert_eq!(prometheus::micros_as_seconds(micros), expected);
    };
    check(0, "0");
    check(10, "0.00001");
    check(25, "0.000025");
    check(1_000, "0.001");
    check(2_500_000, "2.5");
    check(10_000_000, "10");
    check(2_001_626, "2.001626");
}

#[test]
fn label_escaping() {
    let text = render_prometheus(&[], &[], Duration::ZERO, "a\"b\\c\nd");
    assert!(text.contains("ringmq_build_info{version=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

#[test]
fn label_enums_fit_their_arrays() {
    assert_eq!(PacketKind::COUNT, 15);
    for (index, kind) in PacketKind::ALL.iter().enumerate() {
        assert_eq!(kind.index(), index);
    }
    for (index, reason) in DropReason::ALL.iter().enumerate() {
        assert_eq!(reason.index(), index);
    }
    for (index, reason) in ConnectRejection::ALL.iter().enumerate() {
        assert_eq!(reason.index(), index);
    }
    assert_eq!(PacketKind::of(&Packet::PingReq), PacketKind::PingReq);
}

#[test]
fn connack_codes_map_to_rejections() {
    let check = |code: ReasonCode, expected: Option<ConnectRejection>| {
        assert_eq!(
            ConnectRejection::from_reason_code(code),
            expected,
            "{code:?}"
        );
    };
    use ConnectRejection::*;
    check(ReasonCode::SUCCESS, None);
    check(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, Some(BadProtocol));
    check(
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        Some(IdentifierRejected),
    );
    check(ReasonCode::BAD_USER_NAME_OR_PASSWORD, Some(BadCredentials));
    check(ReasonCode::NOT_AUTHORIZED, Some(NotAuthorized));
    check(ReasonCode::SERVER_BUSY, Some(ServerBusy));
    check(ReasonCode::SERVER_UNAVAILABLE, Some(ServerBusy));
    check(ReasonCode::TOPIC_NAME_INVALID, Some(Other));
}

#[test]
fn board_keeps_the_latest_snapshot_per_shard() {
    let board = SnapshotBoard::new(3);
    assert!(board.latest().is_empty());
    let mut metrics = ShardMetrics::new();
    metrics.connection_accepted();
    board.publish(2, metrics.snapshot());
    metrics.connection_accepted();
    board.publish(2, metrics.snapshot());
    board.publish(0, ShardMetrics::new().snapshot());
    let latest = board.latest();
    let indices: Vec<usize> = latest.iter().map(|(index, _)| *index).collect();
    assert_eq!(indices, vec![0, 2]);
    assert_eq!(board.merged().counts.connections_accepted, 2);
    assert_eq!(board.merged().shards, 2);
    // Readers on other threads.
    let board = Arc::new(board);
    let reader = {
        let board = Arc::clone(&board);
        std::thread::spawn(move || board.merged().counts.connections_accepted)
    };
    assert_eq!(reader.join().unwrap(), 2);
}

#[test]
fn counts_add_covers_every_field() {
    // `add` destructures without `..`; this checks it also adds what it names.
    let mut one = ShardMetrics::new();
    one.counts = Counts {
        connections: 1,
        sessions: 1,
        subscriptions: 1,
        shared_subscriptions: 1,
        retained_messages: 1,
        retained_bytes: 1,
        queued_messages: 1,
        queued_bytes: 1,
        ring_depth: 1,
        write_buffer_bytes: 1,
        will_bytes: 1,
        subscription_bytes: 1,
        connections_accepted: 1,
        sessions_created: 1,
        sessions_resumed: 1,
        sessions_taken_over: 1,
        sessions_expired: 1,
        bytes_received: 1,
        bytes_sent: 1,
        authentication_success: 1,
        authentication_failure: 1,
        mail_sent: 1,
        mail_received: 1,
        ..Counts::default()
    };
    one.connection_rejected(ConnectRejection::Other);
    one.connection_opened(Transport::SecureWebSocket, 0);
    one.packet_received(PacketKind::Auth);
    one.packet_sent(PacketKind::Auth);
    one.message_received(QoS::ExactlyOnce);
    one.message_sent(QoS::AtMostOnce);
    one.messages_dropped(DropReason::RetainedFull, 1);
    let snapshot = Arc::new(one.snapshot());
    let merged = merge(&[Arc::clone(&snapshot), snapshot]);
    let mut doubled = one.counts;
    doubled.add(&one.counts);
    assert_eq!(merged.counts, doubled);
    assert_eq!(merged.counts.connections, 2);
    assert_eq!(merged.counts.mail_received, 2);
    assert_eq!(
        merged
            .counts
            .messages_dropped
            .get(DropReason::RetainedFull.index()),
        2
    );
    assert_eq!(merged.counts.packets_sent_total(), 2);
}

#[test]
fn publisher_recycles_snapshots_without_changing_values() {
    let board = Arc::new(SnapshotBoard::new(1));
    let mut publisher = SnapshotPublisher::new(Arc::clone(&board), 0);
    let mut metrics = ShardMetrics::new();
    let rendered =
        |board: &SnapshotBoard| render_prometheus(&board.latest(), &[], Duration::ZERO, "0");
    for round in 1..=4u64 {
        // Round 2 holds the published snapshot like a slow reader: no recycling that time.
        let held = (round == 2).then(|| board.latest());
        metrics.connection_accepted();
        metrics.record_connect_latency(round * 100);
        metrics.record_delivery(QoS::ExactlyOnce, Path::Local, round, 1);
        publisher.publish(&metrics);
        let expected = render_prometheus(
            &[(0, Arc::new(metrics.snapshot()))],
            &[],
            Duration::ZERO,
            "0",
        );
        assert_eq!(rendered(&board), expected, "round {round}");
        drop(held);
    }
    assert_eq!(board.merged().counts.connections_accepted, 4);
    assert_eq!(board.merged().latency.connect.count(), 4);
}

#[test]
fn recent_quantiles_cover_the_window_and_since_start_everything() {
    let board = Arc::new(SnapshotBoard::new(1));
    let mut publisher = SnapshotPublisher::new(Arc::clone(&board), 0);
    let mut metrics = ShardMetrics::new();
    let quantile = |name: &str, q: &str| {
        let text = render_prometheus(&board.latest(), &[], Duration::ZERO, "0");
        let labels = [
            ("shard", "0"),
            ("qos", "0"),
            ("path", "cross_shard"),
            ("quantile", q),
        ];
        parse(&text).get(name, &labels)
    };
    let since_start = "ringmq_delivery_latency_quantile_seconds";
    let recent = "ringmq_delivery_latency_recent_quantile_seconds";
    // An incident long ago: a thousand deliveries of 2 s each.
    metrics.record_delivery(QoS::AtMostOnce, Path::CrossShard, 2_000_000, 1000);
    publisher.publish(&metrics);
    // Quantiles are HDR values: equal to 0.1%.
    let near = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.001;
    assert!(
        near(quantile(recent, "0.5"), 2.0),
        "younger than the window: since start"
    );
    // Two window steps of calm: 100 µs deliveries, fewer than the incident's.
    for _ in 0..2 * WINDOW_STEP_PUBLISHES {
        metrics.record_delivery(QoS::AtMostOnce, Path::CrossShard, 100, 10);
        publisher.publish(&metrics);
    }
    assert!(near(quantile(since_start, "0.5"), 2.0));
    assert!(
        near(quantile(recent, "1"), 0.0001),
        "the incident left the window"
    );
    assert!(near(quantile(recent, "0.5"), 0.0001));
    let count = |window: &Latencies| window.delivery(QoS::AtMostOnce, Path::CrossShard).count();
    let latest = board.latest();
    let snapshot = &latest.first().unwrap().1;
    // The window holds between one and two steps of publishes (10 deliveries each).
    let in_window = count(&snapshot.recent);
    assert!(
        (10 * u64::from(WINDOW_STEP_PUBLISHES)..=20 * u64::from(WINDOW_STEP_PUBLISHES))
            .contains(&in_window),
        "{in_window}"
    );
    assert_eq!(
        count(&snapshot.latency),
        1000 + 20 * u64::from(WINDOW_STEP_PUBLISHES)
    );
    let recent_sum = snapshot
        .recent
        .delivery(QoS::AtMostOnce, Path::CrossShard)
        .sum_micros();
    assert_eq!(recent_sum, in_window * 100, "the window's sum is exact too");
}

#[test]
fn connections_are_counted_by_listener_name() {
    let listeners = [
        ListenerLabel {
            name: String::from("tcp.default"),
            transport: Transport::Tcp,
        },
        ListenerLabel {
            name: String::from("ws.browsers"),
            transport: Transport::WebSocket,
        },
    ];
    let first = snapshot_with(|m| {
        m.connection_opened(Transport::WebSocket, 1);
        m.connection_opened(Transport::WebSocket, 1);
        m.connection_closed(1);
    });
    let second = snapshot_with(|m| m.connection_opened(Transport::WebSocket, 1));
    let text = render_prometheus(&[(0, first), (1, second)], &listeners, Duration::ZERO, "0");
    let parsed = parse(&text);
    let value = |family: &str, shard: &str, listener: &str, transport: &str| {
        let labels = [
            ("shard", shard),
            ("listener", listener),
            ("transport", transport),
        ];
        parsed.get(family, &labels)
    };
    let ws = |family: &str, shard: &str| value(family, shard, "ws.browsers", "ws");
    let tcp = |family: &str, shard: &str| value(family, shard, "tcp.default", "tcp");
    let (open, opened) = (
        "ringmq_listener_connections",
        "ringmq_listener_connections_opened_total",
    );
    assert_eq!(ws(open, "0"), 1.0);
    assert_eq!(ws(open, "all"), 2.0);
    assert_eq!(ws(opened, "0"), 2.0);
    assert_eq!(ws(opened, "all"), 3.0);
    // A listener without connections yet is there with 0, on every shard.
    assert_eq!(tcp(open, "1"), 0.0);
    assert_eq!(tcp(opened, "all"), 0.0);
}

#[test]
fn a_kernel_stamp_moves_the_start_back_by_the_socket_wait() {
    // (how long ago the kernel stamped the bytes, as the wall clock sees it; the wait recorded
    // and the start's distance before the completion, in ms: at least, at most).
    // A stamp in the future (a wall-clock step back) counts as no wait; an older one than the
    // histograms' highest value counts as that.
    let check = |stamp_age_ms: i64, at_least_ms: u64, at_most_ms: u64| {
        let mut metrics = ShardMetrics::new();
        let completed_at = std::time::Instant::now();
        let age = Duration::from_millis(stamp_age_ms.unsigned_abs());
        let stamp = if stamp_age_ms >= 0 {
            std::time::SystemTime::now() - age
        } else {
            std::time::SystemTime::now() + age
        };
        let start = metrics.record_socket_wait(completed_at, stamp);
        let moved = completed_at.duration_since(start).as_millis() as u64;
        let snapshot = metrics.snapshot();
        let recorded = snapshot.latency.socket_wait.sum_micros() / 1000;
        assert_eq!(
            snapshot.latency.socket_wait.count(),
            1,
            "age {stamp_age_ms} ms"
        );
        assert_eq!(recorded, moved, "age {stamp_age_ms} ms: recorded vs start");
        assert!(
            (at_least_ms..=at_most_ms).contains(&moved),
            "age {stamp_age_ms} ms: start moved back {moved} ms"
        );
    };
    // The upper bounds allow for a slow test machine between the stamp and the reading.
    check(0, 0, 1_000);
    check(250, 250, 1_250);
    check(-5_000, 0, 0);
    check(120_000, 60_000, 60_000);
}
