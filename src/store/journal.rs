//! The shard's side of its log: the records not yet written, how far the log is durable, and
//! the acknowledgements that wait for it.
//!
//! A PUBACK or PUBREC leaves only when every record its message caused is durable (synced with
//! `fsync = "always"`, written to the page cache with `"periodic"`): the records on this shard
//! (its position in this shard's log) and those on every shard the message was mailed to. For the latter each shard counts the data mails it sent to
//! each other shard; a receiving shard, once the records of the mails it has handled are synced,
//! replies with how many it has handled (`Mail::Durable`). Rings are FIFO, so a count covers
//! every mail before it. Acknowledgements wait in one FIFO queue, so they leave in the order the
//! PUBLISHes came in (MQTT 4.6), and a later one never waits for less than an earlier one.

use std::collections::VecDeque;

use shards::{ShardId, ShardSet};

use super::FsyncMode;
use crate::protocol::Packet;
use crate::shard::ConnId;

/// What the store task writes next, in order.
#[derive(Debug)]
pub enum Chunk {
    /// Records appended to the current log.
    Records(Vec<u8>),
    /// A snapshot of the whole shard as of the records before it: the store task starts a new
    /// log after the current one and writes this as the next snapshot file. Taken in one step,
    /// only to make a broken log whole again.
    Snapshot(Vec<u8>),
    /// The cut of a snapshot taken in slices: the store task opens the next snapshot file and
    /// (`next_log`) syncs the current log and starts the next one, where the records after this
    /// chunk go. A shard's first snapshot in a new generation precedes its first log instead.
    SnapshotBegin { next_log: bool },
    /// A slice of that snapshot, appended to its file.
    SnapshotPart(Vec<u8>),
    /// The last slice was handed over: the store task syncs the snapshot file, gives it its
    /// name and removes the logs and snapshots it replaces.
    SnapshotEnd,
}

/// Work for the store task: chunks to write, and what becomes durable once they are.
#[derive(Debug, Default)]
pub struct StoreJob {
    pub chunks: Vec<Chunk>,
    /// Record bytes appended up to the end of `chunks`.
    pub appended: u64,
    /// Data mails handled from each shard when `chunks` were taken, to reply with once they
    /// are durable.
    pub received: Option<Vec<u64>>,
}

/// What waits for the records of a message to be durable.
#[derive(Debug)]
pub enum Held {
    /// A client's PUBACK or PUBREC.
    Ack(ConnId, Packet),
    /// A message from another node of the cluster: the shard counts it as routed once its
    /// records are durable, and only then does the link acknowledge its batch to the stream.
    Remote,
}

/// An acknowledgement waiting for its records to be durable.
#[derive(Debug)]
pub struct PendingAck {
    pub held: Held,
    /// Record bytes of this shard's log that must be durable (`u64::MAX` until the batch that
    /// queued it has written its records).
    local: u64,
    /// Per shard the message was mailed to: how many data mails it must report durable.
    remote: Vec<(ShardId, u64)>,
}

/// Per-shard journal state (see the module doc).
#[derive(Debug)]
pub struct Journal {
    pub mode: FsyncMode,
    /// Records not yet taken by the store task.
    records: Vec<u8>,
    /// Chunks sealed by a snapshot, before `records`.
    sealed: Vec<Chunk>,
    appended: u64,
    durable: u64,
    /// A message written whole since the last snapshot (see `RecordWriter`).
    pub last_inline: Option<u64>,
    last_stamp: u64,
    /// Record bytes since the last snapshot, and that snapshot's size.
    since_snapshot: u64,
    snapshot_bytes: u64,
    /// A snapshot in slices is under way: the bytes of the slices handed over so far.
    slicing: Option<u64>,
    /// The last write or sync failed: records are not kept until a snapshot succeeds.
    broken: bool,
    sent_to: Vec<u64>,
    durable_at: Vec<u64>,
    /// Per shard: its log failed with this many of our data mails handled (their records are
    /// not on disk).
    failed_at: Vec<u64>,
    received_from: Vec<u64>,
    received_changed: bool,
    /// Shards mailed since `begin_route`.
    touched: ShardSet,
    /// This shard made records since `begin_route`.
    touched_local: bool,
    acks: VecDeque<PendingAck>,
    /// Acknowledgements queued since the last `batch_written`.
    acks_in_batch: usize,
}

/// A snapshot is due when the records since the last one pass this, or twice its size.
const SNAPSHOT_AFTER_BYTES_MIN: u64 = 64 << 20;

