//! The main thread's side of a run: starts the load shards, prints emqtt-bench's per-second
//! lines, moves the run through its phases (connect, publish, drain), then gathers the shards'
//! measurements into the report.

use crate::clock;
use crate::plan::{Mode, Plan};
use crate::report::{ConfigEcho, Percentiles, Rates, Report, Sample, Totals, elapsed};
use crate::stats::{Counters, Shared, histogram};
use anyhow::Context;
use hdrhistogram::Histogram;
use shards::{CpuSet, RuntimeConfig, ShardCount, Topology};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TICK: Duration = Duration::from_millis(50);
/// The drain ends early once nothing more arrived for this long.
const QUIET_NS: u64 = 500_000_000;

/// Everything a finished run measured.
pub struct Outcome {
    pub report: Report,
    pub latency: Histogram<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Connecting,
    Publishing { until_ns: Option<u64> },
    Holding { until_ns: Option<u64> },
    Draining { since_ns: u64 },
    Done,
}

pub fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone()).context("signal handler")?;
    }
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new(&plan, clock::now_ns()));
    let config = RuntimeConfig {
        topology: Topology {
            shards: plan.threads.map_or(ShardCount::Auto, ShardCount::Count),
            cpus: CpuSet::All,
            pin: plan.pin,
        },
        // Load shards never mail each other.
        mailbox_capacity: 1,
        listeners: Vec::new(),
        name: String::from("bench"),
        spin_before_park: plan.spin,
        ..RuntimeConfig::default()
    };
    let (entry_plan, entry_shared) = (plan.clone(), shared.clone());
    let runtime = shards::start(config, move |context| {
        crate::shard::main(context, entry_plan.clone(), entry_shared.clone())
    })
    .context("starting the load shards")?;
    let samples = supervise(&plan, &shared, &interrupted);
    runtime.handle().shutdown();
    runtime.join().context("a load shard failed")?;
    Ok(outcome(&plan, &shared, samples))
}

fn supervise(plan: &Plan, shared: &Shared, interrupted: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut phase = Phase::Connecting;
    let mut last = Snapshot::take(shared);
    let mut next_second = 1u64;
    let mut last_received = (0u64, shared.start_ns);
    while phase != Phase::Done {
        std::thread::sleep(TICK);
        let now = clock::now_ns();
        if now - shared.start_ns >= next_second * 1_000_000_000 {
            let snapshot = Snapshot::take(shared);
            let sample = snapshot.sample(&last, next_second);
            if !plan.quiet {
                print_lines(&sample, &snapshot, &last);
            }
            samples.push(sample);
            last = snapshot;
            next_second += 1;
        }
        let received =
            Counters::get(&shared.counters.received) + Counters::get(&shared.counters.acked);
        if received != last_received.0 {
            last_received = (received, now);
        }
        if interrupted.load(Ordering::Relaxed) && !matches!(phase, Phase::Draining { .. }) {
            phase = stop(shared, now);
        }
        phase = advance(phase, plan, shared, now, last_received.1);
    }
    samples
}

fn stop(shared: &Shared, now: u64) -> Phase {
    shared.stop.store(true, Ordering::Relaxed);
    Phase::Draining { since_ns: now }
}

fn advance(phase: Phase, plan: &Plan, shared: &Shared, now: u64, last_arrival_ns: u64) -> Phase {
    let c = &shared.counters;
    let deadline = |from: u64| plan.duration.map(|d| from + d.as_nanos() as u64);
    match phase {
        Phase::Connecting => {
            let settled = Counters::get(&c.connected) + Counters::get(&c.connect_failed);
            let clients = (plan.clients + plan.subscribers) as u64;
            let subscribed = Counters::get(&c.subscribed) + Counters::get(&c.connect_failed);
            if settled < clients || subscribed < plan.subscribers as u64 {
                return phase;
            }
            if plan.publish.is_some() {
                shared.go_ns.store(now, Ordering::Release);
                Phase::Publishing {
                    until_ns: deadline(now),
                }
            } else {
                Phase::Holding {
                    until_ns: deadline(now),
                }
            }
        }
        Phase::Publishing { until_ns } => {
            let done = Counters::get(&c.publishers_done) >= plan.clients as u64;
            if done || until_ns.is_some_and(|t| now >= t) {
                stop(shared, now)
            } else {
                phase
            }
        }
        Phase::Holding { until_ns } if until_ns.is_some_and(|t| now >= t) => Phase::Done,
        Phase::Holding { .. } => phase,
        Phase::Draining { since_ns } => {
            let quiet = now.saturating_sub(last_arrival_ns.max(since_ns)) >= QUIET_NS;
            let acked_all = Counters::get(&c.acked) >= Counters::get(&c.published)
                || plan.publish.as_ref().is_none_or(|p| p.qos.as_u8() == 0);
            let out_of_time = now - since_ns >= plan.drain.as_nanos() as u64;
            if (quiet && acked_all) || out_of_time || plan.mode == Mode::Conn {
                Phase::Done
            } else {
                phase
            }
        }
        Phase::Done => Phase::Done,
    }
}

