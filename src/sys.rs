//! `$SYS` topics with Mosquitto's names (`man/mosquitto.8.xml`), built from merged shard metrics,
//! so that existing `$SYS` exporters and dashboards read ringmq unchanged.
//!
//! Every topic is produced on every interval (Mosquitto skips unchanged values; publishing all of
//! them costs a few dozen small retained messages every `sys.interval_secs` and keeps a new
//! subscriber's view complete). `$SYS/broker/version` is constant but produced each time too.
//!
//! Load figures are Mosquitto's: per-minute rates smoothed exponentially over 1, 5 and 15 minutes,
//! `load = rate + exp(-interval / window) * (load - rate)`, starting from 0, printed with two
//! decimals. Counter deltas saturate at zero, so a shard that restarts its counters never yields
//! a negative rate.
//!
//! Mapping to ringmq metrics: `messages/*` counts MQTT packets of every type (as Mosquitto does),
//! `publish/messages/*` counts PUBLISH; `clients/connected` is open connections, `clients/total`
//! is sessions held (online and offline); `store/messages/count` is queued plus retained messages.

use std::time::Duration;

use crate::metrics::{Counts, Merged, PacketKind};

const PREFIX: &str = "$SYS/broker/";

/// The smoothing windows and their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// A rate with load averages: topic (after `load/`) and the counter it differentiates.
type LoadSeries = (&'static str, fn(&Counts) -> u64);

const LOAD_SERIES: [LoadSeries; 9] = [
    ("messages/received", Counts::packets_received_total),
    ("messages/sent", Counts::packets_sent_total),
    ("publish/received", |c| c.messages_received.total()),
    ("publish/sent", |c| c.messages_sent.total()),
    ("publish/dropped", Counts::messages_dropped_total),
    ("bytes/received", |c| c.bytes_received),
    ("bytes/sent", |c| c.bytes_sent),
    ("sockets", |c| c.connections_accepted),
    ("connections", |c| {
        c.packets_received.get(PacketKind::Connect.index())
    }),
];

/// Exponentially decayed per-minute rates, updated once per `$SYS` interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadAverages {
    /// `values[series][window]`, per minute.
    values: [[f64; WINDOWS.len()]; LOAD_SERIES.len()],
}

impl LoadAverages {
    pub fn new() -> LoadAverages {
        LoadAverages::default()
    }

    /// Folds in the counts of one interval: `current - previous` (all counts since start when
    /// there is no previous) over `interval`. A zero interval changes nothing.
    pub fn update(&mut self, current: &Counts, previous: Option<&Counts>, interval: Duration) {
        let seconds = interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let zero = Counts::default();
        let previous = previous.unwrap_or(&zero);
        for ((_, counter), loads) in LOAD_SERIES.iter().zip(self.values.iter_mut()) {
            let delta = counter(current).saturating_sub(counter(previous));
            let per_minute = delta as f64 * 60.0 / seconds;
            for ((window, _), load) in WINDOWS.iter().zip(loads.iter_mut()) {
                let decay = (-seconds / window).exp();
                *load = per_minute + decay * (*load - per_minute);
            }
        }
    }

    /// The `load/...` topics and their payloads.
    fn messages(&self, into: &mut Vec<(String, String)>) {
        for ((name, _), loads) in LOAD_SERIES.iter().zip(self.values.iter()) {
            for ((_, suffix), load) in WINDOWS.iter().zip(loads.iter()) {
                into.push((
                    format!("{PREFIX}load/{name}/{suffix}"),
                    format!("{load:.2}"),
                ));
            }
        }
    }
}

