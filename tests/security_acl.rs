//! Goal: the ACL file holds on publish, subscribe, delivery, retained messages and wills for
//! 3.1.1 and 5.0 raw clients; client ids with wildcards never widen a pattern; `$SYS` is the
//! broker's; a reload swaps the ACL without dropping connections and a bad file keeps the old one.

mod common;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::security::{ACL, Files, assert_silent, eventually, secured, user};
use common::{RawClient, Received, TestBroker, connect_packet, pid};
use ringmq::config::DeniedPublish;
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will};

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
        assert!(
            matches!(bob.recv(), Packet::PubAck(ack) if ack.reason == ReasonCode::NO_MATCHING_SUBSCRIBERS)
        );
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
        publish_reason(&mut alice, "later/topic", id) == ReasonCode::NO_MATCHING_SUBSCRIBERS
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
        ReasonCode::NO_MATCHING_SUBSCRIBERS
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
fn reloads_under_load_drop_no_connection_and_no_message() {
    const MESSAGES: u32 = 3_000;
    const RELOAD_EVERY: u32 = 100;
    let files = Files::new("reload-load");
    let acls = [
        "user alice\ntopic alice/#\n",
        "user alice\ntopic readwrite alice/#\ntopic read news/#\n",
    ];
    let config = secured(&files, Some(acls[0]));
    let acl_path = config.auth.acl_file.clone().unwrap();
    let test = TestBroker::with_config(config);
    let mut sink = user(&test, 0, Version::V5, "alice-sink", "alice");
    assert_eq!(
        sink.subscribe(1, &[("alice/stream", QoS::AtLeastOnce)]),
        [ReasonCode::GRANTED_QOS_1]
    );
    let mut source = user(&test, 1, Version::V5, "alice-source", "alice");
    // The publisher streams on its own thread while this one receives and reloads.
    let publisher = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let id = u16::try_from(i % 60_000 + 1).unwrap();
            source.publish(
                "alice/stream",
                &i.to_be_bytes(),
                QoS::AtLeastOnce,
                false,
                Some(id),
            );
            match source.recv() {
                Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::SUCCESS, "message {i}"),
                other => panic!("expected PUBACK for message {i}, got {other:?}"),
            }
        }
    });
    let mut reloads = 0;
    for i in 0..MESSAGES {
        let got = sink.recv_publish();
        assert_eq!(&got.payload[..], i.to_be_bytes(), "in order, none lost");
        sink.ack(&got);
        if i % RELOAD_EVERY == 0 {
            std::fs::write(&acl_path, acls[(reloads % 2) as usize]).unwrap();
            test.reload().unwrap();
            reloads += 1;
        }
    }
    publisher.join().unwrap();
    assert_eq!(reloads, MESSAGES / RELOAD_EVERY);
    assert_silent(&mut sink);
    // The password file was read again each time: a new login still works.
    let _late = user(&test, 2, Version::V3_1_1, "alice-late", "alice");
}
