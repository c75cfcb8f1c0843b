//! Waking a parked shard from another thread.
//!
//! A doorbell rides on the executor's own cross-thread wake-up: a tiny `shared_channel<()>`
//! whose receiver lives on the owning shard and whose sender is a `ForeignSender` usable from any
//! thread. Pushing into it writes the executor's sleep eventfd only when needed, and the executor
//! knows the channel is non-empty when it decides whether to sleep, so no wake-up is lost between
//! "checked" and "parked". (A first version used a Unix socket pair read through the executor's
//! socket API; it lost or delayed wake-ups by milliseconds under load, see the `mesh` docs.)
//!
//! Senders only ring a doorbell that is *armed*: its owner sets `armed` just before it parks and
//! clears it when it wakes, so a busy shard receives no wake-ups at all, and a burst sent to a
//! parked shard costs one. The foreign sender is single-producer, so ringing takes a mutex; it is
//! taken only on that rare armed path.

use glommio::channels::shared_channel::{self, ConnectedReceiver, ForeignSender};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How many rings can be pending; more are redundant (one wakes the owner, who re-checks).
const PENDING_RINGS: usize = 4;
/// Safety net: a wait also ends after this long, and the caller re-checks its rings and control
/// channel, so even an unforeseen lost wake-up costs a delay and never a hang.
const RECHECK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(crate) struct Doorbell {
    armed: AtomicBool,
    bell: OnceLock<Mutex<ForeignSender<()>>>,
}

impl Doorbell {
    /// Wakes the owner whether or not it is parked (control messages: rare). A doorbell whose
    /// owner has not started yet does nothing: the owner reads its channel before it first waits.
    pub(crate) fn ring(&self) {
        if let Some(bell) = self.bell.get() {
            let bell = bell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Full means rings are pending, which is all a ring needs to achieve; closed means
            // the owner has stopped.
            let _ = bell.try_send(());
        }
    }

    /// Called by a sender after publishing data: wakes the owner only if it is parked.
    pub(crate) fn ring_if_armed(&self) {
        // Pairs with the fence in `arm`: either the owner sees our data when it re-checks after
        // arming, or we see `armed` here. Without it both could miss (store-load reordering).
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// The owner is about to park: it must re-check for data after this, then wait.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }
}

/// The owner's end of a doorbell.
pub(crate) struct BellReceiver {
    receiver: ConnectedReceiver<()>,
}

impl BellReceiver {
    /// Creates the channel on the owning shard and installs its sending end in `doorbell`.
    pub(crate) async fn install(doorbell: &Doorbell) -> BellReceiver {
        let (sender, receiver) = shared_channel::new_bounded::<()>(PENDING_RINGS);
        let (sender, receiver) =
            futures_lite::future::zip(sender.connect(), receiver.connect()).await;
        // Only this shard installs its doorbell, once; a second install would be our bug.
        assert!(
            doorbell.bell.set(Mutex::new(sender.into_foreign())).is_ok(),
            "doorbell installed twice"
        );
        BellReceiver { receiver }
    }

    /// Waits for at least one ring, or `RECHECK` at most.
    pub(crate) async fn wait(&mut self) {
        let received = crate::time::timeout(RECHECK, self.receiver.recv()).await;
        if let Ok(None) = received {
            // Cannot happen while the runtime (which holds the sending end) lives; do not spin.
            crate::time::sleep(RECHECK).await;
        }
    }
}