/// Updates `loads` with the interval since `previous`, then returns every `$SYS` topic with its
/// payload, in a fixed order. The caller publishes them retained and keeps `merged` as the next
/// `previous`; `interval` is the time since that previous call (or since start).
pub fn sys_messages(
    merged: &Merged,
    previous: Option<&Merged>,
    loads: &mut LoadAverages,
    uptime: Duration,
    version: &str,
    interval: Duration,
) -> Vec<(String, String)> {
    loads.update(&merged.counts, previous.map(|p| &p.counts), interval);
    let c = &merged.counts;
    let mut messages = Vec::with_capacity(96);
    let mut put = |topic: &str, payload: String| {
        messages.push((format!("{PREFIX}{topic}"), payload));
    };
    put("version", format!("ringmq version {version}"));
    put("uptime", format!("{} seconds", uptime.as_secs()));
    put("clients/connected", c.connections.to_string());
    put("clients/total", c.sessions.to_string());
    put(
        "clients/disconnected",
        c.sessions.saturating_sub(c.connections).to_string(),
    );
    put("clients/expired", c.sessions_expired.to_string());
    put("messages/received", c.packets_received_total().to_string());
    put("messages/sent", c.packets_sent_total().to_string());
    put(
        "publish/messages/received",
        c.messages_received.total().to_string(),
    );
    put("publish/messages/sent", c.messages_sent.total().to_string());
    put(
        "publish/messages/dropped",
        c.messages_dropped_total().to_string(),
    );
    put("bytes/received", c.bytes_received.to_string());
    put("bytes/sent", c.bytes_sent.to_string());
    put("subscriptions/count", c.subscriptions.to_string());
    put(
        "shared_subscriptions/count",
        c.shared_subscriptions.to_string(),
    );
    put("retained messages/count", c.retained_messages.to_string());
    put(
        "store/messages/count",
        c.queued_messages
            .saturating_add(c.retained_messages)
            .to_string(),
    );
    for kind in PacketKind::ALL {
        let index = kind.index();
        let name = kind.label();
        put(
            &format!("mqtt/{name}/received"),
            c.packets_received.get(index).to_string(),
        );
        put(
            &format!("mqtt/{name}/sent"),
            c.packets_sent.get(index).to_string(),
        );
    }
    loads.messages(&mut messages);
    messages
}

/// What the `$SYS` publisher keeps between intervals: the previous merge and the load averages.
#[derive(Debug, Default)]
pub struct SysState {
    previous: Option<Merged>,
    loads: LoadAverages,
}

impl SysState {
    pub fn new() -> SysState {
        SysState::default()
    }

