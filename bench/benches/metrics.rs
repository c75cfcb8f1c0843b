//! Goal: what a shard pays, off the data path, to hand its metrics over: one snapshot publish
//! (about once a second per shard), including the recent-window quantiles (a subtraction of an
//! older copy of the histograms, and every 30 publishes a new copy).
//!
//! Run: `cargo bench -p bench --bench metrics`. The histograms hold values spread over their
//! whole range (every HDR bucket group in use), which is the worst case for the copies.

use std::sync::Arc;

use divan::Bencher;
use ringmq::metrics::{
    Path, ShardMetrics, SnapshotBoard, SnapshotPublisher, WINDOW_STEP_PUBLISHES,
};
use ringmq::protocol::QoS;

fn main() {
    divan::main();
}

/// Metrics with every latency histogram filled from 1 µs to 60 s.
fn filled() -> ShardMetrics {
    let mut metrics = ShardMetrics::new();
    let mut micros = 1u64;
    while micros < 60_000_000 {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for path in Path::ALL {
                metrics.record_delivery(qos, path, micros, 3);
            }
        }
        metrics.record_handle(micros, 2);
        metrics.record_write(micros, 2);
        metrics.record_ring_wait(micros);
        metrics.record_outbox_wait(micros);
        metrics.record_connect_latency(micros);
        micros = micros * 101 / 100 + 1;
    }
    metrics
}

/// One publish, averaged over a whole window step so the baseline copy is in its share.
#[divan::bench(sample_count = 20, sample_size = 30)]
fn publish_snapshot(bencher: Bencher) {
    let mut metrics = filled();
    let board = Arc::new(SnapshotBoard::new(1));
    let mut publisher = SnapshotPublisher::new(Arc::clone(&board), 0);
    // Past the first window steps, so both baselines exist and buffers are recycled.
    for _ in 0..2 * WINDOW_STEP_PUBLISHES {
        publisher.publish(&metrics);
    }
    bencher.bench_local(|| {
        // Something new each time, as a live shard records between publishes.
        metrics.record_delivery(QoS::AtMostOnce, Path::Local, 42, 1);
        publisher.publish(&metrics);
    });
}
