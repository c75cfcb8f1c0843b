//! The default memory budget, derived from the machine, and the default caps scaled to fit it.
//!
//! Unless `limits.memory_budget_bytes` is set, one shard's budget is `limits.memory_budget_percent`
//! of the machine's memory (the smaller of `MemTotal` and the cgroup limit, see `machine.rs`)
//! divided by the shards. The keys in [`SCALED`] that the configuration does not set (in the file
//! or by a `RINGMQ_` variable) are then scaled down together, by one factor, from their
//! documented defaults until the worst case of [`Budget::of`] fits that budget; none goes below
//! its floor (the smallest value that keeps the broker useful and the relations between keys
//! true). When even the floors do not fit, `limits.packet_bytes_max` (and with it
//! `limits.will_bytes_max`) is halved, down to 64 KiB, unless it is set. Keys that are set are
//! never changed. Start-up and `ringmq check-config` run this same code.

use std::collections::BTreeSet;

use super::budget::{Budget, READ_CHUNK_BYTES, WRITE_BUFFER_BYTES, human};
use super::machine::MachineMemory;
use super::{Config, LARGE_PARTIAL_PACKET_BYTES};

/// The smallest `packet_bytes_max` the derivation lowers it to.
const PACKET_BYTES_FLOOR: u64 = 64 * 1024;
/// Steps of the search for the largest factor that fits: the factor is found to 2^-24.
const SEARCH_STEPS: u32 = 24;

/// Where the budget of one shard came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// `limits.memory_budget_bytes` is set: a worst case over it refuses to start.
    Set,
    /// A share of the machine's memory: a worst case over it (keys set over what it holds) is a
    /// warning, since the budget is an estimate and the operator chose those keys.
    Machine {
        machine: MachineMemory,
        percent: u64,
    },
    /// The machine's memory could not be read: the built-in default budget, nothing scaled.
    Unknown,
}

/// A key that is scaled with the budget when it is not set.
struct Scaled {
    key: &'static str,
    get: fn(&Config) -> u64,
    set: fn(&mut Config, u64),
    /// The smallest value scaling may give it, from the rest of the configuration.
    floor: fn(&Config) -> u64,
}

fn to_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// The keys scaled with the budget, and their floors.
#[rustfmt::skip]
const SCALED: &[Scaled] = &[
    Scaled { key: "limits.connections_per_shard_max",
        get: |c| c.limits.connections_per_shard_max.into(),
        set: |c, v| c.limits.connections_per_shard_max = to_u32(v), floor: |_| 16 },
    Scaled { key: "limits.sessions_per_shard_max",
        get: |c| c.limits.sessions_per_shard_max.into(),
        set: |c, v| c.limits.sessions_per_shard_max = to_u32(v),
        floor: |c| c.limits.connections_per_shard_max.into() },
    Scaled { key: "limits.queued_bytes_per_shard_max", get: |c| c.limits.queued_bytes_per_shard_max,
        set: |c, v| c.limits.queued_bytes_per_shard_max = v,
        floor: |c| c.limits.packet_bytes_max.into() },
    Scaled { key: "limits.queued_messages_per_shard_max",
        get: |c| c.limits.queued_messages_per_shard_max,
        set: |c, v| c.limits.queued_messages_per_shard_max = v, floor: |_| 1_000 },
    Scaled { key: "limits.subscriptions_per_shard_max",
        get: |c| c.limits.subscriptions_per_shard_max,
        set: |c, v| c.limits.subscriptions_per_shard_max = v, floor: |_| 1_000 },
    Scaled { key: "limits.subscription_bytes_per_shard_max",
        get: |c| c.limits.subscription_bytes_per_shard_max,
        set: |c, v| c.limits.subscription_bytes_per_shard_max = v,
        floor: |c| u64::from(c.limits.topic_bytes_max).max(256 << 10) },
    Scaled { key: "limits.retained_bytes_max", get: |c| c.limits.retained_bytes_max,
        set: |c, v| c.limits.retained_bytes_max = v, floor: |c| c.limits.packet_bytes_max.into() },
    Scaled { key: "limits.retained_messages_max", get: |c| c.limits.retained_messages_max,
        set: |c, v| c.limits.retained_messages_max = v, floor: |_| 1_000 },
    Scaled { key: "limits.partial_packet_bytes_per_shard_max",
        get: |c| c.limits.partial_packet_bytes_per_shard_max,
        set: |c, v| c.limits.partial_packet_bytes_per_shard_max = v,
        // Three quarters of it must hold the largest packet and one read (`limits::check`).
        floor: |c| (u64::from(c.limits.packet_bytes_max) + READ_CHUNK_BYTES).div_ceil(3) * 4 },
    Scaled { key: "limits.topic_alias_bytes_per_shard_max",
        get: |c| c.limits.topic_alias_bytes_per_shard_max,
        set: |c, v| c.limits.topic_alias_bytes_per_shard_max = v, floor: |_| 256 << 10 },
    Scaled { key: "limits.will_bytes_per_shard_max", get: |c| c.limits.will_bytes_per_shard_max,
        set: |c, v| c.limits.will_bytes_per_shard_max = v,
        floor: |c| u64::from(c.limits.will_bytes_max).max(256 << 10) },
    Scaled { key: "limits.write_buffer_bytes_per_shard_max",
        get: |c| c.limits.write_buffer_bytes_per_shard_max,
        set: |c, v| c.limits.write_buffer_bytes_per_shard_max = v,
        floor: |c| 2 * (u64::from(c.limits.packet_bytes_max) + WRITE_BUFFER_BYTES) },
    Scaled { key: "limits.control_pending_max", get: |c| c.limits.control_pending_max.into(),
        set: |c, v| c.limits.control_pending_max = to_u32(v), floor: |_| 64 },
    Scaled { key: "runtime.mailbox_messages_max", get: |c| c.runtime.mailbox_messages_max.into(),
        set: |c, v| c.runtime.mailbox_messages_max = to_u32(v), floor: |_| 64 },
];

