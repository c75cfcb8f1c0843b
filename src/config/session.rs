//! `[session]`: how long a disconnected persistent session is kept. Sessions always expire, so
//! clients that connect with random ids and clean-session = false cannot pile up sessions forever.

use serde::{Deserialize, Serialize};

use super::check::Range;
use super::{Config, ConfigError};

/// Session Expiry Interval 0xFFFFFFFF means "never" in MQTT 5.0 (3.1.2.11.2); the broker does not
/// grant it.
const EXPIRY_SECS_LIMIT: u64 = 4_294_967_294;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Session {
    /// Expiry of 3.1.1 persistent sessions (clean session = 0), in seconds.
    pub expiry_default_secs: u32,
    /// Longest expiry granted, in seconds: a 5.0 client asking more gets this.
    pub expiry_max_secs: u32,
}

impl Default for Session {
    fn default() -> Session {
        Session {
            expiry_default_secs: 7_200,
            expiry_max_secs: 604_800,
        }
    }
}

pub(super) const RANGES: &[Range] = &[
    Range {
        key: "session.expiry_default_secs",
        value: |c| c.session.expiry_default_secs.into(),
        min: 1,
        max: EXPIRY_SECS_LIMIT,
        unit: "seconds",
        fix: "e.g. 7200 (2 hours)",
    },
    Range {
        key: "session.expiry_max_secs",
        value: |c| c.session.expiry_max_secs.into(),
        min: 1,
        max: EXPIRY_SECS_LIMIT,
        unit: "seconds",
        fix: "e.g. 604800 (7 days)",
    },
];

/// The rules of `[session]` beyond plain ranges.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let session = &config.session;
    if session.expiry_default_secs > session.expiry_max_secs {
        return Err(ConfigError::invalid(
            "session.expiry_default_secs",
            session.expiry_default_secs,
            format!(
                "must not exceed session.expiry_max_secs ({})",
                session.expiry_max_secs
            ),
            "lower it or raise session.expiry_max_secs",
        ));
    }
    Ok(())
}
