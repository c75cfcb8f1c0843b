//! Goal: MQTT over WebSocket and secure WebSocket (MQTT section 6, RFC 6455) works with an
//! independent WebSocket client (tungstenite's) on every shard, and the opening handshake, the
//! framing rules, pings, the closing handshake and the size limits answer as the specs say.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use async_tungstenite::tungstenite::{Bytes, Message, WebSocket};
use bytes::BytesMut;
use bytestring::ByteString;
use common::pki::Pki;
use common::security::eventually;
use common::{RawClient, TestBroker, admin_get, connect_packet, metric, pid, test_config};
use ringmq::config::{Config, WsListener, WssListener};
use ringmq::protocol::{
    self, Packet, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, Version,
};
use rustls::pki_types::ServerName;

/// Listener indices: TCP `default`, WebSocket `browser`, then the secure WebSocket listeners in
/// name order.
const WS: usize = 1;
const WSS_MUTUAL: usize = 2;
const WSS_SECURE: usize = 3;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A 4-shard broker with a WebSocket listener at `/mqtt` that allows one origin and has small
/// frame and message limits (1 KiB, 2 KiB) and a 500 ms, 4 KiB handshake.
fn ws_config() -> Config {
    let mut config = test_config(4);
    config.listeners.ws.insert(
        String::from("browser"),
        WsListener {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            shard_port_base: Some(0),
            path: Some(String::from("/mqtt")),
            allowed_origins: vec![String::from("https://app.example")],
            frame_bytes_max: 1024,
            message_bytes_max: 2048,
            handshake_bytes_max: 4096,
            handshake_timeout_ms: 500,
            ..WsListener::default()
        },
    );
    config
}

/// `ws_config` plus secure WebSocket listeners: `secure` (server certificate only) and `mutual`
/// (client certificates from the test CA, identity as username).
fn wss_config(pki: &Pki) -> Config {
    let mut config = ws_config();
    let secure = WssListener {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        shard_port_base: Some(0),
        cert_chain_file: pki.path("server.pem"),
        key_file: pki.path("server-key.pem"),
        ..WssListener::default()
    };
    let mutual = WssListener {
        ca_file: Some(pki.path("ca.pem")),
        require_certificate: true,
        use_identity_as_username: true,
        ..secure.clone()
    };
    config.listeners.wss.insert(String::from("secure"), secure);
    config.listeners.wss.insert(String::from("mutual"), mutual);
    config
}

/// A blocking MQTT client over tungstenite's WebSocket client.
struct WsClient<S: Read + Write> {
    ws: WebSocket<S>,
    buf: BytesMut,
    version: Version,
}

/// A socket whose reads and writes are retried when the in-process broker's threads interrupt
/// them (tungstenite would take the interruption for an error).
struct Retry(TcpStream);

impl Retry {
    fn connect(addr: SocketAddr) -> Retry {
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        Retry(socket)
    }
}

impl Read for Retry {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        read_once(&mut self.0, buf)
    }
}

impl Write for Retry {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl WsClient<Retry> {
    fn open(addr: SocketAddr, subprotocol: &str) -> WsClient<Retry> {
        WsClient::over(
            Retry::connect(addr),
            &format!("ws://{addr}/mqtt"),
            subprotocol,
        )
    }
}

impl<S: Read + Write> WsClient<S> {
    fn over(stream: S, url: &str, subprotocol: &str) -> WsClient<S> {
        WsClient::try_over(stream, url, subprotocol)
            .unwrap_or_else(|error| panic!("WebSocket handshake: {error}"))
    }

