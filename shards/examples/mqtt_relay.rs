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

#[path = "common/relay.rs"]
mod relay;

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

async fn serve(stream: shards::TcpStream, topics: Topics) {
    // No `set_nodelay`: a shards listener's connections inherit TCP_NODELAY from it.
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
        let at = {
            let mut topics = topics.borrow_mut();
            let handled = relay::handle(
                &buf[..filled],
                &me,
                &mut topics,
                &mut reply,
                &mut forward,
                Rc::ptr_eq,
            );
            let Some(at) = handled else { return };
            at
        };
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
