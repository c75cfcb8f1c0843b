//! Goal: MQTT 3.1.1 behaviour as an independent client (rumqttc) sees it, each case on one shard
//! and across shards: QoS 0/1/2, persistent sessions, takeover, retained, will, wildcards and
//! unsubscribe.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestBroker;
use rumqttc::{
    ConnAck, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, Publish, QoS,
    StateError, SubscribeReasonCode,
};
use tokio::time::Instant;

mod api {
    pub use rumqttc::{AsyncClient, ConnAck, Event, EventLoop, Incoming, MqttOptions, Outgoing};
}
#[path = "common/rumqttc_harness.rs"]
mod harness;
use harness::{EVENT_TIMEOUT, Mqtt};

fn options(addr: SocketAddr, client_id: &str, clean: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_clean_session(clean);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

impl Mqtt {
    async fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> (Mqtt, ConnAck) {
        Mqtt::connect_with(options(addr, client_id, clean)).await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        self.until(|event| match event {
            Event::Incoming(Incoming::SubAck(suback)) => Some(suback.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        self.until(|event| matches!(event, Event::Incoming(Incoming::UnsubAck(_))).then_some(()))
            .await;
    }

    /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was written (QoS 0).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
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

    /// The next PUBLISH from the broker (acknowledged by rumqttc).
    async fn recv(&mut self) -> Publish {
        self.until(|event| match event {
            Event::Incoming(Incoming::Publish(publish)) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Asserts the broker closes this connection (without it being asked to).
    async fn expect_closed(&mut self) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => panic!("connection not closed within {EVENT_TIMEOUT:?}"),
                Ok(Ok(Event::Incoming(Incoming::Publish(publish)))) => {
                    panic!("PUBLISH on a connection that should close: {publish:?}")
                }
                Ok(Ok(_)) => {}
                Ok(Err(
                    ConnectionError::Io(_)
                    | ConnectionError::MqttState(StateError::ConnectionAborted | StateError::Io(_)),
                )) => return,
                Ok(Err(error)) => panic!("unexpected error instead of a close: {error}"),
            }
        }
    }
}

/// (subscriber shard, publisher shard): both on one shard, then on different shards.
const LAYOUTS: [(usize, usize); 2] = [(0, 0), (1, 3)];

fn granted(qos: QoS) -> Vec<SubscribeReasonCode> {
    vec![SubscribeReasonCode::Success(qos)]
}

#[tokio::test]
async fn qos0_1_2_publish_subscribe() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let case = format!("{qos:?} from shard {pub_shard} to shard {sub_shard}");
            let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
            assert_eq!(sub.subscribe("t/q", qos).await, granted(qos), "{case}");
            let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
            for i in 0..20u8 {
                publisher.publish("t/q", qos, false, &[i]).await;
            }
            for i in 0..20u8 {
                let publish = sub.recv().await;
                assert_eq!(publish.topic, "t/q", "{case}");
                assert_eq!(&publish.payload[..], &[i], "{case}: in order");
                assert_eq!(publish.qos, qos, "{case}");
                assert!(!publish.retain && !publish.dup, "{case}");
            }
            sub.expect_nothing().await;
            publisher.disconnect().await;
            sub.disconnect().await;
        }
    }
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_publish_and_subscription() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
        sub.subscribe("low", QoS::AtLeastOnce).await;
        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        publisher
            .publish("low", QoS::ExactlyOnce, false, b"2")
            .await;
        publisher.publish("low", QoS::AtMostOnce, false, b"0").await;
        assert_eq!(sub.recv().await.qos, QoS::AtLeastOnce);
        assert_eq!(sub.recv().await.qos, QoS::AtMostOnce);
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

#[tokio::test]
async fn persistent_session_resumes_with_queued_messages_on_another_shard() {
    let broker = TestBroker::start(4);
    // (first shard of the session, shard it resumes on, publisher shard)
    for (first, resume, pub_shard) in [(0, 0, 0), (0, 2, 1)] {
        let id = format!("keeper-{first}-{resume}");
        let (mut sub, connack) = Mqtt::connect(broker.shard(first), &id, false).await;
        assert!(!connack.session_present);
        sub.subscribe("q/1", QoS::AtLeastOnce).await;
        sub.subscribe("q/2", QoS::ExactlyOnce).await;
        sub.subscribe("q/0", QoS::AtMostOnce).await;
        sub.disconnect().await;

        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        // QoS 0 is not queued for offline sessions by default (queue_qos0_offline = false). It
        // goes first: mail between two shards keeps its order, so it has reached the offline
        // session before the QoS 1 and 2 messages that the resumed client waits for.
        for i in 0..10u8 {
            publisher
                .publish("q/0", QoS::AtMostOnce, false, &[0, i])
                .await;
        }
        for i in 0..10u8 {
            publisher
                .publish("q/1", QoS::AtLeastOnce, false, &[1, i])
                .await;
            publisher
                .publish("q/2", QoS::ExactlyOnce, false, &[2, i])
                .await;
        }
        publisher.disconnect().await;

        let (mut sub, connack) = Mqtt::connect(broker.shard(resume), &id, false).await;
        assert!(connack.session_present, "session kept on shard {resume}");
        for i in 0..10u8 {
            let one = sub.recv().await;
            assert_eq!((&one.payload[..], one.qos), (&[1, i][..], QoS::AtLeastOnce));
            let two = sub.recv().await;
            assert_eq!((&two.payload[..], two.qos), (&[2, i][..], QoS::ExactlyOnce));
        }
        sub.expect_nothing().await;
        // The subscriptions themselves survived: a live message still arrives.
        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        publisher
            .publish("q/1", QoS::AtLeastOnce, false, b"live")
            .await;
        assert_eq!(&sub.recv().await.payload[..], b"live");
        publisher.disconnect().await;
        sub.disconnect().await;

        // A clean session discards it all.
        let (sub, connack) = Mqtt::connect(broker.shard(resume), &id, true).await;
        assert!(!connack.session_present);
        sub.disconnect().await;
    }
}

#[tokio::test]
async fn takeover_closes_the_old_connection_and_the_session_continues() {
    let broker = TestBroker::start(4);
    // (old connection's shard, new connection's shard, publisher shard)
    for (old_shard, new_shard, pub_shard) in [(2, 2, 2), (0, 3, 1)] {
        let id = format!("twin-{old_shard}-{new_shard}");
        let (mut old, _) = Mqtt::connect(broker.shard(old_shard), &id, false).await;
        old.subscribe("tk", QoS::AtLeastOnce).await;
        let (mut new, connack) = Mqtt::connect(broker.shard(new_shard), &id, false).await;
        assert!(
            connack.session_present,
            "new connection on shard {new_shard}"
        );
        old.expect_closed().await;

        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        publisher
            .publish("tk", QoS::AtLeastOnce, false, b"after")
            .await;
        assert_eq!(&new.recv().await.payload[..], b"after");
        publisher.disconnect().await;
        new.disconnect().await;
    }
}

#[tokio::test]
async fn retained_message_is_delivered_on_subscribe() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        let topic = format!("ret/{sub_shard}/{pub_shard}");
        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, b"old")
            .await;
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, b"kept")
            .await;

        let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
        sub.subscribe("ret/#", QoS::ExactlyOnce).await;
        let retained = sub.recv().await;
        assert_eq!(retained.topic, topic);
        assert_eq!(
            &retained.payload[..],
            b"kept",
            "the last retained message wins"
        );
        assert!(
            retained.retain,
            "RETAIN set on delivery for a new subscription"
        );
        assert_eq!(retained.qos, QoS::AtLeastOnce);
        sub.expect_nothing().await;

        // Forwarded live, the same publish has RETAIN cleared [MQTT-3.3.1-9].
        publisher
            .publish(&topic, QoS::AtLeastOnce, true, b"live")
            .await;
        let live = sub.recv().await;
        assert_eq!(&live.payload[..], b"live");
        assert!(!live.retain);

        // An empty retained payload deletes it.
        publisher.publish(&topic, QoS::AtMostOnce, true, b"").await;
        sub.recv().await;
        sub.disconnect().await;
        let (mut late, _) = Mqtt::connect(broker.shard(sub_shard), "late", true).await;
        late.subscribe(&topic, QoS::AtLeastOnce).await;
        late.expect_nothing().await;
        late.disconnect().await;
        publisher.disconnect().await;
    }
}

