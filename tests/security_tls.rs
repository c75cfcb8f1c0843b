//! Goal: MQTT over the broker's TLS listeners works with a real rustls client, mTLS turns the
//! certificate into the username the ACL keys on, wrong certificates and wrong protocols are
//! closed quickly, and a bad certificate on reload keeps the old one.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use common::pki::Pki;
use common::{RawClient, TestBroker, connect_packet, pid, test_config};
use ringmq::config::{Config, TlsListener};
use ringmq::protocol::{
    self, Packet, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, Version,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Listener indices: TCP first, then TLS in name order.
const MUTUAL: usize = 1;
const SECURE: usize = 2;

/// A 4-shard broker: TCP `default`, TLS `secure` (server certificate only) and TLS `mutual`
/// (client certificates from our CA, identity as username), each with a port per shard.
fn tls_config(pki: &Pki) -> Config {
    let mut config = test_config(4);
    let secure = TlsListener {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        shard_port_base: Some(0),
        cert_chain_file: pki.path("server.pem"),
        key_file: pki.path("server-key.pem"),
        ..TlsListener::default()
    };
    let mutual = TlsListener {
        ca_file: Some(pki.path("ca.pem")),
        require_certificate: true,
        use_identity_as_username: true,
        min_version: String::from("1.3"),
        ..secure.clone()
    };
    config.listeners.tls.insert(String::from("secure"), secure);
    config.listeners.tls.insert(String::from("mutual"), mutual);
    config
}

/// A blocking MQTT client over rustls.
struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
    version: Version,
}

