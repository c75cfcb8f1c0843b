//! Bridges: ringmq forwarding to and from a real Mosquitto (started by the test on a free port
//! with its own config) and to another ringmq: out, in and both rules at QoS 0/1/2, prefixes,
//! retained messages, no loops on `both`, TLS with a test CA, a wrong password, and a remote that
//! goes away while QoS 1 messages queue.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, admin_get, metric, pki::Pki, test_config};
use ringmq::config::{Bridge, BridgeVersion, Config, Direction, TopicRule};
use ringmq::protocol::{
    Packet, Publish, PublishProperties, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
    Version,
};

/// How long any one expected message may take to cross a bridge (connects included).
const CROSS: Duration = Duration::from_secs(10);

/// A Mosquitto broker on 127.0.0.1 with a config of its own; killed when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
}

/// Run as root, Mosquitto would switch to the `mosquitto` user and could not write its
/// persistence file in the test's directory; as another user the line is ignored.
const USER: &str = "user root\n";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` config lines; `listener` lines are written by this helper
    /// unless `extra` has its own (TLS).
    fn start(name: &str, extra: &str) -> Mosquitto {
        let dir = std::env::temp_dir().join(format!("ringmq-bridge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\n{USER}{extra}\n",
            dir.display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut mosquitto = Mosquitto {
            child: spawn_mosquitto(&conf),
            port,
            dir,
            conf,
        };
        mosquitto.wait_listening();
        mosquitto
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "mosquitto exited at start; config: {}",
                std::fs::read_to_string(&self.conf).unwrap()
            );
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM: it saves its persistent sessions) and waits.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = spawn_mosquitto(&self.conf);
        self.wait_listening();
    }
}

fn spawn_mosquitto(conf: &std::path::Path) -> Child {
    Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run mosquitto ({error}): install it with `apt-get install mosquitto`")
        })
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rule(topic: &str, direction: Direction, qos: u8, local: &str, remote: &str) -> TopicRule {
    TopicRule {
        topic: topic.into(),
        direction,
        qos,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
    }
}

fn bridged(remote: SocketAddr, version: BridgeVersion, topics: Vec<TopicRule>) -> Config {
    let mut config = test_config(4);
    config.bridges.insert(
        String::from("up"),
        Bridge {
            addresses: vec![remote.to_string()],
            version,
            topics,
            reconnect_min_ms: 100,
            reconnect_max_ms: 500,
            keepalive_secs: 5,
            ..Bridge::default()
        },
    );
    config
}

/// A client subscribed to `filters` (QoS 2), on any broker.
fn subscriber(addr: SocketAddr, id: &str, filters: &[&str]) -> RawClient {
    let (mut client, _) = RawClient::connect(addr, Version::V5, id, true);
    let filters: Vec<(&str, QoS)> = filters.iter().map(|f| (*f, QoS::ExactlyOnce)).collect();
    client.subscribe(1, &filters);
    client
}

/// The next PUBLISH within `CROSS`, acknowledged (QoS 2 completed).
fn next_publish(client: &mut RawClient) -> Publish {
    let deadline = Instant::now() + CROSS;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.try_recv(left) {
            Some(Packet::Publish(publish)) => {
                client.ack(&publish);
                return publish;
            }
            Some(Packet::PubRel(rel)) => {
                client.send(&Packet::PubComp(common::response(rel.packet_id)));
            }
            Some(_) => {}
            None => panic!("no PUBLISH within {CROSS:?}"),
        }
    }
}

/// The topics of the next PUBLISHes until `count` different ones came (QoS 1 may repeat one).
fn distinct_topics(client: &mut RawClient, count: usize) -> BTreeSet<String> {
    let mut topics = BTreeSet::new();
    while topics.len() < count {
        topics.insert(next_publish(client).topic.to_string());
    }
    topics
}

/// Asserts that nothing more is published to `client` for a short while.
fn expect_quiet(client: &mut RawClient, what: &str) {
    let deadline = Instant::now() + Duration::from_millis(700);
    while let Some(packet) = client.try_recv(deadline.saturating_duration_since(Instant::now())) {
        match packet {
            Packet::Publish(publish) => panic!("{what}: unexpected {publish:?}"),
            Packet::PubRel(rel) => client.send(&Packet::PubComp(common::response(rel.packet_id))),
            _ => {}
        }
    }
}

/// Waits until the bridge says it is connected, through its `$SYS` state topic.
fn wait_connected(broker: &TestBroker, name: &str) {
    wait_state(broker, name, b"1");
}

/// Waits for the bridge's `$SYS` state: "0" once its local subscriptions are in place (before
/// its first connection), "1" while connected.
fn wait_state(broker: &TestBroker, name: &str, state: &[u8]) {
    // Not `subscriber`: the state may be published between the SUBSCRIBE and its SUBACK.
    let (mut watcher, _) = RawClient::connect(broker.addr, Version::V5, "watcher", true);
    let filter = format!("$SYS/broker/connection/{name}/state");
    watcher.send(&Packet::Subscribe(Subscribe {
        packet_id: common::pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
    }));
    let deadline = Instant::now() + CROSS;
    loop {
        let publish = next_publish(&mut watcher);
        if &publish.payload[..] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge {name} not in state {state:?}"
        );
    }
}

fn bridge_metric(broker: &TestBroker, name: &str) -> f64 {
    let metrics = admin_get(broker.admin_addr().unwrap(), "/metrics");
    metric(&metrics, &format!("{name}{{bridge=\"up\"}}"))
}

fn publish_on(addr: SocketAddr, id: &str, topic: &str, qos: QoS, retain: bool) {
    let (mut client, _) = RawClient::connect(addr, Version::V5, id, true);
    let packet_id = (qos != QoS::AtMostOnce).then_some(1);
    client.publish(topic, topic.as_bytes(), qos, retain, packet_id);
    if qos != QoS::AtMostOnce {
        // PUBACK, or PUBREC then PUBCOMP.
        if let Packet::PubRec(rec) = client.recv() {
            client.send(&Packet::PubRel(common::response(rec.packet_id)));
            client.recv();
        }
    }
    client.disconnect();
}

fn every_direction_against_mosquitto(version: BridgeVersion) {
    let mosquitto = Mosquitto::start(&format!("dirs-{version:?}"), "");
    let topics = vec![
        rule("sensors/#", Direction::Out, 2, "", "edge/"),
        rule("cmd/#", Direction::In, 2, "remote/", ""),
        rule("sync/#", Direction::Both, 1, "", ""),
    ];
    let broker = TestBroker::with_config(bridged(mosquitto.addr(), version, topics));
    wait_connected(&broker, "up");
    let mut remote = subscriber(mosquitto.addr(), "remote-sink", &["edge/#", "sync/#"]);
    let mut local = subscriber(broker.shard(1), "local-sink", &["remote/#", "sync/#"]);
    // out, at each QoS, from clients on different shards; the rule's QoS 2 keeps each one's.
    for (shard, qos) in [
        (0, QoS::AtMostOnce),
        (2, QoS::AtLeastOnce),
        (3, QoS::ExactlyOnce),
    ] {
        publish_on(broker.shard(shard), "pub", "sensors/t", qos, false);
        let got = next_publish(&mut remote);
        assert_eq!(
            (&got.topic[..], got.qos, got.retain),
            ("edge/sensors/t", qos, false)
        );
    }
    // A retained message keeps its flag: the remote retains it.
    publish_on(broker.shard(0), "pub", "sensors/r", QoS::AtLeastOnce, true);
    assert_eq!(&next_publish(&mut remote).topic[..], "edge/sensors/r");
    let mut late = subscriber(mosquitto.addr(), "late", &["edge/sensors/r"]);
    let got = next_publish(&mut late);
    assert_eq!((&got.topic[..], got.retain), ("edge/sensors/r", true));
    // in, at each QoS.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publish_on(mosquitto.addr(), "rpub", "cmd/go", qos, false);
        let got = next_publish(&mut local);
        assert_eq!((&got.topic[..], got.qos), ("remote/cmd/go", qos));
    }
    // both: each side's message reaches the other once and never comes back.
    publish_on(broker.shard(2), "pub", "sync/a", QoS::AtLeastOnce, false);
    assert_eq!(&next_publish(&mut local).topic[..], "sync/a");
    assert_eq!(&next_publish(&mut remote).topic[..], "sync/a");
    publish_on(mosquitto.addr(), "rpub", "sync/b", QoS::AtLeastOnce, false);
    assert_eq!(&next_publish(&mut remote).topic[..], "sync/b");
    assert_eq!(&next_publish(&mut local).topic[..], "sync/b");
    expect_quiet(&mut remote, "remote after both");
    expect_quiet(&mut local, "local after both");
    assert!(bridge_metric(&broker, "ringmq_bridge_messages_out_total") >= 5.0);
    assert!(bridge_metric(&broker, "ringmq_bridge_messages_in_total") >= 4.0);
    assert_eq!(bridge_metric(&broker, "ringmq_bridge_connected"), 1.0);
}

#[test]
fn out_in_and_both_with_mosquitto_over_5_0() {
    every_direction_against_mosquitto(BridgeVersion::V5);
}

#[test]
fn out_in_and_both_with_mosquitto_over_3_1_1_with_the_bridge_bit() {
    every_direction_against_mosquitto(BridgeVersion::V311);
}

#[test]
fn a_wrong_password_is_retried_with_backoff_and_the_broker_keeps_serving() {
    let dir = std::env::temp_dir().join(format!("ringmq-bridge-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwd");
    std::fs::write(&passwords, "").unwrap();
    let made = Command::new("mosquitto_passwd")
        .args(["-b", passwords.to_str().unwrap(), "edge", "right"])
        .status()
        .expect("mosquitto_passwd runs (apt-get install mosquitto)");
    assert!(made.success());
    let mosquitto = Mosquitto::start(
        "password",
        &format!(
            "allow_anonymous false\npassword_file {}",
            passwords.display()
        ),
    );
    let mut config = bridged(
        mosquitto.addr(),
        BridgeVersion::V5,
        vec![rule("a/#", Direction::Out, 1, "", "")],
    );
    let bridge = config.bridges.get_mut("up").unwrap();
    bridge.username = Some("edge".into());
    bridge.password = Some("wrong".into());
    let broker = TestBroker::with_config(config);
    std::thread::sleep(Duration::from_millis(1_500));
    let failures = bridge_metric(&broker, "ringmq_bridge_connect_failures_total");
    // 100 ms doubling to 500 ms with jitter: a handful of attempts in 1.5 s, not hundreds.
    assert!((2.0..=15.0).contains(&failures), "{failures} attempts");
    assert_eq!(bridge_metric(&broker, "ringmq_bridge_connected"), 0.0);
    // The broker serves its clients as usual.
    let mut sink = subscriber(broker.addr, "local", &["a/#"]);
    publish_on(broker.addr, "pub", "a/1", QoS::AtLeastOnce, false);
    assert_eq!(&next_publish(&mut sink).topic[..], "a/1");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_to_mosquitto_with_a_test_ca() {
    let pki = Pki::new("bridge");
    let tls_port = free_port();
    let mosquitto = Mosquitto::start(
        "tls",
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}",
            pki.path("ca.pem").display(),
            pki.path("server.pem").display(),
            pki.path("server-key.pem").display()
        ),
    );
    let mut config = bridged(
        SocketAddr::from(([127, 0, 0, 1], tls_port)),
        BridgeVersion::V5,
        vec![rule("t/#", Direction::Out, 1, "", "tls/")],
    );
    let bridge = config.bridges.get_mut("up").unwrap();
    bridge.ca_file = Some(pki.path("ca.pem"));
    bridge.sni = Some("localhost".into());
    let broker = TestBroker::with_config(config);
    wait_connected(&broker, "up");
    let mut remote = subscriber(mosquitto.addr(), "sink", &["tls/#"]);
    publish_on(broker.addr, "pub", "t/x", QoS::AtLeastOnce, false);
    assert_eq!(&next_publish(&mut remote).topic[..], "tls/t/x");
}

/// A QoS 1 PUBLISH with every property a publisher may set (5.0 §3.3.2.3).
fn with_properties(topic: &str) -> Publish {
    let properties = PublishProperties {
        payload_format_indicator: Some(true),
        message_expiry_interval_secs: Some(600),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-17")),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(common::pid(1)),
        properties: properties.into(),
        payload: bytes::Bytes::from_static(b"{}"),
    }
}

/// What crossed the bridge kept what its publisher set; the expiry may have counted down.
fn assert_properties_kept(got: &Publish) {
    let p = &got.properties;
    assert_eq!(p.payload_format_indicator, Some(true));
    assert!(
        p.message_expiry_interval_secs
            .is_some_and(|s| s > 500 && s <= 600)
    );
    assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-17"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert!(
        p.user_properties
            .iter()
            .any(|(key, value)| key == "k" && value == "v"),
        "user property lost: {:?}",
        p.user_properties
    );
}

#[test]
fn properties_of_5_0_messages_cross_the_bridge_both_ways() {
    let mosquitto = Mosquitto::start("props", "");
    let topics = vec![
        rule("up/#", Direction::Out, 1, "", ""),
        rule("down/#", Direction::In, 1, "", ""),
    ];
    let broker = TestBroker::with_config(bridged(mosquitto.addr(), BridgeVersion::V5, topics));
    wait_connected(&broker, "up");
    let mut remote = subscriber(mosquitto.addr(), "remote-sink", &["up/#"]);
    let mut local = subscriber(broker.shard(2), "local-sink", &["down/#"]);
    for (addr, topic, sink) in [
        (broker.shard(1), "up/p", &mut remote),
        (mosquitto.addr(), "down/p", &mut local),
    ] {
        let (mut publisher, _) = RawClient::connect(addr, Version::V5, "props-pub", true);
        publisher.send(&Packet::Publish(with_properties(topic)));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        let got = next_publish(sink);
        assert_eq!(&got.topic[..], topic);
        assert_properties_kept(&got);
    }
}

#[test]
fn ringmq_to_ringmq_both_ways_without_a_loop() {
    let remote = TestBroker::start(2);
    let broker = TestBroker::with_config(bridged(
        remote.addr,
        BridgeVersion::V5,
        vec![rule("x/#", Direction::Both, 2, "", "")],
    ));
    wait_connected(&broker, "up");
    let mut far = subscriber(remote.shard(1), "far", &["x/#"]);
    let mut near = subscriber(broker.shard(3), "near", &["x/#"]);
    publish_on(broker.shard(0), "p1", "x/near", QoS::ExactlyOnce, false);
    assert_eq!(&next_publish(&mut far).topic[..], "x/near");
    assert_eq!(&next_publish(&mut near).topic[..], "x/near");
    publish_on(remote.shard(0), "p2", "x/far", QoS::AtLeastOnce, false);
    assert_eq!(&next_publish(&mut near).topic[..], "x/far");
    assert_eq!(&next_publish(&mut far).topic[..], "x/far");
    expect_quiet(&mut far, "far");
    expect_quiet(&mut near, "near");
}

#[test]
fn qos1_messages_wait_for_a_remote_that_went_away_and_drops_beyond_the_queue_are_counted() {
    let mut mosquitto = Mosquitto::start("restart", "");
    let mut config = bridged(
        mosquitto.addr(),
        BridgeVersion::V5,
        vec![rule("q/#", Direction::Out, 1, "", "")],
    );
    config.limits.outbox_messages_max = 20;
    config.bridges.get_mut("up").unwrap().inflight_max = 5;
    let broker = TestBroker::with_config(config);
    wait_connected(&broker, "up");
    // A persistent subscriber on the remote, so the remote keeps what arrives while it is away.
    let (mut sink, _) = RawClient::connect(mosquitto.addr(), Version::V3_1_1, "sink", false);
    sink.subscribe(1, &[("q/#", QoS::AtLeastOnce)]);
    sink.disconnect();
    mosquitto.stop();
    // Within the queue: 5 in flight + 20 queued.
    let (mut publisher, _) = RawClient::connect(broker.addr, Version::V5, "pub", true);
    let mut publish_range = |range: std::ops::Range<u16>| {
        for n in range {
            let topic = format!("q/{n}");
            publisher.publish(&topic, b"m", QoS::AtLeastOnce, false, Some(n + 1));
            assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        }
    };
    publish_range(0..25);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bridge_metric(&broker, "ringmq_bridge_connected"), 0.0);
    // Beyond it: dropped by the session's policy (drop the new), counted by the broker.
    publish_range(25..30);
    mosquitto.restart();
    wait_connected(&broker, "up");
    let (mut sink, _) = RawClient::connect(mosquitto.addr(), Version::V3_1_1, "sink", false);
    let expected: BTreeSet<String> = (0..25).map(|n| format!("q/{n}")).collect();
    assert_eq!(distinct_topics(&mut sink, 25), expected);
    // Nothing beyond the queue comes (a QoS 1 duplicate of one of the 25 may).
    while let Some(packet) = sink.try_recv(Duration::from_millis(700)) {
        if let Packet::Publish(publish) = packet {
            assert!(expected.contains(&publish.topic[..]), "{publish:?}");
            sink.ack(&publish);
        }
    }
    let metrics = admin_get(broker.admin_addr().unwrap(), "/metrics");
    let dropped: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("ringmq_messages_dropped_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 5.0, "drops counted: {dropped}");
}

#[test]
fn the_queue_of_a_disconnected_bridge_survives_a_restart_with_persistence_on() {
    let mut mosquitto = Mosquitto::start("persist", "");
    let (mut sink, _) = RawClient::connect(mosquitto.addr(), Version::V3_1_1, "sink", false);
    sink.subscribe(1, &[("p/#", QoS::AtLeastOnce)]);
    sink.disconnect();
    mosquitto.stop();
    let store = std::env::temp_dir().join(format!("ringmq-bridge-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let mut config = bridged(
        mosquitto.addr(),
        BridgeVersion::V5,
        vec![rule("p/#", Direction::Out, 1, "", "")],
    );
    config.persistence.enabled = true;
    config.persistence.dir = store.clone();
    config.bridges.get_mut("up").unwrap().inflight_max = 3;
    let broker = TestBroker::with_config(config.clone());
    wait_state(&broker, "up", b"0");
    let (mut publisher, _) = RawClient::connect(broker.addr, Version::V5, "pub", true);
    for n in 0..8u16 {
        let topic = format!("p/{n}");
        publisher.publish(&topic, b"m", QoS::AtLeastOnce, false, Some(n + 1));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    publisher.disconnect();
    broker.shutdown();
    mosquitto.restart();
    let broker = TestBroker::with_config(config);
    wait_connected(&broker, "up");
    let (mut sink, _) = RawClient::connect(mosquitto.addr(), Version::V3_1_1, "sink", false);
    // QoS 1: the messages in flight when the broker stopped may come twice (DUP), none is lost.
    let expected: BTreeSet<String> = (0..8).map(|n| format!("p/{n}")).collect();
    let topics = distinct_topics(&mut sink, 8);
    assert_eq!(topics, expected);
    drop(broker);
    let _ = std::fs::remove_dir_all(store);
}

/// Publishes `topic` on `broker` until `client` receives one (a bridge restarting after a
/// reload connects within the wait); returns the topic it received.
fn publish_until_received(broker: &TestBroker, topic: &str, client: &mut RawClient) -> String {
    for _ in 0..20 {
        publish_on(broker.addr, "pub", topic, QoS::AtMostOnce, false);
        if let Some(Packet::Publish(publish)) = client.try_recv(Duration::from_millis(500)) {
            return publish.topic.to_string();
        }
    }
    panic!("{topic} never crossed the bridge");
}

#[test]
fn a_reload_restarts_a_changed_bridge_and_stops_a_removed_one() {
    let mosquitto = Mosquitto::start("reload", "");
    let mut config = bridged(
        mosquitto.addr(),
        BridgeVersion::V5,
        vec![rule("a/#", Direction::Out, 0, "", "one/")],
    );
    let broker = TestBroker::with_config(config.clone());
    wait_connected(&broker, "up");
    let mut remote = subscriber(mosquitto.addr(), "sink", &["#"]);
    assert_eq!(
        publish_until_received(&broker, "a/x", &mut remote),
        "one/a/x"
    );
    // Changed: the new prefix, and the old rule's subscription is gone.
    config.bridges.get_mut("up").unwrap().topics = vec![rule("b/#", Direction::Out, 0, "", "two/")];
    broker.reload_bridges(&config);
    assert_eq!(
        publish_until_received(&broker, "b/x", &mut remote),
        "two/b/x"
    );
    publish_on(broker.addr, "pub", "a/x", QoS::AtMostOnce, false);
    expect_quiet(&mut remote, "the old rule after the change");
    // Removed: stopped, and gone from the metrics.
    config.bridges.clear();
    broker.reload_bridges(&config);
    std::thread::sleep(Duration::from_millis(600));
    publish_on(broker.addr, "pub", "b/x", QoS::AtMostOnce, false);
    expect_quiet(&mut remote, "after the removal");
    let metrics = admin_get(broker.admin_addr().unwrap(), "/metrics");
    assert!(!metrics.contains("bridge=\"up\""), "{metrics}");
}

#[test]
fn an_unreadable_ca_file_stops_the_start_naming_the_bridge() {
    let mut config = bridged(
        SocketAddr::from(([127, 0, 0, 1], 1)),
        BridgeVersion::V5,
        vec![rule("a/#", Direction::Out, 0, "", "")],
    );
    config.bridges.get_mut("up").unwrap().ca_file = Some("/nonexistent/ca.pem".into());
    let Err(error) = ringmq::server::start(config) else {
        panic!("started with an unreadable ca_file");
    };
    let message = error.to_string();
    assert!(
        message.contains("bridges.up") && message.contains("/nonexistent/ca.pem"),
        "{message}"
    );
}
