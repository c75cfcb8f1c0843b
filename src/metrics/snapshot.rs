//! Snapshots: how metrics leave a shard. The shard copies its `ShardMetrics` about once a second
//! and swaps the copy into its slot on the board; readers clone the `Arc`s and merge off-thread.
//! A slot's mutex is held only for a pointer swap or clone, so a slow scrape never holds up a
//! shard, and a stalled shard only makes its own numbers stale.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Counts, Latencies, ListenerCount, ListenerLabel, ShardMetrics};

/// One shard's metrics at one moment: owned, `Send`, read by other threads.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub counts: Counts,
    /// Connections by listener index (`SnapshotBoard::listeners` names them).
    pub listeners: Vec<ListenerCount>,
    /// Everything recorded since start.
    pub latency: Latencies,
    /// What was recorded in the recent window (see `SnapshotPublisher`): the last 30 to 60
    /// seconds, or since start when the shard is younger than that.
    pub recent: Latencies,
}

/// The whole broker: the sum of the shards' snapshots.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// How many shard snapshots went in.
    pub shards: usize,
    pub counts: Counts,
    pub listeners: Vec<ListenerCount>,
    pub latency: Latencies,
    pub recent: Latencies,
}

/// Adds up snapshots: counters and gauges sum, histograms merge (HDR), not averaged.
pub fn merge(snapshots: &[Arc<ShardSnapshot>]) -> Merged {
    let mut merged = Merged::default();
    for snapshot in snapshots {
        merged.shards += 1;
        merged.counts.add(&snapshot.counts);
        ListenerCount::add_all(&mut merged.listeners, &snapshot.listeners);
        merged.latency.add(&snapshot.latency);
        merged.recent.add(&snapshot.recent);
    }
    merged
}

/// The latest snapshot of every shard, one slot per shard.
#[derive(Debug)]
pub struct SnapshotBoard {
    started: Instant,
    slots: Vec<Mutex<Option<Arc<ShardSnapshot>>>>,
    /// The names of the listeners whose connections the snapshots count, by index.
    listeners: Vec<ListenerLabel>,
    /// The counters of the running bridges (registered when a bridge starts).
    bridges: Mutex<Vec<Arc<super::bridge::BridgeStats>>>,
    /// The cluster link's counters, on a cluster node.
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterStats>>,
}

impl SnapshotBoard {
    /// A board for `shard_count` shards; created at broker start, it also dates the uptime.
    pub fn new(shard_count: usize) -> SnapshotBoard {
        SnapshotBoard::with_listeners(shard_count, Vec::new())
    }

