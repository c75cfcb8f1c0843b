//! TLS config errors, client identities, and real handshakes: a shards runtime accepts with
//! [`accept`], a rustls client on a std thread talks to it.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;

/// A CA, a server certificate (localhost, 127.0.0.1), a client certificate (CN=client1), and a
/// second CA with its own client certificate, written as PEM files into a temporary directory.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringmq-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = ca("ringmq test CA");
        let other_ca = ca_named("other CA");
        let server = leaf(
            &["localhost", "127.0.0.1"],
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&[], Some("client1"), ExtendedKeyUsagePurpose::ClientAuth);
        let san_only = leaf(
            &["device.example"],
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
        write("ca.pem", ca.pem());
        write("other-ca.pem", other_ca.pem());
        for (name, (params, key), issuer) in [
            ("server", server, &ca),
            ("client", client, &ca),
            ("san-only", san_only, &ca),
        ] {
            let certificate = params.signed_by(&key, issuer).unwrap();
            write(&format!("{name}.pem"), certificate.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        let (params, key) = leaf(&[], Some("client1"), ExtendedKeyUsagePurpose::ClientAuth);
        let certificate = params.signed_by(&key, &other_ca).unwrap();
        write("rogue.pem", certificate.pem());
        write("rogue-key.pem", key.serialize_pem());
        Pki {
            dir,
            ca: ca.der().clone(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert_chain_file: self.path("server.pem"),
            key_file: self.path("server-key.pem"),
            min_version: TlsVersion::V1_2,
            cipher_suites: vec![],
            alpn: vec!["mqtt".into()],
            require_certificate: false,
            ca_file: None,
            use_identity_as_username: false,
        }
    }

    fn mutual(&self) -> TlsSettings {
        TlsSettings {
            require_certificate: true,
            ca_file: Some(self.path("ca.pem")),
            use_identity_as_username: true,
            ..self.settings()
        }
    }

    fn client_config(&self, certificate: Option<&str>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match certificate {
            None => builder.with_no_client_auth(),
            Some(name) => builder
                .with_client_auth_cert(
                    load_certificates(&self.path(&format!("{name}.pem"))).unwrap(),
                    load_private_key(&self.path(&format!("{name}-key.pem"))).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    ca_named(name)
}

fn ca_named(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    names: &[&str],
    common_name: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().unwrap()),
        });
    }
    params.distinguished_name = DistinguishedName::new();
    if let Some(name) = common_name {
        params.distinguished_name.push(DnType::CommonName, name);
    }
    params.extended_key_usages = vec![usage];
    (params, KeyPair::generate().unwrap())
}

#[test]
fn config_builds_with_defaults_and_chosen_suites() {
    let pki = Pki::new("build");
    build_server_config(&pki.settings()).unwrap();
    build_server_config(&pki.mutual()).unwrap();
    let config = build_server_config(&TlsSettings {
        min_version: TlsVersion::V1_3,
        cipher_suites: vec!["TLS13_AES_128_GCM_SHA256".into()],
        ..pki.settings()
    })
    .unwrap();
    assert_eq!(config.alpn_protocols, vec![b"mqtt".to_vec()]);
    let suites: Vec<_> = config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(suite_name)
        .collect();
    assert_eq!(suites, ["TLS13_AES_128_GCM_SHA256"]);
    // min_version 1.3 with no list drops the TLS 1.2 suites.
    let config = build_server_config(&TlsSettings {
        min_version: TlsVersion::V1_3,
        ..pki.settings()
    })
    .unwrap();
    assert!(
        config
            .crypto_provider()
            .cipher_suites
            .iter()
            .all(|s| s.tls13().is_some())
    );
}

fn error_of(settings: &TlsSettings) -> String {
    build_server_config(settings).unwrap_err().to_string()
}

#[test]
fn config_errors_name_the_file_and_the_problem() {
    let pki = Pki::new("errors");
    let missing = pki.path("missing.pem");
    let message = error_of(&TlsSettings {
        cert_chain_file: missing.clone(),
        ..pki.settings()
    });
    assert!(
        message.starts_with(&format!("{}: cannot read", missing.display())),
        "{message}"
    );
    // A key file holds no certificate, a certificate file no key.
    let message = error_of(&TlsSettings {
        cert_chain_file: pki.path("server-key.pem"),
        ..pki.settings()
    });
    assert!(
        message.contains("server-key.pem: no certificate in it"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        key_file: pki.path("server.pem"),
        ..pki.settings()
    });
    assert!(
        message.contains("server.pem: no private key in it"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        key_file: pki.path("client-key.pem"),
        ..pki.settings()
    });
    assert!(
        message.contains("client-key.pem: this key does not match"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        cipher_suites: vec!["TLS_RSA_WITH_RC4_128_MD5".into()],
        ..pki.settings()
    });
    assert!(
        message.contains("`TLS_RSA_WITH_RC4_128_MD5` is unknown"),
        "{message}"
    );
    assert!(message.contains("TLS13_AES_256_GCM_SHA384"), "{message}");
    assert!(
        message.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        min_version: TlsVersion::V1_3,
        cipher_suites: vec![
            "TLS13_AES_128_GCM_SHA256".into(),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        ],
        ..pki.settings()
    });
    assert!(
        message.contains("is for TLS 1.2, but min_version is 1.3"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        cipher_suites: vec!["TLS13_AES_128_GCM_SHA256".into()],
        ..pki.settings()
    });
    assert!(message.contains("no TLS 1.2 suite"), "{message}");
    let message = error_of(&TlsSettings {
        ca_file: None,
        ..pki.mutual()
    });
    assert!(message.contains("needs ca_file"), "{message}");
    let message = error_of(&TlsSettings {
        require_certificate: false,
        ..pki.mutual()
    });
    assert!(
        message.contains("needs require_certificate = true"),
        "{message}"
    );
    let message = error_of(&TlsSettings {
        alpn: vec![String::new()],
        ..pki.settings()
    });
    assert!(message.contains("1 to 255 bytes"), "{message}");
    assert!(
        TlsVersion::parse("1.1")
            .unwrap_err()
            .to_string()
            .contains("\"1.2\" or \"1.3\"")
    );
    assert_eq!(TlsVersion::parse("1.3").unwrap(), TlsVersion::V1_3);
}

