//! Goal: the MQTT 5.0 features as an independent 5.0 client (rumqttc::v5) sees them, with
//! publisher, subscriber and session owner on different shards of a 4-shard broker: session and
//! message expiry, topic aliases, receive maximum, maximum packet size, CONNACK properties,
//! request/response properties, subscription options and identifiers, will delay, shared
//! subscriptions, the broker's DISCONNECT reason codes, and 3.1.1 and 5.0 clients on one topic.
//! Where rumqttc cannot express a case (it checks its own limits before sending), a raw client
//! over the broker's codec does it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, TestBroker, connect_packet, pid, test_config};
use ringmq::protocol::{self as raw, ReasonCode, Version};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Publish,
    PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{ConnectionError, Event, Incoming, MqttOptions, StateError};
use tokio::time::{Instant, timeout};

mod api {
    pub use rumqttc::Outgoing;
    pub use rumqttc::v5::mqttbytes::v5::ConnAck;
    pub use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};
}
#[path = "common/rumqttc_harness.rs"]
mod harness;
use harness::{EVENT_TIMEOUT, Mqtt};

fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Options of a persistent session: Clean Start 0 and a Session Expiry Interval.
fn persistent(addr: SocketAddr, client_id: &str, expiry_secs: u32) -> MqttOptions {
    let mut options = options(addr, client_id);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(expiry_secs));
    options
}

impl Mqtt {
    async fn connect(addr: SocketAddr, client_id: &str) -> (Mqtt, ConnAck) {
        Mqtt::connect_with(options(addr, client_id)).await
    }

    async fn subscribe_with(
        &mut self,
        filter: Filter,
        properties: Option<SubscribeProperties>,
    ) -> Vec<SubscribeReasonCode> {
        match properties {
            Some(properties) => self
                .client
                .subscribe_many_with_properties([filter], properties)
                .await
                .unwrap(),
            None => self.client.subscribe_many([filter]).await.unwrap(),
        }
        self.until(|event| match event {
            Event::Incoming(Incoming::SubAck(suback)) => Some(suback.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe_with(Filter::new(filter, qos), None).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
    }

    /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was written (QoS 0).
    async fn publish_with(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload, properties)
            .await
            .unwrap();
        self.until(|event| match (qos, event) {
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
            | (QoS::AtLeastOnce, Event::Incoming(Incoming::PubAck(_)))
            | (QoS::ExactlyOnce, Event::Incoming(Incoming::PubComp(_))) => Some(()),
            _ => None,
        })
        .await;
    }

    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) {
        self.publish_with(topic, qos, retain, payload, PublishProperties::default())
            .await;
    }

    /// The next PUBLISH from the broker, as it came on the wire (rumqttc reports a PUBLISH
    /// before it resolves a topic alias).
    async fn recv(&mut self) -> Publish {
        self.until(|event| match event {
            Event::Incoming(Incoming::Publish(publish)) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the broker's DISCONNECT; returns its reason code and reason string.
    async fn expect_server_disconnect(&mut self) -> (DisconnectReasonCode, Option<String>) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => panic!("no DISCONNECT within {EVENT_TIMEOUT:?}"),
                Ok(Ok(_)) => {}
                Ok(Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    reason_string,
                }))) => return (reason_code, reason_string),
                Ok(Err(error)) => panic!("expected a DISCONNECT from the broker, got {error:?}"),
            }
        }
    }
}

fn topic(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.topic).unwrap()
}

fn props(publish: &Publish) -> PublishProperties {
    publish.properties.clone().unwrap_or_default()
}

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

