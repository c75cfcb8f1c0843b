//! The bridge definitions in force, shared by the shards and the reload thread: SIGHUP (or
//! `Broker::reload_bridges`) replaces them whole, and each shard compares them with the bridges
//! it runs at its next tick (`reconcile`): added bridges start, removed ones stop and their
//! queue is dropped, changed ones restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Local, Settings, shard_of};
use crate::config::Bridge;
use crate::metrics::SnapshotBoard;
use crate::metrics::bridge::BridgeStats;
use crate::server::ShardShell;

/// The bridge definitions and their generation (one more at each reload).
#[derive(Default)]
pub struct BridgeSet {
    generation: AtomicU64,
    settings: Mutex<Arc<Vec<Settings>>>,
    /// The config file SIGHUP reads the bridges from (none: built-in defaults, nothing to read).
    file: Mutex<Option<PathBuf>>,
}

impl BridgeSet {
    pub fn new(settings: Vec<Settings>) -> BridgeSet {
        BridgeSet {
            generation: AtomicU64::new(1),
            settings: Mutex::new(Arc::new(settings)),
            file: Mutex::new(None),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Vec<Settings>> {
        Arc::clone(&self.settings.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, settings: Vec<Settings>) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn set_file(&self, file: Option<PathBuf>) {
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
    }

    pub fn file(&self) -> Option<PathBuf> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Every bridge's settings, TLS files read; an error names the bridge.
pub fn settings_of(
    config: &crate::config::Config,
) -> Result<Vec<Settings>, (String, crate::tls::TlsError)> {
    config
        .bridges
        .iter()
        .map(|(name, bridge)| {
            Settings::new(
                name,
                bridge,
                config.session.expiry_max_secs,
                config.limits.packet_bytes_max as usize,
            )
            .map_err(|error| (name.clone(), error))
        })
        .collect()
}

/// A bridge running on this shard: its definition and its task (dropping the task stops it).
pub struct Running {
    bridge: Bridge,
    _task: shards::Task<()>,
}

/// The bridges this shard runs, by name.
pub type RunningBridges = BTreeMap<String, Running>;

/// Brings this shard's bridges in line with the definitions in force (at start and after a
/// reload; a no-op while the generation is unchanged).
pub(crate) fn reconcile(shell: &Rc<ShardShell>, set: &BridgeSet, board: &SnapshotBoard) {
    let generation = set.generation();
    if generation == shell.bridge_generation.get() {
        return;
    }
    shell.bridge_generation.set(generation);
    let settings = set.current();
    let shard = shell.ctx.id().index();
    let shard_count = shell.ctx.shard_count();
    let mine: BTreeMap<&str, &Settings> = settings
        .iter()
        .filter(|s| shard_of(&s.name, &s.bridge, shard_count) == shard)
        .map(|s| (s.name.as_str(), s))
        .collect();
    let stale: Vec<String> = shell
        .bridges
        .borrow()
        .iter()
        .filter(|(name, running)| {
            mine.get(name.as_str())
                .is_none_or(|s| s.bridge != running.bridge)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        let running = shell.bridges.borrow_mut().remove(&name);
        // The task (and with it the bridge's connections) ends here.
        drop(running);
        if mine.contains_key(name.as_str()) {
            tracing::info!(bridge = %name, "bridge changed: restarting it");
        } else if settings.iter().any(|s| s.name == name) {
            // Moved to another shard (its `shard` key changed): that shard starts it and takes
            // its session over, queue and all, and registers its own counters under the name.
            tracing::info!(bridge = %name, "bridge moved to another shard: restarting it there");
        } else {
            board.unregister_bridge(&name);
            super::publish_state(shell, &name, false);
            let dropped = Local::discard(shell, &super::local_client_id(&name));
            tracing::warn!(bridge = %name, queued = dropped, "bridge removed: stopped, its queued messages dropped");
        }
    }
    for (name, settings) in mine {
        if shell.bridges.borrow().contains_key(name) {
            continue;
        }
        let stats = Arc::new(BridgeStats::new(name));
        board.register_bridge(Arc::clone(&stats));
        let task = shell.ctx.spawn(
            shards::TaskClass::Io,
            super::run(Rc::clone(shell), settings.clone(), stats),
        );
        shell.bridges.borrow_mut().insert(
            name.to_owned(),
            Running {
                bridge: settings.bridge.clone(),
                _task: task,
            },
        );
    }
}
