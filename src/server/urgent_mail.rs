//! Mail that does not wait for the flush task: a new subscription's interest. Until it is in
//! force on the other shards, a message published there misses the subscription (the SUBACK
//! waits for it, but a client may publish before reading its SUBACK). The flush task runs on
//! its task queue's next turn, after the rest of this wake-up; this sends from the reader's own
//! turn, straight into the rings, and rings a parked peer's doorbell.

use std::time::Instant;

use shards::ShardId;

use super::{MAIL_BATCH, ShardShell};
use crate::mail::{Envelope, Mail, Stamp};

impl ShardShell {
    /// Moves what is queued for each peer into its ring, up to a batch per peer and as long as
    /// the ring has room; the flush task sends the rest in order. Skipped while the flush task
    /// holds a batch it is sending, which must go first.
    pub(super) fn send_urgent_mail(&self) {
        if self.flushing.get() {
            return;
        }
        let me = self.ctx.id();
        let posted = Stamp::at(Instant::now());
        let mut batch: Vec<Mail> = Vec::new();
        for index in 0..self.ctx.shard_count() {
            let to = ShardId::new(index);
            if to == me {
                continue;
            }
            self.shard
                .borrow_mut()
                .take_mail(to, &mut batch, MAIL_BATCH);
            let mut rest = batch.drain(..);
            while let Some(mail) = rest.next() {
                if let Err(refused) = self.ctx.try_send(to, Envelope { mail, posted }) {
                    let mut back = vec![refused.into_inner().mail];
                    back.extend(rest);
                    self.shard.borrow_mut().unsend_mail(to, back);
                    break;
                }
            }
        }
    }
}