#[test]
fn receive_maximum_of_the_broker_is_enforced() {
    let mut config = test_config(2);
    config.limits.inflight_messages_max = 4;
    let broker = TestBroker::with_config(config);
    let (mut client, connack) = RawClient::connect(broker.shard(0), Version::V5, "greedy", true);
    assert_eq!(connack.properties.receive_maximum, Some(4));
    // QoS 2 publishes stay unacknowledged until PUBREL: the fifth is one too many.
    for n in 1..=5u16 {
        client.publish("rx", b"x", raw::QoS::ExactlyOnce, false, Some(n));
    }
    let packets = client.expect_closed();
    let last = packets.last().expect("DISCONNECT");
    assert!(
        matches!(last, raw::Packet::Disconnect(d) if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{packets:?}"
    );
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

#[test]
fn maximum_packet_size_of_the_broker_is_enforced() {
    let mut config = test_config(2);
    config.limits.packet_bytes_max = 1024;
    config.limits.will_bytes_max = 1024;
    let broker = TestBroker::with_config(config);
    let (mut client, connack) = RawClient::connect(broker.shard(1), Version::V5, "big", true);
    assert_eq!(connack.properties.maximum_packet_size, Some(1024));
    client.publish("big", &[0u8; 2000], raw::QoS::AtMostOnce, false, None);
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [raw::Packet::Disconnect(d)] if d.reason == ReasonCode::PACKET_TOO_LARGE),
        "{packets:?}"
    );
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
    assert_eq!(properties.shared_subscription_available, Some(1));
    assert_eq!(properties.wildcard_subscription_available, Some(1));
    assert_eq!(properties.subscription_identifiers_available, Some(1));
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
async fn request_response_properties_pass_through_unchanged() {
    let broker = TestBroker::start(4);
    let (mut responder, _) = Mqtt::connect(broker.shard(2), "responder").await;
    responder.subscribe("svc/+/req", QoS::ExactlyOnce).await;
    let (mut requester, _) = Mqtt::connect(broker.shard(0), "requester").await;
    requester
        .subscribe("svc/reply/requester", QoS::AtLeastOnce)
        .await;

    let user_properties = vec![
        (String::from("trace"), String::from("1")),
        (String::from("trace"), String::from("2")),
        (String::from("k"), String::from("v")),
    ];
    let request = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some(String::from("application/json")),
        response_topic: Some(String::from("svc/reply/requester")),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
        user_properties: user_properties.clone(),
        ..Default::default()
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        requester
            .publish_with("svc/a/req", qos, false, "{}", request.clone())
            .await;
        let got = responder.recv().await;
        let p = props(&got);
        assert_eq!(p.payload_format_indicator, Some(1), "{qos:?}");
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.correlation_data, request.correlation_data);
        assert_eq!(
            p.user_properties, user_properties,
            "order and repeats kept (MQTT-3.3.2-18)"
        );
        let reply = PublishProperties {
            correlation_data: p.correlation_data.clone(),
            ..Default::default()
        };
        let to = p.response_topic.clone().unwrap();
        responder
            .publish_with(&to, QoS::AtLeastOnce, false, "ok", reply)
            .await;
        let answer = requester.recv().await;
        assert_eq!(topic(&answer), "svc/reply/requester");
        assert_eq!(props(&answer).correlation_data, request.correlation_data);
    }
    responder.disconnect().await;
    requester.disconnect().await;
}

#[tokio::test]
async fn payload_format_indicator_is_checked_when_configured() {
    let mut config = test_config(4);
    config.mqtt.payload_format_check = true;
    let broker = TestBroker::with_config(config);
    let (mut sub, _) = Mqtt::connect(broker.shard(0), "pf-sub").await;
    sub.subscribe("pf", QoS::AtMostOnce).await;
    let (mut publisher, _) = Mqtt::connect(broker.shard(1), "pf-pub").await;
    let utf8 = PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publisher
        .publish_with("pf", QoS::AtLeastOnce, false, "héllo", utf8.clone())
        .await;
    assert_eq!(props(&sub.recv().await).payload_format_indicator, Some(1));
    publisher
        .client
        .publish_with_properties("pf", QoS::AtLeastOnce, false, vec![0xff, 0xfe], utf8)
        .await
        .unwrap();
    let (reason, reason_string) = publisher.expect_server_disconnect().await;
    assert_eq!(reason, DisconnectReasonCode::PayloadFormatInvalid);
    assert!(reason_string.is_some(), "a reason string says why");
    sub.expect_nothing().await;
    sub.disconnect().await;
}

