//! Goal: overload stays local. A subscriber that stops reading loses its own messages by the
//! configured policy (counted), with its queue bounded, while a healthy subscriber gets every
//! message; a flood of new connections is absorbed at the connect rate while an existing client
//! keeps its round trips.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, admin_get, connect_packet, metric, rss_bytes, test_config};
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

/// Reads and acknowledges PUBLISHes until one carries sequence number `last` (payload's first 4
/// bytes, big endian) or `within` passes; returns the sequence numbers received, and counts
/// them in `progress` as they come.
fn receive_until(
    client: &mut RawClient,
    last: u32,
    within: Duration,
    progress: &AtomicU32,
) -> Vec<u32> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < deadline && got.last() != Some(&last) {
        let Some(packet) = client.try_recv(Duration::from_millis(200)) else {
            continue;
        };
        let Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        client.ack(&publish);
        got.push(sequence(&publish.payload));
        progress.fetch_add(1, Ordering::Relaxed);
    }
    got
}

fn sequence(payload: &[u8]) -> u32 {
    u32::from_be_bytes(
        payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]),
    )
}

/// A QoS 1 message of 1 KiB numbered `seq`.
fn numbered(seq: u32) -> Vec<u8> {
    let mut payload = vec![0u8; 1024];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    payload
}

