//! Goal: reads go through the shard's pool of receive buffers: a connection waiting for data
//! holds none, bytes that do not fit one read wait for the next in order, a read that finds the
//! pool empty still gets its bytes (plain `recv`), and a shard without a pool reads the same.
//! With receive timestamps on, every read brings the kernel's stamp of its bytes, leftovers
//! included, with or without a pool. Reads are multishot receives: a stream that stops reading
//! holds a few buffers at most and its peer's writes block (TCP flow control), and a multishot
//! that ended (cancelled at that bound, or the pool empty) is armed again by the next read.

use shards::{
    CpuSet, ListenerSpec, PortPerShard, RuntimeConfig, ShardContext, ShardCount, Topology,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn config(recv_buffers: usize, recv_buffer_bytes: usize) -> RuntimeConfig {
    RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(1),
            cpus: CpuSet::All,
            pin: false,
        },
        listeners: vec![ListenerSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            backlog: 1024,
            port_per_shard: PortPerShard::Off,
        }],
        name: String::from("recv-pool"),
        recv_buffers,
        recv_buffer_bytes,
        ..RuntimeConfig::default()
    }
}

/// Each connection's first byte says what the shard does with it: `e` echoes what follows in
/// reads of 100 bytes, `s` answers the pool's counters as text, `h` starts a read that it gives
/// up after 50 ms and then reads nothing (the receive it armed stays armed, and what it brings
/// waits in its buffer for a read that never comes), `l` does the same and then echoes in
/// reads of 10 bytes (each takes what fits of the buffer the 100-byte receive filled), `p`
/// gives its read up too, sleeps 300 ms and then echoes in reads of 100 bytes, `t` turns
/// receive timestamps on and serves `timestamps`.
async fn serve(context: ShardContext<()>) {
    for listener in context.take_listeners() {
        context
            .spawn(shards::TaskClass::Io, async move {
                while let Ok((stream, _peer)) = listener.accept().await {
                    shards::spawn_local(connection(stream)).detach();
                }
            })
            .detach();
    }
    context.shutdown_requested().await;
}

