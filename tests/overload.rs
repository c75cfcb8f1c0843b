//! Goal: overload stays local. A subscriber that stops reading loses its own messages by the
//! configured policy (counted), with its queue bounded, while a healthy subscriber gets every
//! message; a flood of new connections is absorbed at the connect rate while an existing client
//! keeps its round trips.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, admin_get, connect_packet, metric, test_config};
use ringmq::config::DropPolicy;
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};
use socket2::{Domain, Socket, Type};

/// The tests here measure the process (RSS, timing): they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A 3.1.1 client whose socket receives into a 4 KiB buffer and which never reads after CONNACK.
fn stalled_subscriber(addr: SocketAddr, filter: &str) -> RawClient {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut client = RawClient::from_stream(socket.into(), Version::V3_1_1);
    let connack = client.handshake(connect_packet(Version::V3_1_1, "stalled", true, None));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    client.subscribe(1, &[(filter, QoS::AtLeastOnce)]);
    client
}

/// Resident memory of this process (broker and clients), from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn slow_consumer_is_held_to_its_limits(policy: DropPolicy) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const MESSAGES: usize = 25_000;
    const CHUNK: usize = 500;
    let payload = vec![7u8; 2048];
    let mut config = test_config(2);
    config.limits.outbox_messages_max = 1000;
    config.limits.outbox_bytes_max = 1 << 20;
    config.limits.outbox_drop_policy = policy;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");

    let _stalled = stalled_subscriber(broker.shard(0), "flood/#");
    let (mut healthy, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "healthy", true);
    healthy.subscribe(1, &[("flood/#", QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);

    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut received = 0usize;
    for _ in 0..MESSAGES / CHUNK {
        for i in 0..CHUNK {
            let qos = if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let id = (i % 2 == 1).then_some(u16::try_from(i).unwrap_or(1).max(1));
            publisher.publish("flood/x", &payload, qos, false, id);
        }
        // The healthy subscriber gets the whole chunk, in order, before the next is sent.
        for _ in 0..CHUNK {
            let got = healthy.recv_publish();
            assert_eq!(got.payload.len(), payload.len());
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(received, MESSAGES);
    let rss_after = rss_bytes();
    // 50 MB went to each subscriber; the stalled one may hold its outbox (1 MiB), its write
    // buffer and the socket buffers, not the flood.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 24 << 20,
        "{policy:?}: RSS grew by {growth} bytes ({rss_before} -> {rss_after})"
    );

    // Metrics are snapshotted about once a second: read until two reads agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (-1.0, -1.0);
    let (dropped, queued) = loop {
        std::thread::sleep(Duration::from_millis(1200));
        let metrics = admin_get(admin, "/metrics");
        let dropped = metric(
            &metrics,
            "ringmq_messages_dropped_total{shard=\"all\",reason=\"queue_full\"}",
        );
        let queued = metric(&metrics, "ringmq_queued_messages{shard=\"all\"}");
        if (dropped, queued) == last || Instant::now() > deadline {
            break last;
        }
        last = (dropped, queued);
    };
    eprintln!(
        "{policy:?}: {MESSAGES} x 2 KiB in {elapsed:?}; dropped {dropped}, queued {queued}, \
         RSS +{} KiB",
        growth / 1024
    );
    assert!(
        dropped > (MESSAGES / 2) as f64,
        "{policy:?}: dropped {dropped}"
    );
    assert!(queued <= 1000.0, "{policy:?}: queued {queued}");
}

#[test]
fn slow_consumer_drop_new() {
    slow_consumer_is_held_to_its_limits(DropPolicy::DropNew);
}

#[test]
fn slow_consumer_drop_oldest() {
    slow_consumer_is_held_to_its_limits(DropPolicy::DropOldest);
}

#[test]
fn a_connection_flood_is_paced_and_an_existing_client_keeps_its_round_trips() {
    const CONNECTIONS: usize = 2000;
    const THREADS: usize = 8;
    const RATE_PER_SHARD: u32 = 500;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut config = test_config(2);
    config.limits.connect_rate_per_shard_max = RATE_PER_SHARD;
    let broker = TestBroker::with_config(config);
    let (mut steady, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "steady", true);
    steady.subscribe(1, &[("echo", QoS::AtLeastOnce)]);

    let addrs = [broker.shard(0), broker.shard(1)];
    let started = Instant::now();
    let flood: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                let mut clients = Vec::new();
                for i in 0..CONNECTIONS / THREADS {
                    let addr = addrs[i % addrs.len()];
                    let mut client = RawClient::connect_tcp(addr, Version::V3_1_1);
                    let id = format!("flood-{thread}-{i}");
                    client.send(&Packet::Connect(Box::new(connect_packet(
                        Version::V3_1_1,
                        &id,
                        true,
                        None,
                    ))));
                    clients.push(client);
                }
                // Every CONNECT is answered, however long the backlog made it wait.
                for client in &mut clients {
                    match client.try_recv(Duration::from_secs(30)) {
                        Some(Packet::ConnAck(connack)) => {
                            assert_eq!(connack.reason, ReasonCode::SUCCESS);
                        }
                        other => panic!("expected CONNACK, got {other:?}"),
                    }
                }
                clients
            })
        })
        .collect();

    let mut worst = Duration::ZERO;
    let mut round_trips = 0u16;
    while !flood.iter().all(std::thread::JoinHandle::is_finished) {
        round_trips = round_trips.wrapping_add(1).max(1);
        let sent = Instant::now();
        steady.publish("echo", b"ping", QoS::AtLeastOnce, false, Some(round_trips));
        let mut acked = false;
        let mut echoed = false;
        while !(acked && echoed) {
            match steady.recv() {
                Packet::PubAck(_) => acked = true,
                Packet::Publish(publish) => {
                    steady.ack(&publish);
                    echoed = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        worst = worst.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let clients: usize = flood
        .into_iter()
        .map(|thread| thread.join().expect("flood thread").len())
        .sum();
    eprintln!(
        "{clients} connections in {elapsed:?}; {round_trips} round trips meanwhile, worst {worst:?}"
    );
    assert_eq!(clients, CONNECTIONS);
    assert!(round_trips > 0);
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    // One second's burst per shard, then the rate: the rest cannot have come in sooner.
    let paced =
        (CONNECTIONS as f64 - 2.0 * f64::from(RATE_PER_SHARD)) / (2.0 * f64::from(RATE_PER_SHARD));
    assert!(
        elapsed.as_secs_f64() > paced * 0.8,
        "{CONNECTIONS} connections in {elapsed:?}: not paced at {RATE_PER_SHARD}/s per shard"
    );
}
