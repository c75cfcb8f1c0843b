//! Goal: `ringmq-bench -S` against an in-process ringmq's TLS listeners (a port per shard) accounts
//! for every message, with a server certificate only and with a client certificate (mutual TLS),
//! over an IP address and a DNS name as server names; a broker certificate from another CA fails
//! every connection with an error that says what to check.

mod common;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use ringmq::config::{Config, ShardCount, TlsListener};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

const SHARDS: usize = 2;
/// Listener indices: TLS listeners in name order (no TCP listener).
const MUTUAL: usize = 0;
const SECURE: usize = 1;

/// PEM files in a directory of their own: `ca.pem`, `other-ca.pem`, the broker's `server.pem`
/// (localhost, 127.0.0.1) and the bench's `client.pem` (CN=bench), each with its `-key.pem`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("ringmq-bench-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
        let ca = authority("bench test CA");
        write("ca.pem", ca.pem());
        write("other-ca.pem", authority("other CA").pem());
        let leaves = [
            (
                "server",
                ["localhost", "127.0.0.1"].as_slice(),
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            ("client", [].as_slice(), ExtendedKeyUsagePurpose::ClientAuth),
        ];
        for (name, names, usage) in leaves {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            for host in names {
                params.subject_alt_names.push(match host.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*host).try_into().unwrap()),
                });
            }
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, "bench");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            write(
                &format!("{name}.pem"),
                params.signed_by(&key, &ca).unwrap().pem(),
            );
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A broker with TLS listeners `secure` (server certificate) and `mutual` (client certificates
/// from our CA required), each with a port per shard.
fn broker(pki: &Pki) -> ringmq::server::Broker {
    let mut config = Config::default();
    config.runtime.shards = ShardCount::Count(SHARDS);
    config.runtime.pin = false;
    config.admin.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listeners.tcp.clear();
    let secure = TlsListener {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        shard_port_base: Some(0),
        cert_chain_file: PathBuf::from(pki.path("server.pem")),
        key_file: PathBuf::from(pki.path("server-key.pem")),
        ..TlsListener::default()
    };
    let mutual = TlsListener {
        ca_file: Some(PathBuf::from(pki.path("ca.pem"))),
        require_certificate: true,
        ..secure.clone()
    };
    config.listeners.tls.insert(String::from("secure"), secure);
    config.listeners.tls.insert(String::from("mutual"), mutual);
    ringmq::server::start(config).expect("broker starts")
}

/// `-h`: shard 0 by IP address, shard 1 by name (the certificate names both).
fn hosts(broker: &ringmq::server::Broker, listener: usize) -> String {
    let port = |shard| {
        broker
            .shard_addr(listener, shard)
            .expect("port per shard")
            .port()
    };
    format!("127.0.0.1:{},localhost:{}", port(0), port(1))
}

/// 4 QoS 1 publishers -> 4 subscribers over TLS, 500 messages each.
fn args<'a>(hosts: &'a str, tls: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "pubsub",
        "-h",
        hosts,
        "-c",
        "4",
        "--subs",
        "4",
        "-q",
        "1",
        "-F",
        "16",
        "-I",
        "0",
        "-L",
        "500",
        "-s",
        "64",
        "-i",
        "1",
        "--threads",
        "2",
        "--pin",
        "false",
        "--drain",
        "2",
        "--quiet",
    ];
    args.extend_from_slice(tls);
    args
}

fn check(report: &Value) {
    let totals = &report["totals"];
    assert_eq!(report["config"]["tls"], true, "{report:#}");
    assert_eq!(totals["connect_failed"], 0, "{report:#}");
    assert_eq!(totals["connected"], 8, "{report:#}");
    assert_eq!(totals["published"], 2000, "{report:#}");
    assert_eq!(totals["acked"], 2000, "every QoS 1 publish acknowledged");
    assert_eq!(totals["received"], 2000, "{report:#}");
    assert_eq!(totals["lost"], 0, "{report:#}");
    assert_eq!(totals["duplicates"], 0, "{report:#}");
    assert_eq!(totals["streams"], 4, "{report:#}");
}

#[test]
fn tls_and_mutual_tls_runs_add_up_and_a_wrong_ca_is_refused() {
    let pki = Pki::new();
    let broker = broker(&pki);
    let ca = pki.path("ca.pem");
    let secure = hosts(&broker, SECURE);
    check(&common::report(
        "tls-secure",
        &args(&secure, &["-S", "--cacertfile", &ca]),
    ));
    let (certfile, keyfile) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let mutual = hosts(&broker, MUTUAL);
    let client = [
        "-S",
        "--cacertfile",
        &ca,
        "--certfile",
        &certfile,
        "--keyfile",
        &keyfile,
    ];
    check(&common::report("tls-mutual", &args(&mutual, &client)));

    let other_ca = pki.path("other-ca.pem");
    let wrong = args(&secure, &["-S", "--cacertfile", &other_ca]);
    let (output, _) = common::run("tls-wrong-ca", &wrong);
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("TLS handshake with 127.0.0.1:"), "{text}");
    assert!(text.contains("not signed by --cacertfile's CA"), "{text}");
    broker.shutdown().expect("clean shutdown");
}