#[tokio::test]
async fn subscription_identifiers_are_delivered_with_each_match() {
    let broker = TestBroker::start(4);
    let (mut sub, _) = Mqtt::connect(broker.shard(0), "ids").await;
    for (filter, id) in [("ids/+", 5), ("ids/#", 268_435_455), ("$share/g/ids/x", 9)] {
        let properties = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        let codes = sub
            .subscribe_with(Filter::new(filter, QoS::AtLeastOnce), Some(properties))
            .await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }
    sub.subscribe("ids/none", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mqtt::connect(broker.shard(3), "ids-pub").await;
    publisher
        .publish("ids/x", QoS::AtLeastOnce, false, b"x")
        .await;
    let mut copies = Vec::new();
    for _ in 0..2 {
        let mut ids = props(&sub.recv().await).subscription_identifiers;
        ids.sort();
        copies.push(ids);
    }
    copies.sort();
    assert_eq!(
        copies,
        vec![vec![5, 268_435_455], vec![9]],
        "one copy for the normal subscriptions with both ids, one for the shared one"
    );
    sub.expect_nothing().await;
    publisher
        .publish("ids/none", QoS::AtLeastOnce, false, b"n")
        .await;
    let got = sub.recv().await;
    let mut ids = props(&got).subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![5, 268_435_455], "only the matching ones");
    sub.disconnect().await;
    publisher.disconnect().await;
}

fn filter(path: &str, nolocal: bool, preserve_retain: bool, rule: RetainForwardRule) -> Filter {
    Filter {
        path: path.to_string(),
        qos: QoS::AtLeastOnce,
        nolocal,
        preserve_retain,
        retain_forward_rule: rule,
    }
}

#[tokio::test]
async fn no_local_retain_as_published_and_retain_handling() {
    let broker = TestBroker::start(4);
    let (mut me, _) = Mqtt::connect(broker.shard(0), "me").await;
    let (mut other, _) = Mqtt::connect(broker.shard(1), "other").await;
    me.subscribe_with(
        filter("nl", true, false, RetainForwardRule::OnEverySubscribe),
        None,
    )
    .await;
    me.publish("nl", QoS::AtLeastOnce, false, b"mine").await;
    other
        .publish("nl", QoS::AtLeastOnce, false, b"theirs")
        .await;
    assert_eq!(&me.recv().await.payload[..], b"theirs", "No Local");
    me.expect_nothing().await;

    // Retained from another shard: visible to a SUBSCRIBE once the PUBACK is in.
    other.publish("rh/t", QoS::AtLeastOnce, true, b"kept").await;
    let rule = || RetainForwardRule::OnEverySubscribe;
    me.subscribe_with(filter("rh/t", false, false, rule()), None)
        .await;
    let first = me.recv().await;
    assert!(first.retain && &first.payload[..] == b"kept", "handling 0");
    me.subscribe_with(filter("rh/t", false, false, rule()), None)
        .await;
    assert!(
        me.recv().await.retain,
        "handling 0: again on every subscribe"
    );
    let rule = || RetainForwardRule::OnNewSubscribe;
    me.subscribe_with(filter("rh/t", false, true, rule()), None)
        .await;
    me.expect_nothing().await;
    me.subscribe_with(filter("rh/+", false, false, rule()), None)
        .await;
    assert!(
        me.recv().await.retain,
        "handling 1: sent for a new subscription"
    );
    let (mut never, _) = Mqtt::connect(broker.shard(2), "never").await;
    never
        .subscribe_with(filter("rh/#", false, false, RetainForwardRule::Never), None)
        .await;
    never.expect_nothing().await;

    // Live retained publish: RETAIN kept for Retain As Published (rh/t), cleared otherwise.
    other.publish("rh/t", QoS::AtLeastOnce, true, b"live").await;
    let live = never.recv().await;
    assert!(!live.retain, "no Retain As Published");
    let live = me.recv().await;
    assert!(
        live.retain,
        "Retain As Published on one of the matching subscriptions"
    );
    me.expect_nothing().await;
    me.disconnect().await;
    other.disconnect().await;
    never.disconnect().await;
}