fn will_options(addr: SocketAddr, client_id: &str, topic: &str) -> MqttOptions {
    let mut options = options(addr, client_id, true);
    options.set_last_will(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
    options
}

#[tokio::test]
async fn will_on_abnormal_close_and_none_after_disconnect() {
    let broker = TestBroker::start(4);
    // (watcher shard, shard of the client with a will)
    for (sub_shard, will_shard) in LAYOUTS {
        let (mut watcher, _) = Mqtt::connect(broker.shard(sub_shard), "watcher", true).await;
        watcher.subscribe("wills/+", QoS::AtLeastOnce).await;

        let options = will_options(broker.shard(will_shard), "mortal", "wills/mortal");
        let (mortal, _) = Mqtt::connect_with(options).await;
        // Dropping the event loop closes the TCP connection without DISCONNECT.
        drop(mortal);
        let will = watcher.recv().await;
        assert_eq!(will.topic, "wills/mortal");
        assert_eq!(&will.payload[..], b"gone");
        assert_eq!(will.qos, QoS::AtLeastOnce);

        let options = will_options(broker.shard(will_shard), "polite", "wills/polite");
        let (polite, _) = Mqtt::connect_with(options).await;
        polite.disconnect().await;
        watcher.expect_nothing().await;
        watcher.disconnect().await;
    }
}

#[tokio::test]
async fn wildcards_match_across_shards() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
        sub.subscribe("home/+/temp", QoS::AtLeastOnce).await;
        sub.subscribe("office/#", QoS::AtLeastOnce).await;
        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        let topics = [
            ("home/kitchen/temp", true),
            ("home/kitchen/humidity", false),
            ("home/a/b/temp", false),
            ("home//temp", true),
            ("office", true),
            ("office/floor/1", true),
            ("$SYS/office", false),
            ("offices/x", false),
        ];
        for (topic, _) in topics {
            publisher
                .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes())
                .await;
        }
        for (topic, _) in topics.iter().filter(|(_, matches)| *matches) {
            assert_eq!(sub.recv().await.topic, *topic);
        }
        sub.expect_nothing().await;
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
        sub.subscribe("u/+", QoS::AtLeastOnce).await;
        sub.subscribe("u/keep", QoS::AtLeastOnce).await;
        let (mut publisher, _) = Mqtt::connect(broker.shard(pub_shard), "pub", true).await;
        publisher
            .publish("u/drop", QoS::AtLeastOnce, false, b"1")
            .await;
        assert_eq!(&sub.recv().await.payload[..], b"1");

        sub.unsubscribe("u/+").await;
        // Unsubscribing a filter we do not hold is still acknowledged.
        sub.unsubscribe("never/subscribed").await;
        publisher
            .publish("u/drop", QoS::AtLeastOnce, false, b"2")
            .await;
        publisher
            .publish("u/keep", QoS::AtLeastOnce, false, b"3")
            .await;
        let kept = sub.recv().await;
        assert_eq!(
            (kept.topic.as_str(), &kept.payload[..]),
            ("u/keep", &b"3"[..])
        );
        sub.expect_nothing().await;
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

