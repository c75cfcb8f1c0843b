//! Writes a persistence store as a broker would leave it, for measuring how long a start takes
//! to read it back and how much memory the restored state takes:
//!
//! ```text
//! cargo run --release -p bench --example store_fill -- DIR RETAINED SESSIONS QUEUED_PER_SESSION [SHARDS]
//! ```
//!
//! Retained messages on `fill/r/{n}` and persistent 3.1.1 sessions `fill-{n}` subscribed to
//! `fill/s/{n}` with that many queued QoS 1 messages each; payloads of 64 bytes. Then start
//! ringmq with `[persistence] enabled = true, dir = DIR` and read the "store: recovered" line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringmq::message::Message;
use ringmq::protocol::{PublishProps, QoS, SubscriptionOptions, Version};
use ringmq::session::{Delivery, SessionState, Subscription};
use ringmq::store::{Clock, files, write_snapshot};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: store_fill DIR RETAINED SESSIONS QUEUED_PER_SESSION [SHARDS]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let number = |i: usize| -> usize { args[i].parse().expect("a number") };
    let (retained, sessions, queued) = (number(1), number(2), number(3));
    let shards = args.get(4).map_or(1, |s| s.parse().expect("a number"));
    let started = Instant::now();
    let clock = Clock::now();
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut id = 0u64;
    let mut message = |topic: String, qos: QoS, retain: bool| {
        id += 1;
        Arc::new(Message {
            id,
            topic: topic.into(),
            payload: payload.clone(),
            qos,
            retain,
            properties: PublishProps::none(),
            publisher: "filler".into(),
            received_at: clock.instant,
            expires_at: None,
        })
    };
    let retained_messages: Vec<Arc<Message>> = (0..retained)
        .map(|n| message(format!("fill/r/{n}"), QoS::AtMostOnce, true))
        .collect();
    let mut states = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let mut state = SessionState::new(format!("fill-{n}").into(), Version::V3_1_1, 86_400);
        let filter = format!("fill/s/{n}");
        let subscription = Subscription {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            identifier: None,
            read_granted_generation: 0,
        };
        state
            .subscriptions
            .insert(filter.clone().into(), subscription);
        let deliveries = (0..queued)
            .map(|seq| {
                let delivery = Delivery {
                    message: message(filter.clone(), QoS::AtLeastOnce, false),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_identifiers: Vec::new(),
                    shared: None,
                    reoffered: false,
                };
                (seq as u64 + 1, delivery)
            })
            .collect();
        let state = state.restore(deliveries, Vec::new(), [], queued as u64 + 1, clock.instant);
        states.push(state);
    }
    let expires_at = clock.instant + std::time::Duration::from_secs(86_400);
    // Each shard's part, as a broker with that many shards leaves it: by home shard.
    let home = |key: &str| ringmq::shard::home_of(key, shards).index();
    let snapshots: Vec<Vec<u8>> = (0..shards)
        .map(|shard| {
            write_snapshot(
                states
                    .iter()
                    .filter(|s| home(&s.client_id) == shard)
                    .map(|s| (1, s, Some(expires_at))),
                ringmq::store::SnapshotParts {
                    retained: retained_messages.iter().filter(|m| home(&m.topic) == shard),
                    wills: std::iter::empty(),
                    notes: Vec::new(),
                },
                &clock,
                0,
            )
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    files::begin_generation(&dir, 1, shards).expect("store written");
    files::finish_generation(&dir, 1, &snapshots, None, false).expect("store written");
    let bytes: usize = snapshots.iter().map(Vec::len).sum();
    println!(
        "{}: {retained} retained, {sessions} sessions x {queued} queued, {:.1} MiB in {:.2} s",
        dir.display(),
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
}