    /// One interval: the topics for `merged`, which becomes the previous merge.
    pub fn tick(
        &mut self,
        merged: Merged,
        uptime: Duration,
        version: &str,
        interval: Duration,
    ) -> Vec<(String, String)> {
        let messages = sys_messages(
            &merged,
            self.previous.as_ref(),
            &mut self.loads,
            uptime,
            version,
            interval,
        );
        self.previous = Some(merged);
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{DropReason, ShardMetrics, merge};
    use crate::protocol::QoS;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const TEN_SECONDS: Duration = Duration::from_secs(10);

    fn merged(fill: impl FnOnce(&mut ShardMetrics)) -> Merged {
        let mut metrics = ShardMetrics::new();
        fill(&mut metrics);
        merge(&[Arc::new(metrics.snapshot())])
    }

    fn by_topic(messages: &[(String, String)]) -> BTreeMap<&str, &str> {
        let map: BTreeMap<&str, &str> = messages
            .iter()
            .map(|(topic, payload)| (topic.as_str(), payload.as_str()))
            .collect();
        assert_eq!(map.len(), messages.len(), "duplicate topics");
        map
    }

    fn example() -> Merged {
        merged(|m| {
            m.counts.connections = 3;
            m.counts.sessions = 5;
            m.counts.subscriptions = 7;
            m.counts.shared_subscriptions = 2;
            m.counts.retained_messages = 4;
            m.counts.queued_messages = 10;
            m.counts.sessions_expired = 1;
            for _ in 0..60 {
                m.packet_received(PacketKind::Publish);
                m.message_received(QoS::AtLeastOnce);
            }
            m.packet_received(PacketKind::Connect);
            m.packet_sent(PacketKind::ConnAck);
            m.message_sent(QoS::AtMostOnce);
            m.messages_dropped(DropReason::QueueFull, 2);
            m.messages_dropped(DropReason::Expired, 1);
            m.bytes_received(1234);
            m.bytes_sent(99);
        })
    }

    #[test]
    fn topics_and_values() {
        let mut loads = LoadAverages::new();
        let uptime = Duration::from_millis(61_900);
        let messages = sys_messages(&example(), None, &mut loads, uptime, "0.1.0", TEN_SECONDS);
        let topics = by_topic(&messages);
        let check = |topic: &str, expected: &str| {
            assert_eq!(topics.get(topic).copied(), Some(expected), "{topic}");
        };
        check("$SYS/broker/version", "ringmq version 0.1.0");
        check("$SYS/broker/uptime", "61 seconds");
        check("$SYS/broker/clients/connected", "3");
        check("$SYS/broker/clients/total", "5");
        check("$SYS/broker/clients/disconnected", "2");
        check("$SYS/broker/clients/expired", "1");
        check("$SYS/broker/messages/received", "61");
        check("$SYS/broker/messages/sent", "1");
        check("$SYS/broker/publish/messages/received", "60");
        check("$SYS/broker/publish/messages/sent", "1");
        check("$SYS/broker/publish/messages/dropped", "3");
        check("$SYS/broker/bytes/received", "1234");
        check("$SYS/broker/bytes/sent", "99");
        check("$SYS/broker/subscriptions/count", "7");
        check("$SYS/broker/shared_subscriptions/count", "2");
        check("$SYS/broker/retained messages/count", "4");
        check("$SYS/broker/store/messages/count", "14");
        check("$SYS/broker/mqtt/publish/received", "60");
        check("$SYS/broker/mqtt/connack/sent", "1");
        check("$SYS/broker/mqtt/auth/received", "0");
        // 60 PUBLISH in 10 s = 360 per minute, smoothed from 0 over one 10 s step.
        check("$SYS/broker/load/publish/received/1min", "55.27");
        check("$SYS/broker/load/publish/received/5min", "11.80");
        check("$SYS/broker/load/publish/received/15min", "3.98");
        check("$SYS/broker/load/bytes/sent/1min", "91.19");
        check("$SYS/broker/load/connections/1min", "0.92");
        check("$SYS/broker/load/sockets/1min", "0.00");
        assert_eq!(messages.len(), 17 + 30 + 27);
        assert!(
            messages
                .iter()
                .all(|(topic, _)| topic.starts_with("$SYS/broker/"))
        );
    }

    #[test]
    fn loads_decay_when_traffic_stops_and_deltas_use_previous() {
        let mut state = SysState::new();
        let first = example();
        state.tick(first.clone(), Duration::ZERO, "0", TEN_SECONDS);
        // Same counts again: no new messages, the loads decay by exp(-10 / window).
        let messages = state.tick(first, Duration::ZERO, "0", TEN_SECONDS);
        let topics = by_topic(&messages);
        assert_eq!(topics["$SYS/broker/load/publish/received/1min"], "46.78");
        assert_eq!(topics["$SYS/broker/load/publish/received/5min"], "11.42");
        assert_eq!(topics["$SYS/broker/load/publish/received/15min"], "3.93");
        assert_eq!(topics["$SYS/broker/publish/messages/received"], "60");
    }

    #[test]
    fn steady_traffic_converges_to_its_rate() {
        let mut loads = LoadAverages::new();
        let mut previous = Counts::default();
        let mut current = Counts::default();
        for _ in 0..1000 {
            // 5 bytes per second = 300 per minute.
            current.bytes_received += 50;
            loads.update(&current, Some(&previous), TEN_SECONDS);
            previous = current;
        }
        let mut messages = Vec::new();
        loads.messages(&mut messages);
        let topics = by_topic(&messages);
        for window in ["1min", "5min", "15min"] {
            let topic = format!("$SYS/broker/load/bytes/received/{window}");
            assert_eq!(topics[topic.as_str()], "300.00");
        }
    }

    #[test]
    fn counters_going_backwards_and_zero_intervals_are_harmless() {
        let mut loads = LoadAverages::new();
        let high = example().counts;
        loads.update(&Counts::default(), Some(&high), TEN_SECONDS);
        assert_eq!(loads, LoadAverages::new());
        loads.update(&high, None, Duration::ZERO);
        assert_eq!(loads, LoadAverages::new());
    }
}
