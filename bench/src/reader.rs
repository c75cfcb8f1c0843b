//! The reading half of every client: decodes every complete frame of each read, measures and
//! accounts what arrives, frees the publisher's window on acks, and queues the acks the broker is
//! owed. Counters and the writer's wake-up are touched once per read, not per message.

use crate::client::Input;
use crate::clock;
use crate::header::Header;
use crate::link::{Link, response};
use crate::stats::{Counters, ShardLocal, Shared, Streams};
use crate::stream::ReadHalf;
use crate::tracker::Tracker;
use ringmq::protocol::{Packet, QoS};
use std::cell::RefCell;
use std::sync::atomic::Ordering;

/// What a reader updates besides its link.
pub struct Sinks<'a> {
    pub local: &'a ShardLocal,
    pub shared: &'a Shared,
    /// A subscriber's streams; `None` for publishers, plain connections and shared subscriptions
    /// (whose members each see a part of every stream).
    pub streams: Option<&'a RefCell<Streams>>,
    /// Streams start at sequence 0 (the run saw its publishers start) rather than at the first
    /// arrival.
    pub streams_from_zero: bool,
}

#[derive(Default)]
struct Batch {
    received: u64,
    acked: u64,
    latency_sum_ns: u64,
    latency_count: u64,
    wake: bool,
}

/// Runs until the broker closes the connection, it breaks the protocol, or the link is closed.
pub async fn run(mut read: ReadHalf, mut input: Input, link: &Link, sinks: Sinks<'_>) {
    loop {
        let mut batch = Batch::default();
        let now = clock::now_ns();
        let outcome = drain(&mut input, link, &sinks, now, &mut batch);
        flush(&sinks, link, &batch, now);
        if let Err(error) = outcome {
            sinks.shared.error(format!("{error:#}"));
            break;
        }
        if link.closed.get() {
            break;
        }
        match input.fill(&mut read).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    if !sinks.shared.stopping() {
        Counters::add(&sinks.shared.counters.disconnected, 1);
    }
    link.close();
}

fn drain(
    input: &mut Input,
    link: &Link,
    sinks: &Sinks<'_>,
    now: u64,
    batch: &mut Batch,
) -> anyhow::Result<()> {
    let mut latency = sinks.local.latency.borrow_mut();
    let mut streams = sinks.streams.map(RefCell::borrow_mut);
    while let Some(packet) = input.next(link.version)? {
        match packet {
            Packet::Publish(publish) => {
                batch.received += 1;
                if let Some(header) = Header::read(&publish.payload) {
                    if header.sent_ns > 0 && header.sent_ns <= now {
                        let ns = now - header.sent_ns;
                        latency.saturating_record(ns);
                        batch.latency_sum_ns += ns;
                        batch.latency_count += 1;
                    }
                    if let Some(streams) = streams.as_mut() {
                        let first = if sinks.streams_from_zero {
                            0
                        } else {
                            header.seq
                        };
                        streams
                            .entry(header.publisher)
                            .or_insert_with(|| Tracker::new(first))
                            .record(header.seq);
                    }
                }
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => link.queue(&Packet::PubAck(response(id))),
                    (QoS::ExactlyOnce, Some(id)) => link.queue(&Packet::PubRec(response(id))),
                    _ => continue,
                }
                batch.wake = true;
            }
            Packet::PubRel(rel) => {
                link.queue(&Packet::PubComp(response(rel.packet_id)));
                batch.wake = true;
            }
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                if let Some(sent_ns) = link.window.borrow_mut().release(ack.packet_id) {
                    batch.acked += 1;
                    batch.wake = true;
                    if sent_ns <= now {
                        sinks
                            .local
                            .ack_latency
                            .borrow_mut()
                            .saturating_record(now - sent_ns);
                    }
                }
            }
            Packet::PubRec(rec) if link.window.borrow().contains(rec.packet_id) => {
                link.queue(&Packet::PubRel(response(rec.packet_id)));
                batch.wake = true;
            }
            Packet::Disconnect(disconnect) => {
                anyhow::bail!("the broker sent DISCONNECT 0x{:02X}", disconnect.reason.0)
            }
            _ => {}
        }
    }
    Ok(())
}

fn flush(sinks: &Sinks<'_>, link: &Link, batch: &Batch, now: u64) {
    let counters = &sinks.shared.counters;
    Counters::add(&counters.received, batch.received);
    Counters::add(&counters.acked, batch.acked);
    Counters::add(&counters.latency_sum_ns, batch.latency_sum_ns);
    Counters::add(&counters.latency_count, batch.latency_count);
    if batch.received > 0 {
        sinks
            .shared
            .last_received_ns
            .fetch_max(now, Ordering::Relaxed);
    }
    if batch.wake {
        link.wake.notify_one();
    }
}