fn will_options(addr: SocketAddr, client_id: &str, delay: u32, expiry: u32) -> MqttOptions {
    let mut options = persistent(addr, client_id, expiry);
    let properties = LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: Some(String::from("text/plain")),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![(String::from("why"), String::from("gone"))],
    };
    options.set_last_will(LastWill::new(
        format!("will/{client_id}"),
        "bye",
        QoS::AtLeastOnce,
        false,
        Some(properties),
    ));
    options
}

#[tokio::test]
async fn will_delay_interval_and_its_cancellation() {
    let broker = TestBroker::start(4);
    let (mut watcher, _) = Mqtt::connect(broker.shard(2), "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    // Delay 1 s, session 30 s: published a second after the connection dropped.
    let (mortal, _) = Mqtt::connect_with(will_options(broker.shard(0), "delayed", 1, 30)).await;
    drop(mortal);
    watcher.expect_nothing_for(Duration::from_millis(600)).await;
    let will = watcher.recv().await;
    assert_eq!(topic(&will), "will/delayed");
    let p = props(&will);
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        p.user_properties,
        vec![(String::from("why"), String::from("gone"))]
    );

    // Delay 60 s but the session ends after 1 s: the will goes when the session ends.
    let (mortal, _) = Mqtt::connect_with(will_options(broker.shard(1), "short", 60, 1)).await;
    drop(mortal);
    let will = watcher.recv().await;
    assert_eq!(topic(&will), "will/short");

    // Delay 2 s, reconnected within it on another shard: no will.
    let (mortal, _) = Mqtt::connect_with(will_options(broker.shard(0), "back", 2, 30)).await;
    drop(mortal);
    let (back, connack) = Mqtt::connect_with(persistent(broker.shard(3), "back", 30)).await;
    assert!(connack.session_present);
    watcher
        .expect_nothing_for(Duration::from_millis(2500))
        .await;
    back.disconnect().await;

    // A normal DISCONNECT: no will at all.
    let (mortal, _) = Mqtt::connect_with(will_options(broker.shard(1), "polite", 0, 0)).await;
    mortal.disconnect().await;
    watcher.expect_nothing().await;
    watcher.disconnect().await;
}

