//! Goal: password authentication, anonymous refusal and the ACL file hold at the broker's edges,
//! for 3.1.1 and 5.0 raw clients, with the exact reason codes the specs give; a reload swaps the
//! ACL without dropping connections, and a bad file keeps the old one.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use common::{RawClient, Received, TestBroker, connect_packet, pid, test_config};
use ringmq::config::{Config, DeniedPublish};
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will};
use ringmq::security::AuthStep;

/// Written by Debian's `mosquitto_passwd` 2.0.11: alice/secret (`$7$`), bob/hunter2 (`$6$`).
const PASSWORDS: &str = "\
alice:$7$101$cMNEI8pkYUPm23cF$ERnKFwScwJvSjsp2TcyasIF/DHhx3b2Nkfzu6wvaypi0wioNU9+hD9l1jqlybHX3dx/6ESw3EqS3NMuKt7ha8A==
bob:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==
";

const ACL: &str = "\
topic read public/#

user alice
topic alice/#
topic read shared/#
topic deny shared/secret
topic write will/alice

user bob
topic write shared/#
topic read $SYS/#
topic read will/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

/// A directory of its own for one test's files, removed at the end.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("ringmq-security-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn secured(files: &Files, acl: Option<&str>) -> Config {
    let mut config = test_config(4);
    config.auth.password_file = Some(files.write("passwd", PASSWORDS));
    config.auth.acl_file = acl.map(|text| files.write("acl", text));
    config
}

fn login(
    addr: std::net::SocketAddr,
    version: Version,
    client_id: &str,
    credentials: Option<(&str, &[u8])>,
) -> (RawClient, ReasonCode) {
    let mut client = RawClient::connect_tcp(addr, version);
    let mut connect = connect_packet(version, client_id, true, None);
    if let Some((username, password)) = credentials {
        connect.username = Some(ByteString::from(username));
        connect.password = Some(Bytes::copy_from_slice(password));
    }
    let reason = client.handshake(connect).reason;
    (client, reason)
}

#[track_caller]
fn user(broker: &TestBroker, shard: usize, version: Version, id: &str, name: &str) -> RawClient {
    let password: &[u8] = if name == "alice" {
        b"secret"
    } else {
        b"hunter2"
    };
    let (client, reason) = login(broker.shard(shard), version, id, Some((name, password)));
    assert_eq!(reason, ReasonCode::SUCCESS, "{name} logs in");
    client
}

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

/// Nothing arrives within a short wait.
#[track_caller]
fn assert_silent(client: &mut RawClient) {
    if let Some(packet) = client.try_recv(Duration::from_millis(300)) {
        panic!("unexpected {packet:?}");
    }
}

