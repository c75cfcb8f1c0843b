//! `[admin]`, `[sys]` and `[observability]`: the HTTP endpoint operators scrape (`/metrics`,
//! `/health`, `/ready`), the `$SYS` topics clients subscribe to, and what the latency histograms
//! measure.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::check::Range;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Serve `/metrics` (Prometheus), `/health` and `/ready` over HTTP.
    pub enabled: bool,
    /// Address of the admin listener; loopback by default, since it has no authentication.
    /// Port 0 lets the OS choose.
    pub bind: SocketAddr,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9883)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sys {
    /// Publish Mosquitto's `$SYS/broker/...` topics (retained).
    pub enabled: bool,
    /// Seconds between two `$SYS` updates (Mosquitto's `sys_interval`).
    pub interval_secs: u32,
}

impl Default for Sys {
    fn default() -> Sys {
        Sys {
            enabled: true,
            interval_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    /// Date a plain TCP client's bytes by the kernel's receive timestamp (`SO_TIMESTAMPNS`)
    /// instead of the read's completion, so the latency histograms include the time they waited
    /// in the socket while the shard was busy (`ringmq_socket_wait_seconds`).
    pub kernel_timestamps: bool,
}

pub(super) const RANGES: &[Range] = &[Range {
    key: "sys.interval_secs",
    value: |c| c.sys.interval_secs.into(),
    min: 1,
    max: 86_400,
    unit: "seconds",
    fix: "e.g. 10, as Mosquitto's sys_interval; set sys.enabled = false to publish none",
}];
