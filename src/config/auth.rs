//! `[auth]`: who may connect (password file, anonymous clients) and what they may do (ACL file).
//! The files themselves are read by `crate::security` at start and on SIGHUP; here are only their
//! paths and the knobs around them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Mosquitto password file (`$7$`, `$6$`, `$argon2id$`); clients with a username must give
    /// its password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file; when set, every publish, subscribe and delivery is checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
    /// Accept clients without a username. Not set: `false` when `password_file` is set, else
    /// `true` (Mosquitto 2.0 refuses anonymous clients as soon as a password file exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Threads that verify passwords, off the shards' event loops (argon2id takes tens of ms).
    pub verify_threads: u32,
    /// Password checks queued or running at once; a CONNECT beyond it is refused with "server
    /// unavailable" (3.1.1 0x03, 5.0 0x88) instead of waiting.
    pub verify_pending_max: u32,
    /// What an MQTT 3.1.1 client gets for a PUBLISH the ACL refuses (3.1.1 has no reason code
    /// for it): `"acknowledge"` (PUBACK/PUBREC, message dropped; as Mosquitto) or `"disconnect"`.
    pub denied_publish_v3: DeniedPublish,
}

/// The answer to a 3.1.1 PUBLISH the ACL refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeniedPublish {
    /// Acknowledge as usual and drop the message.
    #[default]
    Acknowledge,
    /// Close the network connection.
    Disconnect,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            verify_threads: 2,
            verify_pending_max: 256,
            denied_publish_v3: DeniedPublish::Acknowledge,
        }
    }
}

impl Auth {
    /// `allow_anonymous` as set, else `false` exactly when a password file is set.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }
}

pub(super) const RANGES: &[Range] = &[
    Range {
        key: "auth.verify_threads",
        value: |c| c.auth.verify_threads.into(),
        min: 1,
        max: 64,
        unit: "threads",
        fix: "e.g. 2; argon2id needs one thread per concurrent check",
    },
    Range {
        key: "auth.verify_pending_max",
        value: |c| c.auth.verify_pending_max.into(),
        min: 1,
        max: 65_536,
        unit: "checks",
        fix: "e.g. 256",
    },
];

/// The rules of `[auth]` beyond ranges.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    for (key, path) in [
        ("auth.password_file", &auth.password_file),
        ("auth.acl_file", &auth.acl_file),
    ] {
        if path
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                key,
                "\"\"",
                "an empty path names no file",
                "give the file's path, or remove the key",
            ));
        }
    }
    Ok(())
}