impl Journal {
    pub fn new(mode: FsyncMode, shard_count: usize) -> Journal {
        Journal {
            mode,
            records: Vec::new(),
            sealed: Vec::new(),
            appended: 0,
            durable: 0,
            last_inline: None,
            last_stamp: 0,
            since_snapshot: 0,
            snapshot_bytes: 0,
            slicing: None,
            broken: false,
            sent_to: vec![0; shard_count],
            durable_at: vec![0; shard_count],
            failed_at: vec![0; shard_count],
            received_from: vec![0; shard_count],
            received_changed: false,
            touched: ShardSet::new(),
            touched_local: false,
            acks: VecDeque::new(),
            acks_in_batch: 0,
        }
    }

    /// Where records go, with the message last written whole; a broken log takes none (a
    /// snapshot will bring the disk up to date).
    pub fn records(&mut self) -> Option<(&mut Vec<u8>, &mut Option<u64>)> {
        (!self.broken).then_some((&mut self.records, &mut self.last_inline))
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// A stamp for a session image: after every earlier one on this shard, and after the wall
    /// clock (so images written on different shards order by time).
    pub fn next_stamp(&mut self, wall_ms: u64) -> u64 {
        self.last_stamp = (self.last_stamp + 1).max(wall_ms.saturating_mul(1000));
        self.last_stamp
    }

    /// Whether records or snapshot chunks wait to be written.
    pub fn has_records(&self) -> bool {
        !self.records.is_empty() || !self.sealed.is_empty()
    }

    /// Whether the store task has something to do.
    pub fn has_work(&self) -> bool {
        self.has_records() || self.received_changed
    }

    /// The size of the last snapshot (the one a new generation starts with, at start): the
    /// next is due after twice that much log.
    pub fn snapshot_bytes(&self) -> usize {
        usize::try_from(self.snapshot_bytes).unwrap_or(usize::MAX)
    }

    /// Whether the next snapshot is due: never while one is being taken in slices.
    pub fn snapshot_due(&self) -> bool {
        self.slicing.is_none()
            && self.since_snapshot + self.records.len() as u64
                > SNAPSHOT_AFTER_BYTES_MIN.max(2 * self.snapshot_bytes)
    }

    /// Cuts the log for a snapshot taken in slices (`push_snapshot_part`, then
    /// `end_snapshot`): the records so far go to the current log, those from here on to the
    /// next, which the snapshot precedes. The state between slices changes, but every change
    /// after the cut is in that next log, and replaying it over any state the slices saw gives
    /// the state it gave over the cut (docs/PERSISTENCE.md, "Snapshots").
    pub fn begin_snapshot(&mut self, next_log: bool) {
        self.seal();
        self.since_snapshot = 0;
        self.slicing = Some(0);
        self.sealed.push(Chunk::SnapshotBegin { next_log });
    }

    /// Whether a snapshot in slices is under way (a failed write abandons it).
    pub fn is_slicing(&self) -> bool {
        self.slicing.is_some()
    }

    /// A slice of the snapshot under way.
    pub fn push_snapshot_part(&mut self, part: Vec<u8>) {
        if let Some(bytes) = self.slicing.as_mut() {
            *bytes += part.len() as u64;
            self.sealed.push(Chunk::SnapshotPart(part));
        }
    }

    /// The snapshot under way is whole.
    pub fn end_snapshot(&mut self) {
        if let Some(bytes) = self.slicing.take() {
            self.snapshot_bytes = bytes;
            self.sealed.push(Chunk::SnapshotEnd);
        }
    }

    /// Seals the records so far and queues a snapshot after them. A broken log takes records
    /// again from here: they follow the snapshot, and are dropped with it if it fails too.
    pub fn push_snapshot(&mut self, snapshot: Vec<u8>) {
        self.broken = false;
        self.slicing = None;
        self.seal();
        self.since_snapshot = 0;
        self.snapshot_bytes = snapshot.len() as u64;
        self.sealed.push(Chunk::Snapshot(snapshot));
    }

    fn seal(&mut self) {
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            self.appended += records.len() as u64;
            self.since_snapshot += records.len() as u64;
            self.sealed.push(Chunk::Records(records));
        }
    }

    /// Everything to write now.
    pub fn take_job(&mut self) -> StoreJob {
        self.seal();
        let received =
            std::mem::take(&mut self.received_changed).then(|| self.received_from.clone());
        StoreJob {
            chunks: std::mem::take(&mut self.sealed),
            appended: self.appended,
            received,
        }
    }

    /// The snapshot chunks at the head of what is to write, alone: before the new generation
    /// is in force a shard writes its snapshots there but no records (see `store_task`).
    pub fn take_snapshot_chunks(&mut self) -> Vec<Chunk> {
        let records = self
            .sealed
            .iter()
            .position(|chunk| matches!(chunk, Chunk::Records(_)))
            .unwrap_or(self.sealed.len());
        self.sealed.drain(..records).collect()
    }

