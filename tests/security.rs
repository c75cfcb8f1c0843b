//! Goal: authentication at CONNECT (password file, anonymous clients, enhanced authentication,
//! the bounded verifier queue) with the exact reason codes of 3.1.1 and 5.0, counted on /metrics.

mod common;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::security::{Files, eventually, login, secured, user};
use common::{RawClient, TestBroker, connect_packet, test_config};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version};
use ringmq::security::AuthStep;

#[test]
fn passwords_and_anonymous_clients() {
    let files = Files::new("passwords");
    let broker = TestBroker::with_config(secured(&files, None));
    for version in [Version::V3_1_1, Version::V5] {
        // The right passwords, for both hash types.
        user(&broker, 0, version, "a", "alice").disconnect();
        user(&broker, 1, version, "b", "bob").disconnect();
        // 5.0 0x86 Bad User Name or Password; 3.1.1 0x04 (encoded from the same code).
        for credentials in [
            ("alice", &b"hunter2"[..]),
            ("mallory", b"secret"),
            ("bob", b""),
        ] {
            let (mut client, reason) = login(broker.addr, version, "x", Some(credentials));
            assert_eq!(
                reason,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                "{credentials:?}"
            );
            client.expect_closed();
        }
        // A password file makes anonymous clients unwelcome: 0x87 / 3.1.1 0x05.
        let (mut client, reason) = login(broker.addr, version, "anon", None);
        assert_eq!(reason, ReasonCode::NOT_AUTHORIZED);
        client.expect_closed();
    }
    // Counted on /metrics: 2 x (2 successes, 4 failures), merged over the shards.
    let admin = broker.admin_addr().unwrap();
    let counted = eventually(|| {
        let (_, metrics) = common::http_get(admin, "/metrics");
        let count = |result: &str| {
            let series =
                format!("ringmq_authentications_total{{shard=\"all\",result=\"{result}\"}} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(series.as_str())?.parse::<u64>().ok())
        };
        count("success") == Some(4) && count("failure") == Some(8)
    });
    assert!(counted, "{}", common::http_get(admin, "/metrics").1);
    // 3.1.1 return codes on the wire, byte for byte.
    let mut client = RawClient::connect_tcp(broker.addr, Version::V3_1_1);
    let mut connect = connect_packet(Version::V3_1_1, "raw", true, None);
    connect.username = Some(ByteString::from("alice"));
    connect.password = Some(Bytes::from_static(b"wrong"));
    let mut bytes = bytes::BytesMut::new();
    ringmq::protocol::encode(
        &Packet::Connect(Box::new(connect)),
        Version::V3_1_1,
        &mut bytes,
        usize::MAX,
    )
    .unwrap();
    client.send_raw(&bytes);
    let mut answer = [0u8; 4];
    std::io::Read::read_exact(&mut client.stream, &mut answer).unwrap();
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x04]);
}

#[test]
fn anonymous_allowed_when_configured() {
    let files = Files::new("anonymous");
    let mut config = secured(&files, None);
    config.auth.allow_anonymous = Some(true);
    let broker = TestBroker::with_config(config);
    let (client, reason) = login(broker.addr, Version::V5, "anon", None);
    assert_eq!(reason, ReasonCode::SUCCESS);
    client.disconnect();
    // A username still needs its password.
    let (_, reason) = login(broker.addr, Version::V5, "x", Some(("alice", b"nope")));
    assert_eq!(reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
}

#[test]
fn enhanced_authentication_without_a_method_is_refused() {
    let broker = TestBroker::start(2);
    let mut client = RawClient::connect_tcp(broker.addr, Version::V5);
    let mut connect = connect_packet(Version::V5, "scram", true, None);
    connect.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-256"));
    assert_eq!(
        client.handshake(connect).reason,
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    client.expect_closed();
}

/// A challenge-response method for the test: the client says "hello", is asked for the answer to
/// "challenge", and is in if it says "response".
struct Toy;

struct ToyExchange;

impl ringmq::security::Authenticator for Toy {
    fn method(&self) -> &str {
        "TOY"
    }

    fn start(
        &self,
        _client_id: &str,
        _username: Option<&str>,
        data: Option<&[u8]>,
    ) -> (AuthStep, Box<dyn ringmq::security::AuthenticatorExchange>) {
        let step = match data {
            Some(b"hello") => AuthStep::Continue {
                data: Bytes::from_static(b"challenge"),
            },
            _ => AuthStep::Fail {
                reason: ReasonCode::NOT_AUTHORIZED,
            },
        };
        (step, Box::new(ToyExchange))
    }
}

impl ringmq::security::AuthenticatorExchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match data {
            Some(b"response") => AuthStep::Success {
                username: Some(String::from("toy-user")),
                data: Some(Bytes::from_static(b"welcome")),
            },
            _ => AuthStep::Fail {
                reason: ReasonCode::NOT_AUTHORIZED,
            },
        }
    }
}