#[test]
fn identity_is_the_common_name_else_the_first_dns_name() {
    let pki = Pki::new("identity");
    let identity = |file: &str| identity_of(&load_certificates(&pki.path(file)).unwrap()[0]);
    assert_eq!(identity("client.pem").as_deref(), Some("client1"));
    assert_eq!(identity("san-only.pem").as_deref(), Some("device.example"));
    assert_eq!(identity("server.pem").as_deref(), Some("localhost"));
}

/// What the server saw of one connection.
#[derive(Debug)]
enum Seen {
    Connected {
        identity: Option<String>,
        alpn: Option<Vec<u8>>,
        /// What the reader task received while the writer task was sending ticks.
        first_line: Vec<u8>,
    },
    Refused(String),
}

/// One shard that accepts TLS connections: it sends three ticks from the writer task while the
/// reader task waits for a line, echoes that line, then echoes everything until close_notify.
fn start_server(config: Arc<ServerConfig>) -> (shards::Runtime, SocketAddr, mpsc::Receiver<Seen>) {
    let (report, seen) = mpsc::channel();
    let runtime = shards::start(
        shards::RuntimeConfig {
            topology: shards::Topology {
                shards: shards::ShardCount::Count(1),
                cpus: shards::CpuSet::All,
                pin: false,
            },
            listeners: vec![shards::ListenerSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                backlog: 16,
                port_per_shard: shards::PortPerShard::Off,
            }],
            name: String::from("tls-test"),
            ..shards::RuntimeConfig::default()
        },
        move |context: shards::ShardContext<()>| {
            let config = config.clone();
            let report = report.clone();
            async move {
                for listener in context.take_listeners() {
                    let config = config.clone();
                    let report = report.clone();
                    shards::spawn_local(async move {
                        while let Ok((stream, _)) = listener.accept().await {
                            let config = config.clone();
                            let report = report.clone();
                            shards::spawn_local(serve(config, stream, report)).detach();
                        }
                    })
                    .detach();
                }
                context.shutdown_requested().await;
            }
        },
    )
    .unwrap();
    let addr = runtime.listener_addr(0);
    (runtime, addr, seen)
}

async fn serve(config: Arc<ServerConfig>, stream: shards::TcpStream, report: mpsc::Sender<Seen>) {
    let connection = match accept(config, stream, Duration::from_secs(5)).await {
        Ok(connection) => connection,
        Err(error) => {
            let _ = report.send(Seen::Refused(error.to_string()));
            return;
        }
    };
    let identity = connection.client_identity();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    let (mut read_half, mut write_half) = connection.split();
    let reader = shards::spawn_local(async move {
        let mut line = Vec::new();
        let mut buf = [0u8; 64];
        while !line.ends_with(b"\n") {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => line.extend_from_slice(&buf[..n]),
            }
        }
        (line, read_half)
    });
    for tick in 0..3 {
        write_half
            .write_all(format!("tick {tick}\n").as_bytes())
            .await
            .unwrap();
        shards::time::sleep(Duration::from_millis(5)).await;
    }
    let (first_line, mut read_half) = reader.await;
    let _ = report.send(Seen::Connected {
        identity,
        alpn,
        first_line: first_line.clone(),
    });
    write_half.write_all(&first_line).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = read_half.read(&mut buf).await {
        write_half.write_all(&buf[..n]).await.unwrap();
    }
    write_half.shutdown().await.unwrap();
}

