//! Goal: shards start and stop, and the mailboxes deliver every message, in order per sender,
//! under load, backpressure and shutdown; failures end `join` instead of hanging it.

use shards::{
    CpuSet, RuntimeConfig, RuntimeError, ShardContext, ShardCount, ShardId, StartError, Topology,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(shards: usize) -> RuntimeConfig {
    RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(shards),
            cpus: CpuSet::All,
            pin: false,
        },
        name: String::from("test"),
        ..RuntimeConfig::default()
    }
}

/// Joins on another thread so a hang fails the test instead of stalling the suite.
fn join_within(runtime: shards::Runtime, limit: Duration) -> Result<(), RuntimeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(runtime.join());
    });
    rx.recv_timeout(limit).expect("join hung")
}

#[test]
fn start_and_stop_1_2_4_shards() {
    for shards in [1, 2, 4] {
        let entered = Arc::new(AtomicUsize::new(0));
        let seen = entered.clone();
        let runtime = shards::start::<(), _, _>(config(shards), move |context: ShardContext<()>| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                context.shutdown_requested().await;
            }
        })
        .unwrap();
        assert_eq!(runtime.shard_count(), shards);
        let handle = runtime.handle();
        assert!(handle.is_ready());
        let deadline = Instant::now() + Duration::from_secs(5);
        while entered.load(Ordering::SeqCst) < shards && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(entered.load(Ordering::SeqCst), shards);
        handle.shutdown();
        assert!(!handle.is_ready());
        join_within(runtime, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn broadcast_reaches_every_other_shard() {
    let shards = 4;
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    let runtime = shards::start(config(shards), move |context: ShardContext<usize>| {
        let record = record.clone();
        async move {
            context.broadcast(context.id().index()).await;
            let mut inbox = Vec::new();
            while inbox.len() < shards - 1 {
                if context.recv_batch(&mut inbox, 16).await == 0 {
                    break;
                }
            }
            for (from, value) in &inbox {
                assert_eq!(from.index(), *value);
                record.lock().unwrap().push((context.id().index(), *value));
            }
        }
    })
    .unwrap();
    join_within(runtime, Duration::from_secs(10)).unwrap();
    let mut got = received.lock().unwrap().clone();
    got.sort_unstable();
    let mut expected = Vec::new();
    for to in 0..shards {
        for from in (0..shards).filter(|from| *from != to) {
            expected.push((to, from));
        }
    }
    assert_eq!(got, expected);
}

/// Every shard sends `count` numbered messages to every shard (itself included); every receiver
/// checks each sender's numbers arrive as 0, 1, 2, ...
fn all_to_all(shards: usize, count: u64, capacity: usize) {
    let totals = Arc::new(Mutex::new(Vec::new()));
    let record = totals.clone();
    let mut config = config(shards);
    config.mailbox_capacity = capacity;
    let runtime = shards::start(config, move |context: ShardContext<(u64, u64)>| {
        let record = record.clone();
        async move {
            let sender = context.clone();
            let me = context.id().index() as u64;
            let sending = context.spawn(shards::TaskClass::Mail, async move {
                for seq in 0..count {
                    for to in 0..sender.shard_count() {
                        sender.send(ShardId::new(to), (me, seq)).await.unwrap();
                    }
                }
            });
            let mut next = vec![0u64; shards];
            let mut inbox = Vec::new();
            let expected = count * shards as u64;
            let mut received = 0u64;
            while received < expected {
                inbox.clear();
                let moved = context.recv_batch(&mut inbox, 64).await;
                assert!(moved > 0 && moved <= 64);
                for (from, (origin, seq)) in inbox.drain(..) {
                    assert_eq!(from.index() as u64, origin);
                    assert_eq!(next[from.index()], seq, "out of order from {from}");
                    next[from.index()] += 1;
                    received += 1;
                }
            }
            sending.await;
            record.lock().unwrap().push(received);
        }
    })
    .unwrap();
    join_within(runtime, Duration::from_secs(30)).unwrap();
    let totals = totals.lock().unwrap();
    assert_eq!(totals.len(), shards);
    assert!(totals.iter().all(|total| *total == count * shards as u64));
}

#[test]
fn fifo_per_pair_under_load() {
    all_to_all(3, 100_000 / 3, 1024);
}

#[test]
fn backpressure_small_rings_lose_nothing() {
    all_to_all(2, 10_000, 4);
}

#[test]
fn try_send_reports_full_and_gives_the_message_back() {
    let mut config = config(2);
    config.mailbox_capacity = 2;
    let outcome = Arc::new(Mutex::new(Vec::new()));
    let record = outcome.clone();
    // Shard 1 must not drain until shard 0 has filled the ring, or the third try_send fits.
    let filled = Arc::new(AtomicBool::new(false));
    let runtime = shards::start(config, move |context: ShardContext<u32>| {
        let record = record.clone();
        let filled = filled.clone();
        async move {
            if context.id().index() == 0 {
                let peer = ShardId::new(1);
                let results: Vec<String> = (0..3)
                    .map(|n| match context.try_send(peer, n) {
                        Ok(()) => String::from("ok"),
                        Err(shards::TrySendError::Full(back)) => format!("full {back}"),
                        Err(shards::TrySendError::Closed(back)) => format!("closed {back}"),
                    })
                    .collect();
                *record.lock().unwrap() = results;
                filled.store(true, Ordering::SeqCst);
                let missing = context.try_send(ShardId::new(7), 9);
                assert!(matches!(missing, Err(shards::TrySendError::Closed(9))));
                context.send(peer, 99).await.unwrap();
            } else {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !filled.load(Ordering::SeqCst) && Instant::now() < deadline {
                    shards::time::sleep(Duration::from_millis(1)).await;
                }
                let mut inbox = Vec::new();
                while inbox.len() < 3 {
                    context.recv_batch(&mut inbox, 8).await;
                }
                let values: Vec<u32> = inbox.iter().map(|(_, v)| *v).collect();
                assert_eq!(values, [0, 1, 99]);
            }
        }
    })
    .unwrap();
    join_within(runtime, Duration::from_secs(10)).unwrap();
    assert_eq!(*outcome.lock().unwrap(), ["ok", "ok", "full 2"]);
}

#[test]
fn shutdown_with_mail_in_flight_does_not_hang() {
    let mut config = config(4);
    config.mailbox_capacity = 8;
    let runtime = shards::start(config, |context: ShardContext<Vec<u8>>| async move {
        // Shard 0 only sends and never drains; the others drain until shutdown.
        if context.id().index() == 0 {
            let mut sent = 0u32;
            while !context.is_shutting_down() && sent < 1_000_000 {
                let to = ShardId::new(1 + (sent as usize % 3));
                let send = context.send(to, vec![0; 64]);
                if shards::time::timeout(Duration::from_millis(50), send)
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
            context.shutdown_requested().await;
        } else {
            let mut inbox = Vec::new();
            loop {
                inbox.clear();
                if context.recv_batch(&mut inbox, 4).await == 0 {
                    break;
                }
                shards::time::sleep(Duration::from_micros(100)).await;
            }
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    runtime.handle().shutdown();
    join_within(runtime, Duration::from_secs(10)).unwrap();
}

#[test]
fn send_to_a_stopped_shard_gives_the_message_back() {
    let runtime = shards::start(config(2), |context: ShardContext<u8>| async move {
        if context.id().index() == 1 {
            return; // Stops at once.
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut result = Ok(());
        while Instant::now() < deadline {
            result = context.send(ShardId::new(1), 7).await;
            if result.is_err() {
                break;
            }
            shards::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(result, Err(7));
    })
    .unwrap();
    join_within(runtime, Duration::from_secs(10)).unwrap();
}

#[test]
fn cpus_that_do_not_exist_are_named() {
    let mut config = config(2);
    config.topology.cpus = CpuSet::List(vec![0, 4096, 5000]);
    let error = shards::start::<(), _, _>(config, |_context| async {})
        .err()
        .unwrap();
    match &error {
        StartError::NoSuchCpus { missing, available } => {
            assert_eq!(missing, &[4096, 5000]);
            assert!(available.contains(&0));
        }
        other => panic!("unexpected error {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("4096") && text.contains("available CPUs"),
        "{text}"
    );
}

#[test]
fn a_shard_panic_stops_everything_and_join_reports_it() {
    let runtime = shards::start(config(3), |context: ShardContext<()>| async move {
        if context.id().index() == 2 {
            shards::time::sleep(Duration::from_millis(20)).await;
            panic!("shard two gave up");
        }
        context.shutdown_requested().await;
    })
    .unwrap();
    let error = join_within(runtime, Duration::from_secs(10)).unwrap_err();
    assert_eq!(
        error,
        RuntimeError::ShardPanicked {
            shard: ShardId::new(2),
            message: "shard two gave up".into()
        }
    );
}

#[test]
fn a_panic_in_a_spawned_task_is_reported_too() {
    let runtime = shards::start(config(2), |context: ShardContext<()>| async move {
        if context.id().index() == 1 {
            context
                .spawn(shards::TaskClass::Background, async {
                    panic!("background task failed")
                })
                .detach();
        }
        context.shutdown_requested().await;
    })
    .unwrap();
    let error = join_within(runtime, Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::ShardPanicked { shard, message }
        if shard.index() == 1 && message == "background task failed"),
        "{error:?}"
    );
}
