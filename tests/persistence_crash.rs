//! A real broker process with `fsync = "always"`, killed with SIGKILL at random moments while
//! publishers send QoS 1 messages to persistent subscribers (some online, one offline): after
//! every restart each subscriber's session is back, and at the end every message that got its
//! PUBACK has reached every subscriber, in order per publisher (duplicates allowed, as QoS 1
//! allows). A retained message survives all of it. A file size limit plays a full disk.
//!
//! `CRASH_DEBUG=1` keeps each broker run's log beside its config (`CRASH_LOG` sets its filter).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{RawClient, connect_packet, response};
use ringmq::protocol::{self, Packet, QoS, Version};

const ROUNDS: usize = 4;
const SUBSCRIBERS: [&str; 3] = ["online-a", "online-b", "offline-c"];
const PUBLISHERS: usize = 2;

struct Broker {
    child: Child,
    addr: SocketAddr,
}

/// Connects, refusing a socket connected to itself (possible when nothing listens yet).
fn connect_broker(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect(addr).ok()?;
    (stream.local_addr().ok()? != addr).then_some(stream)
}

/// How the broker of a test runs.
struct Setup {
    shards: usize,
    admin: Option<u16>,
    fsync: &'static str,
}

/// The offline subscriber's outbox holds every message of a test run: with the default of
/// 1,000 it would drop the overflow by its policy, as it should, and the test would count those
/// as lost.
fn write_config(dir: &Path, port: u16, setup: &Setup) -> PathBuf {
    let path = dir.join("ringmq.toml");
    let text = format!(
        "[runtime]\nshards = {}\npin = false\n\
         [listeners.tcp.default]\nbind = \"127.0.0.1:{port}\"\n\
         {}[sys]\nenabled = false\n\
         [limits]\noutbox_messages_max = 100000\n\
         [persistence]\nenabled = true\ndir = \"{}\"\nfsync = \"{}\"\n",
        setup.shards,
        setup
            .admin
            .map_or(String::from("[admin]\nenabled = false\n"), |port| format!(
                "[admin]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n"
            )),
        dir.join("store").display(),
        setup.fsync,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// With CRASH_DEBUG set, each run's log (stdout and stderr) goes beside the config.
fn broker_log(config: &Path) -> (Stdio, Stdio) {
    match std::env::var("CRASH_DEBUG") {
        Ok(_) => {
            let n = std::fs::read_dir(config.parent().unwrap()).unwrap().count();
            let file =
                std::fs::File::create(config.with_file_name(format!("broker-{n}.log"))).unwrap();
            let err = file.try_clone().unwrap();
            (Stdio::from(file), Stdio::from(err))
        }
        Err(_) => (Stdio::null(), Stdio::null()),
    }
}

fn start(config: &Path, addr: SocketAddr) -> Broker {
    let (log, errors) = broker_log(config);
    let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--config")
        .arg(config)
        .stdout(log)
        .stderr(errors)
        .env(
            "RUST_LOG",
            std::env::var("CRASH_LOG").unwrap_or_else(|_| String::from("info")),
        )
        .spawn()
        .expect("the ringmq binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while connect_broker(addr).is_none() {
        assert!(Instant::now() < deadline, "broker not listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, addr }
}

/// A test that fails half-way still stops its broker process.
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// SIGKILL, then waits until nothing listens on the port any more: the kernel tears a dead
    /// process's io_uring down after the process is reaped, and until then its listening socket
    /// (SO_REUSEPORT) still takes a share of new connections that nobody will accept.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while connect_broker(self.addr).is_some() {
            assert!(
                Instant::now() < deadline,
                "{} still listening after the kill",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends without panicking: the broker may be gone.
fn send(client: &mut RawClient, packet: &Packet) -> bool {
    let mut out = BytesMut::new();
    protocol::encode(packet, Version::V3_1_1, &mut out, usize::MAX).unwrap();
    client.stream.write_all(&out).is_ok()
}

fn connect(addr: SocketAddr, client_id: &str) -> Option<(RawClient, bool)> {
    let stream = connect_broker(addr)?;
    let mut client = RawClient::from_stream(stream, Version::V3_1_1);
    let connect = connect_packet(Version::V3_1_1, client_id, false, None);
    if !send(&mut client, &Packet::Connect(Box::new(connect))) {
        return None;
    }
    match client.recv_or_closed(Duration::from_secs(5)) {
        common::Received::Packet(Packet::ConnAck(connack)) => {
            Some((client, connack.session_present))
        }
        _ => None,
    }
}

/// Reads and acknowledges until the connection closes or `stop` is set (and then until it is
/// quiet for `quiet`), recording every payload in order.
fn consume(
    mut client: RawClient,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    quiet: Duration,
) {
    let mut last = Instant::now();
    loop {
        match client.recv_or_closed(Duration::from_millis(50)) {
            common::Received::Packet(Packet::Publish(publish)) => {
                let text = String::from_utf8_lossy(&publish.payload).into_owned();
                received.lock().unwrap().push(text);
                if let Some(id) = publish.packet_id {
                    send(&mut client, &Packet::PubAck(response(id)));
                }
                last = Instant::now();
            }
            common::Received::Packet(_) => {}
            common::Received::Closed => return,
            common::Received::Nothing => {
                if stop.load(Ordering::Relaxed) && last.elapsed() >= quiet {
                    return;
                }
            }
        }
    }
}

/// Publishes QoS 1 messages one at a time until the broker goes away; records those acked.
fn publish(addr: SocketAddr, publisher: usize, round: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Some(stream) = connect_broker(addr) else {
        return;
    };
    let mut client = RawClient::from_stream(stream, Version::V3_1_1);
    let id = format!("pub-{publisher}");
    let connect = connect_packet(Version::V3_1_1, &id, true, None);
    if !send(&mut client, &Packet::Connect(Box::new(connect))) {
        return;
    }
    if !matches!(
        client.recv_or_closed(Duration::from_secs(5)),
        common::Received::Packet(Packet::ConnAck(_))
    ) {
        return;
    }
    for seq in 0..100_000u32 {
        let text = format!("{publisher}-{round}-{seq:06}");
        let packet_id = common::pid((seq % 60_000 + 1) as u16);
        let packet = Packet::Publish(ringmq::protocol::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("c/{publisher}").into(),
            packet_id: Some(packet_id),
            properties: Default::default(),
            payload: text.clone().into(),
        });
        if !send(&mut client, &packet) {
            return;
        }
        match client.recv_or_closed(Duration::from_secs(5)) {
            common::Received::Packet(Packet::PubAck(ack)) if ack.packet_id == packet_id => {
                acked.lock().unwrap().push(text);
            }
            _ => return,
        }
    }
}

/// A pseudo-random delay per round (the kill moment), from the clock.
fn kill_delay(round: usize) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let spread = (nanos ^ (round as u64 * 0x9E37_79B9)) % 600;
    Duration::from_millis(300 + spread)
}

#[test]
fn no_acknowledged_message_is_lost_when_the_broker_is_killed() {
    kill_rounds("always", ROUNDS);
}

/// The same with `fsync = "periodic"`: acknowledged once written to the page cache, which a
/// killed process does not take with it.
#[test]
fn no_acknowledged_message_is_lost_when_the_broker_is_killed_with_periodic_sync() {
    kill_rounds("periodic", 2);
}

fn kill_rounds(fsync: &'static str, rounds: usize) {
    let dir = std::env::temp_dir().join(format!("ringmq-crash-{fsync}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = common::reserve_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.port));
    let setup = Setup {
        shards: 4,
        admin: None,
        fsync,
    };
    let config = write_config(&dir, port.port, &setup);
    let received: Vec<Arc<Mutex<Vec<String>>>> =
        SUBSCRIBERS.iter().map(|_| Arc::default()).collect();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();

    // Sessions and a retained message before the first crash.
    let broker = start(&config, addr);
    for name in SUBSCRIBERS {
        let (mut client, _) = connect(broker.addr, name).expect("subscriber connects");
        client.subscribe(1, &[("c/#", QoS::AtLeastOnce)]);
    }
    let (mut retainer, _) = RawClient::connect(broker.addr, Version::V3_1_1, "retainer", true);
    retainer.publish("keep/me", b"retained", QoS::AtLeastOnce, true, Some(1));
    assert!(matches!(retainer.recv(), Packet::PubAck(_)));
    drop(retainer);
    let mut broker = Some(broker);

    for round in 0..rounds {
        let running = broker.take().unwrap_or_else(|| start(&config, addr));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // The first two subscribers are online during the round; the third stays away.
        for (index, name) in SUBSCRIBERS.iter().take(2).enumerate() {
            let (client, present) = connect(running.addr, name).expect("subscriber reconnects");
            assert!(present, "round {round}: {name} finds its session");
            let (received, stop) = (Arc::clone(&received[index]), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                consume(client, received, stop, Duration::ZERO)
            }));
        }
        for publisher in 0..PUBLISHERS {
            let acked = Arc::clone(&acked);
            threads.push(std::thread::spawn(move || {
                publish(addr, publisher, round, acked)
            }));
        }
        std::thread::sleep(kill_delay(round));
        running.kill();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
    }

    // Everyone collects what is left.
    let broker = start(&config, addr);
    let stop = Arc::new(AtomicBool::new(true));
    let mut threads = Vec::new();
    for (index, name) in SUBSCRIBERS.iter().enumerate() {
        let (client, present) = connect(broker.addr, name).expect("subscriber reconnects");
        assert!(present, "{name} finds its session at the end");
        let (received, stop) = (Arc::clone(&received[index]), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            consume(client, received, stop, Duration::from_secs(2))
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let (mut fresh, _) = RawClient::connect(broker.addr, Version::V3_1_1, "fresh", true);
    fresh.subscribe(1, &[("keep/#", QoS::AtLeastOnce)]);
    let retained = fresh.recv_publish();
    assert_eq!(&retained.payload[..], b"retained");
    broker.kill();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= rounds * PUBLISHERS,
        "publishers got few acknowledgements ({}); the test did not exercise anything",
        acked.len()
    );
    for (index, name) in SUBSCRIBERS.iter().enumerate() {
        let got = received[index].lock().unwrap().clone();
        let seen: HashSet<&String> = got.iter().collect();
        let lost: Vec<&String> = acked.iter().filter(|m| !seen.contains(m)).collect();
        let mut lost_by_round = std::collections::BTreeMap::new();
        for message in &lost {
            *lost_by_round.entry(&message[..3]).or_insert(0) += 1;
        }
        assert!(
            lost.is_empty(),
            "{name}: {} of {} acknowledged messages lost, first {:?}; by publisher-round \
             {lost_by_round:?}",
            lost.len(),
            acked.len(),
            lost.first()
        );
        // First arrivals keep each publisher's order.
        let mut first = HashSet::new();
        let mut last_per_publisher: Vec<Option<&String>> = vec![None; PUBLISHERS];
        for message in &got {
            if !first.insert(message) {
                continue;
            }
            let publisher: usize = message[..1].parse().unwrap();
            if let Some(previous) = last_per_publisher[publisher] {
                assert!(previous < message, "{name}: {message} after {previous}");
            }
            last_per_publisher[publisher] = Some(message);
        }
    }
    eprintln!(
        "{fsync}: {} acknowledged messages over {rounds} kills, all delivered to {} subscribers",
        acked.len(),
        SUBSCRIBERS.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts the broker with a soft limit on the size of any file it writes: past it a write fails
/// (EFBIG, SIGXFSZ ignored) as it would on a full disk.
fn start_with_file_limit(config: &Path, addr: SocketAddr, limit: u64) -> Broker {
    use std::os::unix::process::CommandExt;
    let (log, errors) = broker_log(config);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    command
        .arg("--config")
        .arg(config)
        .stdout(log)
        .stderr(errors)
        .env(
            "RUST_LOG",
            std::env::var("CRASH_LOG").unwrap_or_else(|_| String::from("info")),
        );
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("the ringmq binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while connect_broker(addr).is_none() {
        assert!(Instant::now() < deadline, "broker not listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, addr }
}

fn raise_file_limit(broker: &Broker) {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system call on a child of this process with valid pointers.
    let status = unsafe {
        libc::prlimit(
            broker.child.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Publishes a retained QoS 1 message from a 5.0 client; the PUBACK's reason code, with 0x10
/// (No matching subscribers: nobody subscribes here, the message is only retained) read as 0.
fn publish_retained(client: &mut RawClient, topic: &str, payload: &[u8], id: u16) -> u8 {
    client.publish(topic, payload, QoS::AtLeastOnce, true, Some(id));
    match client.recv() {
        Packet::PubAck(ack) if ack.reason.0 == 0x10 => 0,
        Packet::PubAck(ack) => ack.reason.0,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn a_full_disk_refuses_new_promises_keeps_old_ones_and_recovers_when_space_returns() {
    let dir = std::env::temp_dir().join(format!("ringmq-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = common::reserve_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.port));
    // One shard: every retained message goes to the one log the limit fills.
    let admin_port = common::reserve_port();
    let admin = admin_port.port;
    let setup = Setup {
        shards: 1,
        admin: Some(admin),
        fsync: "always",
    };
    let config = write_config(&dir, port.port, &setup);
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let broker = start_with_file_limit(&config, addr, 256 << 10);
    let (mut client, _) = RawClient::connect(addr, Version::V5, "filler", true);
    let payload = vec![b'x'; 8 << 10];
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 1..=200u16 {
        let topic = format!("fill/{i}");
        match publish_retained(&mut client, &topic, &payload, i) {
            0x00 => stored.push(topic),
            0x97 => {
                refused = Some(i);
                break;
            }
            other => panic!("unexpected PUBACK reason {other:#x}"),
        }
    }
    let refused = refused.expect("a full disk refuses a publish with 0x97 Quota exceeded");
    assert!(
        !stored.is_empty(),
        "some messages fit before the disk was full"
    );
    // Still full: still refused, and the connection stays up.
    assert_eq!(
        publish_retained(&mut client, "fill/again", &payload, refused + 1),
        0x97
    );
    wait_for_ready(admin, 503);
    raise_file_limit(&broker);
    // The shard tries a snapshot about once a second; publishes are taken again after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = refused + 2;
    loop {
        let topic = format!("fill/after-{id}");
        if publish_retained(&mut client, &topic, &payload, id) == 0 {
            stored.push(topic);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after space returned"
        );
        std::thread::sleep(Duration::from_millis(200));
        id += 1;
    }
    wait_for_ready(admin, 200);
    drop(client);
    broker.kill();
    // Every acknowledged retained message is there after a restart.
    let broker = start(&config, addr);
    let (mut probe, _) = RawClient::connect(addr, Version::V3_1_1, "probe", true);
    probe.subscribe(1, &[("fill/#", QoS::AtMostOnce)]);
    let mut topics = HashSet::new();
    while let Some(Packet::Publish(publish)) = probe.try_recv(Duration::from_millis(500)) {
        topics.insert(publish.topic.to_string());
    }
    for topic in &stored {
        assert!(
            topics.contains(topic),
            "{topic} was acknowledged and is lost"
        );
    }
    broker.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most 10 s: metrics reach the admin listener about once a second) for `/ready` to
/// answer `status`.
fn wait_for_ready(admin: SocketAddr, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if common::http_get(admin, "/ready").0 == status {
            return;
        }
        assert!(Instant::now() < deadline, "/ready never answered {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
