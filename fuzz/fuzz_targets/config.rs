//! The config parser on arbitrary text: it must never panic, and a configuration it accepts must
//! validate again and give a memory budget for any shard count without overflowing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_fuzz::config::{self, budget::Budget};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = config::parse(text, "fuzz.toml") else {
        return;
    };
    assert!(parsed.validate().is_ok());
    for shards in [1, 3, 256] {
        let budget = Budget::of(&parsed, shards);
        let _ = budget.check();
        assert!(!budget.to_string().is_empty());
    }
});