/// Connects, reads the three ticks, sends a line and a large block, and checks both come back.
fn talk(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let mut socket = std::net::TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::Stream::new(&mut client, &mut socket);
    let mut ticks = [0u8; 21];
    tls.read_exact(&mut ticks)?;
    assert_eq!(&ticks, b"tick 0\ntick 1\ntick 2\n");
    tls.write_all(b"hello\n")?;
    let mut echo = [0u8; 6];
    tls.read_exact(&mut echo)?;
    assert_eq!(&echo, b"hello\n");
    // More than the plaintext buffer in one go.
    let block: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    tls.write_all(&block)?;
    let mut back = vec![0u8; block.len()];
    tls.read_exact(&mut back)?;
    assert!(back == block, "the echoed block differs");
    tls.conn.send_close_notify();
    tls.flush()?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?;
    assert!(rest.is_empty());
    Ok(())
}

fn stop(runtime: shards::Runtime) {
    runtime.handle().shutdown();
    runtime.join().unwrap();
}

#[test]
fn echo_over_tls_with_reader_and_writer_tasks() {
    let pki = Pki::new("echo");
    let (runtime, addr, seen) = start_server(build_server_config(&pki.settings()).unwrap());
    talk(addr, pki.client_config(None, &["mqtt"])).unwrap();
    match seen.recv_timeout(Duration::from_secs(5)).unwrap() {
        Seen::Connected {
            identity,
            alpn,
            first_line,
        } => {
            assert_eq!(identity, None);
            assert_eq!(alpn.as_deref(), Some(&b"mqtt"[..]));
            assert_eq!(first_line, b"hello\n");
        }
        refused => panic!("{refused:?}"),
    }
    // A client that offers no ALPN is accepted too.
    talk(addr, pki.client_config(None, &[])).unwrap();
    assert!(matches!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap(),
        Seen::Connected { alpn: None, .. }
    ));
    stop(runtime);
}

#[test]
fn mutual_tls_gives_the_identity_and_refuses_strangers() {
    let pki = Pki::new("mutual");
    let (runtime, addr, seen) = start_server(build_server_config(&pki.mutual()).unwrap());
    talk(addr, pki.client_config(Some("client"), &["mqtt"])).unwrap();
    match seen.recv_timeout(Duration::from_secs(5)).unwrap() {
        Seen::Connected { identity, .. } => assert_eq!(identity.as_deref(), Some("client1")),
        refused => panic!("{refused:?}"),
    }
    // Signed by another CA, or no certificate at all: the handshake fails on both sides.
    for certificate in [Some("rogue"), None] {
        assert!(talk(addr, pki.client_config(certificate, &["mqtt"])).is_err());
        match seen.recv_timeout(Duration::from_secs(5)).unwrap() {
            Seen::Refused(message) => {
                assert!(message.starts_with("TLS handshake failed"), "{message}")
            }
            connected => panic!("{certificate:?}: {connected:?}"),
        }
    }
    // A client offering only another ALPN protocol is refused.
    assert!(talk(addr, pki.client_config(Some("client"), &["h2"])).is_err());
    assert!(matches!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap(),
        Seen::Refused(_)
    ));
    stop(runtime);
}

#[test]
fn a_silent_client_times_out_and_plain_mqtt_is_recognised() {
    let pki = Pki::new("timeout");
    let config = build_server_config(&pki.settings()).unwrap();
    let (report, seen) = mpsc::channel();
    let runtime = shards::start(
        shards::RuntimeConfig {
            topology: shards::Topology {
                shards: shards::ShardCount::Count(1),
                cpus: shards::CpuSet::All,
                pin: false,
            },
            listeners: vec![shards::ListenerSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                backlog: 16,
                port_per_shard: shards::PortPerShard::Off,
            }],
            name: String::from("tls-timeout"),
            ..shards::RuntimeConfig::default()
        },
        move |context: shards::ShardContext<()>| {
            let config = config.clone();
            let report = report.clone();
            async move {
                let listeners = context.take_listeners();
                if let Ok((stream, _)) = listeners[0].accept().await {
                    let result = accept(config, stream, Duration::from_millis(100)).await;
                    let _ = report.send(result.err().map(|error| error.to_string()));
                }
                context.shutdown_requested().await;
            }
        },
    )
    .unwrap();
    let _silent = std::net::TcpStream::connect(runtime.listener_addr(0)).unwrap();
    let message = seen.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert!(message.contains("not finished after 100ms"), "{message}");
    stop(runtime);
    assert!(looks_like_mqtt_connect(b"\x10\x10\x00\x04MQTT\x04"));
}

#[test]
fn every_version_the_config_accepts_is_one_tls_knows() {
    for version in crate::config::TLS_VERSIONS {
        assert_eq!(TlsVersion::parse(version).unwrap().to_string(), version);
    }
}
