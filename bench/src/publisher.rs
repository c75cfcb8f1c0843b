//! The writing half of a publisher. Each turn encodes every message that is due (open loop: by
//! schedule; closed loop: as many as the window allows) into one buffer behind any control
//! packets, and writes it with one call. Open-loop messages carry their *scheduled* send time, so
//! a stalled connection or a full window shows up as latency instead of silently slowing the
//! schedule down (no coordinated omission).

use crate::client::PACKET_BYTES_MAX;
use crate::clock;
use crate::header::Header;
use crate::link::{Link, control_writer};
use crate::plan::{Pacing, PublishPlan};
use crate::stats::{Counters, Shared};
use crate::stream::WriteHalf;
use bytes::BytesMut;
use ringmq::protocol::{self, Packet, PublishProperties, PublishRef, QoS};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One publisher's fixed facts.
pub struct Job<'a> {
    pub index: usize,
    pub publishers: usize,
    pub publisher_id: u32,
    pub topic: String,
    pub plan: &'a PublishPlan,
    pub keepalive_secs: u16,
}

/// Publishes until stopped (or `-L` is reached), then keeps writing control packets (PUBREL)
/// until the link closes.
pub async fn run(mut write: WriteHalf, link: &Link, job: Job<'_>, shared: &Shared) {
    let go_ns = wait_for_go(shared).await;
    if let Err(error) = publish(&mut write, link, &job, shared, go_ns).await {
        shared.error(format!("publisher {}: {error:#}", job.publisher_id));
        link.close();
    }
    Counters::add(&shared.counters.publishers_done, 1);
    if !link.closed.get() {
        control_writer(write, link, job.keepalive_secs).await;
    }
}

async fn wait_for_go(shared: &Shared) -> u64 {
    loop {
        let go = shared.go_ns.load(Ordering::Acquire);
        if go != 0 {
            return go;
        }
        shards::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Where a publisher stands.
struct Cursor {
    seq: u64,
    /// Open loop: when message 0 is due (publishers are spread over one interval).
    first_due_ns: u64,
    last_write_ns: u64,
}

async fn publish(
    write: &mut WriteHalf,
    link: &Link,
    job: &Job<'_>,
    shared: &Shared,
    go_ns: u64,
) -> anyhow::Result<()> {
    let plan = job.plan;
    let mut payload = vec![b'x'; plan.payload_bytes];
    let frame_bytes = plan.payload_bytes + job.topic.len() + 16;
    let batch_max = (plan.batch_bytes / frame_bytes).max(1) as u64;
    let mut out = BytesMut::with_capacity(plan.batch_bytes + frame_bytes);
    let spread = match plan.pacing {
        Pacing::Open { interval_ns } => interval_ns / job.publishers as u64 * job.index as u64,
        Pacing::Closed => 0,
    };
    let mut cursor = Cursor {
        seq: 0,
        first_due_ns: go_ns + spread,
        last_write_ns: go_ns,
    };
    let limit = plan.limit.unwrap_or(u64::MAX);
    while !shared.stopping() && !link.closed.get() && cursor.seq < limit {
        let now = clock::now_ns();
        let due = match plan.pacing {
            Pacing::Closed => batch_max,
            Pacing::Open { interval_ns } if now >= cursor.first_due_ns => {
                ((now - cursor.first_due_ns) / interval_ns + 1).saturating_sub(cursor.seq)
            }
            Pacing::Open { .. } => 0,
        }
        .min(batch_max)
        .min(limit - cursor.seq);
        {
            let mut control = link.control.borrow_mut();
            out.extend_from_slice(&control);
            control.clear();
        }
        let sent = encode_due(&mut out, &mut payload, link, job, &mut cursor, due, now)?;
        if !out.is_empty() {
            write.write_all(&out).await?;
            out.clear();
            cursor.last_write_ns = now;
            Counters::add(&shared.counters.published, sent);
            shared.last_published_ns.fetch_max(now, Ordering::Relaxed);
            if let Some(published) = shared.published_by.get(job.index) {
                published.store(cursor.seq, Ordering::Relaxed);
            }
        }
        if sent == 0 {
            wait(link, job, &mut cursor, now).await;
        } else if plan.pacing == Pacing::Closed {
            // Writes to a socket with room complete at once: let the shard's other clients run.
            futures_lite::future::yield_now().await;
        }
    }
    Ok(())
}

/// Encodes up to `due` messages (fewer if the window fills); returns how many.
fn encode_due(
    out: &mut BytesMut,
    payload: &mut [u8],
    link: &Link,
    job: &Job<'_>,
    cursor: &mut Cursor,
    due: u64,
    now: u64,
) -> anyhow::Result<u64> {
    let plan = job.plan;
    let properties = PublishProperties::default();
    let mut window = link.window.borrow_mut();
    for sent in 0..due {
        let sent_ns = match plan.pacing {
            Pacing::Closed => now,
            Pacing::Open { interval_ns } => cursor.first_due_ns + cursor.seq * interval_ns,
        };
        let packet_id = match plan.qos {
            QoS::AtMostOnce => None,
            _ => match window.take(sent_ns) {
                Some(id) => Some(id),
                None => return Ok(sent),
            },
        };
        Header {
            seq: cursor.seq,
            publisher: job.publisher_id,
            sent_ns,
        }
        .write(payload);
        let publish = PublishRef {
            dup: false,
            qos: plan.qos,
            retain: plan.retain,
            topic: &job.topic,
            packet_id,
            properties: &properties,
            payload,
        };
        protocol::encode_publish(&publish, link.version, out, PACKET_BYTES_MAX)?;
        cursor.seq += 1;
    }
    Ok(due)
}

/// Nothing to send: sleep until the next message is due, or until an ack frees the window or a
/// control packet is queued; ping when the connection was quiet for half the keep-alive.
async fn wait(link: &Link, job: &Job<'_>, cursor: &mut Cursor, now: u64) {
    let keepalive_ns = u64::from(job.keepalive_secs) * 1_000_000_000;
    if keepalive_ns > 0 && now - cursor.last_write_ns >= keepalive_ns / 2 {
        link.queue(&Packet::PingReq);
        cursor.last_write_ns = now;
        return;
    }
    let window_full = job.plan.qos != QoS::AtMostOnce && link.window.borrow().is_full();
    let sleep_ns = match job.plan.pacing {
        Pacing::Open { interval_ns } if !window_full => {
            (cursor.first_due_ns + cursor.seq * interval_ns).saturating_sub(now)
        }
        // Only an ack (or the stop, checked at least every 10 ms) moves a full window.
        _ => 10_000_000,
    };
    futures_lite::future::or(link.wake.notified(), async {
        shards::time::sleep(Duration::from_nanos(sleep_ns.max(1))).await;
    })
    .await;
}
