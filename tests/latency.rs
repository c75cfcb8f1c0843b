//! Goal: the delivery latency a user scrapes agrees with what a real client on the same host
//! measures end to end — never more than the client's, and short of it by no more than the
//! loopback hops the broker cannot see (a round trip measured in the same test) — and it shows
//! the delay a busy shard adds.
//!
//! Only relations between measurements taken in the same run are asserted, never absolute
//! times: the machine running the suite may be loaded by other work.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{RawClient, TestBroker, admin_get, metric};
use ringmq::protocol::{Packet, QoS, Version};

/// Messages per probe: enough that p99 is the 10th-highest value, not one outlier.
const PROBE_MESSAGES: usize = 1000;
/// The probe's fixed rate: one message per millisecond.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// Microsecond latencies with nearest-rank quantiles, the definition HDR uses.
struct Samples(Vec<u64>);

impl Samples {
    fn quantile(&self, q: f64) -> u64 {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn mean(&self) -> u64 {
        self.0.iter().sum::<u64>() / self.0.len() as u64
    }
}

/// The broker's view of the probe's deliveries: quantiles from the gauges, the mean from the
/// histogram's exact `_sum`, in microseconds.
struct Scraped {
    p50: u64,
    p99: u64,
    mean: u64,
}

/// What a probe measured: the client's end-to-end latencies and the loopback round trips taken
/// between its messages.
///
/// The round trip is a PINGREQ -> PINGRESP on the publisher's connection: the same loopback hops,
/// thread wake-ups and client-side encoding and decoding as the part of a delivery the broker
/// cannot see (the publisher's write until the shard's read completes, the shard's write until
/// the subscriber has decoded), plus a handling of a PINGREQ that is tiny next to them. A round
/// trip between two plain threads would leave out the shard's own wake-up (io_uring completion,
/// task queue) before its read, which is time before the read completion by definition.
struct Probe {
    client: Samples,
    round_trips: Samples,
}

/// Publishes `PROBE_MESSAGES` at `qos` at a fixed rate from a publisher on `shard` to a
/// subscriber on the same shard; each payload carries its send time, and the subscriber (a thread
/// blocked in read) measures each message's latency as it arrives. A loopback round trip is
/// timed before each message on the publisher's connection (same shard, same load).
fn probe(broker: &TestBroker, qos: QoS, topic: &str) -> Probe {
    let addr = broker.shard(0);
    let (mut subscriber, _) =
        RawClient::connect(addr, Version::V3_1_1, &format!("sub-{topic}"), true);
    subscriber.subscribe(1, &[(topic, QoS::AtLeastOnce)]);
    let (mut publisher, _) =
        RawClient::connect(addr, Version::V3_1_1, &format!("pub-{topic}"), true);
    let base = Instant::now();
    let receiver = thread::spawn(move || {
        let mut latencies = Vec::with_capacity(PROBE_MESSAGES);
        for _ in 0..PROBE_MESSAGES {
            let publish = subscriber.recv_publish();
            let arrived = base.elapsed().as_micros() as u64;
            subscriber.ack(&publish);
            let sent = u64::from_le_bytes(publish.payload[..8].try_into().unwrap());
            latencies.push(arrived.saturating_sub(sent));
        }
        latencies
    });
    let mut round_trips = Vec::with_capacity(PROBE_MESSAGES);
    let mut next = Instant::now();
    for n in 0..PROBE_MESSAGES {
        next += PROBE_INTERVAL;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let ping = Instant::now();
        publisher.send(&Packet::PingReq);
        assert!(matches!(publisher.recv(), Packet::PingResp));
        round_trips.push(ping.elapsed().as_micros() as u64);
        let packet_id = (qos != QoS::AtMostOnce).then_some((n % 60_000 + 1) as u16);
        let sent = base.elapsed().as_micros() as u64;
        publisher.publish(topic, &sent.to_le_bytes(), qos, false, packet_id);
        if qos == QoS::AtLeastOnce {
            // The PUBACK, so the publisher's window never fills.
            assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        }
    }
    let client = receiver.join().expect("subscriber received every message");
    Probe {
        client: Samples(client),
        round_trips: Samples(round_trips),
    }
}

/// The broker's view of the probe's deliveries on shard 0 once `count` are in the snapshot.
fn scrape(broker: &TestBroker, qos: QoS, count: usize) -> Scraped {
    let admin = broker.admin_addr().expect("admin listener");
    let labels = format!("shard=\"0\",qos=\"{}\",path=\"local\"", qos.as_u8());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = admin_get(admin, "/metrics");
        let recorded = metric(
            &metrics,
            &format!("ringmq_delivery_latency_seconds_count{{{labels}}} "),
        );
        if recorded as usize >= count {
            assert_eq!(recorded as usize, count, "one value per delivery");
            let quantile = |q: &str| {
                let name = "ringmq_delivery_latency_quantile_seconds";
                let seconds = metric(&metrics, &format!("{name}{{{labels},quantile=\"{q}\"}} "));
                (seconds * 1e6).round() as u64
            };
            let sum = metric(
                &metrics,
                &format!("ringmq_delivery_latency_seconds_sum{{{labels}}} "),
            );
            return Scraped {
                p50: quantile("0.5"),
                p99: quantile("0.99"),
                mean: (sum * 1e6 / count as f64).round() as u64,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{count} deliveries never recorded:\n{metrics}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `broker` is at most `client`, give or take what the two measurements cannot avoid: HDR
/// reports a value's bucket to 0.1%, and the broker dates the end of a delivery when its send
/// call returns, while on loopback the kernel hands the bytes to the subscriber inside that call
/// (the receiver's TCP path, its wake-up and the ACK all run in the sender's system call), so a
/// subscriber on the other core may have read and dated them first. A round trip at the same
/// quantile contains such a send call and bounds that overlap.
fn assert_not_above(what: &str, broker: u64, client: u64, round_trip: u64) {
    let slack = client / 1000 + 1 + round_trip;
    assert!(
        broker <= client + slack,
        "{what}: broker {broker} µs > client {client} µs (+{slack} µs slack)"
    );
}

#[test]
fn scraped_delivery_latency_agrees_with_a_client_on_the_same_host() {
    let broker = TestBroker::start(4);
    let probe = probe(&broker, QoS::AtMostOnce, "latency/probe");
    let scraped = scrape(&broker, QoS::AtMostOnce, PROBE_MESSAGES);
    let (client, rtt) = (&probe.client, &probe.round_trips);
    let report = format!(
        "broker p50 {} p99 {} mean {}; client p50 {} p99 {} mean {}; \
         round trip p50 {} p99 {} mean {} (µs)",
        scraped.p50,
        scraped.p99,
        scraped.mean,
        client.quantile(0.5),
        client.quantile(0.99),
        client.mean(),
        rtt.quantile(0.5),
        rtt.quantile(0.99),
        rtt.mean(),
    );
    println!("{report}");
    assert!(scraped.p50 > 0 && scraped.p99 > 0, "{report}");
    assert_not_above("p50", scraped.p50, client.quantile(0.5), rtt.quantile(0.5));
    assert_not_above(
        "p99",
        scraped.p99,
        client.quantile(0.99),
        rtt.quantile(0.99),
    );
    assert_not_above("mean", scraped.mean, client.mean(), rtt.mean());
    // What the broker cannot see is the publisher's hop in (write -> the shard's read completes)
    // and the subscriber's hop out (the shard's write completes -> the subscriber has decoded):
    // a round trip's parts (see `Probe`). The factor 2 is the margin: the probe and the round
    // trips, taken a millisecond apart, do not meet a loaded machine's scheduler in the same
    // state, and a delivery wakes two client threads where a ping wakes one.
    //
    // Checked at the median only. Not at p99 nor on the mean: there the client's figure is its
    // own threads waiting for a core. One stall of the subscriber's thread (tens of ms on a busy
    // machine) delays every message that arrives during it, while the pings run on the
    // publisher's thread and do not see it, so a tail or mean relation would test the scheduler
    // rather than the broker. (The broker's p99 and mean are still checked not to exceed the
    // client's, above.)
    assert!(
        client.quantile(0.5).saturating_sub(scraped.p50) <= 2 * rtt.quantile(0.5),
        "the broker misses more than a round trip at p50: {report}"
    );
    broker.shutdown();
}

/// Floods shard 0 with QoS 0 publishes nobody subscribes to, until `stop`: its reader task hands
/// the shard batches of up to 1024 frames in a row, so other connections' tasks wait their turn.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let (mut flooder, _) = RawClient::connect(addr, Version::V3_1_1, "flooder", true);
        // One QoS 0 PUBLISH to `flood/nobody` with 32 bytes of payload, by hand (3.1.1 §3.3):
        // the whole burst goes out in one write, so the shard always has a full read waiting.
        let topic = b"flood/nobody";
        let mut publish = vec![0x30, (2 + topic.len() + 32) as u8, 0, topic.len() as u8];
        publish.extend_from_slice(topic);
        publish.extend_from_slice(&[0; 32]);
        let burst = publish.repeat(2048);
        let mut bursts = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            flooder.send_raw(&burst);
            bursts += 1;
        }
        bursts
    })
}