async fn connection(mut stream: shards::TcpStream) {
    let mut mode = [0u8; 1];
    if stream.read(&mut mode).await.unwrap_or(0) == 0 {
        return;
    }
    match mode[0] {
        b'e' => {
            let mut buf = [0u8; 100];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        b's' => {
            let stats = shards::recv_pool_stats();
            let text = format!(
                "{} {} {} {} {}\n",
                stats.buffers, stats.buffer_bytes, stats.held, stats.receives, stats.exhausted
            );
            let _ = stream.write_all(text.as_bytes()).await;
        }
        b'h' | b'l' | b'p' => {
            let mut buf = [0u8; 100];
            let read = shards::time::timeout(Duration::from_millis(50), stream.read(&mut buf));
            assert!(read.await.is_err(), "the client sent too early");
            if mode[0] == b'h' {
                std::future::pending::<()>().await;
            }
            if mode[0] == b'p' {
                shards::time::sleep(Duration::from_millis(300)).await;
            }
            let len = if mode[0] == b'l' { 10 } else { 100 };
            while let Ok(n @ 1..) = stream.read(&mut buf[..len]).await {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
        b't' => timestamps(stream).await,
        _ => {}
    }
}

/// Twice: a read of 100 bytes given up after 50 ms (its receive stays armed, with a pool), then
/// `r\n` to the client, then 300 ms asleep while the client's 30 bytes wait, then three reads
/// of 10 bytes, each answered with the stamp of its bytes and the time of the read, as
/// nanoseconds since the epoch (`-` for no stamp).
async fn timestamps(mut stream: shards::TcpStream) {
    stream.set_receive_timestamps().unwrap();
    for _ in 0..2 {
        let mut buf = [0u8; 100];
        let read = shards::time::timeout(Duration::from_millis(50), stream.read(&mut buf));
        assert!(read.await.is_err(), "the client sent too early");
        if stream.write_all(b"r\n").await.is_err() {
            return;
        }
        shards::time::sleep(Duration::from_millis(300)).await;
        let mut answer = String::new();
        for _ in 0..3 {
            let mut buf = [0u8; 10];
            if stream.read(&mut buf).await.unwrap_or(0) != 10 {
                return;
            }
            let read_at = nanos(std::time::SystemTime::now());
            match stream.last_receive_timestamp() {
                Some(stamp) => answer += &format!("{} {read_at}\n", nanos(stamp)),
                None => answer += &format!("- {read_at}\n"),
            }
        }
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn nanos(time: std::time::SystemTime) -> u128 {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs `body` against a one-shard runtime serving `serve` with a pool of `recv_buffers` of 4 KiB.
fn with_shard(recv_buffers: usize, body: impl FnOnce(SocketAddr)) {
    let runtime = shards::start(config(recv_buffers, 4096), serve).unwrap();
    body(runtime.listener_addr(0));
    runtime.handle().shutdown();
    runtime.join().unwrap();
}

#[derive(Debug)]
struct Stats {
    buffers: usize,
    buffer_bytes: usize,
    held: usize,
    receives: u64,
    exhausted: u64,
}

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A connection in mode `h` or `l`, once the shard has given its first read up (50 ms).
fn client_past_a_given_up_read(addr: SocketAddr, mode: u8) -> TcpStream {
    let mut stream = client(addr);
    stream.write_all(&[mode]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream
}

fn stats(addr: SocketAddr) -> Stats {
    let mut stream = client(addr);
    stream.write_all(b"s").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|field| field.parse().unwrap())
        .collect();
    assert_eq!(fields.len(), 5, "stats answer: {text:?}");
    Stats {
        buffers: fields[0] as usize,
        buffer_bytes: fields[1] as usize,
        held: fields[2] as usize,
        receives: fields[3],
        exhausted: fields[4],
    }
}

fn echo(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).unwrap();
    let mut back = vec![0u8; bytes.len()];
    stream.read_exact(&mut back).unwrap();
    assert!(back == bytes, "the echo differs from what was sent");
}

/// `len` bytes that differ from one position to the next, so a reordering shows.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

#[test]
fn idle_connections_hold_no_receive_buffer() {
    with_shard(64, |addr| {
        let before = stats(addr);
        assert_eq!((before.buffers, before.buffer_bytes), (64, 4096));
        // 1,000 connections that each say something and then wait, all open at once: each has a
        // receive armed and no buffer.
        let mut idle: Vec<TcpStream> = (0..1000)
            .map(|i| {
                let mut stream = client(addr);
                stream.write_all(b"e").unwrap();
                echo(&mut stream, &pattern(1 + i % 300, i));
                stream
            })
            .collect();
        let during = stats(addr);
        assert_eq!(
            during.held, 0,
            "idle connections hold pool buffers: {during:?}"
        );
        assert!(
            during.receives >= before.receives + 1000,
            "the reads did not go through the pool: {before:?} -> {during:?}"
        );
        // 12 KiB in one write, taken in reads of 100 bytes: in order, and every buffer goes back.
        let big = pattern(12 * 1024, 5);
        echo(&mut idle[0], &big);
        assert_eq!(stats(addr).held, 0);
        idle.clear();
    });
}

#[test]
fn bytes_a_read_cannot_take_wait_in_their_buffer_for_the_next() {
    with_shard(4, |addr| {
        let mut stream = client_past_a_given_up_read(addr, b'l');
        echo(&mut stream, &pattern(100, 3));
        echo(&mut stream, &pattern(1000, 4));
        assert_eq!(stats(addr).held, 0);
        drop(stream);
    });
}

#[test]
fn a_read_that_finds_the_pool_empty_still_gets_its_bytes() {
    with_shard(1, |addr| {
        // This connection's receive takes the only buffer and keeps it.
        let mut holder = client_past_a_given_up_read(addr, b'h');
        holder.write_all(&pattern(100, 1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = stats(addr);
            if now.held == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the holder never took the buffer: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The stats connections above needed no buffer either: they read with `recv`. So do these.
        let mut others: Vec<TcpStream> = (0..20).map(|_| client(addr)).collect();
        for (i, stream) in others.iter_mut().enumerate() {
            let mut bytes = pattern(500, i);
            bytes[0] = b'e';
            stream.write_all(&bytes[..1]).unwrap();
            echo(stream, &bytes[1..]);
        }
        let after = stats(addr);
        assert_eq!(after.held, 1, "{after:?}");
        assert!(
            after.exhausted >= 20,
            "reads did not find the pool empty: {after:?}"
        );
        // Idle while the pool stays empty: their receives wait for data instead of finding the
        // pool empty again and again (without POLL_FIRST that was about 265,000 a second).
        std::thread::sleep(Duration::from_millis(500));
        let idle = stats(addr);
        assert!(
            idle.exhausted - after.exhausted < 100,
            "idle readers spun on the empty pool: {after:?} -> {idle:?}"
        );
        drop((holder, others));
    });
}

#[test]
fn a_shard_without_a_pool_reads_the_same() {
    with_shard(0, |addr| {
        let mut streams: Vec<TcpStream> = (0..50).map(|_| client(addr)).collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            stream.write_all(b"e").unwrap();
            echo(stream, &pattern(1 + i * 200, i));
        }
        let stats = stats(addr);
        assert_eq!((stats.buffers, stats.held, stats.receives), (0, 0, 0));
        drop(streams);
    });
}

#[test]
fn a_pool_that_is_not_a_power_of_two_is_refused_at_start() {
    let error = shards::start(config(48, 4096), serve).err().unwrap();
    assert!(error.to_string().contains("recv_buffers"), "{error}");
}

/// A client of mode `t`: each of its reads carries the kernel's stamp of the client's write
/// (taken during it), from a pool buffer's leftovers and from the socket alike, and the stamp
/// shows the time the bytes waited in the socket while the shard slept.
fn check_receive_timestamps(addr: SocketAddr) {
    let mut stream = client(addr);
    stream.write_all(b"t").unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    for round in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert_eq!(line, "r\n");
        let before = nanos(std::time::SystemTime::now());
        stream.write_all(&pattern(30, round)).unwrap();
        let after = nanos(std::time::SystemTime::now());
        for read in 0..3 {
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 2, "answer {line:?}");
            let stamp: u128 = fields[0]
                .parse()
                .unwrap_or_else(|_| panic!("round {round}, read {read}: no stamp: {line:?}"));
            let read_at: u128 = fields[1].parse().unwrap();
            assert!(
                (before..=after).contains(&stamp),
                "round {round}, read {read}: stamp {stamp} outside the write [{before}, {after}]"
            );
            assert!(
                read_at - stamp >= 100_000_000,
                "round {round}, read {read}: the bytes waited {} ns, the shard slept 300 ms",
                read_at - stamp
            );
        }
    }
}

#[test]
fn reads_bring_the_kernel_receive_timestamp_of_their_bytes() {
    with_shard(4, check_receive_timestamps);
}

#[test]
fn reads_without_a_pool_bring_the_kernel_receive_timestamp_too() {
    with_shard(0, check_receive_timestamps);
}

/// Waits until the pool's counters satisfy `done` (at most 10 s), and returns them.
fn stats_when(addr: SocketAddr, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = stats(addr);
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stream_that_stops_reading_holds_a_few_buffers_and_its_peer_blocks() {
    with_shard(256, |addr| {
        let mut holder = client_past_a_given_up_read(addr, b'h');
        holder.set_nonblocking(true).unwrap();
        // Writes until the kernel refuses more: the shard does not read, so once the socket
        // buffers are full TCP's flow control stops the writer, long before 64 MiB.
        let chunk = pattern(64 * 1024, 9);
        let mut written = 0usize;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut refused = 0;
        while refused < 20 && written < 64 << 20 && Instant::now() < deadline {
            match holder.write(&chunk) {
                Ok(n) => written += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("write: {error}"),
            }
        }
        assert_eq!(
            refused, 20,
            "the writer never blocked: {written} bytes went"
        );
        assert!(
            written < 64 << 20,
            "{written} bytes went to a stream that reads nothing"
        );
        let held = stats_when(addr, "the holder took no buffer", |stats| stats.held > 0).held;
        // The multishot receive takes 4 buffers' bytes at most (the kernel's total limit on
        // a multishot receive, Linux 6.18 here), then ends and is not armed again while the
        // stream does not read: the rest waits in the socket.
        assert!(
            held <= 4,
            "a stream that reads nothing holds {held} pool buffers ({written} bytes written)"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(stats(addr).held, held, "the stream kept taking buffers");
        // The shard's task never reads nor ends: its buffers stay with it until shutdown.
        drop(holder);
    });
}

/// A `p` stream: 64 KiB arrive while the shard sleeps, more than the multishot receive may hold
/// for it, so it ends (cancelled at its bound, or on the empty pool of `recv_buffers`) with
/// bytes left in the socket; the reads after take it all in order and arm it again.
fn check_a_paused_stream_reads_on(recv_buffers: usize) {
    with_shard(recv_buffers, |addr| {
        let mut stream = client(addr);
        stream.write_all(b"p").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        echo(&mut stream, &pattern(64 * 1024, 11));
        let before = stats_when(addr, "buffers not given back", |stats| stats.held == 0);
        // Idle now, then a message: it comes through a receive armed again in the pool.
        std::thread::sleep(Duration::from_millis(100));
        echo(&mut stream, &pattern(50, 12));
        let after = stats(addr);
        // Two receives at least: the echo's, and the mode byte of the connection `stats` opens
        // (which alone would make `after` larger than `before`).
        assert!(
            after.receives >= before.receives + 2,
            "the read after the end did not go through the pool: {before:?} -> {after:?}"
        );
        drop(stream);
    });
}

#[test]
fn a_multishot_receive_ended_at_its_bound_is_armed_again() {
    check_a_paused_stream_reads_on(256);
}

#[test]
fn a_multishot_receive_ended_by_the_empty_pool_is_armed_again() {
    check_a_paused_stream_reads_on(2);
    with_shard(2, |addr| {
        let mut stream = client(addr);
        stream.write_all(b"p").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(&pattern(64 * 1024, 13)).unwrap();
        let exhausted = stats_when(addr, "the pool never ran out", |s| s.exhausted > 0);
        assert!(exhausted.held <= 2, "{exhausted:?}");
        let mut back = vec![0u8; 64 * 1024];
        stream.read_exact(&mut back).unwrap();
        assert!(back == pattern(64 * 1024, 13), "the echo differs");
        drop(stream);
    });
}
