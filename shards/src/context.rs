//! What a shard's code sees: its id, the mailboxes, its listeners, task spawning and the shutdown
//! signal. Lives on the shard's thread only (`Rc` inside).

use crate::config::TaskClass;
use crate::doorbell::BellReceiver;
use crate::error::TrySendError;
use crate::id::{ShardId, ShardSet};
use crate::mesh::Mesh;
use crate::net::Listener;
use crate::runtime::Shared;
use crate::sync::{Latch, Notify};
use crate::task::{Task, spawn_into};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A handle to the current shard, given to the shard's entry function. Cheap to clone.
pub struct ShardContext<M: Send + 'static> {
    local: Rc<Local<M>>,
}

impl<M: Send + 'static> Clone for ShardContext<M> {
    fn clone(&self) -> Self {
        ShardContext {
            local: Rc::clone(&self.local),
        }
    }
}

pub(crate) struct Queues {
    pub(crate) io: glommio::TaskQueueHandle,
    pub(crate) mail: glommio::TaskQueueHandle,
    pub(crate) background: glommio::TaskQueueHandle,
}

pub(crate) struct Local<M> {
    pub(crate) id: ShardId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) mesh: Arc<Mesh<M>>,
    pub(crate) capacity: usize,
    pub(crate) self_queue: RefCell<VecDeque<M>>,
    /// Notified by send-to-self and by the doorbell task when another shard rings.
    pub(crate) inbox_notify: Rc<Notify>,
    pub(crate) shutdown: Rc<Latch>,
    pub(crate) queues: Queues,
    pub(crate) listeners: RefCell<Vec<Listener>>,
    /// The sender `recv_batch` starts draining at, rotated for fairness.
    pub(crate) next_sender: Cell<usize>,
}