impl TlsClient {
    fn open(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        version: Version,
    ) -> std::io::Result<TlsClient> {
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, socket);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            tls,
            buf: BytesMut::new(),
            version,
        })
    }

    fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out, usize::MAX).unwrap();
        self.tls.write_all(&out)?;
        self.tls.flush()
    }

    /// The next packet, or the error that ended the connection.
    fn recv(&mut self) -> std::io::Result<Packet> {
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, self.version, usize::MAX).unwrap()
            {
                return Ok(packet);
            }
            let mut chunk = [0u8; 16384];
            match self.tls.read(&mut chunk)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// CONNECT with optional credentials; the CONNACK's reason (or the error ending the
    /// connection: a refused client certificate may only show here, TLS 1.3 checks it after the
    /// client's handshake is done).
    fn login(&mut self, client_id: &str, username: Option<&str>) -> std::io::Result<ReasonCode> {
        let mut connect = connect_packet(self.version, client_id, true, None);
        connect.username = username.map(ByteString::from);
        connect.password = username.map(|_| Bytes::from_static(b"whatever"));
        self.send(&Packet::Connect(Box::new(connect)))?;
        match self.recv()? {
            Packet::ConnAck(connack) => Ok(connack.reason),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn subscribe(&mut self, filters: &[&str]) -> Vec<ReasonCode> {
        let subscribe = Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: filters
                .iter()
                .map(|filter| SubscribeFilter {
                    filter: ByteString::from(*filter),
                    options: Default::default(),
                })
                .collect(),
        };
        self.send(&Packet::Subscribe(subscribe)).unwrap();
        match self.recv().unwrap() {
            Packet::SubAck(suback) => suback.reasons,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn publish(&mut self, topic: &str, payload: &'static [u8]) {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(payload),
        };
        self.send(&Packet::Publish(publish)).unwrap();
    }
}

#[test]
fn mqtt_over_tls_on_every_shard() {
    let pki = Pki::new("basic");
    let broker = TestBroker::with_config(tls_config(&pki));
    let config = pki.client_config(None);
    for version in [Version::V3_1_1, Version::V5] {
        let mut subscriber = TlsClient::open(
            broker.shard_addr(SECURE, 0).unwrap(),
            Arc::clone(&config),
            version,
        )
        .unwrap();
        assert_eq!(
            subscriber.login("tls-sub", None).unwrap(),
            ReasonCode::SUCCESS
        );
        assert_eq!(
            subscriber.subscribe(&["tls/#"]),
            [ReasonCode::GRANTED_QOS_0]
        );
        for shard in 1..4 {
            let addr = broker.shard_addr(SECURE, shard).unwrap();
            let mut publisher = TlsClient::open(addr, Arc::clone(&config), version).unwrap();
            assert_eq!(
                publisher.login(&format!("tls-pub-{shard}"), None).unwrap(),
                ReasonCode::SUCCESS
            );
            publisher.publish("tls/hello", b"over TLS");
            match subscriber.recv().unwrap() {
                Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"over TLS"),
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
    // The shared port works too.
    let mut client = TlsClient::open(broker.listener_addr(SECURE), config, Version::V5).unwrap();
    assert_eq!(
        client.login("tls-shared", None).unwrap(),
        ReasonCode::SUCCESS
    );
}

#[test]
fn mutual_tls_identity_is_the_username() {
    let pki = Pki::new("mutual");
    let mut config = tls_config(&pki);
    let acl = pki.path("acl");
    std::fs::write(&acl, "user client1\ntopic client1/#\n").unwrap();
    config.auth.acl_file = Some(acl);
    // A password file: the certificate identity stands in for the password.
    let passwd = pki.path("passwd");
    std::fs::write(&passwd, "someone:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==\n").unwrap();
    config.auth.password_file = Some(passwd);
    let broker = TestBroker::with_config(config);
    let addr = broker.shard_addr(MUTUAL, 2).unwrap();
    let mut client = TlsClient::open(addr, pki.client_config(Some("client")), Version::V5).unwrap();
    // The CONNECT's username (and password) are replaced by the certificate's CN.
    assert_eq!(
        client.login("device-7", Some("mallory")).unwrap(),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        client.subscribe(&["client1/#", "mallory/#"]),
        [ReasonCode::GRANTED_QOS_0, ReasonCode::NOT_AUTHORIZED]
    );
    client.publish("client1/state", b"on");
    match client.recv().unwrap() {
        Packet::Publish(publish) => assert_eq!(&publish.topic[..], "client1/state"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A certificate from another CA, or none at all, does not get in.
    for certificate in [Some("rogue"), None] {
        let refused = TlsClient::open(addr, pki.client_config(certificate), Version::V5)
            .and_then(|mut client| client.login("intruder", None));
        assert!(refused.is_err(), "{certificate:?} got {refused:?}");
    }
}

/// Waits for the server to close `stream`; returns how long it took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("not closed within {limit:?}")
            }
            Err(_) => return started.elapsed(),
        }
    }
}

#[test]
fn wrong_protocol_is_closed_quickly() {
    let pki = Pki::new("sniff");
    let broker = TestBroker::with_config(tls_config(&pki));
    // A TLS ClientHello on the plain port.
    let mut socket = TcpStream::connect(broker.addr).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut hello = rustls::ClientConnection::new(pki.client_config(None), name).unwrap();
    hello.write_tls(&mut socket).unwrap();
    assert!(closed_within(&mut socket, Duration::from_secs(2)) < Duration::from_secs(2));
    // Plain MQTT on a TLS port: closed without an answer.
    let mut plain = RawClient::connect_tcp(broker.listener_addr(SECURE), Version::V5);
    plain.send(&Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "plain",
        true,
        None,
    ))));
    assert!(plain.expect_closed().is_empty());
}

