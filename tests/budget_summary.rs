//! Goal: `ringmq check-config` (the code start-up runs) prints the memory budget derived from
//! this machine, where it came from, the worst case within it and each scaled key; a budget that
//! is set and too small refuses the config (exit status 2) naming the keys, while keys set over
//! a derived budget are a warning.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A config file in the test's own temporary directory, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("ringmq-budget-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        ConfigFile(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_config(text: &str, name: &str) -> (Option<i32>, String) {
    let file = ConfigFile::new(name, text);
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("check-config")
        .arg(&file.0)
        .env_remove("RINGMQ_LIMITS__MEMORY_BUDGET_BYTES")
        .output()
        .expect("run ringmq check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code(), text)
}

/// The worst case in bytes and the budget line's value, from the summary.
fn worst_case_line(output: &str) -> &str {
    output
        .lines()
        .find(|line| line.trim_start().starts_with("worst case"))
        .unwrap_or_else(|| panic!("no worst case line in:\n{output}"))
}

#[test]
fn the_default_budget_comes_from_the_machine_and_the_defaults_fit_it() {
    let (status, output) = check_config("[runtime]\nshards = 2\npin = false\n", "defaults");
    assert_eq!(status, Some(0), "{output}");
    assert!(
        output.contains("memory budget per shard: ")
            && output.contains("% of ")
            && (output.contains("(MemTotal)") || output.contains("(cgroup memory.max)")),
        "{output}"
    );
    assert!(output.contains("within it"), "{output}");
    assert!(!output.contains("over the budget"), "{output}");
    let line = worst_case_line(&output);
    assert!(line.contains("(limits.memory_budget_bytes)"), "{line}");
}

#[test]
fn a_budget_that_is_set_and_too_small_is_refused_naming_the_keys() {
    let text = "[runtime]\nshards = 2\npin = false\n[limits]\nmemory_budget_bytes = 1048576\n\
                connections_per_shard_max = 100000\nsessions_per_shard_max = 100000\n";
    let (status, output) = check_config(text, "small");
    assert_eq!(status, Some(2), "{output}");
    assert!(
        output.contains("limits.memory_budget_bytes = 1048576"),
        "{output}"
    );
    assert!(
        output.contains("limits.connections_per_shard_max"),
        "{output}"
    );
}

#[test]
fn keys_set_over_a_derived_budget_are_a_warning() {
    // 10 million connections per shard need far more than any test machine's half.
    let text = "[runtime]\nshards = 2\npin = false\n[limits]\nconnections_per_shard_max = 10000000\n\
                sessions_per_shard_max = 10000000\nconnections_max = 100000000\n";
    let (status, output) = check_config(text, "over");
    assert_eq!(status, Some(0), "{output}");
    assert!(output.contains("over the budget"), "{output}");
    assert!(
        output.contains("limits.connections_per_shard_max"),
        "{output}"
    );
}
