//! Goal: the delivery latency a user scrapes agrees with what a real client on the same host
//! measures end to end — never more than the client's, and short of it by no more than the
//! loopback hops the broker cannot see (a round trip measured in the same test) — and it shows
//! the delay a busy shard adds. With kernel receive timestamps on, it also holds the time bytes
//! waited in the socket for a busy shard, and agrees with a closed-loop client at saturation.
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

/// Held for the whole of each test: the tests compare time measured by the broker with time
/// measured by a client, and two of them flooding a shard at once on a small machine slow each
/// other's quiet phases and probes in ways neither side can see.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let _one_at_a_time = one_at_a_time();
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

/// The p50s (µs) of a quiet phase and a busy one on shard 0, and a line that reports them.
struct Phases {
    quiet_broker: u64,
    busy_broker: u64,
    busy_client: u64,
    quiet_rtt: u64,
    /// Shard 0's socket wait since start, after each phase (0 without kernel timestamps).
    quiet_wait: u64,
    busy_wait: u64,
    report: String,
}

/// Quiet: the probe at QoS 0. Busy: the probe at QoS 1 while a flood keeps shard 0 busy.
/// Delivered QoS labels the two phases' histograms apart. Checks that the flood slowed the
/// client down and that the broker's busy p50 is not above the client's.
fn quiet_then_busy(broker: &TestBroker) -> Phases {
    let quiet = probe(broker, QoS::AtMostOnce, "latency/quiet");
    let (_, quiet_wait) = socket_wait(broker, "0.5");
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(broker.shard(0), Arc::clone(&stop));
    let busy = probe(broker, QoS::AtLeastOnce, "latency/busy");
    stop.store(true, Ordering::Relaxed);
    assert!(flooder.join().unwrap() > 0, "the flood ran");
    let (_, busy_wait) = socket_wait(broker, "0.5");
    let quiet_broker = scrape(broker, QoS::AtMostOnce, PROBE_MESSAGES).p50;
    let busy_broker = scrape(broker, QoS::AtLeastOnce, PROBE_MESSAGES).p50;
    let (quiet_client, busy_client) = (quiet.client.quantile(0.5), busy.client.quantile(0.5));
    let (quiet_rtt, busy_rtt) = (
        quiet.round_trips.quantile(0.5),
        busy.round_trips.quantile(0.5),
    );
    let report = format!(
        "p50 quiet: broker {quiet_broker} client {quiet_client} round trip {quiet_rtt} \
         socket wait {quiet_wait}; busy: broker {busy_broker} client {busy_client} \
         round trip {busy_rtt} socket wait {busy_wait} (µs; socket wait since start)"
    );
    println!("{report}");
    // The flood must have slowed the client down, or the phases show nothing.
    assert!(
        busy_client > quiet_client,
        "the flood added no delay: {report}"
    );
    assert_not_above("busy p50", busy_broker, busy_client, busy_rtt);
    Phases {
        quiet_broker,
        busy_broker,
        busy_client,
        quiet_rtt,
        quiet_wait,
        busy_wait,
        report,
    }
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
    let _one_at_a_time = one_at_a_time();
    // On a small machine loaded by other work, the flood's client may not get the CPU to keep
    // shard 0 busy through a whole probe: up to three tries, each on a broker of its own (the
    // histograms count from the start), and every try's figures in the failure.
    let mut reports = Vec::new();
    for _ in 0..3 {
        let broker = TestBroker::start(4);
        let Phases {
            quiet_broker,
            busy_broker,
            report,
            ..
        } = quiet_then_busy(&broker);
        broker.shutdown();
        // The added delay shows in the broker's histogram: the probe's deliveries wait for the
        // shard's writer behind the flood's batches of 1024 frames, which dwarfs a quiet
        // delivery (the margin of 2 keeps a quiet phase slowed by other work on the machine
        // from passing for a busy shard). What it cannot show without kernel timestamps is the
        // time the probe's bytes wait in the socket before the busy shard reads them: on this
        // 2-core machine 1.4-1.8 ms of a 2.4 ms client delay, more than the two busy round
        // trips this test once allowed for it. With kernel timestamps the histogram holds that
        // wait too, and what it misses is bounded there
        // (`with_kernel_timestamps_a_busy_shard_shows_the_socket_wait`).
        if busy_broker >= 2 * quiet_broker {
            return;
        }
        reports.push(report);
    }
    panic!(
        "in 3 tries the broker did not show the busy shard's delay:\n{}",
        reports.join("\n")
    );
}