#[tokio::test]
async fn shared_subscription_members_on_three_shards_take_turns() {
    let broker = TestBroker::start(4);
    let mut members = Vec::new();
    for shard in 0..3 {
        let (mut member, _) = Mqtt::connect(broker.shard(shard), &format!("member-{shard}")).await;
        member
            .subscribe("$share/workers/job/#", QoS::AtLeastOnce)
            .await;
        members.push(member);
    }
    // A normal subscriber on the same filter gets every message besides.
    let (mut audit, _) = Mqtt::connect(broker.shard(1), "audit").await;
    audit.subscribe("job/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mqtt::connect(broker.shard(3), "boss").await;
    for i in 0..30u8 {
        publisher
            .publish_with(
                "job/x",
                QoS::AtLeastOnce,
                false,
                vec![i],
                Default::default(),
            )
            .await;
    }
    let mut seen = Vec::new();
    for member in &mut members {
        // Equal weights: strict turns, ten each.
        for _ in 0..10 {
            seen.push(member.recv().await.payload[0]);
        }
    }
    for member in &mut members {
        member.expect_nothing().await;
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<u8>>(), "each exactly once");
    for i in 0..30u8 {
        assert_eq!(&audit.recv().await.payload[..], &[i]);
    }
    publisher.disconnect().await;
}

#[tokio::test]
async fn v311_and_v5_clients_on_one_topic_both_ways() {
    let broker = TestBroker::start(4);
    let mut old_options = rumqttc::MqttOptions::new("old", "127.0.0.1", broker.shard(0).port());
    old_options.set_keep_alive(Duration::from_secs(30));
    let (old, mut old_events) = rumqttc::AsyncClient::new(old_options, 16);
    let mut old_next = async || match timeout(EVENT_TIMEOUT, old_events.poll()).await {
        Ok(Ok(event)) => event,
        other => panic!("3.1.1 client: {other:?}"),
    };
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)) = old_next().await {
            break;
        }
    }
    let (mut new, _) = Mqtt::connect(broker.shard(1), "new").await;
    new.subscribe("mix/3", QoS::ExactlyOnce).await;
    old.subscribe("mix/5", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) = old_next().await {
            break;
        }
    }
    // 5.0 -> 3.1.1: properties dropped, QoS lowered to the subscription, live RETAIN cleared.
    let properties = PublishProperties {
        content_type: Some(String::from("text/plain")),
        user_properties: vec![(String::from("k"), String::from("v"))],
        ..Default::default()
    };
    new.publish_with("mix/5", QoS::ExactlyOnce, true, "from5", properties)
        .await;
    let got = loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) = old_next().await {
            break p;
        }
    };
    assert_eq!(
        (&got.payload[..], got.qos, got.retain),
        (&b"from5"[..], rumqttc::QoS::AtLeastOnce, false)
    );

    // 3.1.1 -> 5.0.
    old.publish("mix/3", rumqttc::QoS::ExactlyOnce, true, "from3")
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::PubComp(_)) = old_next().await {
            break;
        }
    }
    let got = new.recv().await;
    assert_eq!(
        (&got.payload[..], got.qos, got.retain),
        (&b"from3"[..], QoS::ExactlyOnce, false)
    );
    assert!(props(&got).user_properties.is_empty());

    // Retained, on a new subscription: RETAIN set, QoS the minimum.
    let (mut late, _) = Mqtt::connect(broker.shard(2), "late").await;
    late.subscribe("mix/3", QoS::AtLeastOnce).await;
    let kept = late.recv().await;
    assert_eq!(
        (&kept.payload[..], kept.qos, kept.retain),
        (&b"from3"[..], QoS::AtLeastOnce, true)
    );
    late.subscribe("mix/5", QoS::ExactlyOnce).await;
    let kept = late.recv().await;
    assert_eq!(
        (&kept.payload[..], kept.qos, kept.retain),
        (&b"from5"[..], QoS::ExactlyOnce, true)
    );
    assert_eq!(
        props(&kept).content_type.as_deref(),
        Some("text/plain"),
        "kept with the message"
    );
    late.disconnect().await;
    new.disconnect().await;
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

/// Reads until the broker closes; returns the reason of the DISCONNECT that came before.
fn closed_with(client: &mut RawClient) -> ReasonCode {
    let packets = client.expect_closed();
    match packets.last() {
        Some(raw::Packet::Disconnect(d)) => d.reason,
        other => panic!("expected DISCONNECT before the close, got {other:?}"),
    }
}