#[tokio::test]
async fn pipelined_qos2_publishes_beyond_the_inflight_limit() {
    // MQTT 3.1.1 sets no limit on a client's unacknowledged QoS 2 publishes and the client is
    // never told one (Receive Maximum is 5.0 only); rumqttc keeps up to 100 in flight by default.
    let broker = TestBroker::start(4);
    for (sub_shard, pub_shard) in LAYOUTS {
        let (mut sub, _) = Mqtt::connect(broker.shard(sub_shard), "sub", true).await;
        sub.subscribe("pipe", QoS::ExactlyOnce).await;
        let mut options = options(broker.shard(pub_shard), "pub", true);
        options.set_inflight(100);
        let (mut publisher, _) = Mqtt::connect_with(options).await;
        let client = publisher.client.clone();
        let sender = tokio::spawn(async move {
            for i in 0..100u8 {
                client
                    .publish("pipe", QoS::ExactlyOnce, false, vec![i])
                    .await
                    .unwrap();
            }
        });
        let mut completed = 0;
        while completed < 100 {
            if let Event::Incoming(Incoming::PubComp(_)) = publisher.next().await {
                completed += 1;
            }
        }
        sender.await.unwrap();
        for i in 0..100u8 {
            assert_eq!(&sub.recv().await.payload[..], &[i]);
        }
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}
