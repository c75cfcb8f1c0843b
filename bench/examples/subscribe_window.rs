//! How soon after a SUBSCRIBE a message published on another shard reaches the new subscriber,
//! without waiting for the SUBACK (the guarantee starts at SUBACK; this is the window before it).
//!
//! Two plain TCP connections (MQTT 3.1.1, QoS 0) in one busy-polling thread: a subscriber on
//! one shard's own port and a publisher on another shard's. Each round the subscriber sends
//! SUBSCRIBE to a fresh topic and the publisher at once starts sending to that topic, one
//! message every `PACE`, each carrying its send time. The first message the subscriber gets
//! names the window: it was sent that long after the SUBSCRIBE, and the one sent `PACE` before
//! it was lost. Both packets cross loopback and one broker read before they are handled, so the
//! figure approximates the time from the SUBSCRIBE being read on the subscriber's shard to the
//! interest being in force on the publisher's.
//!
//! Usage: `subscribe_window SUB_HOST:PORT PUB_HOST:PORT ROUNDS` (a broker with
//! `shard_port_base`, pinned; run this pinned to a core of its own). Prints percentiles in
//! microseconds.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Time between two publishes of a round.
const PACE: Duration = Duration::from_micros(10);
/// A round that sees no message in this time fails the run.
const ROUND_LIMIT: Duration = Duration::from_secs(2);

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, sub_addr, pub_addr, rounds] = args.as_slice() else {
        return Err("usage: subscribe_window SUB_HOST:PORT PUB_HOST:PORT ROUNDS".into());
    };
    let rounds: u32 = rounds.parse().map_err(|_| "ROUNDS: a whole number")?;
    if rounds == 0 || rounds > 100_000 {
        return Err("ROUNDS must be 1 to 100000".into());
    }
    let mut subscriber = connect(sub_addr, "window-sub")?;
    let mut publisher = connect(pub_addr, "window-pub")?;
    subscriber
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let clock = Instant::now();
    let mut windows = Vec::with_capacity(rounds as usize);
    let mut input = vec![0u8; 1 << 16];
    for round in 0..rounds {
        let topic = format!("window/{round}");
        let subscribed_ns = clock.elapsed().as_nanos() as u64;
        subscriber
            .write_all(&subscribe_frame(round, &topic))
            .map_err(|e| e.to_string())?;
        let window = first_arrival(&mut subscriber, &mut publisher, &topic, &mut input, &clock)?;
        windows.push(window.saturating_sub(subscribed_ns));
    }
    windows.sort_unstable();
    println!(
        "rounds={} p50={:.1}us p90={:.1}us p99={:.1}us max={:.1}us (pace {}us)",
        windows.len(),
        micros_at(&windows, 0.5),
        micros_at(&windows, 0.9),
        micros_at(&windows, 0.99),
        micros_at(&windows, 1.0),
        PACE.as_micros()
    );
    Ok(())
}

/// The `q` quantile of sorted nanoseconds, in microseconds.
fn micros_at(sorted: &[u64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |ns| *ns as f64 / 1000.0)
}

/// Publishes to `topic` every `PACE` until the subscriber gets one of them; that one's send time
/// (ns on `clock`). Messages of earlier rounds still arriving are skipped.
fn first_arrival(
    subscriber: &mut TcpStream,
    publisher: &mut TcpStream,
    topic: &str,
    input: &mut [u8],
    clock: &Instant,
) -> Result<u64, String> {
    let give_up = Instant::now() + ROUND_LIMIT;
    let mut filled = 0;
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now > give_up {
            return Err(format!("no message on {topic} within {ROUND_LIMIT:?}"));
        }
        if now >= next_send {
            let sent_ns = clock.elapsed().as_nanos() as u64;
            publisher
                .write_all(&publish_frame(topic, sent_ns))
                .map_err(|e| e.to_string())?;
            next_send = now + PACE;
        }
        let read = read_available(subscriber, &mut input[filled..])?;
        if read == 0 {
            continue;
        }
        filled += read;
        let mut at = 0;
        while let Some((packet_type, body)) = next_packet(&input[at..filled]) {
            if packet_type == 3
                && let Some(sent_ns) = stamp_for(&input[at + body.start..at + body.end], topic)
            {
                return Ok(sent_ns);
            }
            at += body.end;
        }
        input.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// What a non-blocking socket has ready (0: nothing yet); the broker closing is an error.
fn read_available(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, String> {
    match stream.read(buf) {
        Ok(0) => Err("the broker closed the subscriber's connection".into()),
        Ok(read) => Ok(read),
        Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(0),
        Err(error) => Err(error.to_string()),
    }
}

/// CONNECT (3.1.1, clean session, keep-alive 60 s) and wait for a successful CONNACK.
fn connect(addr: &str, client_id: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut packet = vec![0x10, (12 + client_id.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 60]);
    packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    stream.write_all(&packet).map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).map_err(|e| e.to_string())?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("{client_id}: CONNACK {connack:?}"));
    }
    Ok(stream)
}

/// SUBSCRIBE to `topic` at QoS 0 (packet id: the round, plus one).
fn subscribe_frame(round: u32, topic: &str) -> Vec<u8> {
    let packet_id = (round % 65_535 + 1) as u16;
    let mut packet = vec![0x82, (5 + topic.len()) as u8];
    packet.extend_from_slice(&packet_id.to_be_bytes());
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic.as_bytes());
    packet.push(0);
    packet
}

/// A QoS 0 PUBLISH to `topic` whose payload is its send time.
fn publish_frame(topic: &str, sent_ns: u64) -> Vec<u8> {
    let mut packet = vec![0x30, (2 + topic.len() + 8) as u8];
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic.as_bytes());
    packet.extend_from_slice(&sent_ns.to_le_bytes());
    packet
}

/// The first whole packet of `input`: its type and the range of its body.
fn next_packet(input: &[u8]) -> Option<(u8, std::ops::Range<usize>)> {
    let length = usize::from(*input.get(1)?);
    // Every packet of this probe is under 128 bytes: one length byte.
    (input.len() >= 2 + length).then(|| (input[0] >> 4, 2..2 + length))
}

/// The send time of a PUBLISH body to `topic`; `None` for another topic.
fn stamp_for(body: &[u8], topic: &str) -> Option<u64> {
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    if body.get(2..2 + topic_len)? != topic.as_bytes() {
        return None;
    }
    let stamp = body.get(2 + topic_len..2 + topic_len + 8)?;
    Some(u64::from_le_bytes(stamp.try_into().ok()?))
}
