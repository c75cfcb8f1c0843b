//! The end-of-run report: totals, rates, latency percentiles and per-second samples; the
//! summary printed to the terminal and the `--json` file are both this one value.

use crate::plan::{Mode, Pacing, Plan};
use crate::tracker::StreamCounts;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub config: ConfigEcho,
    pub totals: Totals,
    pub rates: Rates,
    /// End-to-end (publish -> receive) latency, when messages with headers arrived.
    pub latency: Option<Percentiles>,
    /// Publish -> PUBACK/PUBCOMP latency of QoS 1/2 publishers.
    pub ack_latency: Option<Percentiles>,
    pub per_second: Vec<Sample>,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEcho {
    pub mode: Mode,
    pub hosts: Vec<String>,
    /// `-S`: the connections were TLS.
    #[serde(default)]
    pub tls: bool,
    pub version: u8,
    pub publishers: usize,
    pub subscribers: usize,
    pub pub_topic: Option<String>,
    pub sub_topic: Option<String>,
    pub pub_qos: Option<u8>,
    pub sub_qos: Option<u8>,
    pub payload_bytes: Option<usize>,
    /// Open loop: messages per second over all publishers; `None`: closed loop.
    pub rate_per_sec: Option<f64>,
    pub inflight: Option<usize>,
    pub limit: Option<u64>,
    pub duration_secs: Option<f64>,
    pub preset: Option<String>,
    pub scale: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub connected: u64,
    pub connect_failed: u64,
    pub subscribed: u64,
    pub published: u64,
    pub acked: u64,
    pub received: u64,
    pub disconnected: u64,
    /// Per-stream accounting (not for shared subscriptions, see `streams`).
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Publisher -> subscriber streams accounted.
    pub streams: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub pub_per_sec: f64,
    pub recv_per_sec: f64,
    pub connect_per_sec: f64,
    /// Seconds from the first publish to the last publish.
    pub publish_secs: f64,
    /// Seconds from the first publish to the last receive.
    pub receive_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        (!histogram.is_empty()).then(|| Percentiles {
            count: histogram.len(),
            min_ns: histogram.min(),
            mean_ns: histogram.mean(),
            p50_ns: histogram.value_at_quantile(0.50),
            p90_ns: histogram.value_at_quantile(0.90),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        })
    }
}

/// Totals at one second of the run, and the rates over that second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub second: u64,
    pub connected: u64,
    pub subscribed: u64,
    pub published: u64,
    pub received: u64,
    pub conn_rate: f64,
    pub pub_rate: f64,
    pub recv_rate: f64,
    /// Mean end-to-end latency of the messages received in that second.
    pub latency_mean_ns: Option<f64>,
}

impl ConfigEcho {
    pub fn of(plan: &Plan) -> ConfigEcho {
        let publish = plan.publish.as_ref();
        let subscribe = plan.subscribe.as_ref();
        ConfigEcho {
            mode: plan.mode,
            hosts: plan.hosts.iter().map(ToString::to_string).collect(),
            tls: plan.tls.is_some(),
            version: plan.version.level(),
            publishers: plan.clients,
            subscribers: plan.subscribers,
            pub_topic: publish.map(|p| p.topic.clone()),
            sub_topic: subscribe.map(|s| s.topic.clone()),
            pub_qos: publish.map(|p| p.qos.as_u8()),
            sub_qos: subscribe.map(|s| s.qos.as_u8()),
            payload_bytes: publish.map(|p| p.payload_bytes),
            rate_per_sec: publish.and_then(|p| match p.pacing {
                Pacing::Closed => None,
                Pacing::Open { interval_ns } => {
                    Some(plan.clients as f64 * 1e9 / interval_ns as f64)
                }
            }),
            inflight: publish.map(|p| p.inflight),
            limit: publish.and_then(|p| p.limit),
            duration_secs: plan.duration.map(|d| d.as_secs_f64()),
            preset: plan.preset.as_ref().map(|(name, _)| name.clone()),
            scale: plan.preset.as_ref().map(|(_, scale)| *scale),
        }
    }
}

