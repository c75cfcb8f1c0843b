//! SIGHUP: re-read the password file, the ACL file and the TLS certificates, on a thread of its
//! own (signal handlers may do almost nothing; this thread does the work).

use std::sync::Arc;

use crate::bridge::set::BridgeSet;
use crate::security::{Security, SecurityError};

/// Reloads the security files on SIGHUP, on a thread of its own.
pub(super) struct Reloader {
    handle: Option<signal_hook::iterator::Handle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reloader {
    pub(super) fn start(security: Arc<Security>, bridges: Arc<BridgeSet>) -> Reloader {
        let signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
            Ok(signals) => signals,
            Err(error) => {
                tracing::warn!(%error, "SIGHUP handler not installed: reload is unavailable");
                return Reloader {
                    handle: None,
                    thread: None,
                };
            }
        };
        let handle = signals.handle();
        let mut signals = signals;
        let thread = std::thread::Builder::new()
            .name(String::from("ringmq-reload"))
            .spawn(move || {
                for _ in signals.forever() {
                    let _ = reload(&security);
                    reload_bridges(&bridges);
                }
            })
            .map_err(|error| tracing::warn!(%error, "reload thread not started"))
            .ok();
        Reloader {
            handle: Some(handle),
            thread,
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.close();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Re-reads the password file, the ACL file and the TLS certificates; logs the outcome.
pub(super) fn reload(security: &Security) -> Result<(), SecurityError> {
    match security.reload() {
        Ok(()) => {
            tracing::info!("reloaded the password file, ACL file and TLS certificates");
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, "reload refused; the previous files stay in force");
            Err(error)
        }
    }
}

/// Re-reads the bridge definitions from the config file the broker started with (the rest of
/// the file is not reloaded); logs the outcome. An unusable file leaves the bridges as they are.
fn reload_bridges(bridges: &BridgeSet) {
    let Some(file) = bridges.file() else {
        return;
    };
    let config = match crate::config::load(Some(&file), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "bridges not reloaded; the previous ones stay in force");
            return;
        }
    };
    match super::bridge_settings(&config) {
        Ok(settings) => {
            tracing::info!(bridges = settings.len(), file = %file.display(), "reloaded the bridge definitions");
            bridges.replace(settings);
        }
        Err(error) => {
            tracing::error!(%error, "bridges not reloaded; the previous ones stay in force");
        }
    }
}
