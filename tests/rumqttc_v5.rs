//! Goal: MQTT 5.0 sessions and limits as an independent 5.0 client (rumqttc::v5) sees them, with
//! publisher, subscriber and session owner on different shards of a 4-shard broker: session and
//! message expiry, topic aliases, Receive Maximum, Maximum Packet Size, CONNACK properties and
//! the limits it advertises, and DISCONNECT on takeover and shutdown. The messages themselves
//! (properties, subscription options, wills, shared subscriptions, 3.1.1 next to 5.0) are in
//! `rumqttc_v5_messages.rs`; cases rumqttc cannot express are in `mqtt5_limits.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{TestBroker, test_config};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Filter, PublishProperties, SubscribeReasonCode,
};
use tokio::time::Instant;

#[path = "common/rumqttc_v5_client.rs"]
mod client;
use client::{EVENT_TIMEOUT, Mqtt, options, persistent, props, topic};

#[tokio::test]
async fn session_expiry_keeps_the_session_across_shards_then_ends_it() {
    let broker = TestBroker::start(4);
    // Owner on shard 0, publisher on shard 1, resumed on shard 2.
    let (mut owner, connack) = Mqtt::connect_with(persistent(broker.shard(0), "keeper", 1)).await;
    assert!(!connack.session_present);
    owner.subscribe("se/#", QoS::AtLeastOnce).await;
    owner.disconnect().await;

    let (mut publisher, _) = Mqtt::connect(broker.shard(1), "se-pub").await;
    for payload in [&b"one"[..], b"two", b"three"] {
        publisher
            .publish("se/t", QoS::AtLeastOnce, false, payload)
            .await;
    }
    let (mut owner, connack) = Mqtt::connect_with(persistent(broker.shard(2), "keeper", 1)).await;
    assert!(
        connack.session_present,
        "the session outlived its connection"
    );
    for payload in [&b"one"[..], b"two", b"three"] {
        assert_eq!(&owner.recv().await.payload[..], payload);
    }
    owner.disconnect().await;

    // The session expires one second after the connection closed (5.0 §3.1.2.11.2): the time is
    // the property under test, so this waits it out.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    publisher
        .publish("se/t", QoS::AtLeastOnce, false, b"late")
        .await;
    let (mut owner, connack) = Mqtt::connect_with(persistent(broker.shard(3), "keeper", 1)).await;
    assert!(!connack.session_present, "expired session is gone");
    owner.expect_nothing().await;
    owner.disconnect().await;

    // Session Expiry Interval absent (0): the session ends with the connection.
    let brief_options = |shard| {
        let mut options = options(broker.shard(shard), "brief");
        options.set_clean_start(false);
        options
    };
    let (mut brief, _) = Mqtt::connect_with(brief_options(0)).await;
    brief.subscribe("se/#", QoS::AtLeastOnce).await;
    brief.disconnect().await;
    let (brief, connack) = Mqtt::connect_with(brief_options(2)).await;
    assert!(!connack.session_present);
    brief.disconnect().await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn message_expiry_drops_stale_messages_and_forwards_the_remaining_time() {
    let broker = TestBroker::start(4);
    let (owner, _) = Mqtt::connect_with(persistent(broker.shard(0), "expiring", 60)).await;
    let mut owner = owner;
    owner.subscribe("me/#", QoS::AtLeastOnce).await;
    owner.disconnect().await;

    let (mut publisher, _) = Mqtt::connect(broker.shard(1), "me-pub").await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    publisher
        .publish_with("me/short", QoS::AtLeastOnce, false, "short", expiring(1))
        .await;
    publisher
        .publish_with("me/long", QoS::AtLeastOnce, false, "long", expiring(100))
        .await;
    publisher
        .publish_with("me/kept/short", QoS::AtLeastOnce, true, "gone", expiring(1))
        .await;
    publisher
        .publish_with(
            "me/kept/long",
            QoS::AtLeastOnce,
            true,
            "kept",
            expiring(100),
        )
        .await;
    // Waiting out the one-second expiry is the property under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut owner, connack) =
        Mqtt::connect_with(persistent(broker.shard(2), "expiring", 60)).await;
    assert!(connack.session_present);
    let got = owner.recv().await;
    assert_eq!(&got.payload[..], b"long");
    let left = props(&got).message_expiry_interval.unwrap();
    assert!((97..=99).contains(&left), "remaining time: {left}");
    // The retained ones went to the session too (live): the long one, not the expired one.
    let kept = owner.recv().await;
    assert_eq!(&kept.payload[..], b"kept");
    owner.expect_nothing().await;

    // A retained message expires in the store as well, and keeps counting down there.
    let (mut late, _) = Mqtt::connect(broker.shard(3), "me-late").await;
    late.subscribe("me/kept/#", QoS::AtLeastOnce).await;
    let kept = late.recv().await;
    assert!(kept.retain && &kept.payload[..] == b"kept");
    let left = props(&kept).message_expiry_interval.unwrap();
    assert!((97..=99).contains(&left), "remaining time: {left}");
    late.expect_nothing().await;
    late.disconnect().await;

    // Online: forwarded at once, the interval (almost) whole.
    publisher
        .publish_with("me/now", QoS::AtLeastOnce, false, "now", expiring(30))
        .await;
    let got = owner.recv().await;
    let left = props(&got).message_expiry_interval.unwrap();
    assert!((29..=30).contains(&left), "remaining time: {left}");
    owner.disconnect().await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn topic_aliases_both_ways() {
    let mut config = test_config(4);
    config.mqtt.topic_alias_to_client_max = 4;
    let broker = TestBroker::with_config(config);
    let mut options = options(broker.shard(0), "alias-sub");
    options.set_topic_alias_max(Some(4));
    let (mut sub, _) = Mqtt::connect_with(options).await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;

    let (mut publisher, connack) = Mqtt::connect(broker.shard(1), "alias-pub").await;
    let maximum = connack.properties.unwrap().topic_alias_max.unwrap();
    assert_eq!(maximum, 64, "CONNACK advertises the configured maximum");
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    let long = "alias/a/rather/long/topic/name";
    publisher
        .publish_with(long, QoS::AtLeastOnce, false, "1", alias(maximum))
        .await;
    // Topic empty: the alias stands for it.
    publisher
        .publish_with("", QoS::AtLeastOnce, false, "2", alias(maximum))
        .await;
    // Re-mapped to another topic.
    publisher
        .publish_with("alias/other", QoS::AtLeastOnce, false, "3", alias(maximum))
        .await;
    publisher
        .publish_with("", QoS::AtLeastOnce, false, "4", alias(maximum))
        .await;

    // Towards the subscriber the broker picks its own aliases (at most the client's 4).
    let mut names = std::collections::HashMap::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let publish = sub.recv().await;
        let alias = props(&publish)
            .topic_alias
            .expect("aliased towards the client");
        assert!((1..=4).contains(&alias));
        let name = if publish.topic.is_empty() {
            names.get(&alias).cloned().expect("a known alias")
        } else {
            names.insert(alias, topic(&publish).to_string());
            topic(&publish).to_string()
        };
        seen.push((name, publish.payload.clone()));
    }
    assert_eq!(
        seen,
        vec![
            (long.to_string(), Bytes::from("1")),
            (long.to_string(), Bytes::from("2")),
            ("alias/other".to_string(), Bytes::from("3")),
            ("alias/other".to_string(), Bytes::from("4")),
        ]
    );
    sub.disconnect().await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn receive_maximum_of_the_client_bounds_what_is_in_flight() {
    let broker = TestBroker::start(4);
    let mut options = options(broker.shard(0), "slow");
    options.set_receive_maximum(Some(3));
    options.set_manual_acks(true);
    let (mut sub, _) = Mqtt::connect_with(options).await;
    sub.subscribe("rm", QoS::AtLeastOnce).await;
    let (mut publisher, connack) = Mqtt::connect(broker.shard(1), "rm-pub").await;
    assert_eq!(connack.properties.unwrap().receive_max, Some(32));
    for i in 0..10u8 {
        publisher
            .publish_with("rm", QoS::AtLeastOnce, false, vec![i], Default::default())
            .await;
    }
    let mut held = Vec::new();
    for i in 0..3u8 {
        let publish = sub.recv().await;
        assert_eq!(&publish.payload[..], &[i]);
        held.push(publish);
    }
    sub.expect_nothing().await;
    for (n, publish) in held.iter().enumerate() {
        sub.client.ack(publish).await.unwrap();
        let next = sub.recv().await;
        assert_eq!(
            &next.payload[..],
            &[3 + n as u8],
            "one more per acknowledgement"
        );
    }
    sub.expect_nothing().await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn maximum_packet_size_of_the_client_drops_what_is_larger() {
    let broker = TestBroker::start(4);
    let mut options = options(broker.shard(0), "small");
    options.set_max_packet_size(Some(128));
    let (mut sub, _) = Mqtt::connect_with(options).await;
    sub.subscribe("mp", QoS::AtLeastOnce).await;
    let (mut publisher, connack) = Mqtt::connect(broker.shard(2), "mp-pub").await;
    assert_eq!(connack.properties.unwrap().max_packet_size, Some(1_048_576));
    publisher
        .publish_with(
            "mp",
            QoS::AtLeastOnce,
            false,
            vec![7u8; 500],
            Default::default(),
        )
        .await;
    publisher
        .publish("mp", QoS::AtLeastOnce, false, b"fits")
        .await;
    assert_eq!(
        &sub.recv().await.payload[..],
        b"fits",
        "the large one was skipped"
    );
    sub.expect_nothing().await;
    sub.disconnect().await;
    publisher.disconnect().await;
    // ... and counted. Shards hand the admin side a snapshot about once a second.
    let admin = broker.admin_addr().expect("admin listener");
    let series = "ringmq_messages_dropped_total{shard=\"all\",reason=\"too_large\"} ";
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let metrics = http_get(admin, "/metrics");
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .map(str::to_owned);
        if count.as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "{series}{count:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The body of an HTTP GET (the admin listener's text endpoints).
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test]
async fn connack_assigns_an_id_lowers_the_keepalive_and_gives_response_information() {
    let mut config = test_config(4);
    config.mqtt.keepalive_max_secs = 20;
    config.mqtt.response_information = String::from("reply/");
    config.session.expiry_max_secs = 100;
    let broker = TestBroker::with_config(config);
    let mut asking = options(broker.shard(3), "");
    asking.set_keep_alive(Duration::from_secs(60));
    asking.set_session_expiry_interval(Some(1000));
    asking.set_request_response_info(Some(1));
    let (client, connack) = Mqtt::connect_with(asking).await;
    let properties = connack.properties.unwrap();
    let assigned = properties.assigned_client_identifier.clone().unwrap();
    assert!(assigned.starts_with("ringmq-"), "{assigned}");
    assert_eq!(properties.server_keep_alive, Some(20));
    assert_eq!(
        properties.session_expiry_interval,
        Some(100),
        "the expiry the broker uses, lowered to its maximum"
    );
    assert_eq!(
        properties.response_information.as_deref(),
        Some(format!("reply/{assigned}").as_str())
    );
    // Available is what their absence means: not stated (5.0 §3.2.2.3).
    assert_eq!(properties.shared_subscription_available, None);
    assert_eq!(properties.wildcard_subscription_available, None);
    assert_eq!(properties.subscription_identifiers_available, None);
    assert_eq!(properties.topic_alias_max, Some(64));
    assert_eq!(
        properties.max_qos, None,
        "QoS 2 is supported: no Maximum QoS"
    );
    assert_eq!(properties.retain_available, None, "retain is available");
    client.disconnect().await;

    // Without Request Response Information there is none; a keepalive within the maximum is kept.
    let mut plain = options(broker.shard(1), "plain");
    plain.set_keep_alive(Duration::from_secs(10));
    let (client, connack) = Mqtt::connect_with(plain).await;
    let properties = connack.properties.unwrap();
    assert_eq!(properties.response_information, None);
    assert_eq!(properties.server_keep_alive, None);
    assert_eq!(properties.session_expiry_interval, None, "as asked");
    assert_eq!(properties.assigned_client_identifier, None);
    client.disconnect().await;
}

#[tokio::test]
async fn takeover_disconnects_the_old_connection_with_0x8e() {
    let broker = TestBroker::start(4);
    let (mut first, _) = Mqtt::connect_with(persistent(broker.shard(0), "twin", 60)).await;
    first.subscribe("twin", QoS::AtLeastOnce).await;
    let (second, connack) = Mqtt::connect_with(persistent(broker.shard(2), "twin", 60)).await;
    assert!(connack.session_present);
    let (reason, reason_string) = first.expect_server_disconnect().await;
    assert_eq!(reason, DisconnectReasonCode::SessionTakenOver);
    assert!(reason_string.is_some(), "a reason string says why");
    second.disconnect().await;
}

#[test]
fn shutdown_disconnects_5_0_clients_with_0x8b() {
    let broker = TestBroker::start(4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = runtime.block_on(async {
        let (mut client, _) = Mqtt::connect(broker.shard(3), "stayer").await;
        client.subscribe("s", QoS::AtLeastOnce).await;
        client
    });
    let stopper = std::thread::spawn(move || broker.shutdown());
    let (reason, _) = runtime.block_on(client.expect_server_disconnect());
    assert_eq!(reason, DisconnectReasonCode::ServerShuttingDown);
    stopper.join().unwrap();
}

#[tokio::test]
async fn connack_advertises_the_configured_limits_and_the_broker_holds_to_them() {
    let mut config = test_config(4);
    config.mqtt.max_qos = 1;
    config.mqtt.retain_available = false;
    config.mqtt.wildcard_subscription_available = false;
    config.mqtt.shared_subscription_available = false;
    let broker = TestBroker::with_config(config);
    let (mut client, connack) = Mqtt::connect(broker.shard(0), "limited").await;
    let properties = connack.properties.unwrap();
    assert_eq!(properties.max_qos, Some(1));
    assert_eq!(properties.retain_available, Some(0));
    assert_eq!(properties.wildcard_subscription_available, Some(0));
    assert_eq!(properties.shared_subscription_available, Some(0));
    // SUBSCRIBE: QoS 2 granted as 1; a wildcard and a shared filter refused with their codes.
    let codes = client
        .subscribe_with(Filter::new("plain", QoS::ExactlyOnce), None)
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let codes = client
        .subscribe_with(Filter::new("wild/#", QoS::AtMostOnce), None)
        .await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::WildcardSubscriptionsNotSupported]
    );
    let codes = client
        .subscribe_with(Filter::new("$share/g/plain", QoS::AtMostOnce), None)
        .await;
    assert_eq!(
        codes,
        vec![SubscribeReasonCode::SharedSubscriptionsNotSupported]
    );
    client.disconnect().await;

    // PUBLISH beyond the limits: DISCONNECT 0x9B and 0x9A (rumqttc does not check these).
    for (qos, retain, expected) in [
        (
            QoS::ExactlyOnce,
            false,
            DisconnectReasonCode::QoSNotSupported,
        ),
        (
            QoS::AtLeastOnce,
            true,
            DisconnectReasonCode::RetainNotSupported,
        ),
    ] {
        let (mut client, _) = Mqtt::connect(broker.shard(1), "over").await;
        client
            .client
            .publish("plain", qos, retain, "x")
            .await
            .unwrap();
        let (reason, reason_string) = client.expect_server_disconnect().await;
        assert_eq!(reason, expected);
        assert!(reason_string.is_some());
    }
}