#[test]
fn a_busy_shard_shows_in_the_delivery_latency() {
    let broker = TestBroker::start(4);
    // Quiet: the probe at QoS 0. Busy: the probe at QoS 1 while a flood keeps shard 0 busy.
    // Delivered QoS labels the two phases' histograms apart.
    let quiet = probe(&broker, QoS::AtMostOnce, "latency/quiet");
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(broker.shard(0), Arc::clone(&stop));
    let busy = probe(&broker, QoS::AtLeastOnce, "latency/busy");
    stop.store(true, Ordering::Relaxed);
    assert!(flooder.join().unwrap() > 0, "the flood ran");
    let quiet_broker = scrape(&broker, QoS::AtMostOnce, PROBE_MESSAGES).p50;
    let busy_broker = scrape(&broker, QoS::AtLeastOnce, PROBE_MESSAGES).p50;
    let (quiet_client, busy_client) = (quiet.client.quantile(0.5), busy.client.quantile(0.5));
    let (quiet_rtt, busy_rtt) = (
        quiet.round_trips.quantile(0.5),
        busy.round_trips.quantile(0.5),
    );
    let report = format!(
        "p50 quiet: broker {quiet_broker} client {quiet_client} round trip {quiet_rtt}; \
         busy: broker {busy_broker} client {busy_client} round trip {busy_rtt} (µs)"
    );
    println!("{report}");
    // The flood must have slowed the client down, or this test shows nothing.
    assert!(
        busy_client > quiet_client,
        "the flood added no delay: {report}"
    );
    assert_not_above("busy p50", busy_broker, busy_client, busy_rtt);
    // The added delay shows in the broker's histogram: the probe's deliveries wait for the
    // shard's writer behind the flood's batches of 1024 frames, which dwarfs a quiet delivery
    // (the margin of 2 keeps a quiet phase slowed by other work on the machine from passing
    // for a busy shard).
    assert!(
        busy_broker >= 2 * quiet_broker,
        "the broker does not show the busy shard: {report}"
    );
    // And what it does not show is no more than in the quiet case: a round trip's worth (with
    // the margin of the test above), the round trip being slowed by the flood too. Time the
    // probe's bytes wait in the socket for the busy shard to read them is part of that round
    // trip's share: it comes before the read completion (see docs/OBSERVABILITY.md on kernel
    // timestamps).
    assert!(
        busy_client.saturating_sub(busy_broker) <= 2 * busy_rtt,
        "the broker misses more than a round trip of the busy delay: {report}"
    );
    broker.shutdown();
}