    /// Record bytes appended so far, including those not yet taken.
    fn end(&self) -> u64 {
        self.appended + self.records.len() as u64
    }

    /// The store task wrote and synced up to `appended`.
    pub fn durable_to(&mut self, appended: u64) {
        self.durable = self.durable.max(appended);
    }

    /// The store task failed: nothing queued is kept, and the next snapshot must succeed before
    /// records are kept again. Returns the acknowledgements that can no longer be given.
    pub fn fail(&mut self) -> Vec<PendingAck> {
        self.broken = true;
        self.slicing = None;
        self.acks_in_batch = 0;
        self.records.clear();
        self.sealed.clear();
        self.last_inline = None;
        self.acks.drain(..).collect()
    }

    // ---- Acknowledgements: they wait for their records in both modes, until synced
    // (`always`) or until written to the page cache (`periodic`), where a crash of the process
    // alone cannot take them. ----

    /// Starts routing one message: the data mails sent from now on are its.
    pub fn begin_route(&mut self) {
        self.touched = ShardSet::new();
        self.touched_local = false;
    }

    /// The message being routed made records on this shard.
    pub fn touched_local(&mut self) {
        self.touched_local = true;
    }

    /// A data mail (one that may make records there) went to `to`.
    pub fn mailed(&mut self, to: ShardId) {
        if let Some(count) = self.sent_to.get_mut(to.index()) {
            *count += 1;
            self.touched.insert(to);
        }
    }

    /// A data mail from `from` was handled.
    pub fn mail_handled(&mut self, from: ShardId) {
        if let Some(count) = self.received_from.get_mut(from.index()) {
            *count += 1;
            self.received_changed = true;
        }
    }

    /// `from` reports `count` of our data mails durable (`ok`), or not written.
    pub fn durable_reply(&mut self, from: ShardId, count: u64, ok: bool) {
        let counts = if ok {
            &mut self.durable_at
        } else {
            &mut self.failed_at
        };
        if let Some(at) = counts.get_mut(from.index()) {
            *at = (*at).max(count);
        }
    }

    /// Data mails handled from each shard so far.
    pub fn received_counts(&self) -> Vec<u64> {
        self.received_from.clone()
    }

    /// Holds `packet` for `conn` until the records of the message routed since `begin_route`
    /// are durable; returns it at once when nothing needs to wait (and nothing waits before it).
    pub fn hold_ack(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        match self.hold(Held::Ack(conn, packet)) {
            Some(Held::Ack(_, packet)) => Some(packet),
            _ => None,
        }
    }

    /// The message from another node routed since `begin_route` counts as routed once its
    /// records are durable: true when that is now (nothing needs to wait, nothing waits before
    /// it), otherwise it comes out of `ready_acks` in its turn.
    pub fn hold_remote(&mut self) -> bool {
        self.hold(Held::Remote).is_some()
    }

    fn hold(&mut self, held: Held) -> Option<Held> {
        let local_records = self.touched_local;
        let remote: Vec<(ShardId, u64)> = self
            .touched
            .iter()
            .filter_map(|shard| Some((shard, *self.sent_to.get(shard.index())?)))
            .collect();
        if self.acks.is_empty() && !local_records && remote.is_empty() {
            return Some(held);
        }
        let local = if local_records {
            u64::MAX
        } else {
            self.durable
        };
        self.acks.push_back(PendingAck {
            held,
            local,
            remote,
        });
        self.acks_in_batch += 1;
        None
    }

    /// After a batch wrote its records: the acknowledgements it queued wait for them.
    pub fn batch_written(&mut self) {
        let end = self.end();
        let queued = std::mem::take(&mut self.acks_in_batch);
        for ack in self.acks.iter_mut().rev().take(queued) {
            if ack.local == u64::MAX {
                ack.local = end;
            }
        }
    }

    /// The acknowledgements that are settled now, in order: `true` when all their records are
    /// durable, `false` when a shard holding some of them failed to write them.
    pub fn ready_acks(&mut self, out: &mut Vec<(PendingAck, bool)>) {
        while let Some(front) = self.acks.front() {
            let failed = front.remote.iter().any(|(shard, count)| {
                self.failed_at
                    .get(shard.index())
                    .is_some_and(|at| at >= count)
            });
            let local_ok = front.local <= self.durable;
            let remote_ok = front.remote.iter().all(|(shard, count)| {
                self.durable_at
                    .get(shard.index())
                    .is_some_and(|at| at >= count)
            });
            let settled = failed || (local_ok && remote_ok);
            if !settled {
                break;
            }
            if let Some(ack) = self.acks.pop_front() {
                out.push((ack, !failed));
            }
        }
    }

    pub fn pending_acks(&self) -> usize {
        self.acks.len()
    }
}