/// A broker like `TestBroker::start(4)` that dates plain TCP bytes by the kernel's receive
/// timestamp (`observability.kernel_timestamps`).
fn broker_with_kernel_timestamps() -> TestBroker {
    let mut config = common::test_config(4);
    config.observability.kernel_timestamps = true;
    TestBroker::with_config(config)
}

/// A quantile of shard 0's socket wait (kernel stamp -> read completion), in microseconds.
fn socket_wait(broker: &TestBroker, quantile: &str) -> (u64, u64) {
    let metrics = admin_get(broker.admin_addr().expect("admin listener"), "/metrics");
    let count = metric(&metrics, "ringmq_socket_wait_seconds_count{shard=\"0\"} ");
    let name = "ringmq_socket_wait_quantile_seconds";
    let seconds = metric(
        &metrics,
        &format!("{name}{{shard=\"0\",quantile=\"{quantile}\"}} "),
    );
    (count as u64, (seconds * 1e6).round() as u64)
}

/// Messages of the saturating run, and how many may be between the publisher's write and the
/// subscriber's read at once (a closed loop: the publisher waits when that many are out).
const SATURATED_MESSAGES: u64 = 40_000;
const SATURATED_WINDOW: u64 = 500;
/// PUBLISH frames per write of the saturating publisher.
const SATURATED_BURST: u64 = 100;

/// One QoS 0 PUBLISH to `topic` by hand (3.1.1 §3.3), its payload `sent`: the frame the
/// publisher writes and, unchanged, the one a 3.1.1 subscriber gets.
fn publish_frame(topic: &str, sent: u64) -> Vec<u8> {
    let mut publish = vec![0x30, (2 + topic.len() + 8) as u8, 0, topic.len() as u8];
    publish.extend_from_slice(topic.as_bytes());
    publish.extend_from_slice(&sent.to_le_bytes());
    publish
}