impl<M: Send + 'static> ShardContext<M> {
    pub(crate) fn new(local: Local<M>) -> Self {
        ShardContext {
            local: Rc::new(local),
        }
    }

    pub fn id(&self) -> ShardId {
        self.local.id
    }

    pub fn shard_count(&self) -> usize {
        self.local.shared.shards
    }

    /// Every shard, this one included.
    pub fn all(&self) -> ShardSet {
        ShardSet::all(self.shard_count())
    }

    /// Sends `msg` to shard `to`, waiting while its ring is full. Gives the message back only if
    /// `to` has stopped (or does not exist). Messages from one shard to another arrive in order.
    /// Do not await space in a ring from the task that drains this shard's inbox (a full ring to
    /// self, or a cycle of full rings, would then never drain).
    pub async fn send(&self, to: ShardId, msg: M) -> Result<(), M> {
        let mut msg = msg;
        let mut attempt = 0u32;
        loop {
            match self.try_send(to, msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(back),
                Err(TrySendError::Full(back)) => msg = back,
            }
            backoff(attempt).await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// Sends without waiting; a full ring or a stopped shard gives the message back.
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), TrySendError<M>> {
        let local = &*self.local;
        if to == local.id {
            let mut queue = local.self_queue.borrow_mut();
            if queue.len() >= local.capacity {
                return Err(TrySendError::Full(msg));
            }
            queue.push_back(msg);
            drop(queue);
            local.inbox_notify.notify_one();
            return Ok(());
        }
        let (Some(ring), Some(bell)) = (
            local.mesh.ring(local.id.index(), to.index()),
            local.shared.inbox.get(to.index()),
        ) else {
            return Err(TrySendError::Closed(msg));
        };
        if !local.shared.is_alive(to) {
            return Err(TrySendError::Closed(msg));
        }
        ring.push(msg).map_err(TrySendError::Full)?;
        bell.ring_if_armed();
        Ok(())
    }

    /// Sends a copy to every other shard, in shard order, through the same rings as `send` (so
    /// it is ordered with this shard's other sends). Stopped shards are skipped.
    pub async fn broadcast(&self, msg: M)
    where
        M: Clone,
    {
        for index in 0..self.shard_count() {
            let to = ShardId::new(index);
            if to != self.local.id {
                let _ = self.send(to, msg.clone()).await;
            }
        }
    }

    /// Waits for at least one message, then moves up to `max` (at least 1) into `out`, in order
    /// per sender, with the sender's id. Returns how many it moved; 0 once shutdown has begun and
    /// every ring to this shard is empty. One task per shard should drain the inbox.
    pub async fn recv_batch(&self, out: &mut Vec<(ShardId, M)>, max: usize) -> usize {
        let max = max.max(1);
        let local = &*self.local;
        loop {
            let moved = self.drain(out, max);
            if moved > 0 {
                return moved;
            }
            if local.shutdown.is_set() {
                return 0;
            }
            let Some(bell) = local.shared.inbox.get(local.id.index()) else {
                return 0;
            };
            bell.arm();
            let moved = self.drain(out, max);
            if moved > 0 || local.shutdown.is_set() {
                bell.disarm();
                return moved;
            }
            self.park().await;
            bell.disarm();
        }
    }

    /// Waits for a doorbell ring, a send-to-self, or shutdown.
    async fn park(&self) {
        let local = &*self.local;
        futures_lite::future::or(local.inbox_notify.notified(), local.shutdown.wait()).await;
    }

    fn drain(&self, out: &mut Vec<(ShardId, M)>, max: usize) -> usize {
        let local = &*self.local;
        let shards = self.shard_count();
        let me = local.id.index();
        let start = local.next_sender.get() % shards;
        local.next_sender.set(start + 1);
        let mut moved = 0;
        for offset in 0..shards {
            let from = (start + offset) % shards;
            let sender = ShardId::new(from);
            if from == me {
                let mut queue = local.self_queue.borrow_mut();
                while moved < max {
                    let Some(msg) = queue.pop_front() else { break };
                    out.push((sender, msg));
                    moved += 1;
                }
            } else if let Some(ring) = local.mesh.ring(from, me) {
                while moved < max {
                    let Some(msg) = ring.pop() else { break };
                    out.push((sender, msg));
                    moved += 1;
                }
            }
            if moved == max {
                break;
            }
        }
        moved
    }

    /// This shard's listeners, once: for each `ListenerSpec` in order, the shared-port listener,
    /// then the shard's own-port listener if `port_per_shard` is on. Later calls return nothing.
    pub fn take_listeners(&self) -> Vec<crate::net::Listener> {
        std::mem::take(&mut *self.local.listeners.borrow_mut())
    }

    /// Spawns `future` into the task queue of `class`. Dropping the returned task cancels it.
    pub fn spawn<T: 'static>(
        &self,
        class: TaskClass,
        future: impl Future<Output = T> + 'static,
    ) -> Task<T> {
        let queues = &self.local.queues;
        let queue = match class {
            TaskClass::Io => queues.io,
            TaskClass::Mail => queues.mail,
            TaskClass::Background => queues.background,
        };
        spawn_into(future, queue)
    }

    /// Resolves when graceful shutdown begins: SIGINT/SIGTERM, `RuntimeHandle::shutdown`, or a
    /// panic in any shard.
    pub async fn shutdown_requested(&self) {
        self.local.shutdown.wait().await;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.local.shutdown.is_set()
    }

    /// Tasks spawned through this crate still alive on this shard.
    pub fn live_tasks(&self) -> usize {
        crate::task::live_tasks()
    }

    /// Accepted connections still open on this shard.
    pub fn live_connections(&self) -> usize {
        crate::net::live_connections()
    }
}

/// Waiting for ring space: a few yields (the receiver is usually draining right now), then sleeps
/// doubling from 10 µs to 1 ms.
async fn backoff(attempt: u32) {
    if attempt < 3 {
        futures_lite::future::yield_now().await;
    } else {
        let micros = 10u64 << (attempt - 3).min(7);
        crate::time::sleep(Duration::from_micros(micros.min(1000))).await;
    }
}

/// Turns doorbell rings into local notifications. The read on the doorbell is never cancelled
/// midway (a cancelled socket read of the executor can lose the next readiness event), so it lives
/// in its own task for the life of the shard.
pub(crate) async fn doorbell_loop(mut receiver: BellReceiver, notify: Rc<Notify>) {
    loop {
        receiver.wait().await;
        notify.notify_one();
    }
}
