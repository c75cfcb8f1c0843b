//! One connected period of a bridge: packets from the local session go to the remote and back,
//! until the remote goes away, stays silent past its keepalive, or the local session closes.
//! One task, one wait per turn on whichever comes first: the remote's bytes, the local
//! session's output, the keepalive timer.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::Settings;
use super::handshake::{Connection, READ_CHUNK};
use super::local::Local;
use super::relay::Relay;
use crate::metrics::bridge::BridgeStats;
use crate::protocol::{self, Packet};
use crate::server::ShardShell;

/// Local packets relayed per turn before the remote is read again (bounds one turn).
const LOCAL_PACKETS_PER_TURN: usize = 1024;
/// Remote frames decoded per turn.
const REMOTE_PACKETS_PER_TURN: usize = 1024;

/// What ended a wait.
enum Wake {
    Read(std::io::Result<usize>),
    Local,
    Timer,
}

/// Relays until the connection ends; returns why, for the log.
pub async fn serve(
    shell: &ShardShell,
    settings: &Settings,
    local: &mut Local,
    relay: &mut Relay,
    connection: &mut Connection,
    stats: &BridgeStats,
) -> String {
    let version = settings.version;
    let keepalive = Duration::from_secs(u64::from(settings.bridge.keepalive_secs));
    let window =
        usize::from(connection.receive_maximum).min(usize::from(settings.bridge.inflight_max));
    relay.connected(window, connection.session_present, Instant::now());
    let mut out = BytesMut::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut packets = Vec::new();
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    let mut ping_due = false;
    let write_limit = if keepalive.is_zero() {
        WRITE_LIMIT_WITHOUT_KEEPALIVE
    } else {
        keepalive * 3 / 2
    };
    loop {
        // The remote's packets already read.
        let mut decoded = 0;
        while decoded < REMOTE_PACKETS_PER_TURN {
            match protocol::decode(&mut connection.buf, version, settings.packet_bytes_max) {
                Ok(Some(packet)) => {
                    decoded += 1;
                    if !relay.from_remote(packet, Instant::now()) {
                        return String::from("the remote sent DISCONNECT");
                    }
                }
                Ok(None) => break,
                Err(error) => return format!("the remote sent a malformed packet: {error}"),
            }
        }
        // The local session's output.
        local.take(shell, &mut packets, LOCAL_PACKETS_PER_TURN);
        let now = Instant::now();
        for packet in packets.drain(..) {
            relay.from_local(packet, now);
        }
        if !relay.to_local.is_empty() {
            local.send(shell, relay.to_local.drain(..));
        }
        if std::mem::take(&mut ping_due) {
            relay.to_remote.push(Packet::PingReq);
        }
        for packet in relay.to_remote.drain(..) {
            if let Err(error) =
                protocol::encode(&packet, version, &mut out, settings.packet_bytes_max)
            {
                tracing::warn!(bridge = %settings.name, %error, "bridge: a message too large for the remote was dropped");
                BridgeStats::add(&stats.dropped, 1);
            }
        }
        update_stats(shell, local, relay, stats);
        if !out.is_empty() {
            // A remote that stops reading must not hold the bridge: the write gets the time the
            // keepalive gives a silent peer.
            match shards::time::timeout(write_limit, connection.stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return format!("write failed: {error}"),
                Err(_) => return format!("the remote took no bytes for {write_limit:?}"),
            }
            BridgeStats::add(&stats.bytes_out, out.len() as u64);
            out.clear();
            last_sent = Instant::now();
        }
        if local.is_closed(shell) {
            return String::from("the local session closed");
        }
        if local.has_buffered() || decoded == REMOTE_PACKETS_PER_TURN {
            shards::yield_now().await;
            continue;
        }
        let wake = wait(connection, local, &mut chunk, keepalive).await;
        let ticked = matches!(wake, Wake::Timer);
        match wake {
            Wake::Read(Ok(0)) => return String::from("the remote closed the connection"),
            Wake::Read(Ok(n)) => {
                connection
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                BridgeStats::add(&stats.bytes_in, n as u64);
                last_received = Instant::now();
            }
            Wake::Read(Err(error)) => return format!("read failed: {error}"),
            Wake::Local | Wake::Timer => {}
        }
        // Checked after every wake-up, not only when the tick fires: a remote that keeps
        // sending wakes the bridge before any tick, and the bridge must still send within its
        // keepalive (MQTT-3.1.2-24: the remote counts only what the bridge sends).
        if !keepalive.is_zero() {
            let now = Instant::now();
            if now.saturating_duration_since(last_received) > keepalive * 3 / 2 {
                return format!(
                    "no packet from the remote for {:?} (keepalive)",
                    keepalive * 3 / 2
                );
            }
            let quiet_out = now.saturating_duration_since(last_sent) >= keepalive;
            let quiet_in = now.saturating_duration_since(last_received) >= keepalive;
            // A silent remote is probed once per keepalive, not at every wake-up.
            ping_due = quiet_out || (quiet_in && ticked);
        }
    }
}

/// How long a write may wait for the remote to take bytes when the keepalive is off.
const WRITE_LIMIT_WITHOUT_KEEPALIVE: Duration = Duration::from_secs(60);

/// Waits for the remote's bytes, the local session's output, or the keepalive tick (a quarter
/// of the keepalive; once a second without one, for the metrics).
async fn wait(
    connection: &mut Connection,
    local: &Local,
    chunk: &mut [u8],
    keepalive: Duration,
) -> Wake {
    let tick = if keepalive.is_zero() {
        Duration::from_secs(1)
    } else {
        (keepalive / 4).max(Duration::from_millis(250))
    };
    let mut notified = pin!(local.written());
    let mut timer = pin!(shards::time::sleep(tick));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(read) = connection.stream.poll_read(cx, chunk) {
            return Poll::Ready(Wake::Read(read));
        }
        if notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Local);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    })
    .await
}

fn update_stats(shell: &ShardShell, local: &Local, relay: &mut Relay, stats: &BridgeStats) {
    let counts = std::mem::take(&mut relay.counts);
    BridgeStats::add(&stats.messages_out, counts.messages_out);
    BridgeStats::add(&stats.messages_in, counts.messages_in);
    BridgeStats::add(&stats.dropped, counts.dropped);
    BridgeStats::add(&stats.acks, counts.acks);
    BridgeStats::add(&stats.ack_micros_total, counts.ack_micros_total);
    if counts.acks > 0 {
        BridgeStats::set(&stats.ack_micros_last, counts.ack_micros_last);
    }
    BridgeStats::set(&stats.inflight, relay.inflight() as u64);
    set_queued(shell, local, stats);
}

/// The bridge's queue: what its local session holds for it.
pub fn set_queued(shell: &ShardShell, local: &Local, stats: &BridgeStats) {
    let queued = shell
        .shard
        .borrow()
        .session(&local.client_id)
        .map_or(0, |session| session.state.outbox_len());
    BridgeStats::set(&stats.queued, queued as u64);
}
