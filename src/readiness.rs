//! Readiness: whether every shard is serving clients right now, as `GET /ready` reports it.
//!
//! The runtime knows when the shards' executors started and when shutdown began; it does not
//! know whether a shard's own serving loop (accepting, mail in and out, ticks) is running. Each
//! shard therefore counts itself in once those tasks are up and out when its shutdown begins or
//! its entry function ends, however it ends (a dropped guard). The broker is ready while every
//! shard is in and no shutdown has begun.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many shards are serving now. Shared by the shards (writers) and the admin thread.
#[derive(Debug, Default)]
pub struct Serving {
    count: AtomicUsize,
}

impl Serving {
    /// None serving yet.
    pub fn new() -> Arc<Serving> {
        Arc::new(Serving::default())
    }

    /// Counts a shard in until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ServingGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ServingGuard {
            serving: Arc::clone(self),
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Every one of `shards` shards is serving.
    pub fn all(&self, shards: usize) -> bool {
        self.count() == shards
    }
}

/// One shard's place in `Serving`; leaving is dropping it.
#[derive(Debug)]
pub struct ServingGuard {
    serving: Arc<Serving>,
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        self.serving.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_shard_serves() {
        let serving = Serving::new();
        assert!(!serving.all(3), "no shard yet");
        let mut guards: Vec<ServingGuard> = (0..3).map(|_| serving.enter()).collect();
        assert!(serving.all(3));
        drop(guards.pop());
        assert_eq!(serving.count(), 2);
        assert!(!serving.all(3), "one shard stopped");
        guards.push(serving.enter());
        assert!(serving.all(3), "back");
        drop(guards);
        assert_eq!(serving.count(), 0);
    }

    #[test]
    fn a_shard_that_panics_leaves() {
        let serving = Serving::new();
        let shard = Arc::clone(&serving);
        let result = std::thread::spawn(move || {
            let _guard = shard.enter();
            panic!("shard failed");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(serving.count(), 0);
    }
}
