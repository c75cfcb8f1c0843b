//! Latency histograms: HDR histograms in microseconds with an exact running sum.
//!
//! HDR keeps every value to 3 significant digits from 1 µs to 60 s in fixed memory, records in
//! constant time, and merges exactly across shards (`Histogram::add` adds bucket counts), which
//! averaging per-shard percentiles cannot do. Prometheus also wants `_sum`, which HDR only knows
//! to its precision, so the exact sum is kept beside it.

use hdrhistogram::Histogram;

use crate::protocol::QoS;

/// The lowest value told apart from zero, in microseconds.
const LATENCY_LOWEST_MICROS: u64 = 1;
/// The highest value tracked; larger values are recorded as this (a minute is already an outage).
pub const LATENCY_HIGHEST_MICROS: u64 = 60_000_000;
/// Significant decimal digits kept per value: 0.1% relative error.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Upper bounds (`le`) of the Prometheus buckets, in microseconds: 10 µs to 10 s on a 1-2.5-5
/// scale, where broker latencies live (in-memory delivery is tens of µs; seconds mean trouble).
pub const BUCKET_BOUNDS_MICROS: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Quantiles exported as gauges, with their `quantile` label; `1` is the maximum.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (0.999, "0.999"),
    (1.0, "1"),
];

const _: () = assert!(LATENCY_HIGHEST_MICROS >= BUCKET_BOUNDS_MICROS[18]);

/// One latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    sum_micros: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let histogram = Histogram::new_with_bounds(
            LATENCY_LOWEST_MICROS,
            LATENCY_HIGHEST_MICROS,
            LATENCY_SIGNIFICANT_DIGITS,
        );
        // The bounds are constants that satisfy the library's preconditions (low >= 1,
        // high >= 2 * low, digits <= 5), so this cannot fail at run time.
        #[allow(clippy::expect_used)]
        let histogram = histogram.expect("constant histogram bounds are valid");
        LatencyHistogram {
            histogram,
            sum_micros: 0,
        }
    }

    /// Records one value; values past the highest trackable count as the highest.
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Records `count` equal values at once.
    pub fn record_n(&mut self, micros: u64, count: u64) {
        let micros = micros.min(LATENCY_HIGHEST_MICROS);
        self.histogram.saturating_record_n(micros, count);
        self.sum_micros = self.sum_micros.saturating_add(micros.saturating_mul(count));
    }

    /// Adds every value of `other` (HDR merge: bucket counts add).
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Every histogram is built by `new` with the same bounds and records clamp to them, so
        // the merge cannot run out of range.
        let merged = self.histogram.add(&other.histogram);
        assert!(merged.is_ok(), "latency histograms share their bounds");
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// Makes `self` a copy of `other` in place, reusing its buckets (no allocation, no page
    /// faults: a fresh clone of six histograms costs about ten times as much).
    pub fn copy_from(&mut self, other: &LatencyHistogram) {
        let copied = self.histogram.set_to(&other.histogram);
        assert!(copied.is_ok(), "latency histograms share their bounds");
        self.sum_micros = other.sum_micros;
    }

    /// Takes away the values of `earlier`, an older copy of this histogram (counts only grow,
    /// so every count of `earlier` is there to take).
    pub fn subtract(&mut self, earlier: &LatencyHistogram) {
        let subtracted = self.histogram.subtract(&earlier.histogram);
        assert!(subtracted.is_ok(), "an earlier copy holds no more than now");
        self.sum_micros = self.sum_micros.saturating_sub(earlier.sum_micros);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The exact sum of recorded values (after clamping), in microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros
    }

    /// The value at `quantile` (0..=1) to HDR precision; `None` when nothing was recorded.
    pub fn quantile_micros(&self, quantile: f64) -> Option<u64> {
        if self.histogram.is_empty() {
            return None;
        }
        if quantile >= 1.0 {
            return Some(self.histogram.max());
        }
        Some(self.histogram.value_at_quantile(quantile))
    }

    /// Cumulative counts of values at or below each of `BUCKET_BOUNDS_MICROS`. A value is
    /// compared by the low end of its HDR bucket, so bounds are honoured to HDR precision (0.1%).
    pub fn cumulative_buckets(&self) -> [u64; BUCKET_BOUNDS_MICROS.len()] {
        let mut counts = [0u64; BUCKET_BOUNDS_MICROS.len()];
        for value in self.histogram.iter_recorded() {
            let low = self.histogram.lowest_equivalent(value.value_iterated_to());
            let bucket = BUCKET_BOUNDS_MICROS.iter().position(|bound| low <= *bound);
            if let Some(count) = bucket.and_then(|index| counts.get_mut(index)) {
                *count = count.saturating_add(value.count_at_value());
            }
        }
        let mut running = 0u64;
        for count in counts.iter_mut() {
            running = running.saturating_add(*count);
            *count = running;
        }
        counts
    }
}