#[test]
fn enhanced_authentication_runs_the_configured_method() {
    let files = Files::new("enhanced");
    let config = secured(&files, Some("user toy-user\ntopic toy/#\n"));
    let broker = TestBroker::with_authenticators(config, vec![std::sync::Arc::new(Toy)]);
    let auth = |data: &'static [u8]| {
        Packet::Auth(Box::new(ringmq::protocol::Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: ringmq::protocol::AuthProperties {
                authentication_method: Some(ByteString::from("TOY")),
                authentication_data: Some(Bytes::from_static(data)),
                ..Default::default()
            },
        }))
    };
    for (answer, expected) in [
        (&b"response"[..], ReasonCode::SUCCESS),
        (b"guess", ReasonCode::NOT_AUTHORIZED),
    ] {
        let mut client = RawClient::connect_tcp(broker.shard(1), Version::V5);
        let mut connect = connect_packet(Version::V5, "toy", true, None);
        connect.properties.authentication_method = Some(ByteString::from("TOY"));
        connect.properties.authentication_data = Some(Bytes::from_static(b"hello"));
        client.send(&Packet::Connect(Box::new(connect)));
        match client.recv() {
            Packet::Auth(challenge) => {
                assert_eq!(challenge.reason, ReasonCode::CONTINUE_AUTHENTICATION);
                assert_eq!(
                    challenge.properties.authentication_data.as_deref(),
                    Some(&b"challenge"[..])
                );
            }
            other => panic!("expected AUTH, got {other:?}"),
        }
        client.send(&auth(answer));
        let connack = match client.recv() {
            Packet::ConnAck(connack) => connack,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        assert_eq!(connack.reason, expected);
        if expected != ReasonCode::SUCCESS {
            client.expect_closed();
            continue;
        }
        assert_eq!(
            connack.properties.authentication_method.as_deref(),
            Some("TOY")
        );
        assert_eq!(
            connack.properties.authentication_data.as_deref(),
            Some(&b"welcome"[..])
        );
        // The method's identity is the username the ACL keys on.
        let reasons =
            client.subscribe(1, &[("toy/#", QoS::AtMostOnce), ("other", QoS::AtMostOnce)]);
        assert_eq!(
            reasons,
            [ReasonCode::GRANTED_QOS_0, ReasonCode::NOT_AUTHORIZED]
        );
        client.disconnect();
    }
    // An unknown method: 0x8C.
    let mut client = RawClient::connect_tcp(broker.addr, Version::V5);
    let mut connect = connect_packet(Version::V5, "other", true, None);
    connect.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-256"));
    assert_eq!(
        client.handshake(connect).reason,
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    client.expect_closed();
}

#[test]
fn a_full_verifier_queue_refuses_with_server_unavailable() {
    let files = Files::new("busy");
    let path = files.0.join("passwd");
    // argon2id at ringmq's defaults (46 MiB, tens of ms optimised, far more in a debug build):
    // one check keeps the single verifier thread busy while every CONNECT below arrives.
    let options = ringmq::auth::PasswdOptions {
        create: true,
        delete: false,
        password: Some(String::from("slow")),
        hash: ringmq::auth::HashAlgorithm::Argon2id,
    };
    ringmq::auth::passwd(&path, "carol", &options).unwrap();
    let mut config = test_config(4);
    config.auth.password_file = Some(path);
    config.auth.verify_threads = 1;
    config.auth.verify_pending_max = 1;
    let broker = TestBroker::with_config(config);
    let mut clients: Vec<RawClient> = (0..12)
        .map(|i| {
            let mut client = RawClient::connect_tcp(broker.shard(i), Version::V3_1_1);
            let mut connect = connect_packet(Version::V3_1_1, &format!("carol-{i}"), true, None);
            connect.username = Some(ByteString::from("carol"));
            connect.password = Some(Bytes::from_static(b"slow"));
            client.send(&Packet::Connect(Box::new(connect)));
            client
        })
        .collect();
    let mut accepted = 0;
    let mut unavailable = 0;
    for client in &mut clients {
        let reason = match client.try_recv(Duration::from_secs(60)) {
            Some(Packet::ConnAck(connack)) => connack.reason,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        match reason {
            ReasonCode::SUCCESS => accepted += 1,
            // 3.1.1 return code 3, Server unavailable.
            ReasonCode::SERVER_UNAVAILABLE => unavailable += 1,
            other => panic!("unexpected CONNACK {other:?}"),
        }
    }
    // One check running and one queued at most while the others arrive.
    assert!(
        accepted >= 1 && unavailable >= 1,
        "{accepted} accepted, {unavailable} refused"
    );
}
