//! A broker's end-to-end latency as a client that never sleeps sees it.
//!
//! One thread, two plain TCP connections (MQTT 3.1.1, QoS 0): a subscriber to `probe/x` and a
//! publisher that sends a 64-byte payload carrying its scheduled send time (open loop) at a fixed
//! rate. Both sockets are non-blocking and the thread busy-polls them, so no wake-up of a sleeping
//! client thread (nor an io_uring completion) is in the figure: what is measured is the broker,
//! loopback TCP and the CPU the broker runs on. `ringmq-bench` measures the same path through its
//! own runtime, which adds its wake-ups; comparing the two shows how much is the generator.
//!
//! Usage: `latency_probe HOST:PORT RATE SECONDS` (pin it to a core other than the broker's:
//! it keeps its core busy). Prints the latency percentiles in microseconds of the messages after
//! the first second, which is warm-up: a broker that leaves Nagle's algorithm on (Mosquitto's
//! default `set_tcp_nodelay false`) holds its first writes until the client's delayed ACK, tens of
//! milliseconds, and that start-up backlog is not the steady state this probe is for.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TOPIC: &[u8] = b"probe/x";
const PAYLOAD_BYTES: usize = 64;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, rate, seconds] = args.as_slice() else {
        return Err("usage: latency_probe HOST:PORT RATE SECONDS".into());
    };
    let rate: u64 = rate.parse().map_err(|_| "RATE: messages per second")?;
    let seconds: u64 = seconds.parse().map_err(|_| "SECONDS: a whole number")?;
    if rate == 0 || seconds < 2 {
        return Err("RATE must be positive and SECONDS at least 2 (the first is warm-up)".into());
    }
    let total = rate * seconds;
    // Messages scheduled in the first second are sent and received but not counted.
    let warm_up = rate;
    let clock = Instant::now();
    let mut subscriber = connect(addr, "latency-probe-sub")?;
    subscribe(&mut subscriber)?;
    let mut publisher = connect(addr, "latency-probe-pub")?;
    subscriber
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;

    let mut frame = publish_frame(0);
    let stamp_at = frame.len() - PAYLOAD_BYTES;
    let interval_ns = 1_000_000_000 / rate;
    let start_ns = clock.elapsed().as_nanos() as u64 + 10_000_000;
    let give_up = Instant::now() + Duration::from_secs(seconds + 10);
    let mut latencies: Vec<u64> = Vec::with_capacity(total as usize);
    let mut arrived = 0u64;
    let mut input = vec![0u8; 1 << 16];
    let mut filled = 0;
    let mut sent = 0u64;
    while arrived < total {
        if Instant::now() > give_up {
            return Err(format!(
                "only {arrived} of {total} messages arrived within {} s",
                seconds + 10
            ));
        }
        let due_ns = start_ns + sent * interval_ns;
        if sent < total && clock.elapsed().as_nanos() as u64 >= due_ns {
            frame[stamp_at..stamp_at + 8].copy_from_slice(&due_ns.to_le_bytes());
            publisher.write_all(&frame).map_err(|e| e.to_string())?;
            sent += 1;
            continue;
        }
        let read = match subscriber.read(&mut input[filled..]) {
            Ok(0) => return Err("the broker closed the subscriber's connection".into()),
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.to_string()),
        };
        filled += read;
        let now_ns = clock.elapsed().as_nanos() as u64;
        let mut at = 0;
        while let Some((packet_type, body)) = next_packet(&input[at..filled]) {
            if packet_type == 3 {
                let sent_ns = sent_time(&input[at + body.start..at + body.end])?;
                if sent_ns >= start_ns + warm_up * interval_ns {
                    latencies.push(now_ns.saturating_sub(sent_ns));
                }
                arrived += 1;
            }
            at += body.end;
        }
        input.copy_within(at..filled, 0);
        filled -= at;
    }
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[index] as f64 / 1000.0
    };
    println!(
        "n={} p50={:.1}us p90={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
        latencies.len(),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        quantile(1.0)
    );
    Ok(())
}

/// CONNECT (3.1.1, clean session, keep-alive 60 s) and wait for a successful CONNACK.
fn connect(addr: &str, client_id: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut connack = [0u8; 4];
    request(&mut stream, 0x10, &body, &mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(format!("{client_id}: CONNACK {connack:?}"));
    }
    Ok(stream)
}

/// SUBSCRIBE to the probe topic at QoS 0 and wait for the SUBACK.
fn subscribe(stream: &mut TcpStream) -> Result<(), String> {
    let mut body = vec![0, 1, 0, TOPIC.len() as u8];
    body.extend_from_slice(TOPIC);
    body.push(0);
    let mut suback = [0u8; 5];
    request(stream, 0x82, &body, &mut suback)?;
    if suback[0] != 0x90 || suback[4] != 0 {
        return Err(format!("SUBACK {suback:?}"));
    }
    Ok(())
}

/// Sends one packet with a body under 128 bytes and reads a reply of exactly `reply.len()` bytes.
fn request(stream: &mut TcpStream, first: u8, body: &[u8], reply: &mut [u8]) -> Result<(), String> {
    let mut packet = vec![first, body.len() as u8];
    packet.extend_from_slice(body);
    stream.write_all(&packet).map_err(|e| e.to_string())?;
    stream.read_exact(reply).map_err(|e| e.to_string())
}

/// A QoS 0 PUBLISH to the probe topic; the send time goes in the payload's first 8 bytes.
fn publish_frame(sent_ns: u64) -> Vec<u8> {
    let mut payload = [b'x'; PAYLOAD_BYTES];
    payload[..8].copy_from_slice(&sent_ns.to_le_bytes());
    let mut packet = vec![
        0x30,
        (2 + TOPIC.len() + PAYLOAD_BYTES) as u8,
        0,
        TOPIC.len() as u8,
    ];
    packet.extend_from_slice(TOPIC);
    packet.extend_from_slice(&payload);
    packet
}

/// The first whole packet of `input`: its type and the range of its body.
fn next_packet(input: &[u8]) -> Option<(u8, std::ops::Range<usize>)> {
    let (mut length, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *input.get(at)?;
        length |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return None;
        }
    }
    (input.len() >= at + length).then(|| (input[0] >> 4, at..at + length))
}

/// The send time in a QoS 0 PUBLISH body (topic length, topic, payload).
fn sent_time(body: &[u8]) -> Result<u64, String> {
    let short = || String::from("a PUBLISH shorter than the probe's");
    let topic_len = body.get(..2).ok_or_else(short)?;
    let topic_len = usize::from(u16::from_be_bytes([topic_len[0], topic_len[1]]));
    let stamp = body
        .get(2 + topic_len..2 + topic_len + 8)
        .ok_or_else(short)?;
    Ok(u64::from_le_bytes(stamp.try_into().map_err(|_| short())?))
}
