//! Goal: the locked-memory arithmetic in the crate docs is what the kernel actually pins. Alone in
//! its own test binary (its own process), so no other executors share the count.

use shards::{CpuSet, RuntimeConfig, ShardContext, ShardCount, Topology};
use std::sync::{Arc, Mutex};

fn status_kib(status: &str, key: &str) -> u64 {
    let line = status.lines().find(|line| line.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn four_shards_pin_exactly_the_documented_amount() {
    let config = RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(4),
            cpus: CpuSet::All,
            pin: false,
        },
        ..RuntimeConfig::default()
    };
    let io_memory = config.io_memory_bytes;
    let measured = Arc::new(Mutex::new(None));
    let record = measured.clone();
    let runtime = shards::start(config, move |context: ShardContext<()>| {
        let record = record.clone();
        async move {
            // Entry functions run only after every shard's executor exists.
            if context.id().index() == 0 {
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                *record.lock().unwrap() =
                    Some((status_kib(&status, "VmPin:"), status_kib(&status, "VmLck:")));
            }
        }
    })
    .unwrap();
    runtime.join().unwrap();
    let (pinned_kib, locked_kib) = measured.lock().unwrap().unwrap();
    let needed_kib = shards::memlock_needed_bytes(4, io_memory) / 1024;
    assert_eq!(needed_kib, 512, "4 × 2 rings × 64 KiB");
    assert_eq!(pinned_kib + locked_kib, needed_kib);
    assert!(
        shards::memlock_needed_bytes(4, io_memory) <= 8 << 20,
        "4 shards fit 8 MiB"
    );
}
