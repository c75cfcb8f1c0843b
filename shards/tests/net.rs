//! Goal: listeners land connections on the right shard, the shared port resolves once, split
//! streams read and write at once, and accepted connections and their tasks do not leak.

use shards::{
    CpuSet, ListenerSpec, PortPerShard, RuntimeConfig, ShardContext, ShardCount, ShardId, Topology,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(shards: usize, port_per_shard: PortPerShard) -> RuntimeConfig {
    RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(shards),
            cpus: CpuSet::All,
            pin: false,
        },
        listeners: vec![ListenerSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            backlog: 128,
            port_per_shard,
        }],
        name: String::from("net"),
        ..RuntimeConfig::default()
    }
}

/// Each shard answers every connection with its index (one byte) and closes it.
async fn answer_with_id(context: ShardContext<()>) {
    for listener in context.take_listeners() {
        let id = context.id().index() as u8;
        context
            .spawn(shards::TaskClass::Io, async move {
                while let Ok((mut stream, _peer)) = listener.accept().await {
                    let _ = stream.write_all(&[id]).await;
                }
            })
            .detach();
    }
    context.shutdown_requested().await;
}

fn read_one_byte(addr: SocketAddr) -> u8 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).unwrap();
    byte[0]
}

#[test]
fn port_per_shard_puts_the_connection_on_that_shard() {
    let runtime = shards::start(config(3, PortPerShard::Ephemeral), answer_with_id).unwrap();
    for shard in 0..3 {
        let addr = runtime.shard_addr(0, ShardId::new(shard)).unwrap();
        for _ in 0..5 {
            assert_eq!(read_one_byte(addr), shard as u8);
        }
    }
    assert_eq!(runtime.shard_addr(0, ShardId::new(3)), None);
    assert_eq!(runtime.shard_addr(1, ShardId::new(0)), None);
    runtime.handle().shutdown();
    runtime.join().unwrap();
}

#[test]
fn shared_port_zero_resolves_to_one_port_for_all_shards() {
    let ports = Arc::new(Mutex::new(Vec::new()));
    let record = ports.clone();
    let runtime = shards::start(
        config(3, PortPerShard::Off),
        move |context: ShardContext<()>| {
            let listeners = context.take_listeners();
            assert_eq!(listeners.len(), 1);
            assert!(!listeners[0].is_per_shard());
            assert_eq!(listeners[0].spec_index(), 0);
            assert!(context.take_listeners().is_empty());
            record
                .lock()
                .unwrap()
                .push(listeners[0].local_addr().unwrap());
            answer_with_id_with(context, listeners)
        },
    )
    .unwrap();
    let shared = runtime.listener_addr(0);
    assert_ne!(shared.port(), 0);
    let mut seen = [false; 3];
    for _ in 0..60 {
        seen[read_one_byte(shared) as usize] = true;
    }
    let ports = ports.lock().unwrap().clone();
    assert_eq!(ports, vec![shared; 3]);
    assert!(seen.iter().filter(|s| **s).count() >= 1);
    runtime.handle().shutdown();
    runtime.join().unwrap();
}

async fn answer_with_id_with(context: ShardContext<()>, listeners: Vec<shards::Listener>) {
    let id = context.id().index() as u8;
    for listener in listeners {
        context
            .spawn(shards::TaskClass::Io, async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let _ = stream.write_all(&[id]).await;
                }
            })
            .detach();
    }
    context.shutdown_requested().await;
}

#[test]
fn split_stream_reads_while_another_task_writes() {
    let report = Arc::new(Mutex::new(None));
    let record = report.clone();
    let runtime = shards::start(
        config(1, PortPerShard::Off),
        move |context: ShardContext<()>| {
            let record = record.clone();
            async move {
                let listeners = context.take_listeners();
                let (stream, _) = listeners[0].accept().await.unwrap();
                let (mut read_half, mut write_half) = stream.split();
                // The reader is parked in read() before anything arrives.
                let reader = context.spawn(shards::TaskClass::Io, async move {
                    let mut buf = [0u8; 16];
                    let n = read_half.read(&mut buf).await.unwrap();
                    (buf[..n].to_vec(), read_half)
                });
                for n in 0..3u8 {
                    write_half.write_all(&[b'a' + n]).await.unwrap();
                    shards::time::sleep(Duration::from_millis(5)).await;
                }
                write_half.write_all(b"\n").await.unwrap();
                let (got, read_half) = reader.await;
                *record.lock().unwrap() = Some(got);
                assert_eq!(context.live_connections(), 1);
                drop((read_half, write_half));
                assert_eq!(context.live_connections(), 0);
            }
        },
    )
    .unwrap();
    let mut client = std::net::TcpStream::connect(runtime.listener_addr(0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = [0u8; 4];
    client.read_exact(&mut line).unwrap();
    assert_eq!(
        &line, b"abc\n",
        "writes went through while the read was pending"
    );
    client.write_all(b"ping").unwrap();
    runtime.join().unwrap();
    assert_eq!(report.lock().unwrap().as_deref(), Some(&b"ping"[..]));
    // Both halves dropped: the server closed the socket, so the client sees end of stream.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn two_thousand_connections_leave_no_tasks_or_connections_behind() {
    const CONNECTIONS: usize = 2000;
    let counts = Arc::new(Mutex::new(None));
    let record = counts.clone();
    let runtime = shards::start(
        config(1, PortPerShard::Off),
        move |context: ShardContext<()>| {
            let record = record.clone();
            async move {
                let listeners = context.take_listeners();
                let baseline = (context.live_tasks(), context.live_connections());
                let mut served = 0;
                while served < CONNECTIONS {
                    let Ok((mut stream, _)) = listeners[0].accept().await else {
                        continue;
                    };
                    served += 1;
                    context
                        .spawn(shards::TaskClass::Io, async move {
                            let mut buf = [0u8; 8];
                            let _ = stream.read(&mut buf).await;
                            let _ = stream.close().await;
                        })
                        .detach();
                }
                // Let the last connection tasks see end of stream.
                for _ in 0..500 {
                    if (context.live_tasks(), context.live_connections()) == baseline {
                        break;
                    }
                    shards::time::sleep(Duration::from_millis(2)).await;
                }
                *record.lock().unwrap() =
                    Some((baseline, context.live_tasks(), context.live_connections()));
            }
        },
    )
    .unwrap();
    let addr = runtime.listener_addr(0);
    let client = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let stream = std::net::TcpStream::connect(addr).unwrap();
            drop(stream);
        }
    });
    client.join().unwrap();
    runtime.join().unwrap();
    let ((tasks, connections), tasks_after, connections_after) = counts.lock().unwrap().unwrap();
    assert_eq!((tasks_after, connections_after), (tasks, connections));
    assert_eq!(connections, 0);
}

#[test]
fn accepted_connections_have_nodelay_on() {
    let runtime = shards::start(
        config(1, PortPerShard::Off),
        |context: ShardContext<()>| async move {
            let listeners = context.take_listeners();
            let (mut stream, _peer) = listeners[0].accept().await.unwrap();
            let inherited = stream.nodelay().unwrap();
            stream.set_nodelay(false).unwrap();
            let after = stream.nodelay().unwrap();
            let answer = u8::from(inherited) * 2 + u8::from(after);
            stream.write_all(&[answer]).await.unwrap();
            context.shutdown_requested().await;
        },
    )
    .unwrap();
    // On from the listening socket (2), and still turned off per connection (+ 0).
    assert_eq!(read_one_byte(runtime.listener_addr(0)), 2);
    runtime.handle().shutdown();
    runtime.join().unwrap();
}
