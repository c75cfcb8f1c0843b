//! Goal: a deterministic simulator of N shards in one thread. Virtual clients are connection ids
//! fed to `Shard::handle`; mail moves through per-ordered-pair FIFO queues delivered in a seeded
//! random interleaving; time is a virtual clock. After every handle it checks interest replication
//! (no false negatives), one online session and one live connection per client id, and the
//! shell contract; at quiet points, exact interest, the directory, and that every request got its
//! answer, and that every session move finished. Scenarios: churn of subscriptions and
//! connections, the SUBACK barrier, takeover races, and no loss (nor a QoS 2 duplicate) for a
//! persistent session taken over again and again, also while messages race the takeovers.
//!
//! A failure names its seed: `SIM_SEED=<seed> SIM_TRACE=1 cargo test --test simulator <name>`
//! replays it with every action and mail printed.

mod simulator {
    pub mod barrier;
    pub mod bugs;
    pub mod churn;
    pub mod invariants;
    pub mod persistent;
    pub mod rng;
    pub mod world;
}

use simulator::churn::Mix;
use simulator::world::for_seeds;
use simulator::{barrier, churn, persistent};

/// Shard counts every scenario runs with.
const SHARD_COUNTS: [usize; 3] = [2, 4, 5];

/// Seeds per shard count, and steps per seed.
const SEEDS: u64 = 200;
const STEPS: usize = 300;

/// Subscriptions come and go on many filters; connections churn less.
const INTEREST: Mix = Mix {
    ids: &["c0", "c1", "c2", "c3", "c4", "c5"],
    filters: &["a/+", "a/#", "#", "a/b", "$SYS/#", "x/y", "+/+", "x/#"],
    topics: &["a/b", "x/y", "a", "$SYS/up"],
    //        deliver connect race sub unsub pub ack disc drop tick settle
    weights: [45, 6, 1, 14, 10, 3, 2, 3, 3, 2, 1],
};

/// Few client ids connect, race and take each other over; some subscriptions ride along.
const TAKEOVER: Mix = Mix {
    ids: &["d0", "d1", "d2"],
    filters: &["a/+", "#", "x/y"],
    topics: &["a/b", "x/y"],
    //        deliver connect race sub unsub pub ack disc drop tick settle
    weights: [45, 12, 5, 5, 2, 4, 2, 5, 5, 3, 1],
};

/// Runs a scenario for every shard count and seed (`SIM_SEEDS` overrides the seed count).
fn each_world(name: &str, run: impl Fn(usize, u64)) {
    let seeds = seed_count();
    for n in SHARD_COUNTS {
        for_seeds(&format!("{name} (shards: {n})"), 0..seeds, |seed| {
            run(n, seed)
        });
    }
}

fn seed_count() -> u64 {
    std::env::var("SIM_SEEDS").map_or(SEEDS, |s| s.parse().expect("SIM_SEEDS"))
}

#[test]
fn interest_replication() {
    each_world("interest_replication", |n, seed| {
        churn::run(&INTEREST, n, seed, STEPS)
    });
}

#[test]
fn takeover_and_directory() {
    each_world("takeover_and_directory", |n, seed| {
        churn::run(&TAKEOVER, n, seed, STEPS)
    });
}

#[test]
fn suback_barrier() {
    each_world("suback_barrier", |n, seed| barrier::run(n, seed, STEPS));
}

/// Shard counts of the racing sweep: the fewer the shards, the more often a session bounces
/// between the same two and a message chases it through many takeovers in a row.
const RACING_SHARD_COUNTS: [usize; 3] = [2, 3, 4];

/// The same, with QoS 1 and 2 publishes racing the takeovers: the keeper reconnects while
/// earlier moves are still in flight, so a message chases its session along a chain of owners.
/// No message is lost and no QoS 2 message reaches the application twice (asserted per seed).
#[test]
fn persistent_session_no_loss_racing() {
    let seeds = seed_count();
    for n in RACING_SHARD_COUNTS {
        let total = std::cell::Cell::new(persistent::Outcome::default());
        let name = format!("persistent_session_no_loss_racing (shards: {n})");
        for_seeds(&name, 0..seeds, |seed| {
            let outcome = persistent::run(n, seed, STEPS, true);
            let mut sum = total.get();
            sum.qos2_delivered += outcome.qos2_delivered;
            sum.qos1_duplicates += outcome.qos1_duplicates;
            total.set(sum);
        });
        let total = total.get();
        eprintln!("{name}: {seeds} seeds, {total:?}");
        assert!(
            total.qos2_delivered > 0,
            "the sweep delivered nothing at QoS 2"
        );
    }
}

#[test]
fn persistent_session_no_loss() {
    each_world("persistent_session_no_loss", |n, seed| {
        persistent::run(n, seed, STEPS, false);
    });
}
