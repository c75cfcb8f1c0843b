//! The security tables the broker runs with: the password file, the ACL file and each TLS
//! listener's rustls config, loaded at start and again on reload (SIGHUP), plus the password
//! verifier threads and the enhanced-authentication methods.
//!
//! A [`Snapshot`] is immutable and shared behind an `Arc`. Reload builds a whole new snapshot
//! first; if any file is bad the error is returned (and logged by the caller) and the running one
//! stays. A good one is published under a lock and a generation counter is bumped. Shards look at
//! the counter on their tick (never on the data path) and take the new `Arc` when it moved, so a
//! reload reaches every shard within a tick and no connection is dropped: connections keep the
//! TLS session they have, and their next check uses the new ACL.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod authenticator;
mod verifier;

pub use authenticator::{AuthStep, Authenticator, AuthenticatorExchange};
pub use verifier::{Verifier, VerifyError};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::ServerConfig;

use crate::auth::{Acl, AuthFileError, PasswordFile};
use crate::config::{Config, DeniedPublish};
use crate::tls::{TlsError, TlsSettings};

/// A password, ACL or TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{key}: {source}; fix the file (or point {key} at another one)")]
    AuthFile {
        key: &'static str,
        source: AuthFileError,
    },
    #[error(
        "listeners.{listener}: {source}; fix the PEM files or the listener's keys \
         (`scripts/certs.sh` writes test certificates)"
    )]
    /// `listener` is the listener's kind and name, `tls.secure` or `wss.browser`.
    Tls { listener: String, source: TlsError },
}

/// One consistent set of tables.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub passwords: Option<Arc<PasswordFile>>,
    pub acl: Option<Arc<Acl>>,
    /// The rustls config of each TLS listener, in the order of `config.listeners.tls`, then of
    /// each secure WebSocket listener, in the order of `config.listeners.wss`.
    pub tls: Vec<Arc<ServerConfig>>,
}

/// Where the tables come from, kept for reloads.
#[derive(Debug, Clone)]
struct Sources {
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    tls: Vec<(String, TlsSettings)>,
}

impl Sources {
    fn load(&self) -> Result<Snapshot, SecurityError> {
        let passwords = match &self.password_file {
            None => None,
            Some(path) => Some(Arc::new(PasswordFile::load(path).map_err(|source| {
                SecurityError::AuthFile {
                    key: "auth.password_file",
                    source,
                }
            })?)),
        };
        let acl = match &self.acl_file {
            None => None,
            Some(path) => Some(Arc::new(Acl::load(path).map_err(|source| {
                SecurityError::AuthFile {
                    key: "auth.acl_file",
                    source,
                }
            })?)),
        };
        let tls = self
            .tls
            .iter()
            .map(|(name, settings)| {
                crate::tls::build_server_config(settings).map_err(|source| SecurityError::Tls {
                    listener: name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            passwords,
            acl,
            tls,
        })
    }
}

/// The security state of a running broker, shared by every shard.
pub struct Security {
    sources: Sources,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    /// Clients without a username (and without a certificate identity) are accepted.
    pub allow_anonymous: bool,
    pub denied_publish_v3: DeniedPublish,
    /// Started only with a password file (the only thing it checks).
    pub verifier: Option<Verifier>,
    authenticators: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("sources", &self.sources)
            .field("generation", &self.generation)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

/// Where the configuration says the tables come from.
fn sources(config: &Config) -> Sources {
    Sources {
        password_file: config.auth.password_file.clone(),
        acl_file: config.auth.acl_file.clone(),
        tls: config
            .listeners
            .tls
            .iter()
            .map(|(name, listener)| (format!("tls.{name}"), TlsSettings::of(listener)))
            .chain(
                config.listeners.wss.iter().map(|(name, listener)| {
                    (format!("wss.{name}"), TlsSettings::of(&listener.tls()))
                }),
            )
            .collect(),
    }
}

/// Reads and checks every file the configuration names, as `ringmq check-config` does.
pub fn check(config: &Config) -> Result<(), SecurityError> {
    sources(config).load().map(drop)
}

impl Security {
    /// Reads every file the configuration names and starts the verifier threads.
    pub fn load(
        config: &Config,
        authenticators: Vec<Arc<dyn Authenticator>>,
    ) -> Result<Security, SecurityError> {
        let sources = sources(config);
        let snapshot = sources.load()?;
        Ok(Security {
            sources,
            current: Mutex::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            allow_anonymous: config.auth.anonymous_allowed(),
            denied_publish_v3: config.auth.denied_publish_v3,
            verifier: config.auth.password_file.is_some().then(|| {
                Verifier::start(
                    config.auth.verify_threads as usize,
                    config.auth.verify_pending_max as usize,
                )
            }),
            authenticators,
        })
    }

    /// Re-reads every file; on an error nothing changes.
    pub fn reload(&self) -> Result<(), SecurityError> {
        let snapshot = Arc::new(self.sources.load()?);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Bumped by every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The tables in force (takes the lock: call on start and when `generation` moved).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The enhanced-authentication method of that name (5.0 §4.12), if one is configured.
    pub fn authenticator(&self, method: &str) -> Option<&Arc<dyn Authenticator>> {
        self.authenticators.iter().find(|a| a.method() == method)
    }

    /// True when CONNECT needs a look before the shard sees it.
    pub fn checks_connect(&self, snapshot: &Snapshot) -> bool {
        !self.allow_anonymous || snapshot.passwords.is_some() || !self.authenticators.is_empty()
    }
}