#[test]
fn acl_on_subscribe_publish_and_delivery() {
    let files = Files::new("acl");
    let broker = TestBroker::with_config(secured(&files, Some(ACL)));
    for version in [Version::V3_1_1, Version::V5] {
        let refused = if version.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(0x80)
        };
        let mut alice = user(&broker, 0, version, "alice-1", "alice");
        let mut bob = user(&broker, 1, version, "bob-1", "bob");
        // Subscribe: covered filters granted, others refused per filter.
        let reasons = alice.subscribe(
            1,
            &[
                ("shared/#", QoS::AtLeastOnce),
                ("bob/#", QoS::AtLeastOnce),
                ("clients/alice-1/#", QoS::AtLeastOnce),
                ("clients/bob-1/#", QoS::AtLeastOnce),
                ("users/alice/inbox", QoS::AtLeastOnce),
            ],
        );
        assert_eq!(
            reasons,
            [
                ReasonCode::GRANTED_QOS_1,
                refused,
                ReasonCode::GRANTED_QOS_1,
                refused,
                ReasonCode::GRANTED_QOS_1,
            ]
        );
        // Delivery: bob may write shared/#, alice reads it except the denied topic.
        bob.publish("shared/secret", b"no", QoS::AtLeastOnce, false, Some(1));
        assert!(matches!(bob.recv(), Packet::PubAck(ack) if ack.reason == ReasonCode::SUCCESS));
        bob.publish("shared/news", b"yes", QoS::AtLeastOnce, false, Some(2));
        assert!(matches!(bob.recv(), Packet::PubAck(_)));
        let delivered = alice.recv_publish();
        assert_eq!(&delivered.topic[..], "shared/news");
        alice.ack(&delivered);
        // Publish refused: 5.0 PUBACK/PUBREC 0x87; 3.1.1 acknowledged and dropped.
        let denied_ack = if version.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        alice.publish("shared/news", b"x", QoS::AtLeastOnce, false, Some(3));
        match alice.recv() {
            Packet::PubAck(ack) => assert_eq!(ack.reason, denied_ack),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        alice.publish("shared/news", b"x", QoS::ExactlyOnce, false, Some(4));
        match alice.recv() {
            Packet::PubRec(ack) => assert_eq!(ack.reason, denied_ack),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        if !version.is_v5() {
            alice.send(&Packet::PubRel(common::response(pid(4))));
            assert!(matches!(alice.recv(), Packet::PubComp(_)));
        }
        // $SYS is the broker's: refused even to bob, who may read it.
        bob.publish("$SYS/broker/uptime", b"1", QoS::AtLeastOnce, false, Some(5));
        match bob.recv() {
            Packet::PubAck(ack) => assert_eq!(ack.reason, denied_ack),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        // The pattern: alice writes and reads only her own client-id subtree.
        alice.publish("clients/alice-1/state", b"on", QoS::AtMostOnce, false, None);
        assert_eq!(&alice.recv_publish().topic[..], "clients/alice-1/state");
        assert_silent(&mut alice);
        assert_silent(&mut bob);
        alice.disconnect();
        bob.disconnect();
    }
}

#[test]
fn acl_on_retained_messages() {
    let files = Files::new("retained");
    let broker = TestBroker::with_config(secured(&files, Some(ACL)));
    let mut bob = user(&broker, 0, Version::V5, "bob-r", "bob");
    for (topic, payload) in [("shared/open", "a"), ("shared/secret", "b")] {
        bob.publish(topic, payload.as_bytes(), QoS::AtLeastOnce, true, Some(1));
        assert!(matches!(bob.recv(), Packet::PubAck(ack) if ack.reason == ReasonCode::SUCCESS));
    }
    for version in [Version::V3_1_1, Version::V5] {
        let mut alice = user(&broker, 2, version, "alice-r", "alice");
        alice.subscribe(1, &[("shared/#", QoS::AtMostOnce)]);
        let retained = alice.recv_publish();
        assert_eq!(&retained.topic[..], "shared/open");
        assert_silent(&mut alice);
        alice.disconnect();
    }
    bob.disconnect();
}

#[test]
fn wills_are_checked_when_sent() {
    let files = Files::new("wills");
    let broker = TestBroker::with_config(secured(&files, Some(ACL)));
    for version in [Version::V3_1_1, Version::V5] {
        let mut bob = user(&broker, 0, version, "bob-w", "bob");
        bob.subscribe(1, &[("will/#", QoS::AtMostOnce)]);
        for (topic, sent) in [("will/alice", true), ("will/other", false)] {
            let mut alice = RawClient::connect_tcp(broker.shard(3), version);
            let will = Will {
                topic: ByteString::from(topic),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
            };
            let mut connect = connect_packet(version, "alice-w", true, Some(will));
            connect.username = Some(ByteString::from("alice"));
            connect.password = Some(Bytes::from_static(b"secret"));
            assert_eq!(alice.handshake(connect).reason, ReasonCode::SUCCESS);
            // Closing without DISCONNECT sends the will.
            drop(alice);
            if sent {
                assert_eq!(&bob.recv_publish().topic[..], "will/alice");
            } else {
                assert_silent(&mut bob);
            }
        }
        bob.disconnect();
    }
}

#[test]
fn client_id_wildcards_do_not_widen_patterns() {
    let files = Files::new("wildcards");
    let broker = TestBroker::with_config(secured(&files, Some(ACL)));
    for client_id in ["+", "#", "a/b"] {
        let mut alice = user(&broker, 0, Version::V5, client_id, "alice");
        let reasons = alice.subscribe(
            1,
            &[
                ("clients/x/#", QoS::AtMostOnce),
                ("clients/#", QoS::AtMostOnce),
            ],
        );
        assert_eq!(
            reasons,
            [ReasonCode::NOT_AUTHORIZED, ReasonCode::NOT_AUTHORIZED],
            "{client_id}"
        );
        alice.publish("clients/x/y", b"1", QoS::AtLeastOnce, false, Some(1));
        match alice.recv() {
            Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        alice.disconnect();
    }
}

#[test]
fn denied_publish_can_close_a_v311_connection() {
    let files = Files::new("disconnect");
    let mut config = secured(&files, Some(ACL));
    config.auth.denied_publish_v3 = DeniedPublish::Disconnect;
    let broker = TestBroker::with_config(config);
    let mut alice = user(&broker, 0, Version::V3_1_1, "alice-d", "alice");
    alice.publish("nope", b"1", QoS::AtLeastOnce, false, Some(1));
    assert!(alice.expect_closed().is_empty());
}

/// Polls `check` until it holds, for at most four seconds (a reload reaches shards on their tick,
/// metrics reach the admin board about once a second).
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn reload_swaps_the_acl_and_keeps_connections() {
    let files = Files::new("reload");
    let config = secured(&files, Some("user alice\ntopic alice/#\n"));
    let acl_path = config.auth.acl_file.clone().unwrap();
    let test = TestBroker::with_config(config);
    let mut alice = user(&test, 1, Version::V5, "alice-reload", "alice");
    let mut bob = user(&test, 2, Version::V5, "bob-reload", "bob");
    // An exact filter: its read decision is taken at SUBSCRIBE and cached until a reload.
    assert_eq!(
        alice.subscribe(1, &[("alice/inbox", QoS::AtMostOnce)]),
        [ReasonCode::GRANTED_QOS_0]
    );
    let publish_reason = |client: &mut RawClient, topic: &str, id: u16| {
        client.publish(topic, b"1", QoS::AtLeastOnce, false, Some(id));
        match client.recv() {
            Packet::PubAck(ack) => ack.reason,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    };
    assert_eq!(
        publish_reason(&mut alice, "later/topic", 1),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        publish_reason(&mut bob, "alice/inbox", 1),
        ReasonCode::NOT_AUTHORIZED
    );
    alice.publish("alice/inbox", b"0", QoS::AtMostOnce, false, None);
    assert_eq!(&alice.recv_publish().topic[..], "alice/inbox");
    // The new ACL: alice may publish to later/#, bob to alice/inbox, and alice no longer reads it.
    std::fs::write(
        &acl_path,
        "user alice\ntopic write alice/#\ntopic later/#\nuser bob\ntopic write alice/#\n",
    )
    .unwrap();
    test.reload().unwrap();
    let mut id = 2;
    assert!(eventually(|| {
        id += 1;
        publish_reason(&mut alice, "later/topic", id) == ReasonCode::SUCCESS
    }));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        publish_reason(&mut bob, "alice/inbox", 2),
        ReasonCode::SUCCESS
    );
    assert_silent(&mut alice);
    // A broken file is refused; the loaded ACL stays, the connections too.
    std::fs::write(&acl_path, "user alice\ntopc later/#\n").unwrap();
    let error = test.reload().unwrap_err().to_string();
    assert!(
        error.contains("auth.acl_file") && error.contains(":2:"),
        "{error}"
    );
    std::thread::sleep(Duration::from_millis(600));
    id += 1;
    assert_eq!(
        publish_reason(&mut alice, "later/topic", id),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        publish_reason(&mut bob, "alice/inbox", 3),
        ReasonCode::SUCCESS
    );
    assert_silent(&mut alice);
    assert!(!matches!(
        alice.recv_or_closed(Duration::from_millis(100)),
        Received::Closed
    ));
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
        Packet::Auth(ringmq::protocol::Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: ringmq::protocol::AuthProperties {
                authentication_method: Some(ByteString::from("TOY")),
                authentication_data: Some(Bytes::from_static(data)),
                ..Default::default()
            },
        })
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
fn a_session_taken_over_by_another_user_is_checked_as_that_user() {
    let files = Files::new("takeover");
    let broker = TestBroker::with_config(secured(&files, Some(ACL)));
    let login_as = |shard: usize, name: &str, password: &'static [u8]| {
        let mut client = RawClient::connect_tcp(broker.shard(shard), Version::V3_1_1);
        let mut connect = connect_packet(Version::V3_1_1, "shared-id", false, None);
        connect.username = Some(ByteString::from(name));
        connect.password = Some(Bytes::from_static(password));
        let connack = client.handshake(connect);
        assert_eq!(connack.reason, ReasonCode::SUCCESS);
        (client, connack.session_present)
    };
    let (mut alice, _) = login_as(0, "alice", b"secret");
    // An exact filter: granted (and its read decision cached) for alice.
    assert_eq!(
        alice.subscribe(1, &[("alice/inbox", QoS::AtMostOnce)]),
        [ReasonCode::GRANTED_QOS_0]
    );
    alice.disconnect();
    let (mut bob, present) = login_as(2, "bob", b"hunter2");
    assert!(present, "bob resumes the session with alice's subscription");
    let mut writer = user(&broker, 1, Version::V5, "alice-writer", "alice");
    writer.publish("alice/inbox", b"private", QoS::AtLeastOnce, false, Some(1));
    assert!(matches!(writer.recv(), Packet::PubAck(ack) if ack.reason == ReasonCode::SUCCESS));
    assert_silent(&mut bob);
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
