//! What the load shards count and measure. `Shared` is read by the main thread every second
//! (atomics, added once per read or write batch, never per message); `ShardLocal` is one shard's
//! own histograms and stream trackers, handed over by value when the run ends.

use crate::plan::Plan;
use crate::tracker::Tracker;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Histogram range: 1 ns to one hour, 3 significant digits (about 200 KiB each).
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: an error here is our bug.
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// Running totals over all shards.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub subscribed: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    pub disconnected: AtomicU64,
    pub latency_sum_ns: AtomicU64,
    pub latency_count: AtomicU64,
    pub publishers_done: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The run's shared state: counters, phase switches, and the shards' results at the end.
pub struct Shared {
    pub counters: Counters,
    /// When connecting began.
    pub start_ns: u64,
    /// When publishing began (0 before): set by the main thread once every client is ready.
    pub go_ns: AtomicU64,
    /// Publishers stop at the next batch.
    pub stop: AtomicBool,
    /// Messages sent by publisher index i (its next sequence number).
    pub published_by: Vec<AtomicU64>,
    pub last_connected_ns: AtomicU64,
    pub last_published_ns: AtomicU64,
    pub last_received_ns: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    pub results: Mutex<Vec<ShardResult>>,
}

impl Shared {
    pub fn new(plan: &Plan, start_ns: u64) -> Shared {
        Shared {
            counters: Counters::default(),
            start_ns,
            go_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            published_by: (0..plan.clients).map(|_| AtomicU64::new(0)).collect(),
            last_connected_ns: AtomicU64::new(0),
            last_published_ns: AtomicU64::new(0),
            last_received_ns: AtomicU64::new(0),
            first_error: Mutex::new(None),
            results: Mutex::new(Vec::new()),
        }
    }

    /// Keeps the first error of the run for the report (later ones are only counted).
    pub fn error(&self, message: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(message);
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A multiplicative hash for publisher ids (small integers from a trusted generator).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One subscriber's streams, by publisher id.
pub type Streams = HashMap<u32, Tracker, BuildHasherDefault<IdHasher>>;

/// One shard's measurements while the run lasts.
pub struct ShardLocal {
    pub latency: RefCell<Histogram<u64>>,
    pub ack_latency: RefCell<Histogram<u64>>,
    pub subscribers: RefCell<Vec<Rc<RefCell<Streams>>>>,
}

impl ShardLocal {
    pub fn new() -> ShardLocal {
        ShardLocal {
            latency: RefCell::new(histogram()),
            ack_latency: RefCell::new(histogram()),
            subscribers: RefCell::new(Vec::new()),
        }
    }

    /// A new subscriber's streams, registered for the end of the run.
    pub fn streams(&self) -> Rc<RefCell<Streams>> {
        let streams = Rc::new(RefCell::new(Streams::default()));
        self.subscribers.borrow_mut().push(Rc::clone(&streams));
        streams
    }

    pub fn take_result(&self) -> ShardResult {
        let streams = self
            .subscribers
            .borrow()
            .iter()
            .flat_map(|s| {
                s.borrow()
                    .iter()
                    .map(|(id, t)| (*id, t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        ShardResult {
            latency: self.latency.replace(histogram()),
            ack_latency: self.ack_latency.replace(histogram()),
            streams,
        }
    }
}

/// One shard's measurements, moved to the main thread at the end.
pub struct ShardResult {
    pub latency: Histogram<u64>,
    pub ack_latency: Histogram<u64>,
    pub streams: Vec<(u32, Tracker)>,
}