impl Totals {
    pub fn add_streams(&mut self, counts: &StreamCounts) {
        self.lost += counts.lost;
        self.duplicates += counts.duplicates;
        self.reordered += counts.reordered;
        self.streams += 1;
    }
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Report {
    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let r = &self.rates;
        let mut s = String::new();
        let _ = writeln!(s, "== ringmq-bench {:?} summary ==", self.config.mode);
        let _ = writeln!(
            s,
            "connections: {} ok, {} failed, {} subscribed, {} dropped during the run",
            t.connected, t.connect_failed, t.subscribed, t.disconnected
        );
        if t.published > 0 || t.received > 0 {
            let _ = writeln!(
                s,
                "messages: {} published ({:.0}/s over {:.2}s), {} acked, {} received ({:.0}/s over {:.2}s)",
                t.published,
                r.pub_per_sec,
                r.publish_secs,
                t.acked,
                t.received,
                r.recv_per_sec,
                r.receive_secs
            );
            let _ = writeln!(
                s,
                "streams: {} accounted, lost {}, duplicates {}, reordered {}",
                t.streams, t.lost, t.duplicates, t.reordered
            );
        }
        if r.connect_per_sec > 0.0 {
            let _ = writeln!(s, "connect rate: {:.0}/s", r.connect_per_sec);
        }
        for (name, latency) in [
            ("e2e latency", &self.latency),
            ("ack latency", &self.ack_latency),
        ] {
            if let Some(p) = latency {
                let _ = writeln!(
                    s,
                    "{name} (ms, n={}): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                    p.count,
                    ms(p.p50_ns),
                    ms(p.p90_ns),
                    ms(p.p99_ns),
                    ms(p.p999_ns),
                    ms(p.max_ns),
                    p.mean_ns / 1e6
                );
            }
        }
        if let Some(error) = &self.first_error {
            let _ = writeln!(s, "first error: {error}");
        }
        s
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

/// emqtt-bench's elapsed-time prefix: `59s`, `1m2s`, `1h0m5s`.
pub fn elapsed(secs: u64) -> String {
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_report() -> Report {
        let mut histogram = crate::stats::histogram();
        for v in 1..=1000u64 {
            histogram.record(v * 1000).unwrap();
        }
        Report {
            tool: String::from("ringmq-bench"),
            config: ConfigEcho {
                mode: Mode::Pubsub,
                hosts: vec![String::from("127.0.0.1:1883")],
                tls: false,
                version: 5,
                publishers: 4,
                subscribers: 4,
                pub_topic: Some(String::from("bench/%i")),
                sub_topic: Some(String::from("bench/%i")),
                pub_qos: Some(1),
                sub_qos: Some(1),
                payload_bytes: Some(64),
                rate_per_sec: Some(20000.0),
                inflight: Some(16),
                limit: Some(2000),
                duration_secs: None,
                preset: None,
                scale: None,
            },
            totals: Totals {
                connected: 8,
                subscribed: 4,
                published: 8000,
                acked: 8000,
                received: 8000,
                streams: 4,
                ..Totals::default()
            },
            rates: Rates {
                pub_per_sec: 20000.0,
                recv_per_sec: 19990.5,
                connect_per_sec: 0.0,
                publish_secs: 0.4,
                receive_secs: 0.41,
            },
            latency: Percentiles::of(&histogram),
            ack_latency: None,
            per_second: vec![Sample {
                second: 1,
                published: 8000,
                received: 8000,
                pub_rate: 8000.0,
                recv_rate: 8000.0,
                latency_mean_ns: Some(500_000.0),
                ..Sample::default()
            }],
            first_error: None,
        }
    }

    #[test]
    fn json_round_trips() {
        let report = sample_report();
        let json = report.to_json().unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["config"]["mode"], "pubsub");
        assert_eq!(value["totals"]["received"], 8000);
        assert_eq!(value["latency"]["p50_ns"], 500_223);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let p = sample_report().latency.unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min_ns, 1000);
        assert!(p.p99_ns >= 989_000 && p.p99_ns <= 991_000, "{}", p.p99_ns);
        assert!(
            p.max_ns >= 1_000_000 && p.max_ns < 1_001_000,
            "{}",
            p.max_ns
        );
        assert!(Percentiles::of(&crate::stats::histogram()).is_none());
    }

    #[test]
    fn summary_names_the_figures() {
        let summary = sample_report().summary();
        assert!(summary.contains("8000 received"), "{summary}");
        assert!(summary.contains("p99.9"), "{summary}");
        assert!(
            summary.contains("lost 0, duplicates 0, reordered 0"),
            "{summary}"
        );
    }

    #[test]
    fn elapsed_reads_like_emqtt_bench() {
        assert_eq!(elapsed(0), "0s");
        assert_eq!(elapsed(59), "59s");
        assert_eq!(elapsed(62), "1m2s");
        assert_eq!(elapsed(3605), "1h0m5s");
    }
}
