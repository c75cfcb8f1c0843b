//! SIGHUP: re-read the password file, the ACL file and the TLS certificates, on a thread of its
//! own (signal handlers may do almost nothing; this thread does the work).

use std::sync::Arc;

use crate::security::{Security, SecurityError};

/// Reloads the security files on SIGHUP, on a thread of its own.
pub(super) struct Reloader {
    handle: Option<signal_hook::iterator::Handle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reloader {
    pub(super) fn start(security: Arc<Security>) -> Reloader {
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
