//! Goal: a short `ringmq-bench pubsub` against an in-process ringmq (4 unpinned shards, clients
//! spread over the shards' own ports) accounts for every message: received = published x
//! subscribers per topic, with no loss and no duplicates.

mod common;

use ringmq::config::{Config, ShardCount, TcpListener};
use serde_json::Value;
use std::net::SocketAddr;

const SHARDS: usize = 4;

fn broker() -> (ringmq::server::Broker, String) {
    let mut config = Config::default();
    config.runtime.shards = ShardCount::Count(SHARDS);
    config.runtime.pin = false;
    config.admin.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listeners.tcp.clear();
    config.listeners.tcp.insert(
        String::from("default"),
        TcpListener {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            shard_port_base: Some(0),
            ..TcpListener::default()
        },
    );
    let broker = ringmq::server::start(config).expect("broker starts");
    let hosts: Vec<String> = (0..SHARDS)
        .map(|shard| {
            broker
                .shard_addr(0, shard)
                .expect("port per shard")
                .to_string()
        })
        .collect();
    (broker, hosts.join(","))
}

/// Runs the generator and returns its `--json` report.
fn bench(name: &str, hosts: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "pubsub",
        "-h",
        hosts,
        "-c",
        "4",
        "--subs",
        "4",
        "-q",
        "1",
        "-F",
        "16",
        "-I",
        "0",
        "-L",
        "2000",
        "-s",
        "64",
        "-i",
        "1",
        "--threads",
        "2",
        "--pin",
        "false",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    common::report(name, &args)
}

fn check(report: &Value, published: u64, received: u64, streams: u64) {
    let totals = &report["totals"];
    assert_eq!(totals["connect_failed"], 0, "{report:#}");
    assert_eq!(totals["connected"], 8, "{report:#}");
    assert_eq!(totals["subscribed"], 4, "{report:#}");
    assert_eq!(totals["published"], published, "{report:#}");
    assert_eq!(
        totals["acked"], published,
        "every QoS 1 publish acknowledged"
    );
    assert_eq!(totals["received"], received, "{report:#}");
    assert_eq!(totals["lost"], 0, "{report:#}");
    assert_eq!(totals["duplicates"], 0, "{report:#}");
    assert_eq!(totals["streams"], streams, "{report:#}");
    assert_eq!(report["latency"]["count"], received, "every arrival timed");
    assert!(report["latency"]["p99_ns"].as_u64().unwrap() > 0);
}

#[test]
fn pairs_and_wildcard_fan_out_add_up() {
    let (broker, hosts) = broker();
    // Pairs: publisher i -> bench/i <- subscriber i.
    let pairs = bench("pairs", &hosts, &[]);
    check(&pairs, 8000, 8000, 4);
    // Every subscriber hears every publisher. Each gets 800 messages, under the broker's default
    // outbox limit (1000): publishers that outrun a subscriber make the broker drop by policy.
    let fanout = bench(
        "fanout",
        &hosts,
        &["--sub-topic", "bench/#", "--rate", "4000", "-L", "200"],
    );
    check(&fanout, 800, 3200, 16);
    broker.shutdown().expect("clean shutdown");
}