/// A closed loop that keeps shard 0 saturated: a publisher on it writes bursts of QoS 0
/// PUBLISHes carrying their send time while fewer than `SATURATED_WINDOW` are out, and a
/// subscriber on the same shard measures each one's latency, reading the frames straight off
/// its socket (no decoder: it must keep up with the shard, so that the messages waiting are in
/// the publisher's socket, in front of the shard, where only the kernel's receive timestamp
/// sees them; the window is far below the socket's receive buffer).
fn saturate(broker: &TestBroker, topic: &'static str) -> Samples {
    let addr = broker.shard(0);
    let (mut subscriber, _) = RawClient::connect(addr, Version::V3_1_1, "sat-sub", true);
    subscriber.subscribe(1, &[(topic, QoS::AtMostOnce)]);
    let (mut publisher, _) = RawClient::connect(addr, Version::V3_1_1, "sat-pub", true);
    let base = Instant::now();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let frame_len = publish_frame(topic, 0).len();
    let receiver = {
        let received = Arc::clone(&received);
        let mut stream = subscriber.stream.try_clone().unwrap();
        thread::spawn(move || {
            use std::io::Read;
            let mut latencies = Vec::with_capacity(SATURATED_MESSAGES as usize);
            let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
            while (latencies.len() as u64) < SATURATED_MESSAGES {
                let n = stream.read(&mut buf[filled..]).expect("subscriber read");
                assert!(n > 0, "the broker closed the subscriber");
                let arrived = base.elapsed().as_micros() as u64;
                filled += n;
                let whole = filled / frame_len * frame_len;
                for frame in buf[..whole].chunks_exact(frame_len) {
                    assert_eq!(
                        frame[..2],
                        publish_frame(topic, 0)[..2],
                        "not the probe's frame"
                    );
                    let sent = u64::from_le_bytes(frame[frame_len - 8..].try_into().unwrap());
                    latencies.push(arrived.saturating_sub(sent));
                }
                buf.copy_within(whole..filled, 0);
                filled -= whole;
                received.store(latencies.len() as u64, Ordering::Release);
            }
            latencies
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while sent < SATURATED_MESSAGES {
        assert!(
            Instant::now() < deadline,
            "the saturating run took over 60 s"
        );
        if sent - received.load(Ordering::Acquire) + SATURATED_BURST > SATURATED_WINDOW {
            thread::yield_now();
            continue;
        }
        let stamp = base.elapsed().as_micros() as u64;
        publisher.send_raw(&publish_frame(topic, stamp).repeat(SATURATED_BURST as usize));
        sent += SATURATED_BURST;
    }
    Samples(receiver.join().expect("subscriber received every message"))
}

/// Round trips (PINGREQ -> PINGRESP) on an idle connection to shard 0: the loopback floor.
fn round_trips(broker: &TestBroker) -> Samples {
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "floor", true);
    Samples(
        (0..200)
            .map(|_| {
                let ping = Instant::now();
                client.send(&Packet::PingReq);
                assert!(matches!(client.recv(), Packet::PingResp));
                ping.elapsed().as_micros() as u64
            })
            .collect(),
    )
}

#[test]
fn with_kernel_timestamps_a_saturated_shard_agrees_with_the_client() {
    let _one_at_a_time = one_at_a_time();
    let broker = broker_with_kernel_timestamps();
    let floor = round_trips(&broker);
    let client = saturate(&broker, "latency/saturated");
    let scraped = scrape(&broker, QoS::AtMostOnce, SATURATED_MESSAGES as usize);
    let (reads_stamped, _) = socket_wait(&broker, "0.5");
    let (client_p50, floor_p50) = (client.quantile(0.5), floor.quantile(0.5));
    let report = format!(
        "broker p50 {} p99 {} mean {}; client p50 {client_p50} p99 {} mean {}; \
         round trip p50 {floor_p50}; reads stamped {reads_stamped} (µs)",
        scraped.p50,
        scraped.p99,
        scraped.mean,
        client.quantile(0.99),
        client.mean(),
    );
    println!("{report}");
    assert!(scraped.p50 > 0 && scraped.p99 > 0, "{report}");
    assert!(
        reads_stamped > 0,
        "no read brought a kernel stamp: {report}"
    );
    // Agreement at the median within the loopback floor (a round trip each way, the margin of
    // the fixed-rate test) and a tenth: the broker dates a whole write's deliveries (up to
    // 16 KiB) when its send returns, and the subscriber on the other core reads the first of
    // them during that send, so either side may come out ahead by part of a write's time.
    let margin = 2 * floor_p50 + client_p50 / 10;
    assert!(
        scraped.p50.abs_diff(client_p50) <= margin,
        "broker and client differ by more than {margin} µs at p50: {report}"
    );
    broker.shutdown();
}

#[test]
fn with_kernel_timestamps_a_busy_shard_shows_the_socket_wait() {
    let _one_at_a_time = one_at_a_time();
    let broker = broker_with_kernel_timestamps();
    let Phases {
        busy_broker,
        busy_client,
        quiet_rtt,
        quiet_wait,
        busy_wait,
        report,
        ..
    } = quiet_then_busy(&broker);
    // The shard's socket wait grew with the flood: bytes waited for it to read them.
    assert!(
        busy_wait >= 2 * quiet_wait.max(1),
        "the socket wait does not show the busy shard: {report}"
    );
    // And the delivery histogram now holds that wait: what it misses of the busy delay is no
    // more than the saturated test's margin (two quiet round trips and a tenth of the client's
    // figure: on a loaded machine the probe's own threads wake late too, which no broker sees),
    // where without kernel timestamps it misses the probe's wait in the socket, most
    // of the busy delay (728 µs seen against 6,269 in a run with the stamp not used as the start).
    let margin = 2 * quiet_rtt + busy_client / 10;
    assert!(
        busy_client.saturating_sub(busy_broker) <= margin,
        "the broker misses more than {margin} µs of the busy delay: {report}"
    );
    broker.shutdown();
}
