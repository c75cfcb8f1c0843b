//! Goal: the cost of the router's hot paths. `Trie::for_each_match` runs once per PUBLISH, so it
//! is measured per topic on tries of 10k and 100k filters shaped like a fleet of devices:
//! mostly exact filters, some '+' at one level, some '#' at a few levels. Insert and remove run
//! once per SUBSCRIBE / UNSUBSCRIBE.
//!
//! Run: `cargo bench -p bench --bench router`. Samples are fixed at 64 iterations: one match is
//! a few hundred nanoseconds, too close to the timer's precision to time alone, and 64 calls
//! cycle through the whole set of hot topics.

use std::collections::BTreeSet;
use std::hint::black_box;

use divan::Bencher;
use ringmq::router::{TopicTree, Trie};

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [10_000, 100_000];

/// A small deterministic generator (xorshift64), so every run measures the same trie.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `n` distinct filters over `n / 50` sites of 100 devices with 20 sensors each:
/// 80% "site/device/sensor", 8% "site/+/sensor", 5% "+/device/sensor", 5% "site/device/#",
/// 2% "site/#", plus "#"-free '$SYS' filters.
fn filters(n: usize) -> Vec<String> {
    let sites = (n / 50).max(1);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut filters = BTreeSet::new();
    filters.insert("$SYS/#".to_owned());
    filters.insert("$SYS/broker/+".to_owned());
    while filters.len() < n {
        let (site, device, sensor) = (rng.below(sites), rng.below(100), rng.below(20));
        let filter = match rng.below(100) {
            0..80 => format!("site{site}/device{device}/sensor{sensor}"),
            80..88 => format!("site{site}/+/sensor{sensor}"),
            88..93 => format!("+/device{device}/sensor{sensor}"),
            93..98 => format!("site{site}/device{device}/#"),
            _ => format!("site{site}/#"),
        };
        filters.insert(filter);
    }
    filters.into_iter().collect()
}

fn trie(n: usize) -> Trie<u32> {
    let mut trie = Trie::new();
    for (i, filter) in filters(n).iter().enumerate() {
        trie.get_or_insert_with(filter, || i as u32);
    }
    trie
}

/// Topics a fleet publishes: exact filters of the set, so each one has several matches.
fn hot_topics(n: usize) -> Vec<String> {
    let mut topics: Vec<String> = filters(n)
        .into_iter()
        .filter(|f| !f.contains(['+', '#']))
        .step_by(97)
        .take(64)
        .collect();
    topics.push("$SYS/broker/load".to_owned());
    topics
}

fn count_matches(trie: &Trie<u32>, topics: &[String], next: &mut usize) -> usize {
    let topic = &topics[*next % topics.len()];
    *next += 1;
    let mut count = 0;
    trie.for_each_match(black_box(topic), |_| count += 1);
    count
}

#[divan::bench(args = SIZES, sample_count = 300, sample_size = 64)]
fn match_hot(bencher: Bencher, n: usize) {
    let trie = trie(n);
    let topics = hot_topics(n);
    let mut next = 0;
    bencher.bench_local(|| count_matches(&trie, &topics, &mut next));
}

#[divan::bench(args = SIZES, sample_count = 300, sample_size = 64)]
fn match_miss(bencher: Bencher, n: usize) {
    let trie = trie(n);
    let topics = vec![
        "nowhere/device1/sensor1".to_owned(),
        "site1/nothing/here/at/all".to_owned(),
    ];
    let mut next = 0;
    bencher.bench_local(|| count_matches(&trie, &topics, &mut next));
}

/// One SUBSCRIBE then UNSUBSCRIBE of a new filter (one new node) on a full trie.
#[divan::bench(args = SIZES, sample_count = 300, sample_size = 64)]
fn insert_remove(bencher: Bencher, n: usize) {
    let mut trie = trie(n);
    let new: Vec<String> = (0..64)
        .map(|i| format!("site1/device{}/extra", 1000 + i))
        .collect();
    let mut next = 0;
    bencher.bench_local(|| {
        let filter = &new[next % new.len()];
        next += 1;
        trie.get_or_insert_with(black_box(filter), || 0);
        trie.remove(black_box(filter))
    });
}

/// A '+' filter over the retained index: the work of one wildcard SUBSCRIBE.
#[divan::bench(args = SIZES, sample_count = 300, sample_size = 64)]
fn retained_matching(bencher: Bencher, n: usize) {
    let mut tree = TopicTree::new();
    for topic in filters(n).iter().filter(|f| !f.contains(['+', '#'])) {
        tree.insert(topic, ());
    }
    bencher.bench_local(|| {
        let mut count = 0;
        tree.for_each_matching(black_box("site1/+/sensor3"), |_, _| count += 1);
        count
    });
}