    /// A board whose snapshots count the connections of `listeners` (by index).
    pub fn with_listeners(shard_count: usize, listeners: Vec<ListenerLabel>) -> SnapshotBoard {
        SnapshotBoard {
            started: Instant::now(),
            slots: (0..shard_count).map(|_| Mutex::new(None)).collect(),
            listeners,
            bridges: Mutex::new(Vec::new()),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// The listeners' labels, by the index the snapshots count them under.
    pub fn listeners(&self) -> &[ListenerLabel] {
        &self.listeners
    }

    pub fn shard_count(&self) -> usize {
        self.slots.len()
    }

    /// Time since the board was created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Replaces shard `shard`'s snapshot. Called by that shard's thread only. Returns the
    /// previous snapshot when no reader still holds it, for its buffers to be reused.
    pub fn publish(&self, shard: usize, snapshot: ShardSnapshot) -> Option<ShardSnapshot> {
        let slot = self.slots.get(shard);
        assert!(slot.is_some(), "shard {shard} has no slot on the board");
        let snapshot = Arc::new(snapshot);
        // A reader that panicked cannot leave a half-written `Option<Arc<_>>`, so a poisoned
        // lock still holds a valid value.
        let previous = slot?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(snapshot);
        // Unwrapped (or freed) outside the lock.
        previous.and_then(|previous| Arc::try_unwrap(previous).ok())
    }

    /// Shows a bridge's counters in `/metrics` (in place of an earlier bridge of that name).
    pub fn register_bridge(&self, stats: Arc<super::bridge::BridgeStats>) {
        let mut bridges = self.bridges.lock().unwrap_or_else(PoisonError::into_inner);
        bridges.retain(|bridge| bridge.name != stats.name);
        bridges.push(stats);
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Takes a stopped bridge's counters off `/metrics`.
    pub fn unregister_bridge(&self, name: &str) {
        let mut bridges = self.bridges.lock().unwrap_or_else(PoisonError::into_inner);
        bridges.retain(|bridge| bridge.name != name);
    }

    /// The counters of every registered bridge.
    pub fn bridges(&self) -> Vec<Arc<super::bridge::BridgeStats>> {
        self.bridges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The latest snapshot of every shard that has published one, with its shard index.
    pub fn latest(&self) -> Vec<(usize, Arc<ShardSnapshot>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let snapshot = slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
                snapshot.map(|snapshot| (index, snapshot))
            })
            .collect()
    }

    /// Whether some shard's persistence log could not be written at its last snapshot (it
    /// refuses QoS 1/2 publishes until it can).
    /// Shows the cluster link's counters in `/metrics` (once, at start).
    pub fn set_cluster(&self, stats: Arc<crate::cluster::ClusterStats>) {
        let _ = self.cluster.set(stats);
    }

    pub fn cluster(&self) -> Option<&crate::cluster::ClusterStats> {
        self.cluster.get().map(Arc::as_ref)
    }

    pub fn store_broken(&self) -> bool {
        self.latest()
            .iter()
            .any(|(_, snapshot)| snapshot.counts.store_broken > 0)
    }

    /// Every shard's latest snapshot, merged.
    pub fn merged(&self) -> Merged {
        let snapshots: Vec<Arc<ShardSnapshot>> = self
            .latest()
            .into_iter()
            .map(|(_, snapshot)| snapshot)
            .collect();
        merge(&snapshots)
    }
}

/// Publishes between two baselines of the recent window. A shard publishes about once a second,
/// so the window's start moves on about every 30 s.
pub const WINDOW_STEP_PUBLISHES: u32 = 30;

/// A shard's side of the board: publishes its metrics about once a second, copying them into the
/// buffers of the snapshot it published last time when no reader still holds that one.
///
/// It also keeps the recent window: every `WINDOW_STEP_PUBLISHES` publishes it keeps a copy of
/// the since-start histograms as a baseline, two at a time; a snapshot's `recent` is the
/// since-start histograms minus the older baseline (HDR counts subtract exactly), so it covers
/// the last 30 to 60 publishes. Nothing is recorded twice on the data path, and the two baselines
/// reuse their buffers.
#[derive(Debug)]
pub struct SnapshotPublisher {
    board: Arc<SnapshotBoard>,
    shard: usize,
    spare: Option<ShardSnapshot>,
    published: u32,
    /// The baselines, older first; `None` until taken.
    older: Option<Latencies>,
    newer: Option<Latencies>,
}

impl SnapshotPublisher {
    pub fn new(board: Arc<SnapshotBoard>, shard: usize) -> SnapshotPublisher {
        assert!(
            shard < board.shard_count(),
            "shard {shard} has no slot on the board"
        );
        SnapshotPublisher {
            board,
            shard,
            spare: None,
            published: 0,
            older: None,
            newer: None,
        }
    }

    /// Publishes the current values of `metrics` for readers.
    pub fn publish(&mut self, metrics: &ShardMetrics) {
        let mut snapshot = match self.spare.take() {
            Some(mut spare) => {
                metrics.snapshot_into(&mut spare);
                spare
            }
            None => metrics.snapshot(),
        };
        self.published = self.published.wrapping_add(1);
        if self.published.is_multiple_of(WINDOW_STEP_PUBLISHES) {
            // The older baseline's buffers become the newer one.
            let mut baseline = self.older.take().unwrap_or_default();
            baseline.copy_from(&snapshot.latency);
            self.older = self.newer.replace(baseline);
        }
        if let Some(older) = &self.older {
            snapshot.recent.subtract(older);
        }
        self.spare = self.board.publish(self.shard, snapshot);
    }
}
