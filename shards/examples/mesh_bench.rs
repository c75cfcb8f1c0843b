//! Mailbox throughput and one-way latency between two shards: the `shards` mesh (ArrayQueue rings
//! and doorbell), the executor's `shared_channel`, and crossbeam-channel between two plain threads
//! as the reference. Run: `cargo run --release -p shards --example mesh_bench`.
//!
//! Throughput: shard 0 sends `MESSAGES` u64s as fast as the ring takes them, shard 1 drains in
//! batches of `batch`. Latency: shard 0 sends a burst of `batch` timestamped messages, shard 1
//! records now - timestamp for each and acknowledges the burst; `ROUNDS` bursts.

use shards::{CpuSet, RuntimeConfig, ShardContext, ShardCount, ShardId, Topology};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1_000_000;
const ROUNDS: usize = 20_000;
const CAPACITY: usize = 1024;

#[derive(Default, Clone)]
struct Outcome {
    messages_per_second: f64,
    latencies_ns: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Message: (kind, value). Kind 0 = data with an Instant offset in ns, 1 = ack.
type Mail = (u8, u64);

fn mesh(batch: usize) -> Outcome {
    let origin = Instant::now();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let record = outcome.clone();
    let config = RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(2),
            cpus: CpuSet::All,
            pin: false,
        },
        mailbox_capacity: CAPACITY,
        name: String::from("bench"),
        ..RuntimeConfig::default()
    };
    let runtime = shards::start(config, move |context: ShardContext<Mail>| {
        let record = record.clone();
        async move {
            let peer = ShardId::new(1 - context.id().index());
            let mut inbox = Vec::with_capacity(batch);
            if context.id().index() == 0 {
                let start = Instant::now();
                for n in 0..MESSAGES {
                    let _ = context.send(peer, (0, n)).await;
                }
                context.recv_batch(&mut inbox, 1).await; // Receiver has everything.
                let rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
                for _ in 0..ROUNDS {
                    for _ in 0..batch {
                        let stamp = origin.elapsed().as_nanos() as u64;
                        let _ = context.send(peer, (0, stamp)).await;
                    }
                    inbox.clear();
                    context.recv_batch(&mut inbox, 1).await;
                }
                record.lock().unwrap().messages_per_second = rate;
            } else {
                let mut received = 0;
                while received < MESSAGES {
                    inbox.clear();
                    received += context.recv_batch(&mut inbox, batch).await as u64;
                }
                let _ = context.send(peer, (1, 0)).await;
                let mut latencies = Vec::with_capacity(ROUNDS * batch);
                for _ in 0..ROUNDS {
                    let mut got = 0;
                    while got < batch {
                        inbox.clear();
                        got += context.recv_batch(&mut inbox, batch).await;
                        let now = origin.elapsed().as_nanos() as u64;
                        latencies.extend(inbox.iter().map(|(_, (_, stamp))| now - stamp));
                    }
                    let _ = context.send(peer, (1, 0)).await;
                }
                record.lock().unwrap().latencies_ns = latencies;
            }
        }
    })
    .expect("start");
    runtime.join().expect("join");
    outcome.lock().unwrap().clone()
}

fn executor_channel(batch: usize) -> Outcome {
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};
    let origin = Instant::now();
    let (data_tx, data_rx) = shared_channel::new_bounded::<u64>(CAPACITY);
    let (ack_tx, ack_rx) = shared_channel::new_bounded::<u8>(16);
    let sender = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 * 1024)
        .ring_depth(128)
        .spawn(move || async move {
            let data = data_tx.connect().await;
            let ack = ack_rx.connect().await;
            let start = Instant::now();
            for n in 0..MESSAGES {
                let _ = data.send(n).await;
            }
            ack.recv().await;
            let rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
            for _ in 0..ROUNDS {
                for _ in 0..batch {
                    let _ = data.send(origin.elapsed().as_nanos() as u64).await;
                }
                ack.recv().await;
            }
            rate
        })
        .expect("spawn");
    let receiver = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 * 1024)
        .ring_depth(128)
        .spawn(move || async move {
            let data = data_rx.connect().await;
            let ack = ack_tx.connect().await;
            for _ in 0..MESSAGES {
                data.recv().await;
            }
            let _ = ack.send(1).await;
            let mut latencies = Vec::with_capacity(ROUNDS * batch);
            for _ in 0..ROUNDS {
                for _ in 0..batch {
                    let stamp = data.recv().await.unwrap_or(0);
                    latencies.push(origin.elapsed().as_nanos() as u64 - stamp);
                }
                let _ = ack.send(1).await;
            }
            latencies
        })
        .expect("spawn");
    let messages_per_second = sender.join().expect("sender");
    let latencies_ns = receiver.join().expect("receiver");
    Outcome {
        messages_per_second,
        latencies_ns,
    }
}

fn crossbeam(batch: usize) -> Outcome {
    let origin = Instant::now();
    let (data_tx, data_rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    let (ack_tx, ack_rx) = crossbeam_channel::bounded::<u8>(16);
    let receiver = std::thread::spawn(move || {
        for _ in 0..MESSAGES {
            let _ = data_rx.recv();
        }
        let _ = ack_tx.send(1);
        let mut latencies = Vec::with_capacity(ROUNDS * batch);
        for _ in 0..ROUNDS {
            for _ in 0..batch {
                let stamp = data_rx.recv().unwrap_or(0);
                latencies.push(origin.elapsed().as_nanos() as u64 - stamp);
            }
            let _ = ack_tx.send(1);
        }
        latencies
    });
    let start = Instant::now();
    for n in 0..MESSAGES {
        let _ = data_tx.send(n);
    }
    let _ = ack_rx.recv();
    let messages_per_second = MESSAGES as f64 / start.elapsed().as_secs_f64();
    for _ in 0..ROUNDS {
        for _ in 0..batch {
            let _ = data_tx.send(origin.elapsed().as_nanos() as u64);
        }
        let _ = ack_rx.recv();
    }
    let latencies_ns = receiver.join().expect("receiver");
    Outcome {
        messages_per_second,
        latencies_ns,
    }
}

fn main() {
    println!("| implementation | batch | msgs/s | one-way p50 | one-way p99 |");
    println!("|---|---|---|---|---|");
    type Run = fn(usize) -> Outcome;
    let runs: [(&str, Run); 3] = [
        ("shards mesh (ArrayQueue + doorbell)", mesh),
        ("glommio shared_channel", executor_channel),
        ("crossbeam-channel (threads)", crossbeam),
    ];
    for (name, run) in runs {
        for batch in [1, 64] {
            let mut outcome = run(batch);
            outcome.latencies_ns.sort_unstable();
            let p50 = Duration::from_nanos(percentile(&outcome.latencies_ns, 0.50));
            let p99 = Duration::from_nanos(percentile(&outcome.latencies_ns, 0.99));
            println!(
                "| {name} | {batch} | {:.2} M | {p50:.1?} | {p99:.1?} |",
                outcome.messages_per_second / 1e6
            );
        }
    }
}