#[test]
fn disconnect_reason_codes_the_library_cannot_provoke() {
    let mut config = test_config(2);
    config.limits.user_properties_max = 1;
    let broker = TestBroker::with_config(config);

    // 0x8D: no packet within 1.5 x Keep Alive.
    let mut quiet = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let mut connect = connect_packet(Version::V5, "quiet", true, None);
    connect.keep_alive_secs = 1;
    quiet.handshake(connect);

    // 0x94: an alias above the maximum.
    let (mut c, _) = RawClient::connect(broker.shard(1), Version::V5, "alias", true);
    c.send(&raw::Packet::Publish(raw::Publish {
        dup: false,
        qos: raw::QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        properties: raw::PublishProperties {
            topic_alias: Some(65),
            ..Default::default()
        },
        payload: Bytes::new(),
    }));
    assert_eq!(closed_with(&mut c), ReasonCode::TOPIC_ALIAS_INVALID);

    // 0x97: more user properties than allowed.
    let (mut c, _) = RawClient::connect(broker.shard(0), Version::V5, "quota", true);
    c.send(&raw::Packet::Subscribe(raw::Subscribe {
        packet_id: pid(1),
        properties: raw::SubscribeProperties {
            subscription_identifier: None,
            user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        },
        filters: vec![raw::SubscribeFilter {
            filter: "q".into(),
            options: Default::default(),
        }],
    }));
    assert_eq!(closed_with(&mut c), ReasonCode::QUOTA_EXCEEDED);

    // 0x82: a second CONNECT.
    let (mut c, _) = RawClient::connect(broker.shard(1), Version::V5, "twice", true);
    c.send(&raw::Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "twice",
        true,
        None,
    ))));
    assert_eq!(closed_with(&mut c), ReasonCode::PROTOCOL_ERROR);

    // 0x81: a PUBLISH with QoS 3.
    let (mut c, _) = RawClient::connect(broker.shard(0), Version::V5, "bits", true);
    c.send_raw(&[0x36, 0x04, 0x00, 0x01, b't', 0x00]);
    assert_eq!(closed_with(&mut c), ReasonCode::MALFORMED_PACKET);

    assert_eq!(closed_with(&mut quiet), ReasonCode::KEEP_ALIVE_TIMEOUT);
}

#[test]
fn a_will_declared_utf8_is_checked_when_configured() {
    let mut config = test_config(2);
    config.mqtt.payload_format_check = true;
    let broker = TestBroker::with_config(config);
    let will = |payload: &'static [u8]| raw::Will {
        topic: "w".into(),
        payload: Bytes::from_static(payload),
        qos: raw::QoS::AtMostOnce,
        retain: false,
        properties: raw::WillProperties {
            payload_format_indicator: Some(true),
            ..Default::default()
        },
    };
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    let connack = c.handshake(connect_packet(Version::V5, "w1", true, Some(will(b"\xff"))));
    assert_eq!(connack.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
    c.expect_closed();
    let mut c = RawClient::connect_tcp(broker.shard(1), Version::V5);
    let connack = c.handshake(connect_packet(Version::V5, "w2", true, Some(will(b"ok"))));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
}

#[test]
fn subscription_identifiers_when_not_available() {
    let mut config = test_config(2);
    config.mqtt.subscription_identifiers_available = false;
    let broker = TestBroker::with_config(config);
    let (mut c, connack) = RawClient::connect(broker.shard(0), Version::V5, "noids", true);
    assert_eq!(
        connack.properties.subscription_identifiers_available,
        Some(false)
    );
    c.send(&raw::Packet::Subscribe(raw::Subscribe {
        packet_id: pid(1),
        properties: raw::SubscribeProperties {
            subscription_identifier: Some(1),
            user_properties: Vec::new(),
        },
        filters: vec![raw::SubscribeFilter {
            filter: "ids".into(),
            options: Default::default(),
        }],
    }));
    assert_eq!(
        closed_with(&mut c),
        ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
    );
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start(2);
    let (mut watcher, _) = RawClient::connect(broker.shard(1), Version::V5, "watcher", true);
    watcher.subscribe(1, &[("last/#", raw::QoS::AtLeastOnce)]);
    let will = raw::Will {
        topic: "last/words".into(),
        payload: Bytes::from_static(b"asked for"),
        qos: raw::QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut c = RawClient::connect_tcp(broker.shard(0), Version::V5);
    c.handshake(connect_packet(Version::V5, "leaving", true, Some(will)));
    c.send(&raw::Packet::Disconnect(raw::Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: Default::default(),
    }));
    assert_eq!(&watcher.recv_publish().payload[..], b"asked for");
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
