//! Snapshots: how metrics leave a shard. The shard copies its `ShardMetrics` about once a second
//! and swaps the copy into its slot on the board; readers clone the `Arc`s and merge off-thread.
//! A slot's mutex is held only for a pointer swap or clone, so a slow scrape never holds up a
//! shard, and a stalled shard only makes its own numbers stale.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Counts, Latencies, ShardMetrics};

/// One shard's metrics at one moment: owned, `Send`, read by other threads.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub counts: Counts,
    pub latency: Latencies,
}

/// The whole broker: the sum of the shards' snapshots.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// How many shard snapshots went in.
    pub shards: usize,
    pub counts: Counts,
    pub latency: Latencies,
}

/// Adds up snapshots: counters and gauges sum, histograms merge (HDR), not averaged.
pub fn merge(snapshots: &[Arc<ShardSnapshot>]) -> Merged {
    let mut merged = Merged::default();
    for snapshot in snapshots {
        merged.shards += 1;
        merged.counts.add(&snapshot.counts);
        merged.latency.add(&snapshot.latency);
    }
    merged
}

/// The latest snapshot of every shard, one slot per shard.
#[derive(Debug)]
pub struct SnapshotBoard {
    started: Instant,
    slots: Vec<Mutex<Option<Arc<ShardSnapshot>>>>,
}

impl SnapshotBoard {
    /// A board for `shard_count` shards; created at broker start, it also dates the uptime.
    pub fn new(shard_count: usize) -> SnapshotBoard {
        SnapshotBoard {
            started: Instant::now(),
            slots: (0..shard_count).map(|_| Mutex::new(None)).collect(),
        }
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

/// A shard's side of the board: publishes its metrics about once a second, copying them into the
/// buffers of the snapshot it published last time when no reader still holds that one.
#[derive(Debug)]
pub struct SnapshotPublisher {
    board: Arc<SnapshotBoard>,
    shard: usize,
    spare: Option<ShardSnapshot>,
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
        }
    }

    /// Publishes the current values of `metrics` for readers.
    pub fn publish(&mut self, metrics: &ShardMetrics) {
        let snapshot = match self.spare.take() {
            Some(mut spare) => {
                metrics.snapshot_into(&mut spare);
                spare
            }
            None => metrics.snapshot(),
        };
        self.spare = self.board.publish(self.shard, snapshot);
    }
}