/// The keys scaled with the budget when they are not set (besides `limits.packet_bytes_max` and
/// `limits.will_bytes_max`, lowered only when even the floors of these do not fit).
pub fn scaled_keys() -> impl Iterator<Item = &'static str> {
    SCALED.iter().map(|s| s.key)
}

/// The configuration to run with, its budget and what was scaled to fit it.
#[derive(Clone, Debug)]
pub struct Derived {
    pub config: Config,
    pub source: BudgetSource,
    /// The keys changed from their defaults, with the default: `(key, value, default)`.
    pub scaled: Vec<(&'static str, u64, u64)>,
}

impl Derived {
    /// The lines start-up logs and `ringmq check-config` prints after the budget's terms.
    pub fn summary(&self, shards: usize) -> Vec<String> {
        let budget = self.config.limits.memory_budget_bytes;
        let mut lines = vec![match &self.source {
            BudgetSource::Set => format!(
                "memory budget per shard: {} (limits.memory_budget_bytes)",
                human(budget)
            ),
            BudgetSource::Machine { machine, percent } => format!(
                "memory budget per shard: {} = {percent}% of {} ({}) / {shards} shards \
                 (limits.memory_budget_percent; set limits.memory_budget_bytes to choose it)",
                human(budget),
                human(machine.bytes),
                machine.source
            ),
            BudgetSource::Unknown => format!(
                "memory budget per shard: {} (built-in: this machine's memory is unknown)",
                human(budget)
            ),
        }];
        if !self.scaled.is_empty() {
            lines.push(String::from(
                "defaults scaled to fit it (set a key to choose its value):",
            ));
            lines.extend(
                self.scaled
                    .iter()
                    .map(|(key, value, default)| format!("  {key} = {value} (default {default})")),
            );
        }
        lines
    }
}

/// Derives the budget of one shard of `shards` and scales the keys not in `set` to fit it.
/// `set` holds the dotted keys the file or the environment gave; `machine` is this machine's
/// memory bound.
pub fn derive(
    mut config: Config,
    set: &BTreeSet<String>,
    machine: Option<&MachineMemory>,
    shards: usize,
) -> Derived {
    let source = if set.contains("limits.memory_budget_bytes") {
        BudgetSource::Set
    } else if let Some(machine) = machine {
        let percent = config.limits.memory_budget_percent;
        config.limits.memory_budget_bytes =
            (u128::from(machine.bytes) * u128::from(percent) / 100 / shards.max(1) as u128)
                .try_into()
                .unwrap_or(u64::MAX);
        BudgetSource::Machine {
            machine: machine.clone(),
            percent,
        }
    } else {
        return Derived {
            config,
            source: BudgetSource::Unknown,
            scaled: Vec::new(),
        };
    };
    let free: Vec<&Scaled> = SCALED.iter().filter(|s| !set.contains(s.key)).collect();
    let defaults = config.clone();
    let mut scaled = fit(&defaults, &free, shards);
    // The floors depend on the packet size: when they do not fit, halve it (bounded: 2^28 / 2^16).
    for _ in 0..16 {
        if fits(&scaled, shards) || set.contains("limits.packet_bytes_max") {
            break;
        }
        let packet = u64::from(scaled.limits.packet_bytes_max) / 2;
        if packet < PACKET_BYTES_FLOOR {
            break;
        }
        let mut smaller = defaults.clone();
        smaller.limits.packet_bytes_max = to_u32(packet);
        if !set.contains("limits.will_bytes_max") {
            smaller.limits.will_bytes_max = smaller.limits.will_bytes_max.min(to_u32(packet));
        }
        scaled = fit(&smaller, &free, shards);
    }
    let changed = ["limits.packet_bytes_max", "limits.will_bytes_max"]
        .into_iter()
        .zip([
            (
                scaled.limits.packet_bytes_max,
                defaults.limits.packet_bytes_max,
            ),
            (scaled.limits.will_bytes_max, defaults.limits.will_bytes_max),
        ])
        .map(|(key, (value, default))| (key, u64::from(value), u64::from(default)))
        .chain(
            free.iter()
                .map(|s| (s.key, (s.get)(&scaled), (s.get)(&defaults))),
        )
        .filter(|(_, value, default)| value != default)
        .collect();
    Derived {
        config: scaled,
        source,
        scaled: changed,
    }
}

fn fits(config: &Config, shards: usize) -> bool {
    Budget::of(config, shards).total_bytes() <= config.limits.memory_budget_bytes
}

/// `base` with every key of `free` scaled by the largest factor in [0, 1] that fits (the floors
/// when none does).
fn fit(base: &Config, free: &[&Scaled], shards: usize) -> Config {
    if fits(base, shards) {
        return base.clone();
    }
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    let mut best = scale(base, free, 0.0);
    for _ in 0..SEARCH_STEPS {
        let middle = (low + high) / 2.0;
        let candidate = scale(base, free, middle);
        if fits(&candidate, shards) {
            low = middle;
            best = candidate;
        } else {
            high = middle;
        }
    }
    best
}

/// `base` with every key of `free` at `factor` times its value, rounded down to three
/// significant digits, and at least its floor. Keys are set in table order, so a floor that
/// depends on another key (sessions on connections) sees its scaled value.
fn scale(base: &Config, free: &[&Scaled], factor: f64) -> Config {
    let mut config = base.clone();
    for s in free {
        let value = round_down((s.get(base) as f64 * factor) as u64);
        let floor = (s.floor)(&config);
        (s.set)(&mut config, value.max(floor));
    }
    config
}

impl Scaled {
    fn get(&self, config: &Config) -> u64 {
        (self.get)(config)
    }
}

/// `value` rounded down to three significant digits (123,456 to 123,000).
fn round_down(value: u64) -> u64 {
    let mut unit = 1;
    while value / unit >= 1000 {
        unit *= 10;
    }
    value / unit * unit
}

/// The dotted keys `text` (TOML) sets in `[limits]` and `[runtime]`, the sections scaled here.
pub(super) fn keys_set(text: &str) -> BTreeSet<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return BTreeSet::new();
    };
    ["limits", "runtime"]
        .into_iter()
        .filter_map(|section| Some((section, table.get(section)?.as_table()?)))
        .flat_map(|(section, keys)| keys.keys().map(move |key| format!("{section}.{key}")))
        .collect()
}

#[cfg(test)]
mod tests;

// Large packets may take three quarters of the partial-packet allowance: the floor above is
// written for that share.
const _: () = assert!(LARGE_PARTIAL_PACKET_BYTES < PACKET_BYTES_FLOOR);
