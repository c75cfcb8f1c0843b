//! Goal: MQTT 5.0 messages as an independent 5.0 client (rumqttc::v5) sees them, publisher and
//! subscribers on different shards of a 4-shard broker: request/response properties passed
//! through, the payload format check, subscription identifiers, No Local, Retain As Published,
//! Retain Handling, will delay, shared subscriptions, and 3.1.1 and 5.0 clients on one topic.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{TestBroker, test_config};
use rumqttc::v5::MqttOptions;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Filter, LastWill, LastWillProperties, PublishProperties,
    RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use tokio::time::timeout;

#[path = "common/rumqttc_v5_client.rs"]
mod client;
use client::{EVENT_TIMEOUT, Mqtt, persistent, props, topic};
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
async fn will_on_takeover_follows_the_will_delay() {
    let broker = TestBroker::start(4);
    let (mut watcher, _) = Mqtt::connect(broker.shard(3), "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    // Delay 5 s, taken over by a connection that resumes the session: a new connection to the
    // session came within the delay, so no will (5.0 §3.1.3.2.2).
    let (_old, _) = Mqtt::connect_with(will_options(broker.shard(0), "resumed", 5, 60)).await;
    let (new, connack) = Mqtt::connect_with(persistent(broker.shard(1), "resumed", 60)).await;
    assert!(connack.session_present);
    watcher.expect_nothing_for(Duration::from_millis(500)).await;
    new.disconnect().await;

    // Delay 0: the old connection's will goes at once.
    let (_old, _) = Mqtt::connect_with(will_options(broker.shard(0), "now", 0, 60)).await;
    let (new, _) = Mqtt::connect_with(persistent(broker.shard(2), "now", 60)).await;
    assert_eq!(topic(&watcher.recv().await), "will/now");
    new.disconnect().await;

    // Delay 5 s, taken over with Clean Start: the old session ends, and the will with it.
    let (_old, _) = Mqtt::connect_with(will_options(broker.shard(0), "fresh", 5, 60)).await;
    let (new, connack) = Mqtt::connect(broker.shard(2), "fresh").await;
    assert!(!connack.session_present);
    assert_eq!(topic(&watcher.recv().await), "will/fresh");
    new.disconnect().await;

    // The connection dropped, its will waits 5 s; a Clean Start connection ends the session, and
    // the will goes then.
    let (old, _) = Mqtt::connect_with(will_options(broker.shard(0), "dropped", 5, 60)).await;
    drop(old);
    watcher.expect_nothing().await;
    let (new, _) = Mqtt::connect(broker.shard(1), "dropped").await;
    assert_eq!(topic(&watcher.recv().await), "will/dropped");
    new.disconnect().await;
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
