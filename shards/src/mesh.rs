//! The mailboxes between shards: one bounded lock-free SPSC ring per ordered pair of shards.
//!
//! The ring from shard `a` to shard `b` is written only by `a`'s thread and read only by `b`'s
//! (crossbeam's `ArrayQueue`, which is MPMC but costs one uncontended CAS per side when used by
//! one producer and one consumer). A receiver drains all its rings in one batch. When it finds them
//! empty it arms its inbox doorbell (see `doorbell`), re-checks, and parks; a sender rings the
//! doorbell only if it is armed, so a busy receiver costs senders no syscall, and a burst sent to a
//! parked receiver costs one. Send-to-self goes through a bounded local queue (`VecDeque` of the
//! same capacity) and a local `Notify`, never through an atomic.
//!
//! A full ring makes `send` wait: it yields a few times (the receiver is usually draining on
//! another core) and then sleeps with exponential backoff from 10 µs to 1 ms. Waiting for space
//! is the rare, overloaded case; a wake-up channel for it would put a second atomic check on
//! every drain of the common case.
//!
//! # Why this implementation: measured
//!
//! `cargo run --release -p shards --example mesh_bench` on the 2-core development VM (Linux
//! 6.18, unpinned, two shards; 1,000,000 u64 messages for throughput, 20,000 ping-pongs for
//! latency; figures vary ±20 % between runs):
//!
//! MESH_BENCH_TABLE
//!
//! The executor's `shared_channel` (the building block of its `channel_mesh`) wakes its peer
//! through the executor's internal eventfd as well, but it numbers peers its own way, needs a
//! rendezvous (`connect().await`) per channel, and has no batched drain: every `recv` is one
//! awaited future. The ArrayQueue rings let `recv_batch` take up to `max` messages per wake-up
//! and keep shard ids as the only addressing.

use crossbeam_queue::ArrayQueue;

pub(crate) struct Mesh<M> {
    shards: usize,
    /// `rings[from * shards + to]`; the diagonal is `None` (send-to-self is local).
    rings: Box<[Option<ArrayQueue<M>>]>,
}

impl<M> Mesh<M> {
    /// Allocates `shards² - shards` rings of `capacity` slots up front.
    pub(crate) fn new(shards: usize, capacity: usize) -> Mesh<M> {
        let rings = (0..shards * shards)
            .map(|slot| (slot / shards != slot % shards).then(|| ArrayQueue::new(capacity)))
            .collect();
        Mesh { shards, rings }
    }

    pub(crate) fn ring(&self, from: usize, to: usize) -> Option<&ArrayQueue<M>> {
        if from >= self.shards || to >= self.shards {
            return None;
        }
        self.rings.get(from * self.shards + to)?.as_ref()
    }
}