/// The counters at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    connected: u64,
    subscribed: u64,
    published: u64,
    received: u64,
    latency_sum_ns: u64,
    latency_count: u64,
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        let c = &shared.counters;
        Snapshot {
            connected: Counters::get(&c.connected),
            subscribed: Counters::get(&c.subscribed),
            published: Counters::get(&c.published),
            received: Counters::get(&c.received),
            latency_sum_ns: Counters::get(&c.latency_sum_ns),
            latency_count: Counters::get(&c.latency_count),
        }
    }

    fn sample(&self, last: &Snapshot, second: u64) -> Sample {
        let count = self.latency_count - last.latency_count;
        Sample {
            second,
            connected: self.connected,
            subscribed: self.subscribed,
            published: self.published,
            received: self.received,
            conn_rate: (self.connected - last.connected) as f64,
            pub_rate: (self.published - last.published) as f64,
            recv_rate: (self.received - last.received) as f64,
            latency_mean_ns: (count > 0)
                .then(|| (self.latency_sum_ns - last.latency_sum_ns) as f64 / count as f64),
        }
    }
}

fn print_lines(sample: &Sample, now: &Snapshot, last: &Snapshot) {
    let at = elapsed(sample.second);
    let lines = [
        ("conn", now.connected, now.connected - last.connected),
        ("sub", now.subscribed, now.subscribed - last.subscribed),
        ("pub", now.published, now.published - last.published),
        ("recv", now.received, now.received - last.received),
    ];
    for (name, total, delta) in lines {
        if delta > 0 {
            println!("{at} {name} total={total} rate={:.2}/sec", delta as f64);
        }
    }
    if let Some(mean) = sample.latency_mean_ns {
        println!("{at} e2e_latency avg={:.3}ms", mean / 1e6);
    }
}

fn outcome(plan: &Plan, shared: &Shared, samples: Vec<Sample>) -> Outcome {
    let mut latency = histogram();
    let mut ack_latency = histogram();
    let mut totals = totals(shared);
    let results = shared
        .results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    for result in &results {
        // Same bounds everywhere: adding cannot fail.
        let _ = latency.add(&result.latency);
        let _ = ack_latency.add(&result.ack_latency);
        for (publisher, tracker) in &result.streams {
            let index = u64::from(*publisher).checked_sub(plan.start_number);
            let published = index
                .and_then(|i| shared.published_by.get(i as usize))
                .filter(|_| plan.mode == Mode::Pubsub)
                .map(|p| p.load(Ordering::Relaxed));
            totals.add_streams(&tracker.finish(published));
        }
    }
    let report = Report {
        tool: String::from("ringmq-bench"),
        config: ConfigEcho::of(plan),
        totals,
        rates: rates(shared, &totals),
        latency: Percentiles::of(&latency),
        ack_latency: Percentiles::of(&ack_latency),
        per_second: samples,
        first_error: shared.first_error.lock().ok().and_then(|e| e.clone()),
    };
    Outcome { report, latency }
}

fn totals(shared: &Shared) -> Totals {
    let c = &shared.counters;
    Totals {
        connected: Counters::get(&c.connected),
        connect_failed: Counters::get(&c.connect_failed),
        subscribed: Counters::get(&c.subscribed),
        published: Counters::get(&c.published),
        acked: Counters::get(&c.acked),
        received: Counters::get(&c.received),
        disconnected: Counters::get(&c.disconnected),
        ..Totals::default()
    }
}

fn rates(shared: &Shared, totals: &Totals) -> Rates {
    let go = shared.go_ns.load(Ordering::Relaxed);
    let secs = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
    let per_sec = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let publish_secs = if go > 0 {
        secs(go, shared.last_published_ns.load(Ordering::Relaxed))
    } else {
        0.0
    };
    let receive_secs = if go > 0 {
        secs(go, shared.last_received_ns.load(Ordering::Relaxed))
    } else {
        secs(
            shared.start_ns,
            shared.last_received_ns.load(Ordering::Relaxed),
        )
    };
    let connect_secs = secs(
        shared.start_ns,
        shared.last_connected_ns.load(Ordering::Relaxed),
    );
    Rates {
        pub_per_sec: per_sec(totals.published, publish_secs),
        recv_per_sec: per_sec(totals.received, receive_secs),
        connect_per_sec: per_sec(totals.connected, connect_secs),
        publish_secs,
        receive_secs,
    }
}
