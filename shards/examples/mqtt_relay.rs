//! The runtime's floor for a broker: a bare relay on the `shards` runtime that speaks just enough
//! MQTT 3.1.1 for `ringmq-bench` (CONNACK, SUBACK, UNSUBACK, PINGRESP; a QoS 0 PUBLISH is passed
//! on unchanged to the one connection subscribed to exactly its topic). No sessions, no topic
//! tree, no write buffer or writer task: the reader writes straight to the subscriber's socket.
//! Whatever a broker on this runtime spends per message above this relay is the broker's own.
//!
//! Run (one pinned shard on CPU 0, port 19990), then load it like a broker:
//!   cargo run --release -p shards --example mqtt_relay -- 19990 0
//!   ringmq-bench pubsub -V 4 -i 1 --threads 1 -c 16 --subs 16 -t 'bench/%i' -q 0 \
//!     --rate 20000 -s 64 --duration 10 -p 19990
//!
//! A third argument sets the receive pool's buffers (`RuntimeConfig::recv_buffers`; 0: reads
//! wait for readiness and `recv`, as before the pool), to compare the two read paths.
//!
//! Only what the load generator sends is handled: QoS 0 publishes, exact topics, 3.1.1.

use shards::{
    CpuSet, ListenerSpec, PortPerShard, ReadHalf, RuntimeConfig, ShardContext, ShardCount,
    TaskClass, Topology, WriteHalf,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

/// A subscriber's socket. Whoever finds the half in place writes; a delivery that arrives while
/// another task is mid-write is appended to `pending`, which that task sends before it returns.
struct Sink {
    half: RefCell<Option<WriteHalf>>,
    pending: RefCell<Vec<u8>>,
}

impl Sink {
    async fn send(&self, bytes: &[u8]) -> bool {
        self.pending.borrow_mut().extend_from_slice(bytes);
        let Some(mut half) = self.half.borrow_mut().take() else {
            return true;
        };
        let mut ok = true;
        loop {
            let out = std::mem::take(&mut *self.pending.borrow_mut());
            if out.is_empty() {
                break;
            }
            if half.write_all(&out).await.is_err() {
                ok = false;
                break;
            }
        }
        *self.half.borrow_mut() = Some(half);
        ok
    }
}

type Topics = Rc<RefCell<HashMap<Vec<u8>, Rc<Sink>>>>;

/// `(header byte, body range, frame end)` of the first whole frame in `buf`.
fn frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let first = *buf.first()?;
    let (mut len, mut shift, mut at) = (0usize, 0u32, 1usize);
    loop {
        let byte = *buf.get(at)?;
        len |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return None;
        }
    }
    (buf.len() >= at + len).then_some((first, at..at + len, at + len))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(*bytes.get(at)?) << 8 | usize::from(*bytes.get(at + 1)?))
}

async fn serve(stream: shards::TcpStream, topics: Topics) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer): (ReadHalf, WriteHalf) = stream.split();
    let me = Rc::new(Sink {
        half: RefCell::new(Some(writer)),
        pending: RefCell::new(Vec::new()),
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut reply = Vec::new();
    let mut forward: Vec<(Rc<Sink>, Vec<u8>)> = Vec::new();
    loop {
        let n = match reader.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut at = 0;
        while let Some((header, body, end)) = frame(&buf[at..filled]) {
            let whole = &buf[at..at + end];
            let body = &whole[body];
            match header >> 4 {
                1 => reply.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]),
                3 => {
                    let Some(len) = u16_at(body, 0) else { return };
                    let Some(topic) = body.get(2..2 + len) else {
                        return;
                    };
                    let sink = topics.borrow().get(topic).cloned();
                    if let Some(sink) = sink {
                        match forward.iter_mut().find(|(to, _)| Rc::ptr_eq(to, &sink)) {
                            Some((_, bytes)) => bytes.extend_from_slice(whole),
                            None => forward.push((sink, whole.to_vec())),
                        }
                    }
                }
                8 | 10 => {
                    let Some(id) = body.get(0..2) else { return };
                    let mut granted = 0u8;
                    let mut pos = 2;
                    while let Some(len) = u16_at(body, pos) {
                        let Some(filter) = body.get(pos + 2..pos + 2 + len) else {
                            return;
                        };
                        if header >> 4 == 8 {
                            topics.borrow_mut().insert(filter.to_vec(), Rc::clone(&me));
                            pos += 1;
                        } else {
                            topics.borrow_mut().remove(filter);
                        }
                        pos += 2 + len;
                        granted += 1;
                    }
                    if header >> 4 == 8 {
                        reply.extend_from_slice(&[0x90, 2 + granted, id[0], id[1]]);
                        reply.extend(std::iter::repeat_n(0u8, usize::from(granted)));
                    } else {
                        reply.extend_from_slice(&[0xb0, 0x02, id[0], id[1]]);
                    }
                }
                12 => reply.extend_from_slice(&[0xd0, 0x00]),
                14 => return,
                _ => {}
            }
            at += end;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            return;
        }
        if !reply.is_empty() {
            let out = std::mem::take(&mut reply);
            if !me.send(&out).await {
                return;
            }
        }
        for (sink, bytes) in forward.drain(..) {
            let _ = sink.send(&bytes).await;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(19990);
    let cpu: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let defaults = RuntimeConfig::default();
    let recv_buffers = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(defaults.recv_buffers);
    let config = RuntimeConfig {
        topology: Topology {
            shards: ShardCount::Count(1),
            cpus: cpu.map_or(CpuSet::All, |cpu| CpuSet::List(vec![cpu])),
            pin: cpu.is_some(),
        },
        listeners: vec![ListenerSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            backlog: 1024,
            port_per_shard: PortPerShard::Off,
        }],
        name: String::from("relay"),
        recv_buffers,
        ..defaults
    };
    let runtime = shards::start(config, |context: ShardContext<()>| async move {
        let topics: Topics = Rc::default();
        let listener = context.take_listeners().remove(0);
        loop {
            // SIGINT/SIGTERM (`run_until_signal`) ends the loop, and with it the shard.
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    context.shutdown_requested().await;
                    None
                })
                .await;
            let Some(accepted) = accepted else { return };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            context
                .spawn(TaskClass::Io, serve(stream, Rc::clone(&topics)))
                .detach();
        }
    })
    .expect("start the relay");
    println!("relay listening on 127.0.0.1:{port}");
    runtime.run_until_signal().expect("relay shard");
}
