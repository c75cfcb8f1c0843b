//! One rumqttc connection driven from the test task, for 3.1.1 (`rumqttc`) and 5.0
//! (`rumqttc::v5`) alike: the test file that includes this names the API it uses as `mod api`.
//! The test polls the event loop itself, so every wait is explicit and bounded.

#![allow(dead_code)]

use std::time::Duration;

use super::api::{AsyncClient, ConnAck, Event, EventLoop, Incoming, MqttOptions, Outgoing};
use tokio::time::{Instant, timeout};

/// How long any single expected event may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we listen to conclude that nothing (more) arrives.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct Mqtt {
    pub client: AsyncClient,
    pub events: EventLoop,
}

impl Mqtt {
    pub async fn connect_with(options: MqttOptions) -> (Mqtt, ConnAck) {
        let (client, events) = AsyncClient::new(options, 64);
        let mut mqtt = Mqtt { client, events };
        let connack = mqtt
            .until(|event| match event {
                Event::Incoming(Incoming::ConnAck(connack)) => Some(connack.clone()),
                _ => None,
            })
            .await;
        (mqtt, connack)
    }

    /// The next event; panics on a connection error or after `EVENT_TIMEOUT`.
    pub async fn next(&mut self) -> Event {
        match timeout(EVENT_TIMEOUT, self.events.poll()).await {
            Ok(Ok(event)) => event,
            Ok(Err(error)) => panic!("connection error: {error:?}"),
            Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
        }
    }

    /// Polls until `pick` returns something, within `EVENT_TIMEOUT` in total.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            let event = self.next().await;
            if let Some(found) = pick(&event) {
                return found;
            }
        }
        panic!("expected event not seen within {EVENT_TIMEOUT:?}");
    }

    /// Asserts that no PUBLISH arrives for `QUIET`, while still answering the broker.
    pub async fn expect_nothing(&mut self) {
        self.expect_nothing_for(QUIET).await;
    }

    pub async fn expect_nothing_for(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return,
                Ok(Ok(Event::Incoming(Incoming::Publish(publish)))) => {
                    panic!("unexpected PUBLISH {publish:?}")
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("connection error: {error:?}"),
            }
        }
    }

    /// A clean DISCONNECT: sends it and waits until it is written.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        self.until(|event| matches!(event, Event::Outgoing(Outgoing::Disconnect)).then_some(()))
            .await;
    }
}