/// Where a delivered message was published: on the delivering shard, or on another one (it came
/// through a ring, so its delivery latency includes a ring wait).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Path {
    #[default]
    Local,
    CrossShard,
}

impl Path {
    pub const ALL: [Path; 2] = [Path::Local, Path::CrossShard];

    /// The `path` label value.
    pub fn label(self) -> &'static str {
        match self {
            Path::Local => "local",
            Path::CrossShard => "cross_shard",
        }
    }
}

/// Every latency histogram one shard keeps.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// The read completion that brought a PUBLISH's last byte -> the completion of the write
    /// that carried it to a subscriber, by delivered QoS (index) and path.
    pub delivery: [[LatencyHistogram; 2]; 3],
    /// Read completion -> the batch of packets it brought handled (decoded, routed, encoded for
    /// local subscribers), once per PUBLISH. With kernel timestamps it starts at the stamp.
    pub handle: LatencyHistogram,
    /// The kernel's receive timestamp of a read's bytes -> the read's completion, once per read
    /// that brought a stamp (`observability.kernel_timestamps`).
    pub socket_wait: LatencyHistogram,
    /// Mail sent by one shard -> taken from the ring by another.
    pub ring_wait: LatencyHistogram,
    /// Message queued in a subscriber's outbox -> encoded into its write buffer.
    pub outbox_wait: LatencyHistogram,
    /// Delivery encoded (end of the batch that encoded it) -> the write carrying it completed.
    pub write: LatencyHistogram,
    /// CONNECT received -> CONNACK written.
    pub connect: LatencyHistogram,
}

/// The entry for `qos` and `path` of a delivery table (indexed by QoS, then path).
fn pick<T>(table: [[T; 2]; 3], qos: QoS, path: Path) -> T {
    let [by_qos0, by_qos1, by_qos2] = table;
    let [local, cross_shard] = match qos {
        QoS::AtMostOnce => by_qos0,
        QoS::AtLeastOnce => by_qos1,
        QoS::ExactlyOnce => by_qos2,
    };
    match path {
        Path::Local => local,
        Path::CrossShard => cross_shard,
    }
}

impl Latencies {
    pub fn delivery(&self, qos: QoS, path: Path) -> &LatencyHistogram {
        pick(
            self.delivery.each_ref().map(|by_path| by_path.each_ref()),
            qos,
            path,
        )
    }

    pub fn delivery_mut(&mut self, qos: QoS, path: Path) -> &mut LatencyHistogram {
        pick(
            self.delivery.each_mut().map(|by_path| by_path.each_mut()),
            qos,
            path,
        )
    }

    pub fn copy_from(&mut self, other: &Latencies) {
        self.each_with(other, LatencyHistogram::copy_from);
    }

    pub fn add(&mut self, other: &Latencies) {
        self.each_with(other, LatencyHistogram::add);
    }

    /// Takes away what `earlier`, an older copy of the same histograms, had recorded.
    pub fn subtract(&mut self, earlier: &Latencies) {
        self.each_with(earlier, LatencyHistogram::subtract);
    }

    /// Applies `f` to each of this set's histograms with its counterpart in `other`.
    fn each_with(
        &mut self,
        other: &Latencies,
        f: impl Fn(&mut LatencyHistogram, &LatencyHistogram),
    ) {
        let Latencies {
            delivery,
            handle,
            socket_wait,
            ring_wait,
            outbox_wait,
            write,
            connect,
        } = other;
        for (mine, theirs) in self.delivery.iter_mut().zip(delivery) {
            for (mine, theirs) in mine.iter_mut().zip(theirs) {
                f(mine, theirs);
            }
        }
        f(&mut self.handle, handle);
        f(&mut self.socket_wait, socket_wait);
        f(&mut self.ring_wait, ring_wait);
        f(&mut self.outbox_wait, outbox_wait);
        f(&mut self.write, write);
        f(&mut self.connect, connect);
    }
}
