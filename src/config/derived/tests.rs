use std::collections::BTreeSet;

use super::*;
use crate::config::Config;
use crate::config::budget::tests::with_websocket_listener;

const GIB: u64 = 1 << 30;

fn machine(bytes: u64) -> MachineMemory {
    MachineMemory {
        bytes,
        source: "MemTotal",
    }
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|key| String::from(*key)).collect()
}

/// The memory-budget summary: the default configuration on machines of 1 GiB to 256 GiB and 1
/// to 64 shards, derived by the code start-up runs, has a worst case within its budget, which is
/// the machine's share split across the shards, and is a valid configuration.
#[test]
fn the_defaults_fit_a_budget_derived_from_any_machine() {
    for base in [Config::default(), with_websocket_listener()] {
        for gib in [1, 4, 24, 256] {
            for shards in [1, 2, 4, 64] {
                let derived = derive(
                    base.clone(),
                    &BTreeSet::new(),
                    Some(&machine(gib * GIB)),
                    shards,
                );
                let budget = Budget::of(&derived.config, shards);
                assert_eq!(
                    derived.config.limits.memory_budget_bytes,
                    gib * GIB / 2 / shards as u64,
                    "{gib} GiB, {shards} shards"
                );
                // A WebSocket connection holds its frame and message buffers (256 KiB each by
                // default) for itself: 16 of them, the floor, do not fit 8 MiB a shard (1 GiB on
                // 64 shards), which is reported naming the listener's keys.
                if !base.listeners.ws.is_empty() && gib == 1 && shards == 64 {
                    let error = budget.check().unwrap_err().to_string();
                    assert!(
                        error.contains("listeners.ws.<name>.message_bytes_max"),
                        "{error}"
                    );
                    continue;
                }
                assert!(
                    budget.check().is_ok(),
                    "{gib} GiB, {shards} shards:\n{budget}"
                );
                derived.config.validate().unwrap();
                // All shards together stay within half the machine.
                assert!(budget.total_bytes() * shards as u64 <= gib * GIB / 2);
            }
        }
    }
}

#[test]
fn scaling_keeps_the_broker_useful_on_a_24_gib_machine() {
    let derived = derive(
        Config::default(),
        &BTreeSet::new(),
        Some(&machine(24 * GIB)),
        2,
    );
    let limits = &derived.config.limits;
    // The packet size is kept; connections and caps come down together.
    assert_eq!(limits.packet_bytes_max, 1_048_576);
    assert!(limits.connections_per_shard_max >= 10_000, "{limits:?}");
    assert!(limits.sessions_per_shard_max >= limits.connections_per_shard_max);
    let summary = derived.summary(2).join("\n");
    assert!(
        summary.contains("= 50% of 24.0 GiB (MemTotal) / 2 shards"),
        "{summary}"
    );
    assert!(
        summary.contains("limits.connections_per_shard_max = "),
        "{summary}"
    );
}

#[test]
fn a_big_enough_machine_keeps_every_default() {
    let derived = derive(
        Config::default(),
        &BTreeSet::new(),
        Some(&machine(4096 * GIB)),
        1,
    );
    let mut expected = Config::default();
    expected.limits.memory_budget_bytes = 2048 * GIB;
    assert_eq!(derived.config, expected);
    assert!(derived.scaled.is_empty());
}

#[test]
fn keys_that_are_set_are_not_scaled() {
    let mut config = Config::default();
    config.limits.connections_per_shard_max = 100_000;
    config.limits.sessions_per_shard_max = 100_000;
    let set = keys(&[
        "limits.connections_per_shard_max",
        "limits.sessions_per_shard_max",
    ]);
    let derived = derive(config, &set, Some(&machine(4 * GIB)), 2);
    assert_eq!(derived.config.limits.connections_per_shard_max, 100_000);
    assert!(derived.scaled.iter().all(|(key, _, _)| !set.contains(*key)));
    // 100,000 connections at 48 KiB each do not fit 1 GiB: over the derived budget is reported
    // (start-up warns), naming the keys.
    let error = Budget::of(&derived.config, 2)
        .check()
        .unwrap_err()
        .to_string();
    assert!(error.contains("limits.memory_budget_bytes"), "{error}");
}

#[test]
fn a_budget_that_is_set_is_kept_and_the_defaults_fit_it() {
    let mut config = Config::default();
    config.limits.memory_budget_bytes = 3 * GIB;
    let derived = derive(
        config,
        &keys(&["limits.memory_budget_bytes"]),
        Some(&machine(256 * GIB)),
        4,
    );
    assert_eq!(derived.source, BudgetSource::Set);
    assert_eq!(derived.config.limits.memory_budget_bytes, 3 * GIB);
    assert!(Budget::of(&derived.config, 4).check().is_ok());
}

#[test]
fn a_tiny_budget_lowers_the_packet_size_unless_it_is_set() {
    let derived = derive(Config::default(), &BTreeSet::new(), Some(&machine(GIB)), 64);
    assert!(derived.config.limits.packet_bytes_max < 1_048_576);
    assert!(derived.config.limits.will_bytes_max <= derived.config.limits.packet_bytes_max);
    let set = keys(&["limits.packet_bytes_max"]);
    let kept = derive(Config::default(), &set, Some(&machine(GIB)), 64);
    assert_eq!(kept.config.limits.packet_bytes_max, 1_048_576);
}

#[test]
fn an_unknown_machine_keeps_the_built_in_budget() {
    let derived = derive(Config::default(), &BTreeSet::new(), None, 2);
    assert_eq!(derived.config, Config::default());
    assert_eq!(derived.source, BudgetSource::Unknown);
}

#[test]
fn keys_set_reads_the_scaled_sections() {
    let set =
        keys_set("[limits]\npacket_bytes_max = 10\n[runtime]\nshards = 2\n[mqtt]\nmax_qos = 1\n");
    assert_eq!(set, keys(&["limits.packet_bytes_max", "runtime.shards"]));
}

#[test]
fn round_down_keeps_three_digits() {
    assert_eq!(round_down(123_456), 123_000);
    assert_eq!(round_down(999), 999);
    assert_eq!(round_down(0), 0);
}

/// The derived defaults of a few machines (docs/HARDENING.md shows them): a larger machine gets
/// more connections and larger caps, never fewer.
#[test]
fn larger_machines_get_more() {
    let mut last = (0, 0, 0);
    for (gib, shards) in [(4, 2), (24, 2), (256, 4)] {
        let derived = derive(
            Config::default(),
            &BTreeSet::new(),
            Some(&machine(gib * GIB)),
            shards,
        );
        let limits = &derived.config.limits;
        let figures = (
            u64::from(limits.connections_per_shard_max),
            limits.write_buffer_bytes_per_shard_max,
            limits.queued_bytes_per_shard_max,
        );
        eprintln!("{gib} GiB, {shards} shards: {figures:?}");
        assert!(figures.0 >= last.0 && figures.1 >= last.1 && figures.2 >= last.2);
        last = figures;
    }
}
