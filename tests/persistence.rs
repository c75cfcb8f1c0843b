//! Persistence across a restart of the in-process broker: sessions with their queued and
//! in-flight messages, retained messages and delayed wills come back, also with another shard
//! count; a damaged store stops the start with the file named, a torn tail is cut, and an
//! unusable directory is a clear error. (A real process killed with -9 is in
//! `persistence_crash.rs`; a full disk in `persistence_disk.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet, test_config};
use ringmq::config::{Config, Fsync};
use ringmq::protocol::{Packet, QoS, Version, Will};

/// A fresh directory for one test's store.
fn store_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn persistent_config(shards: usize, dir: &Path, fsync: Fsync) -> Config {
    let mut config = test_config(shards);
    config.persistence.enabled = true;
    config.persistence.dir = dir.to_path_buf();
    config.persistence.fsync = fsync;
    config.persistence.fsync_interval_ms = 20;
    config
}

fn start(shards: usize, dir: &Path) -> TestBroker {
    TestBroker::with_config(persistent_config(shards, dir, Fsync::Always))
}

/// Publishes QoS 1 messages and waits for each PUBACK: after this they are promised.
fn publish_acked(publisher: &mut RawClient, topic: &str, payloads: &[&str], first_id: u16) {
    for (i, payload) in payloads.iter().enumerate() {
        let id = first_id + i as u16;
        publisher.publish(topic, payload.as_bytes(), QoS::AtLeastOnce, false, Some(id));
        match publisher.recv() {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id, common::pid(id)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

fn payload(publish: &ringmq::protocol::Publish) -> String {
    String::from_utf8_lossy(&publish.payload).into_owned()
}

#[test]
fn a_session_with_queued_and_inflight_messages_and_retained_ones_survive_a_restart() {
    let dir = store_dir("restart");
    let broker = start(4, &dir);
    let (mut sub, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "keeper", false);
    sub.subscribe(1, &[("a/#", QoS::AtLeastOnce), ("q2/#", QoS::ExactlyOnce)]);
    let (mut publisher, _) = RawClient::connect(broker.shard(2), Version::V3_1_1, "pub", true);
    publish_acked(&mut publisher, "a/x", &["m1"], 1);
    // Received and not acknowledged: in flight when the broker stops.
    let first = sub.recv_publish();
    assert_eq!(payload(&first), "m1");
    drop(sub);
    std::thread::sleep(Duration::from_millis(100));
    publish_acked(&mut publisher, "a/x", &["m2", "m3", "m4"], 2);
    publisher.publish("q2/x", b"two", QoS::ExactlyOnce, false, Some(9));
    assert!(matches!(publisher.recv(), Packet::PubRec(_)));
    publisher.publish("r/1", b"kept", QoS::AtLeastOnce, true, Some(10));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    drop(publisher);
    broker.shutdown();

    let broker = start(4, &dir);
    let (mut sub, connack) = RawClient::connect(broker.shard(3), Version::V3_1_1, "keeper", false);
    assert!(connack.session_present, "the session came back");
    let resent = sub.recv_publish();
    assert_eq!(payload(&resent), "m1");
    assert!(
        resent.dup,
        "a message in flight is sent again with DUP (MQTT-4.4.0-1)"
    );
    sub.ack(&resent);
    for expected in ["m2", "m3", "m4", "two"] {
        let publish = sub.recv_publish();
        assert_eq!(payload(&publish), expected);
        sub.ack(&publish);
    }
    // The QoS 2 exchange ends with PUBREL from the broker and our PUBCOMP.
    match sub.recv() {
        Packet::PubRel(rel) => sub.send(&Packet::PubComp(common::response(rel.packet_id))),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    let (mut fresh, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "fresh", true);
    fresh.subscribe(1, &[("r/#", QoS::AtLeastOnce)]);
    let retained = fresh.recv_publish();
    assert_eq!(
        (payload(&retained), retained.retain),
        (String::from("kept"), true)
    );
    // What was acknowledged is not sent again after another restart.
    std::thread::sleep(Duration::from_millis(200));
    drop(sub);
    drop(fresh);
    broker.shutdown();
    let broker = start(4, &dir);
    let (mut sub, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "keeper", false);
    assert!(connack.session_present);
    assert!(
        sub.try_recv(Duration::from_millis(300)).is_none(),
        "acknowledged messages stay acknowledged"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_change_of_shard_count_brings_every_session_and_retained_message_back() {
    let dir = store_dir("reshard");
    let clients = 12;
    let broker = start(4, &dir);
    for i in 0..clients {
        let (mut sub, _) =
            RawClient::connect(broker.shard(i), Version::V3_1_1, &format!("s{i}"), false);
        sub.subscribe(1, &[(&format!("t/{i}"), QoS::AtLeastOnce)]);
    }
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "p", true);
    for i in 0..clients {
        let topic = format!("t/{i}");
        publish_acked(&mut publisher, &topic, &[&format!("for {i}")], 1);
        publisher.publish(&format!("r/{i}"), b"x", QoS::AtLeastOnce, true, Some(2));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    drop(publisher);
    broker.shutdown();
    for shards in [2, 3] {
        let broker = start(shards, &dir);
        let (mut probe, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "probe", true);
        probe.subscribe(1, &[("r/#", QoS::AtMostOnce)]);
        let mut retained = Vec::new();
        while let Some(Packet::Publish(p)) = probe.try_recv(Duration::from_millis(300)) {
            retained.push(p.topic.to_string());
        }
        assert_eq!(retained.len(), clients, "{shards} shards: {retained:?}");
        drop(probe);
        broker.shutdown();
    }
    let broker = start(3, &dir);
    for i in 0..clients {
        let (mut sub, connack) = RawClient::connect(
            broker.shard(i + 1),
            Version::V3_1_1,
            &format!("s{i}"),
            false,
        );
        assert!(connack.session_present, "s{i}");
        let publish = sub.recv_publish();
        assert_eq!(payload(&publish), format!("for {i}"));
        sub.ack(&publish);
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_delayed_will_fires_after_a_restart() {
    let dir = store_dir("will");
    let broker = start(2, &dir);
    let client = connect_with_delayed_will(broker.shard(1), "mortal", "gone");
    let (mut watcher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "watcher", false);
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]);
    drop(watcher);
    // Gone without DISCONNECT: the will waits two seconds.
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    broker.shutdown();
    let broker = start(2, &dir);
    let (mut watcher, connack) =
        RawClient::connect(broker.shard(1), Version::V3_1_1, "watcher", false);
    assert!(connack.session_present);
    let will = watcher.recv_publish();
    assert_eq!(
        (will.topic.to_string(), payload(&will)),
        (String::from("wills/mortal"), String::from("gone"))
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest log of shard 0 of the generation in force.
fn newest_log(dir: &Path) -> PathBuf {
    let generation = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let shard = dir
        .join(format!("gen-{}", generation.trim()))
        .join("shard-0");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Some records in shard 0's log: a retained message whose home is shard 0.
fn write_some_records(dir: &Path) -> TestBroker {
    let broker = start(1, dir);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "p", true);
    for i in 0..5u16 {
        publisher.publish(&format!("r/{i}"), b"v", QoS::AtLeastOnce, true, Some(i + 1));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    broker
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_is_kept() {
    let dir = store_dir("torn");
    write_some_records(&dir).shutdown();
    let log = newest_log(&dir);
    let mut bytes = std::fs::read(&log).unwrap();
    // Half a record, as a crash in the middle of a write leaves it.
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 10, 0]);
    std::fs::write(&log, bytes).unwrap();
    let broker = start(1, &dir);
    let (mut probe, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "probe", true);
    probe.subscribe(1, &[("r/#", QoS::AtMostOnce)]);
    let mut count = 0;
    while probe.try_recv(Duration::from_millis(300)).is_some() {
        count += 1;
    }
    assert_eq!(count, 5);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_log_stops_the_start_with_the_file_named_unless_told_to_quarantine_it() {
    let dir = store_dir("damaged");
    write_some_records(&dir).shutdown();
    let log = newest_log(&dir);
    let mut bytes = std::fs::read(&log).unwrap();
    // Damage inside the first record (after the 8-byte magic), with valid records after it.
    assert!(bytes.len() > 40, "records were written");
    bytes[20] ^= 0xFF;
    // And a whole valid record after it would be lost: so this is damage, not a torn tail.
    std::fs::write(&log, &bytes).unwrap();
    let config = persistent_config(1, &dir, Fsync::Always);
    let error = match ringmq::server::start(config.clone()) {
        Ok(_) => panic!("a damaged log must stop the start"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&log.display().to_string()) && error.contains("--ignore-corrupt-storage"),
        "{error}"
    );
    let mut config = config;
    config.persistence.ignore_corrupt_storage = true;
    let broker = TestBroker::with_config(config);
    // The shards write the new generation's first snapshots while they already serve, and a
    // thread then switches to it and moves the damaged one aside: wait (bounded) for it.
    let quarantined = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let entry = e.as_ref().unwrap();
                entry
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("quarantine-")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while quarantined() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(quarantined(), 1, "the damaged generation is kept aside");
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "after", true);
    client.publish("x", b"y", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(client.recv(), Packet::PubAck(_)), "serving");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_foreign_file_and_an_unusable_directory_are_named_errors() {
    let dir = store_dir("foreign");
    write_some_records(&dir).shutdown();
    let log = newest_log(&dir);
    std::fs::write(log.with_file_name("notes.txt"), "mine").unwrap();
    let error = ringmq::server::start(persistent_config(1, &dir, Fsync::Always))
        .err()
        .expect("a foreign file stops the start")
        .to_string();
    assert!(
        error.contains("notes.txt") && error.contains("not a ringmq store file"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A directory that cannot be created: its parent is a regular file.
    let file = store_dir("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let error = ringmq::server::start(persistent_config(1, &file.join("store"), Fsync::Always))
        .err()
        .expect("an unusable directory stops the start")
        .to_string();
    assert!(error.contains("persistence.dir"), "{error}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn periodic_sync_keeps_the_same_state_across_a_clean_restart() {
    let dir = store_dir("periodic");
    let broker = TestBroker::with_config(persistent_config(2, &dir, Fsync::Periodic));
    let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "slow", false);
    sub.subscribe(1, &[("p/#", QoS::AtLeastOnce)]);
    drop(sub);
    let (mut publisher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "p", true);
    let payloads: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish_acked(&mut publisher, "p/x", &refs, 1);
    drop(publisher);
    broker.shutdown();
    let broker = start(2, &dir);
    let (mut sub, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "slow", false);
    assert!(connack.session_present);
    for expected in &payloads {
        let publish = sub.recv_publish();
        assert_eq!(&payload(&publish), expected);
        sub.ack(&publish);
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_ended_by_a_clean_start_on_another_shard_stays_ended_after_a_restart() {
    let dir = store_dir("clean-start");
    let broker = start(4, &dir);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "fickle", false);
    client.subscribe(1, &[("f/#", QoS::AtLeastOnce)]);
    drop(client);
    std::thread::sleep(Duration::from_millis(100));
    // Clean session 1 on another shard: the persistent session ends; this one ends with it.
    let (client, connack) = RawClient::connect(broker.shard(1), Version::V3_1_1, "fickle", true);
    assert!(!connack.session_present);
    client.disconnect();
    std::thread::sleep(Duration::from_millis(100));
    broker.shutdown();
    let broker = start(4, &dir);
    let (_client, connack) = RawClient::connect(broker.shard(2), Version::V3_1_1, "fickle", false);
    assert!(
        !connack.session_present,
        "the ended session came back after the restart"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_delayed_will_of_a_client_connected_at_shutdown_waits_on_disk_for_its_delay() {
    let dir = store_dir("will-at-shutdown");
    let broker = start(2, &dir);
    let (mut watcher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "watcher2", false);
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]);
    drop(watcher);
    let client = connect_with_delayed_will(broker.shard(1), "sleeper", "late");
    // Still connected when the broker stops: the session survives, so the will waits.
    broker.shutdown();
    drop(client);
    let started = std::time::Instant::now();
    let broker = start(2, &dir);
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V3_1_1, "watcher2", false);
    let will = watcher.recv_publish();
    assert_eq!(payload(&will), "late");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the will waited for its delay, not fired at shutdown ({:?})",
        started.elapsed()
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 5.0 client with a persistent session (expiry 600 s) and a will on `wills/{client_id}` with a
/// Will Delay Interval of 2 s.
fn connect_with_delayed_will(
    addr: std::net::SocketAddr,
    client_id: &str,
    will_payload: &'static str,
) -> RawClient {
    let mut connect = connect_packet(
        Version::V5,
        client_id,
        false,
        Some(Will {
            topic: format!("wills/{client_id}").into(),
            payload: will_payload.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: ringmq::protocol::WillProperties {
                will_delay_interval_secs: Some(2),
                ..Default::default()
            },
        }),
    );
    connect.properties.session_expiry_interval_secs = Some(600);
    let mut client = RawClient::connect_tcp(addr, Version::V5);
    client.handshake(connect);
    client
}

/// The files of shard 0's directory in the generation in force.
fn shard0_files(dir: &Path) -> Vec<String> {
    let generation = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let shard = dir
        .join(format!("gen-{}", generation.trim()))
        .join("shard-0");
    let mut names: Vec<String> = std::fs::read_dir(shard)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_taken_while_serving_replaces_the_logs_before_it_and_reads_back_after_a_restart() {
    let dir = store_dir("running-snapshot");
    let broker = start(1, &dir);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "p", true);
    // About 70 MB of records over four retained topics: past the 64 MiB that makes a
    // snapshot due when the last one (the start's) is small.
    let big = vec![b'x'; 1_000_000];
    for i in 0..70u16 {
        let mut payload = big.clone();
        payload[..2].copy_from_slice(&i.to_be_bytes());
        publisher.publish(
            &format!("big/{}", i % 4),
            &payload,
            QoS::AtLeastOnce,
            true,
            Some(i + 1),
        );
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    // The snapshot is taken in slices while the shard serves: wait (bounded) for its file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !shard0_files(&dir).contains(&String::from("snap-00000002"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    publish_retained_marker(&mut publisher);
    let files = shard0_files(&dir);
    assert!(
        files.contains(&String::from("snap-00000002"))
            && files.contains(&String::from("log-00000002")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with("00000001")),
        "the first snapshot and log are removed: {files:?}"
    );
    broker.shutdown();
    let broker = start(1, &dir);
    let (mut probe, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "probe", true);
    probe.subscribe(
        1,
        &[("big/#", QoS::AtMostOnce), ("marker", QoS::AtMostOnce)],
    );
    let mut last = std::collections::BTreeMap::new();
    while let Some(packet) = probe.try_recv(Duration::from_millis(500)) {
        if let Packet::Publish(publish) = packet {
            let number = u16::from_be_bytes([publish.payload[0], publish.payload[1]]);
            last.insert(publish.topic.to_string(), (number, publish.payload.len()));
        }
    }
    let expected: std::collections::BTreeMap<String, (u16, usize)> = [
        ("big/0", (68, 1_000_000)),
        ("big/1", (69, 1_000_000)),
        ("big/2", (66, 1_000_000)),
        ("big/3", (67, 1_000_000)),
        ("marker", (u16::from_be_bytes(*b"ok"), 2)),
    ]
    .into_iter()
    .map(|(topic, value)| (String::from(topic), value))
    .collect();
    assert_eq!(last, expected);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A retained message after the snapshot, in the log that follows it.
fn publish_retained_marker(publisher: &mut RawClient) {
    publisher.publish("marker", b"ok", QoS::AtLeastOnce, true, Some(1000));
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
}
