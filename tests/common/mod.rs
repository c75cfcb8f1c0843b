//! Shared test plumbing: an in-process broker on loopback with OS-chosen ports and one extra port
//! per shard (so a test puts each client on the shard it names), and a small blocking MQTT client
//! over the broker's own codec for exact, byte-level assertions.

#![allow(dead_code)]

pub mod memory;
pub mod pki;
pub mod security;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::config::{Config, ShardCount, TcpListener};
use ringmq::protocol::{
    self, Connect, ConnectProperties, Packet, PacketId, PubResponse, Publish, QoS, ReasonCode,
    Subscribe, SubscribeFilter, SubscriptionOptions, Version, Will,
};
use ringmq::server::{self, Broker};

/// A broker running in this process; shut down when dropped.
pub struct TestBroker {
    broker: Option<Broker>,
    pub addr: SocketAddr,
    pub shard_addrs: Vec<SocketAddr>,
}

/// A config for tests: `shards` unpinned shards on 127.0.0.1, OS-chosen ports, port per shard.
pub fn test_config(shards: usize) -> Config {
    let mut config = Config::default();
    config.runtime.shards = ShardCount::Count(shards);
    config.runtime.pin = false;
    config.listeners.tcp.clear();
    config.admin.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listeners.tcp.insert(
        String::from("default"),
        TcpListener {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            shard_port_base: Some(0),
            ..TcpListener::default()
        },
    );
    config
}

impl TestBroker {
    pub fn start(shards: usize) -> TestBroker {
        TestBroker::with_config(test_config(shards))
    }

    pub fn with_config(config: Config) -> TestBroker {
        TestBroker::with_authenticators(config, Vec::new())
    }

    /// A broker with these MQTT 5.0 enhanced-authentication methods.
    pub fn with_authenticators(
        config: Config,
        authenticators: Vec<std::sync::Arc<dyn ringmq::security::Authenticator>>,
    ) -> TestBroker {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let broker = server::start_with(config, authenticators).expect("broker starts");
        let addr = broker.listener_addr(0);
        let shard_addrs = (0..broker.shard_count())
            .map(|i| broker.shard_addr(0, i).expect("port per shard"))
            .collect();
        TestBroker {
            broker: Some(broker),
            addr,
            shard_addrs,
        }
    }

    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(Broker::admin_addr)
    }

    /// The address that lands a connection on `shard`.
    pub fn shard(&self, shard: usize) -> SocketAddr {
        self.shard_addrs[shard % self.shard_addrs.len()]
    }

    /// Begins graceful shutdown without waiting for it; the admin listener stays up until drop.
    pub fn begin_shutdown(&self) {
        if let Some(broker) = &self.broker {
            broker.handle().shutdown();
        }
    }

    /// What SIGHUP does: re-reads the password file, the ACL file and the TLS certificates.
    pub fn reload(&self) -> Result<(), ringmq::security::SecurityError> {
        self.broker.as_ref().expect("running").reload()
    }

    /// What SIGHUP does with the bridge definitions of the config file.
    pub fn reload_bridges(&self, config: &Config) {
        self.broker
            .as_ref()
            .expect("running")
            .reload_bridges(config)
            .expect("bridges reload");
    }

    /// The shared address of listener `index` (TCP listeners first, then TLS ones).
    pub fn listener_addr(&self, index: usize) -> SocketAddr {
        self.broker.as_ref().expect("running").listener_addr(index)
    }

    /// The address that reaches only `shard` on listener `index`.
    pub fn shard_addr(&self, index: usize, shard: usize) -> Option<SocketAddr> {
        self.broker
            .as_ref()
            .expect("running")
            .shard_addr(index, shard)
    }

    pub fn shutdown(mut self) {
        if let Some(broker) = self.broker.take() {
            stop_within_limit(broker).expect("clean shutdown");
        }
    }
}

/// How long a test broker may take to stop. A stop that hangs would stall the whole suite until
/// CI gives up, with no word of which test it was; this turns it into a failure that says so.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// Shuts `broker` down; aborts the test process (naming the test) if that takes over the limit.
fn stop_within_limit(broker: Broker) -> Result<(), ringmq::server::BrokerError> {
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(broker.shutdown());
    });
    match done.recv_timeout(SHUTDOWN_LIMIT) {
        Ok(result) => result,
        Err(_) => {
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            eprintln!("test {test}: the broker did not shut down within {SHUTDOWN_LIMIT:?}");
            std::process::abort();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            let _ = stop_within_limit(broker);
        }
    }
}

/// A blocking MQTT client that speaks through `ringmq::protocol`.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: Version,
    /// Bytes written to and read from the socket so far.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

impl RawClient {
    pub fn connect_tcp(addr: SocketAddr, version: Version) -> RawClient {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        RawClient::from_stream(stream, version)
    }

