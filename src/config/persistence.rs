//! `[persistence]`: whether each shard keeps a log of what it owns, where, and when a QoS 1/2
//! publish may be acknowledged (see docs/PERSISTENCE.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::Range;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Persistence {
    /// Keep persistent sessions, their messages, retained messages and delayed wills across a
    /// restart. Off by default: the embedded default keeps its speed and writes nothing.
    pub enabled: bool,
    /// Where the log lives (one folder per shard inside). Relative paths are from the working
    /// directory; the packaged service runs in /var/lib/ringmq.
    pub dir: PathBuf,
    /// "always": a QoS 1/2 PUBLISH is acknowledged once its records are synced (group commit);
    /// "periodic": at once, with a sync every `fsync_interval_ms`.
    pub fsync: Fsync,
    /// Milliseconds between two syncs with `fsync = "periodic"`: at most this much is lost when
    /// the machine loses power (nothing when only the process dies).
    pub fsync_interval_ms: u32,
    /// Set by `--ignore-corrupt-storage`, never by the file: keep what can be read of a damaged
    /// store and move the damaged generation aside.
    #[serde(skip)]
    pub ignore_corrupt_storage: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    Periodic,
}

impl Default for Persistence {
    fn default() -> Persistence {
        Persistence {
            enabled: false,
            dir: PathBuf::from("data"),
            fsync: Fsync::Always,
            fsync_interval_ms: 1000,
            ignore_corrupt_storage: false,
        }
    }
}

pub(super) const RANGES: &[Range] = &[Range {
    key: "persistence.fsync_interval_ms",
    value: |c| c.persistence.fsync_interval_ms.into(),
    min: 1,
    max: 3_600_000,
    unit: "milliseconds",
    fix: "e.g. 1000; with fsync = \"always\" it is not used",
}];
