//! Shared plumbing of the memory tests (tests/memory.rs, tests/memory_caps.rs): a broker with a
//! well-behaved publisher and subscriber on shard 0, and the refusal counts by reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringmq::config::Config;
use ringmq::protocol::{QoS, Version};

use super::{RawClient, TestBroker, admin_get, metric};

/// A broker with a subscriber to `ok` and a publisher, both on shard 0, beside the hostile
/// clients a test adds.
pub struct WellBehaved {
    pub broker: TestBroker,
    pub admin: SocketAddr,
    pub subscriber: RawClient,
    pub publisher: RawClient,
}

impl WellBehaved {
    pub fn start(config: Config, version: Version) -> WellBehaved {
        let broker = TestBroker::with_config(config);
        let admin = broker.admin_addr().expect("admin listener");
        let (mut subscriber, _) = RawClient::connect(broker.shard(0), version, "sub", true);
        subscriber.subscribe(1, &[("ok", QoS::AtMostOnce)]);
        let (publisher, _) = RawClient::connect(broker.shard(0), version, "pub", true);
        WellBehaved {
            broker,
            admin,
            subscriber,
            publisher,
        }
    }

    /// The publisher and the subscriber exchange `count` small messages.
    pub fn exchange(&mut self, count: usize) {
        let payload = [5u8; 1000];
        for _ in 0..count {
            self.publisher
                .publish("ok", &payload, QoS::AtMostOnce, false, None);
            assert_eq!(self.subscriber.recv_publish().payload.len(), payload.len());
        }
    }
}

/// A count from the merged `ringmq_limits_reached_total`, once the snapshot shows at least
/// `at_least` (bounded: 10 s).
pub fn limits_reached(admin: SocketAddr, reason: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = admin_get(admin, "/metrics");
        let count = metric(
            &metrics,
            &format!("ringmq_limits_reached_total{{shard=\"all\",reason=\"{reason}\"}}"),
        );
        if count >= at_least || Instant::now() > deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Shard 0's value of the gauge `family` once it equals `expected`, or the last value seen after
/// 10 s.
pub fn shard_gauge_settles(admin: SocketAddr, family: &str, expected: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = admin_get(admin, "/metrics");
        let value = metric(&metrics, &format!("{family}{{shard=\"0\"}} "));
        if value == expected || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
