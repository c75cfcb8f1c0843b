//! rumqttc::v5 helpers shared by the 5.0 test files: the connection harness of
//! `rumqttc_harness.rs` over `rumqttc::v5`, with 5.0 options, subscribe and publish with
//! properties, and the broker's DISCONNECT as rumqttc reports it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, Publish, PublishProperties, SubscribeProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{ConnectionError, Event, Incoming, MqttOptions, StateError};
use tokio::time::Instant;

pub mod api {
    pub use rumqttc::Outgoing;
    pub use rumqttc::v5::mqttbytes::v5::ConnAck;
    pub use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};
}
#[path = "rumqttc_harness.rs"]
pub mod harness;
pub use harness::{EVENT_TIMEOUT, Mqtt};

pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Options of a persistent session: Clean Start 0 and a Session Expiry Interval.
pub fn persistent(addr: SocketAddr, client_id: &str, expiry_secs: u32) -> MqttOptions {
    let mut options = options(addr, client_id);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(expiry_secs));
    options
}

impl Mqtt {
    pub async fn connect(addr: SocketAddr, client_id: &str) -> (Mqtt, ConnAck) {
        Mqtt::connect_with(options(addr, client_id)).await
    }

    pub async fn subscribe_with(
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

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe_with(Filter::new(filter, qos), None).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
    }

    /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was written (QoS 0).
    pub async fn publish_with(
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

    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) {
        self.publish_with(topic, qos, retain, payload, PublishProperties::default())
            .await;
    }

    /// The next PUBLISH from the broker, as it came on the wire (rumqttc reports a PUBLISH
    /// before it resolves a topic alias).
    pub async fn recv(&mut self) -> Publish {
        self.until(|event| match event {
            Event::Incoming(Incoming::Publish(publish)) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the broker's DISCONNECT; returns its reason code and reason string.
    pub async fn expect_server_disconnect(&mut self) -> (DisconnectReasonCode, Option<String>) {
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

pub fn topic(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.topic).unwrap()
}

pub fn props(publish: &Publish) -> PublishProperties {
    publish.properties.clone().unwrap_or_default()
}