/// `reason`'s drops over all shards once two snapshots of the metrics agree.
fn settled_drops(admin: SocketAddr, reason: &str) -> f64 {
    let series = format!("ringmq_messages_dropped_total{{shard=\"all\",reason=\"{reason}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = -1.0;
    loop {
        std::thread::sleep(Duration::from_millis(1200));
        let dropped = metric(&admin_get(admin, "/metrics"), &series);
        if dropped == last || Instant::now() > deadline {
            return dropped;
        }
        last = dropped;
    }
}

/// A member of `$share/g/jobs` on `shard` that reads (3.1.1, QoS 1), once every shard knows it.
fn healthy_member(broker: &TestBroker, shard: usize) -> RawClient {
    let (mut healthy, _) =
        RawClient::connect(broker.shard(shard), Version::V3_1_1, "healthy", true);
    healthy.subscribe(1, &[("$share/g/jobs", QoS::AtLeastOnce)]);
    // The member counts reach every shard by mail.
    std::thread::sleep(Duration::from_millis(300));
    healthy
}

/// A shared group of a member that never reads (on `stalled_shard`) and one that reads at once
/// (on `healthy_shard`), with outboxes of 10 messages: the stalled member takes what its
/// in-flight window (32) and outbox hold, then every message goes to the healthy one, and none
/// is dropped.
fn shared_group_routes_around_a_stalled_member(stalled_shard: usize, healthy_shard: usize) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const MESSAGES: u32 = 2000;
    const CHUNK: u32 = 10;
    const STALLED_HOLDS: u32 = 32 + 10;
    let mut config = test_config(2);
    config.limits.outbox_messages_max = 10;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    let _stalled = stalled_subscriber(broker.shard(stalled_shard), "$share/g/jobs");
    let mut healthy = healthy_member(&broker, healthy_shard);
    let progress = Arc::new(AtomicU32::new(0));
    let reader = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            receive_until(
                &mut healthy,
                MESSAGES - 1,
                Duration::from_secs(60),
                &progress,
            )
        })
    };
    // Published on the stalled member's shard: its own pick is the stalled member. A chunk at a
    // time, once the healthy member has all but what the stalled one may hold, so that the
    // healthy member's window and outbox always have room for the chunk.
    let (mut publisher, _) =
        RawClient::connect(broker.shard(stalled_shard), Version::V3_1_1, "pub", true);
    for chunk in 0..MESSAGES / CHUNK {
        let sent = chunk * CHUNK;
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress.load(Ordering::Relaxed) + STALLED_HOLDS < sent {
            assert!(
                Instant::now() < deadline,
                "{sent} sent, the healthy member has only {}",
                progress.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for seq in sent..sent + CHUNK {
            let id = u16::try_from(seq + 1).unwrap_or(1);
            publisher.publish("jobs", &numbered(seq), QoS::AtLeastOnce, false, Some(id));
        }
    }
    let got = reader.join().expect("reader");
    let mut to_healthy = vec![false; MESSAGES as usize];
    for &seq in &got {
        to_healthy[seq as usize] = true;
    }
    let stalled: Vec<u32> = (0..MESSAGES).filter(|&s| !to_healthy[s as usize]).collect();
    eprintln!(
        "stalled on shard {stalled_shard}, healthy on {healthy_shard}: {} to the healthy \
         member, {} to the stalled one (last {:?})",
        got.len(),
        stalled.len(),
        stalled.last()
    );
    assert_eq!(got.last(), Some(&(MESSAGES - 1)));
    assert!(stalled.len() <= STALLED_HOLDS as usize, "{stalled:?}");
    assert_eq!(settled_drops(admin, "queue_full"), 0.0);
    assert_eq!(settled_drops(admin, "no_subscribers"), 0.0);
}

#[test]
fn shared_group_routes_around_a_stalled_member_on_the_same_shard() {
    shared_group_routes_around_a_stalled_member(0, 0);
}

#[test]
fn shared_group_routes_around_a_stalled_member_on_another_shard() {
    shared_group_routes_around_a_stalled_member(0, 1);
}

/// `drop_oldest`: a member's outbox full of shared QoS 1 messages makes room for messages of its
/// own subscription; the shared messages so evicted go to another member of the group instead
/// of being lost.
fn evicted_shared_messages_go_to_another_member(healthy_shard: usize) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const OUTBOX: u32 = 10;
    let mut config = test_config(2);
    config.limits.outbox_messages_max = OUTBOX;
    config.limits.outbox_drop_policy = DropPolicy::DropOldest;
    let broker = TestBroker::with_config(config);
    let admin = broker.admin_addr().expect("admin listener");
    // A persistent member, offline: everything it gets waits in its outbox.
    let (mut parked, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "parked", false);
    parked.subscribe(
        1,
        &[
            ("$share/g/jobs", QoS::AtLeastOnce),
            ("news", QoS::AtLeastOnce),
        ],
    );
    parked.disconnect();
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "pub", true);
    let publish_acked = |publisher: &mut RawClient, topic: &str, seqs: std::ops::Range<u32>| {
        for seq in seqs {
            let id = u16::try_from(seq + 1).unwrap_or(1);
            publisher.publish(topic, &numbered(seq), QoS::AtLeastOnce, false, Some(id));
            assert!(
                matches!(publisher.recv(), Packet::PubAck(_)),
                "PUBACK {seq}"
            );
        }
    };
    // The only member takes a full outbox of jobs.
    publish_acked(&mut publisher, "jobs", 0..OUTBOX);
    std::thread::sleep(Duration::from_millis(300));
    let mut healthy = healthy_member(&broker, healthy_shard);
    // News for the parked member evict its jobs, oldest first: each goes to the healthy member.
    publish_acked(&mut publisher, "news", 100..100 + OUTBOX);
    let progress = AtomicU32::new(0);
    let got = receive_until(&mut healthy, OUTBOX - 1, Duration::from_secs(10), &progress);
    assert_eq!(got, (0..OUTBOX).collect::<Vec<_>>());
    // The parked member has the news, and only them.
    let (mut parked, connack) =
        RawClient::connect(broker.shard(0), Version::V3_1_1, "parked", false);
    assert!(connack.session_present);
    let news = receive_until(
        &mut parked,
        100 + OUTBOX - 1,
        Duration::from_secs(10),
        &progress,
    );
    assert_eq!(news, (100..100 + OUTBOX).collect::<Vec<_>>());
    assert!(parked.try_recv(Duration::from_millis(300)).is_none());
    assert_eq!(settled_drops(admin, "queue_full"), 0.0);
}

#[test]
fn drop_oldest_gives_evicted_shared_messages_to_a_member_on_the_same_shard() {
    evicted_shared_messages_go_to_another_member(0);
}

#[test]
fn drop_oldest_gives_evicted_shared_messages_to_a_member_on_another_shard() {
    evicted_shared_messages_go_to_another_member(1);
}
