//! Goal: an executor whose preemption timer fires before it has run anything (its thread was
//! descheduled for longer than the timer) still runs its tasks instead of parking with them.
//! With a 20 µs timer that happens on many turns of the run loop, so a start
//! that hangs (a shard never reports that it started) shows the bug within a few starts.

use shards::{CpuSet, RuntimeConfig, ShardContext, ShardCount, ShardId, Topology};
use std::sync::mpsc;
use std::time::Duration;

fn config() -> RuntimeConfig {
    RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(4),
            cpus: CpuSet::All,
            pin: false,
        },
        name: String::from("preempt"),
        preempt_timer: Duration::from_micros(20),
        ..RuntimeConfig::default()
    }
}

/// Mail around the ring of shards, so tasks are woken by other shards as well as by start-up.
async fn pass_one_on(context: ShardContext<u32>) {
    let next = (context.id().index() + 1) % context.shard_count();
    let _ = context.send(ShardId::new(next), 1).await;
    context.shutdown_requested().await;
}

#[test]
fn shards_with_a_tiny_preemption_timer_start_run_and_stop() {
    let (done_tx, done) = mpsc::channel();
    let runners: Vec<_> = (0..4)
        .map(|runner| {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                for round in 0..10 {
                    let runtime = shards::start::<u32, _, _>(config(), pass_one_on)
                        .unwrap_or_else(|error| panic!("runner {runner} round {round}: {error}"));
                    runtime.handle().shutdown();
                    runtime.join().expect("clean stop");
                }
                let _ = done_tx.send(runner);
            })
        })
        .collect();
    drop(done_tx);
    // Start gives up after 20 s without progress; a stop has no limit of its own, so bound it here.
    for _ in 0..runners.len() {
        done.recv_timeout(Duration::from_secs(120))
            .expect("every runner finishes its rounds within 120 s");
    }
    for runner in runners {
        runner.join().expect("runner did not panic");
    }
}
