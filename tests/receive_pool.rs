//! Goal: an idle connection holds no receive buffer. Reads complete into the shard's pool of
//! receive buffers (`runtime.recv_buffers`), 1,000 connected idle clients hold none of it while
//! other clients keep publishing and receiving, and a broker without a pool serves the same.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Bystanders, RawClient, TestBroker, admin_get, metric, test_config};
use ringmq::protocol::Version;

const SHARDS: usize = 4;

/// `/metrics` once the merged snapshot counts at least `connections` open connections and
/// `pooled` pooled reads (snapshots are published about once a second).
fn metrics_once(admin: SocketAddr, connections: f64, pooled: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = admin_get(admin, "/metrics");
        let open = metric(&metrics, "ringmq_connections{shard=\"all\"}");
        let reads = metric(&metrics, "ringmq_receives_pooled_total{shard=\"all\"}");
        if (open >= connections && reads >= pooled) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `config`, connects `count` idle 3.1.1 clients spread over the shards, checks that the
/// bystanders are still served, and returns `/metrics` once it counts them all and `pooled`
/// pooled reads; the broker is shut down at the end.
fn with_idle_clients(config: ringmq::config::Config, count: usize, pooled: f64) -> String {
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    let mut bystanders = Bystanders::new(&broker);
    let idle: Vec<RawClient> = (0..count)
        .map(|i| {
            let shard = broker.shard(i % SHARDS);
            RawClient::connect(shard, Version::V3_1_1, &format!("idle-{i}"), true).0
        })
        .collect();
    bystanders.still_served(&format!("with {count} idle clients connected"));
    let metrics = metrics_once(admin, (count + 2) as f64, pooled);
    let open = metric(&metrics, "ringmq_connections{shard=\"all\"}");
    assert!(open >= (count + 2) as f64, "connections open: {open}");
    drop(idle);
    broker.shutdown();
    metrics
}

#[test]
fn a_thousand_idle_clients_hold_no_receive_buffer() {
    // Every CONNECT was read through the pool (and the bystanders' packets too).
    let metrics = with_idle_clients(test_config(SHARDS), 1000, 1002.0);
    let pooled = metric(&metrics, "ringmq_receives_pooled_total{shard=\"all\"}");
    assert!(pooled >= 1002.0, "reads through the pool: {pooled}");
    let held = metric(&metrics, "ringmq_receive_buffers_held{shard=\"all\"}");
    assert_eq!(held, 0.0, "idle connections hold receive buffers");
    assert!(
        metrics.contains("ringmq_receive_buffers_held{shard=\"0\"} 0\n"),
        "no per-shard gauge in /metrics"
    );
}

#[test]
fn a_broker_without_a_receive_pool_serves_the_same() {
    let mut config = test_config(SHARDS);
    config.runtime.recv_buffers = 0;
    let metrics = with_idle_clients(config, 50, 0.0);
    assert_eq!(
        metric(&metrics, "ringmq_receives_pooled_total{shard=\"all\"}"),
        0.0,
        "reads went through a pool that should not exist"
    );
}