#[test]
fn reload_renews_the_certificate_and_refuses_a_bad_one() {
    let pki = Pki::new("reload");
    let broker = TestBroker::with_config(tls_config(&pki));
    let config = pki.client_config(None);
    let addr = broker.listener_addr(SECURE);
    let mut kept = TlsClient::open(addr, Arc::clone(&config), Version::V5).unwrap();
    assert_eq!(kept.login("kept", None).unwrap(), ReasonCode::SUCCESS);
    let served = |client: &TlsClient| client.tls.conn.peer_certificates().unwrap()[0].clone();
    let original = served(&kept);
    // A renewed certificate: new handshakes get it, the open connection stays.
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    std::fs::write(pki.path("server.pem"), read("renewed.pem")).unwrap();
    std::fs::write(pki.path("server-key.pem"), read("renewed-key.pem")).unwrap();
    broker.reload().unwrap();
    let renewed = CertificateDer::from_pem_file(pki.path("renewed.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let fresh = TlsClient::open(addr, Arc::clone(&config), Version::V5).unwrap();
        if served(&fresh) == renewed {
            break;
        }
        assert_eq!(served(&fresh), original);
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken file is refused with the listener named; the renewed certificate stays.
    std::fs::write(pki.path("server.pem"), "not a certificate\n").unwrap();
    let error = broker.reload().unwrap_err().to_string();
    assert!(
        error.contains("listeners.tls.") && error.contains("server.pem"),
        "{error}"
    );
    std::thread::sleep(Duration::from_millis(600));
    let mut fresh = TlsClient::open(addr, Arc::clone(&config), Version::V5).unwrap();
    assert_eq!(served(&fresh), renewed);
    assert_eq!(fresh.login("fresh", None).unwrap(), ReasonCode::SUCCESS);
    kept.send(&Packet::PingReq).unwrap();
    assert!(matches!(kept.recv().unwrap(), Packet::PingResp));
}

#[test]
fn a_missing_certificate_stops_the_start_with_the_key_named() {
    let pki = Pki::new("missing");
    let mut config = tls_config(&pki);
    config.listeners.tls.get_mut("secure").unwrap().key_file = pki.path("nowhere.pem");
    let error = match ringmq::server::start(config) {
        Ok(_) => panic!("started without its key"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("listeners.tls.secure") && error.contains("nowhere.pem"),
        "{error}"
    );
}

#[test]
fn min_version_refuses_older_clients() {
    let pki = Pki::new("versions");
    let broker = TestBroker::with_config(tls_config(&pki));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let tls12_only = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // `secure` accepts TLS 1.2; `mutual` has min_version = "1.3".
    let mut old = TlsClient::open(
        broker.listener_addr(SECURE),
        Arc::clone(&tls12_only),
        Version::V5,
    )
    .unwrap();
    assert_eq!(
        old.tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(old.login("tls12", None).unwrap(), ReasonCode::SUCCESS);
    assert!(TlsClient::open(broker.listener_addr(MUTUAL), tls12_only, Version::V5).is_err());
}

/// rumqttc, unchanged, over mutual TLS: its certificate is its username.
#[test]
fn rumqttc_over_mutual_tls() {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, TlsConfiguration, Transport};
    // rumqttc builds its rustls config with the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new("rumqttc");
    let mut config = tls_config(&pki);
    let acl = pki.path("acl");
    std::fs::write(&acl, "user client1\ntopic client1/#\n").unwrap();
    config.auth.acl_file = Some(acl);
    let broker = TestBroker::with_config(config);
    let addr = broker.shard_addr(MUTUAL, 1).unwrap();
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let mut options = MqttOptions::new("rumqttc-tls", addr.ip().to_string(), addr.port());
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: read("ca.pem"),
        alpn: None,
        client_auth: Some((read("client.pem"), read("client-key.pem"))),
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, mut events) = AsyncClient::new(options, 10);
        client
            .subscribe("client1/#", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        client
            .publish(
                "client1/hello",
                rumqttc::QoS::AtLeastOnce,
                false,
                "over mTLS",
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("a PUBLISH within 10 s")
                .expect("no connection error");
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                assert_eq!(publish.topic, "client1/hello");
                assert_eq!(&publish.payload[..], b"over mTLS");
                break;
            }
        }
    });
}