    /// A client over an already connected stream (for sockets set up by hand).
    pub fn from_stream(stream: TcpStream, version: Version) -> RawClient {
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// TCP connect + CONNECT + CONNACK (asserted successful); returns the CONNACK.
    pub fn connect(
        addr: SocketAddr,
        version: Version,
        client_id: &str,
        clean: bool,
    ) -> (RawClient, protocol::ConnAck) {
        let mut client = RawClient::connect_tcp(addr, version);
        let connack = client.handshake(connect_packet(version, client_id, clean, None));
        assert_eq!(
            connack.reason,
            ReasonCode::SUCCESS,
            "CONNACK for {client_id}"
        );
        (client, connack)
    }

    pub fn handshake(&mut self, connect: Connect) -> protocol::ConnAck {
        self.send(&Packet::Connect(Box::new(connect)));
        match self.recv() {
            Packet::ConnAck(connack) => *connack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out, usize::MAX).expect("encode");
        self.stream.write_all(&out).expect("write");
        self.bytes_sent += out.len() as u64;
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.bytes_sent += bytes.len() as u64;
    }

    /// The next packet, or panics after `TIMEOUT`.
    pub fn recv(&mut self) -> Packet {
        self.try_recv(TIMEOUT)
            .unwrap_or_else(|| panic!("no packet within {TIMEOUT:?}"))
    }

    /// The next packet within `timeout`, `None` if nothing came (panics if the connection closed).
    pub fn try_recv(&mut self, timeout: Duration) -> Option<Packet> {
        match self.recv_or_closed(timeout) {
            Received::Packet(packet) => Some(packet),
            Received::Nothing => None,
            Received::Closed => panic!("connection closed while waiting for a packet"),
        }
    }

    pub fn recv_or_closed(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, self.version, usize::MAX)
                .expect("broker sent a valid packet")
            {
                return Received::Packet(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::Nothing;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Received::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.bytes_received += n as u64;
                }
                // The in-process broker's threads can interrupt this read: retry.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Received::Nothing;
                }
                Err(_) => return Received::Closed,
            }
        }
    }

    /// Asserts the broker closes the connection (after any packets, which are returned).
    pub fn expect_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.recv_or_closed(deadline.saturating_duration_since(Instant::now())) {
                Received::Packet(packet) => packets.push(packet),
                Received::Closed => return packets,
                Received::Nothing => break,
            }
        }
        panic!("connection not closed within {TIMEOUT:?}; got {packets:?}");
    }

    pub fn subscribe(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
        let subscribe = Subscribe {
            packet_id: pid(packet_id),
            properties: Default::default(),
            filters: filters
                .iter()
                .map(|(filter, qos)| SubscribeFilter {
                    filter: ByteString::from(*filter),
                    options: SubscriptionOptions {
                        qos: *qos,
                        ..Default::default()
                    },
                })
                .collect(),
        };
        self.send(&Packet::Subscribe(subscribe));
        match self.recv() {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, pid(packet_id));
                suback.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        packet_id: Option<u16>,
    ) {
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id: packet_id.map(pid),
            properties: Default::default(),
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(&Packet::Publish(publish));
    }

    /// Receives the next PUBLISH (skipping nothing: any other packet fails the test).
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub fn ack(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(response(id))),
            (QoS::ExactlyOnce, Some(id)) => self.send(&Packet::PubRec(response(id))),
            _ => {}
        }
    }

    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default()));
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.recv_or_closed(Duration::from_secs(1));
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Received {
    Packet(Packet),
    Nothing,
    Closed,
}

impl Received {
    pub fn is_packet(&self) -> String {
        format!("{self:?}")
    }
}

/// A loopback port held for a broker *process* that a test starts, for as long as the test runs.
///
/// The socket is bound (port 0: the kernel picks a port nobody holds) with SO_REUSEADDR and
/// SO_REUSEPORT but never listens: the broker's own listeners (SO_REUSEPORT, same user) and an
/// admin listener (SO_REUSEADDR) bind the same port next to it, and it takes no connection. While
/// it lives no other bind can take the port (a port picked by binding and closing again can be
/// taken by a parallel test before the broker binds it, or between a kill and a restart, and
/// two brokers sharing a port answer each other's clients), and the kernel never makes it a
/// client socket's local port.
pub struct PortReservation {
    _socket: socket2::Socket,
    pub port: u16,
}

pub fn reserve_port() -> PortReservation {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    PortReservation {
        _socket: socket,
        port,
    }
}

pub fn response(packet_id: PacketId) -> PubResponse {
    PubResponse {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    }
}

pub fn connect_packet(
    version: Version,
    client_id: &str,
    clean: bool,
    will: Option<Will>,
) -> Connect {
    Connect {
        version,
        clean_start: clean,
        keep_alive_secs: 60,
        client_id: ByteString::from(client_id),
        will,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A plain HTTP/1.1 GET (the admin listener): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("admin read: {e}"),
        }
    }
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The body of `GET path` on the admin listener.
pub fn admin_get(addr: SocketAddr, path: &str) -> String {
    http_get(addr, path).1
}

/// The value of the first `/metrics` series starting with `prefix` (name and labels).
pub fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// A 5.0 subscriber to `ok` on shard 0 and a publisher on shard 1: the clients that must not
/// notice what another client does.
pub struct Bystanders {
    pub sub: RawClient,
    pub publisher: RawClient,
}

impl Bystanders {
    pub fn new(broker: &TestBroker) -> Bystanders {
        let (mut sub, _) = RawClient::connect(broker.shard(0), Version::V5, "bystander", true);
        sub.subscribe(1, &[("ok", QoS::AtMostOnce)]);
        let (publisher, _) = RawClient::connect(broker.shard(1), Version::V5, "pub", true);
        Bystanders { sub, publisher }
    }

    /// Asserts a message still goes from the publisher to the subscriber.
    pub fn still_served(&mut self, what: &str) {
        self.publisher
            .publish("ok", what.as_bytes(), QoS::AtMostOnce, false, None);
        assert_eq!(
            &self.sub.recv_publish().payload[..],
            what.as_bytes(),
            "{what}"
        );
    }
}

/// Asserts the broker sends DISCONNECT with `reason` and closes.
pub fn expect_disconnect(client: &mut RawClient, reason: ReasonCode, what: &str) {
    let packets = client.expect_closed();
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == reason),
        "{what}: {packets:?}"
    );
}

/// Resident memory of this process (broker and clients), from /proc.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Appends a Variable Byte Integer (1.5.5).
pub fn vbi(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