    fn try_over(stream: S, url: &str, subprotocol: &str) -> Result<WsClient<S>, String> {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(subprotocol).unwrap(),
        );
        let (ws, response) = async_tungstenite::tungstenite::client(request, stream)
            .map_err(|error| error.to_string())?;
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            subprotocol,
            "the subprotocol offered is echoed"
        );
        Ok(WsClient {
            ws,
            buf: BytesMut::new(),
            version: Version::V5,
        })
    }

    fn encode(&self, packet: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out, usize::MAX).unwrap();
        out.to_vec()
    }

    /// Sends `packet` as one binary message.
    fn send(&mut self, packet: &Packet) {
        let bytes = self.encode(packet);
        self.send_message(Message::Binary(Bytes::from(bytes)));
    }

    fn send_message(&mut self, message: Message) {
        self.ws.send(message).unwrap();
    }

    /// The next MQTT packet (pongs skipped), or panics.
    fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, self.version, usize::MAX).unwrap()
            {
                return packet;
            }
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(Message::Pong(_) | Message::Ping(_)) => {}
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    /// The next message that is not binary (the broker's pong or close), skipping MQTT bytes.
    fn next_control(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(message) => return message,
                Err(error) => panic!("expected a control message, got {error}"),
            }
        }
    }

    /// Waits for the broker's close frame; its code.
    fn expect_close(&mut self) -> CloseCode {
        match self.next_control() {
            Message::Close(Some(frame)) => frame.code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    fn login(&mut self, client_id: &str) -> ReasonCode {
        let connect = connect_packet(self.version, client_id, true, None);
        self.send(&Packet::Connect(Box::new(connect)));
        match self.recv() {
            Packet::ConnAck(connack) => connack.reason,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn subscribe_packet(filter: &str, qos: QoS) -> Packet {
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![SubscribeFilter {
                filter: ByteString::from(filter),
                options: protocol::SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        })
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Self::subscribe_packet(filter, qos));
        assert!(matches!(self.recv(), Packet::SubAck(_)));
    }
}

fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: packet_id.map(pid),
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

#[test]
fn mqtt_over_websocket_on_every_shard() {
    let broker = TestBroker::with_config(ws_config());
    let (mut native, _) = RawClient::connect(broker.shard(0), Version::V5, "native", true);
    native.subscribe(1, &[("from/ws/#", QoS::AtLeastOnce)]);
    for shard in 0..4 {
        let addr = broker.shard_addr(WS, shard).unwrap();
        let mut client = WsClient::open(addr, "mqtt");
        assert_eq!(client.login(&format!("ws{shard}")), ReasonCode::SUCCESS);
        client.subscribe("to/ws", QoS::AtLeastOnce);
        // Browser to native client.
        let topic = format!("from/ws/{shard}");
        client.send(&publish(&topic, b"up", QoS::AtLeastOnce, Some(7)));
        assert!(matches!(client.recv(), Packet::PubAck(_)));
        let received = native.recv_publish();
        assert_eq!(received.topic, topic.as_str());
        native.ack(&received);
        // Native client to browser.
        native.publish("to/ws", b"down", QoS::AtLeastOnce, false, Some(9));
        assert!(matches!(native.recv(), Packet::PubAck(_)));
        match client.recv() {
            Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"down"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        client.send(&Packet::Disconnect(Default::default()));
        assert_eq!(client.expect_close(), CloseCode::Normal);
    }
    // MQTT 3.1 clients offer `mqttv3.1`, echoed back as offered.
    let mut old = WsClient::open(broker.listener_addr(WS), "mqttv3.1");
    old.version = Version::V3_1;
    assert_eq!(old.login("old"), ReasonCode::SUCCESS);
    // Counted as ordinary connections, labelled by their transport.
    let admin = broker.admin_addr().unwrap();
    let opened = |transport: &str| {
        let prefix =
            format!("ringmq_connections_opened_total{{shard=\"all\",transport=\"{transport}\"}} ");
        metric(&admin_get(admin, "/metrics"), &prefix)
    };
    assert!(
        eventually(|| opened("ws") == 5.0 && opened("tcp") == 1.0),
        "ws {} tcp {}",
        opened("ws"),
        opened("tcp")
    );
    // And by the listener they came through: the old client is still connected.
    let by_listener = |family: &str| {
        let prefix =
            format!("ringmq_{family}{{shard=\"all\",listener=\"ws.browser\",transport=\"ws\"}} ");
        metric(&admin_get(admin, "/metrics"), &prefix)
    };
    assert!(
        eventually(|| by_listener("listener_connections_opened_total") == 5.0
            && by_listener("listener_connections") == 1.0),
        "opened {} open {}",
        by_listener("listener_connections_opened_total"),
        by_listener("listener_connections")
    );
}

/// Sends a raw upgrade request with `extra` header lines; the status of the answer, or `None`
/// when the connection closed without one.
fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    // A large request may be refused before it is all written.
    let _ = stream.write_all(request.as_bytes());
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match read_once(&mut stream, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .map(|status| status.parse().unwrap())
}

/// One read, retried when the in-process broker's threads interrupt it.
fn read_once(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[test]
fn the_opening_handshake_answers_each_case() {
    let broker = TestBroker::with_config(ws_config());
    let addr = broker.listener_addr(WS);
    let mqtt = "Sec-WebSocket-Protocol: mqtt\r\n";
    assert_eq!(upgrade(addr, "/mqtt", mqtt), Some(101));
    // Several offered, in one header or several: ours is picked.
    assert_eq!(
        upgrade(addr, "/mqtt", "Sec-WebSocket-Protocol: chat, mqtt\r\n"),
        Some(101)
    );
    assert_eq!(
        upgrade(addr, "/mqtt", "Sec-WebSocket-Protocol: chat\r\n"),
        Some(400)
    );
    assert_eq!(upgrade(addr, "/mqtt", ""), Some(400), "no subprotocol");
    assert_eq!(upgrade(addr, "/other", mqtt), Some(404), "wrong path");
    let allowed = format!("{mqtt}Origin: https://app.example\r\n");
    assert_eq!(upgrade(addr, "/mqtt", &allowed), Some(101));
    let foreign = format!("{mqtt}Origin: https://evil.example\r\n");
    assert_eq!(
        upgrade(addr, "/mqtt", &foreign),
        Some(403),
        "origin not allowed"
    );
    // Over handshake_bytes_max (4 KiB): closed without an upgrade.
    let cookie = format!("{mqtt}Cookie: {}\r\n", "c".repeat(8192));
    assert_eq!(upgrade(addr, "/mqtt", &cookie), None, "oversized request");
    // A client that never finishes its request is closed at handshake_timeout_ms (500 ms).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert!(matches!(read_once(&mut slow, &mut byte), Ok(0) | Err(_)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(4500),
        "slow handshake closed after {waited:?}"
    );
}

#[test]
fn frames_carry_packets_in_any_split() {
    let broker = TestBroker::with_config(ws_config());
    let addr = broker.listener_addr(WS);
    let mut client = WsClient::open(addr, "mqtt");
    // CONNECT and SUBSCRIBE in one binary message.
    let mut both = client.encode(&Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "split",
        true,
        None,
    ))));
    both.extend(client.encode(&WsClient::<Retry>::subscribe_packet("t", QoS::AtMostOnce)));
    client.send_message(Message::Binary(Bytes::from(both)));
    assert!(matches!(client.recv(), Packet::ConnAck(_)));
    assert!(matches!(client.recv(), Packet::SubAck(_)));
    // A PUBLISH split over three fragments of one message...
    let packet = client.encode(&publish("t", b"fragmented", QoS::AtMostOnce, None));
    let (head, rest) = packet.split_at(3);
    let (middle, tail) = rest.split_at(4);
    for (part, opcode, last) in [
        (head, OpCode::Data(Data::Binary), false),
        (middle, OpCode::Data(Data::Continue), false),
        (tail, OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(Bytes::copy_from_slice(part), opcode, last);
        client.send_message(Message::Frame(frame));
    }
    match client.recv() {
        Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"fragmented"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // ...and one split over two messages.
    let packet = client.encode(&publish("t", b"two messages", QoS::AtMostOnce, None));
    let (first, second) = packet.split_at(5);
    client.send_message(Message::Binary(Bytes::copy_from_slice(first)));
    client.send_message(Message::Binary(Bytes::copy_from_slice(second)));
    match client.recv() {
        Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"two messages"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A ping is answered with a pong carrying its payload.
    client.send_message(Message::Ping(Bytes::from_static(b"are you there")));
    assert_eq!(
        client.next_control(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    // A text frame breaks MQTT-6.0.0-1: close 1003.
    client.send_message(Message::text("CONNECT"));
    assert_eq!(client.expect_close(), CloseCode::Unsupported);
}

#[test]
fn the_client_may_close_first() {
    let broker = TestBroker::with_config(ws_config());
    let mut client = WsClient::open(broker.listener_addr(WS), "mqtt");
    assert_eq!(client.login("closer"), ReasonCode::SUCCESS);
    client.ws.close(None).unwrap();
    // The broker answers the close frame, then ends the connection.
    loop {
        match client.ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("expected the close reply, got {other:?}"),
            Err(async_tungstenite::tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("closing: {error}"),
        }
    }
}

#[test]
fn frame_and_message_limits_hold_at_and_over() {
    let broker = TestBroker::with_config(ws_config());
    let addr = broker.listener_addr(WS);
    let mut client = WsClient::open(addr, "mqtt");
    assert_eq!(client.login("limits"), ReasonCode::SUCCESS);
    client.subscribe("big", QoS::AtMostOnce);
    // A frame of exactly frame_bytes_max (1 KiB), and a message of exactly message_bytes_max
    // (2 KiB, two frames) pass.
    let header = client
        .encode(&publish("big", b"", QoS::AtMostOnce, None))
        .len()
        + 1;
    let one_frame = client.encode(&publish(
        "big",
        &vec![b'a'; 1024 - header],
        QoS::AtMostOnce,
        None,
    ));
    assert_eq!(one_frame.len(), 1024);
    client.send_message(Message::Binary(Bytes::from(one_frame)));
    assert!(matches!(client.recv(), Packet::Publish(p) if p.payload.len() == 1024 - header));
    let two_frames = client.encode(&publish(
        "big",
        &vec![b'b'; 2048 - header],
        QoS::AtMostOnce,
        None,
    ));
    assert_eq!(two_frames.len(), 2048);
    let (first, second) = two_frames.split_at(1024);
    client.send_message(Message::Frame(Frame::message(
        Bytes::copy_from_slice(first),
        OpCode::Data(Data::Binary),
        false,
    )));
    client.send_message(Message::Frame(Frame::message(
        Bytes::copy_from_slice(second),
        OpCode::Data(Data::Continue),
        true,
    )));
    assert!(matches!(client.recv(), Packet::Publish(p) if p.payload.len() == 2048 - header));
    // One byte over the frame limit: close 1009 (message too big).
    client.send_message(Message::Binary(Bytes::from(vec![0u8; 1025])));
    assert_eq!(client.expect_close(), CloseCode::Size);
    // Three frames of 1 KiB, each within the frame limit, make a message over 2 KiB.
    let mut client = WsClient::open(addr, "mqtt");
    assert_eq!(client.login("limits2"), ReasonCode::SUCCESS);
    for (opcode, last) in [
        (OpCode::Data(Data::Binary), false),
        (OpCode::Data(Data::Continue), false),
        (OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(Bytes::from(vec![0u8; 1024]), opcode, last);
        client.send_message(Message::Frame(frame));
    }
    assert_eq!(client.expect_close(), CloseCode::Size);
}

/// A WebSocket client over rustls, with or without a client certificate.
fn wss_client(
    pki: &Pki,
    addr: SocketAddr,
    certificate: Option<&str>,
) -> Result<WsClient<rustls::StreamOwned<rustls::ClientConnection, Retry>>, String> {
    let socket = Retry::connect(addr);
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(pki.client_config(certificate), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    WsClient::try_over(
        tls,
        &format!("wss://localhost:{}/mqtt", addr.port()),
        "mqtt",
    )
}

#[test]
fn secure_websocket_with_and_without_a_client_certificate() {
    let pki = Pki::new("wss");
    let broker = TestBroker::with_config(wss_config(&pki));
    for shard in 0..4 {
        let addr = broker.shard_addr(WSS_SECURE, shard).unwrap();
        let mut client = wss_client(&pki, addr, None).unwrap();
        assert_eq!(client.login(&format!("wss{shard}")), ReasonCode::SUCCESS);
        client.subscribe("secure/t", QoS::ExactlyOnce);
        client.send(&Packet::Disconnect(Default::default()));
        assert_eq!(client.expect_close(), CloseCode::Normal);
    }
    // With a client certificate on the mutual listener: the certificate is the identity.
    let mutual = broker.listener_addr(WSS_MUTUAL);
    let mut client = wss_client(&pki, mutual, Some("client")).unwrap();
    assert_eq!(client.login("with-cert"), ReasonCode::SUCCESS);
    // Without one, TLS 1.3 refuses it once the client's handshake is done: the upgrade fails.
    assert!(
        wss_client(&pki, mutual, None).is_err(),
        "a client without a certificate got through the mutual listener"
    );
}
