//! Graceful shutdown of one shard, in the order clients and the specs need, within
//! `runtime.shutdown_timeout_ms`:
//!
//! 1. Stop accepting: the shard's accept loops end and its listener sockets close.
//! 2. Publish every will. The session of each connection ends with the process, so every will is
//!    due (3.1.1 §3.1.2.5 MQTT-3.1.2-8: the connection closes without DISCONNECT; 5.0 §3.1.2.5:
//!    the server closes it without a DISCONNECT 0x00, and §3.1.3.2.2: a delayed will is due when
//!    its session ends). Wills go out while every subscriber is still connected: each shard
//!    sends its wills' mail, then meets the others at a rendezvous, then drains what they sent
//!    it, so a will reaches subscribers on every shard before any of them is disconnected.
//! 3. Say goodbye: DISCONNECT 0x8B (Server shutting down, 5.0 §3.14.2.1) to 5.0 clients, a plain
//!    close to 3.x clients, each after its write buffer is written.
//! 4. Persistence flush (see `shut_down`), then the shard exits.
//!
//! A shard that is stuck cannot hold the others: the wills' rendezvous waits at most half the
//! timeout and the goodbyes the rest.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shards::Task;

use super::{MAIL_BATCH, ShardShell};
use crate::mail::Envelope;
use crate::shard::Event;

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(1);

/// Where the shards meet once each has sent its wills' mail. Shared by all shards.
#[derive(Debug, Default)]
pub(crate) struct Rendezvous {
    arrived: AtomicUsize,
}

impl Rendezvous {
    fn arrive(&self) {
        // Release: the mail this shard put in the rings is visible to whoever sees the count.
        self.arrived.fetch_add(1, Ordering::Release);
    }

    fn all(&self, shards: usize) -> bool {
        self.arrived.load(Ordering::Acquire) >= shards
    }
}

/// Runs the whole sequence; `accepts` are the accept loops, `tasks` the shard's other tasks
/// (mail in and out, the tick), which keep running until the end.
pub(super) async fn shut_down(
    shell: &Rc<ShardShell>,
    accepts: Vec<Task<()>>,
    tasks: Vec<Task<()>>,
    rendezvous: &Rendezvous,
    timeout: Duration,
) {
    let started = Instant::now();
    drop(accepts);
    // Bridges stop with the accept loops; their local sessions stay (persistent).
    let bridges = std::mem::take(&mut *shell.bridges.borrow_mut());
    drop(bridges);
    publish_wills(shell, rendezvous, started + timeout / 2).await;
    close_all(shell, started + timeout).await;
    // Connections are closed and every will due is published: what the shard persists is final.
    // `run_shard` has its store task write and sync it next.
    drop(tasks);
}

/// Step 2: this shard's wills out, then every other shard's wills to this shard's subscribers.
async fn publish_wills(shell: &Rc<ShardShell>, rendezvous: &Rendezvous, deadline: Instant) {
    shell
        .shard
        .borrow_mut()
        .publish_wills_at_shutdown(Instant::now());
    shell.handle_all(std::iter::empty());
    let shards = shell.ctx.shard_count();
    let mut arrived = false;
    loop {
        // Shutdown has begun, so the inbox task may have ended on an empty ring: drain here,
        // which also keeps a peer's flush from waiting on a full ring to this shard.
        drain_inbox(shell).await;
        if !arrived && shell.mail_flushed() {
            rendezvous.arrive();
            arrived = true;
        }
        if arrived && rendezvous.all(shards) {
            drain_inbox(shell).await;
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                shard = shell.ctx.id().index(),
                "shutdown: not every shard sent its wills in time; going on"
            );
            return;
        }
        shards::time::sleep(POLL).await;
    }
}

/// Hands every mail waiting in this shard's rings to the shard. After shutdown began,
/// `recv_batch` returns 0 at once when the rings are empty.
async fn drain_inbox(shell: &Rc<ShardShell>) {
    let mut batch: Vec<(shards::ShardId, Envelope)> = Vec::with_capacity(MAIL_BATCH);
    while shell.ctx.recv_batch(&mut batch, MAIL_BATCH).await > 0 {
        let events = batch.drain(..).map(|(from, envelope)| Event::Mail {
            from,
            mail: envelope.mail,
        });
        shell.handle_all(events);
    }
}

/// Step 3: every connection gets DISCONNECT 0x8B (5.0) and is closed after its buffer is
/// written; waits until all are closed or the deadline.
async fn close_all(shell: &Rc<ShardShell>, deadline: Instant) {
    shell.shard.borrow_mut().begin_shutdown(Instant::now());
    shell.handle_all(std::iter::empty());
    while shell.shard.borrow().connection_count() > 0 && Instant::now() < deadline {
        shards::time::sleep(Duration::from_millis(10)).await;
    }
}
