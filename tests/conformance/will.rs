//! The Will Message (3.1.1 §3.1.2.5, 5.0 §3.1.2.5, §3.1.3.2.2, §3.1.4): published when the
//! connection ends without DISCONNECT, including when a new connection takes the client id over.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use ringmq::protocol::{Packet, QoS, ReasonCode, Version, Will, WillProperties};

use crate::common::{RawClient, TestBroker, connect_packet};

fn will(name: &str, delay_secs: Option<u32>) -> Will {
    Will {
        topic: ByteString::from(format!("will/{name}")),
        payload: Bytes::from(name.to_owned()),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval_secs: delay_secs,
            ..Default::default()
        },
    }
}

/// One takeover: the old connection (with a will) on `old_shard`, the new one on `new_shard`.
struct Takeover {
    name: &'static str,
    version: Version,
    /// The old connection's session outlives it (3.x: Clean Session 0; 5.0: expiry 60 s).
    persistent: bool,
    delay_secs: Option<u32>,
    /// The new connection resumes the session (Clean Session / Clean Start 0).
    resumes: bool,
    old_shard: usize,
    new_shard: usize,
    will_expected: bool,
}

fn take_over(broker: &TestBroker, case: &Takeover) -> RawClient {
    let mut connect = connect_packet(
        case.version,
        case.name,
        !case.persistent,
        Some(will(case.name, case.delay_secs)),
    );
    let mut again = connect_packet(case.version, case.name, !case.resumes, None);
    if case.version.is_v5() {
        let expiry = if case.persistent { 60 } else { 0 };
        connect.properties.session_expiry_interval_secs = Some(expiry);
        again.properties.session_expiry_interval_secs = Some(60);
    }
    let mut old = RawClient::connect_tcp(broker.shard(case.old_shard), case.version);
    assert_eq!(old.handshake(connect).reason, ReasonCode::SUCCESS);
    let mut new = RawClient::connect_tcp(broker.shard(case.new_shard), case.version);
    assert_eq!(new.handshake(again).reason, ReasonCode::SUCCESS);
    // The old connection is closed (5.0 after DISCONNECT 0x8E, MQTT-3.1.4-3).
    let packets = old.expect_closed();
    if case.version.is_v5() {
        assert!(
            matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
            "{}: {packets:?}",
            case.name
        );
    } else {
        assert!(packets.is_empty(), "{}: {packets:?}", case.name);
    }
    new
}

/// 3.1.1 MQTT-3.1.2-8 and 5.0 MQTT-3.1.2-8 / MQTT-3.1.3-9: a connection taken over did not send
/// DISCONNECT, so its will is due: at once without a delay; with one, unless the new connection
/// resumes the session within it (then never), and at once when the new connection ends the
/// session (Clean Start 1). Old and new connections on the same and on different shards.
#[test]
fn will_on_takeover_for_every_version_session_and_delay() {
    let broker = TestBroker::start(4);
    let (mut watcher, _) = RawClient::connect(broker.shard(3), Version::V5, "watcher", true);
    watcher.subscribe(1, &[("will/#", QoS::AtMostOnce)]);
    let cases = [
        (
            "v311-clean",
            Version::V3_1_1,
            false,
            None,
            false,
            0,
            1,
            true,
        ),
        (
            "v311-persistent",
            Version::V3_1_1,
            true,
            None,
            true,
            1,
            1,
            true,
        ),
        (
            "v311-persistent-to-clean",
            Version::V3_1_1,
            true,
            None,
            false,
            2,
            0,
            true,
        ),
        ("v31-clean", Version::V3_1, false, None, false, 0, 2, true),
        (
            "v5-clean-delay0",
            Version::V5,
            false,
            Some(0),
            false,
            0,
            1,
            true,
        ),
        (
            "v5-persistent-delay0",
            Version::V5,
            true,
            Some(0),
            true,
            1,
            1,
            true,
        ),
        (
            "v5-persistent-delay-resumed",
            Version::V5,
            true,
            Some(30),
            true,
            0,
            2,
            false,
        ),
        (
            "v5-persistent-delay-clean",
            Version::V5,
            true,
            Some(30),
            false,
            2,
            0,
            true,
        ),
        (
            "v5-clean-delay-clean",
            Version::V5,
            false,
            Some(30),
            false,
            1,
            0,
            true,
        ),
    ];
    for (name, version, persistent, delay_secs, resumes, old_shard, new_shard, will_expected) in
        cases
    {
        let case = Takeover {
            name,
            version,
            persistent,
            delay_secs,
            resumes,
            old_shard,
            new_shard,
            will_expected,
        };
        let new = take_over(&broker, &case);
        if case.will_expected {
            let got = watcher.recv_publish();
            assert_eq!(&got.topic[..], format!("will/{name}"), "{name}");
        } else {
            assert_eq!(watcher.try_recv(Duration::from_millis(500)), None, "{name}");
        }
        new.disconnect();
    }
    // Nothing else came: no will twice, none for a resumed delayed will.
    assert_eq!(watcher.try_recv(Duration::from_millis(300)), None);
}

/// 5.0 MQTT-3.2.2-12 / -13: a will over the broker's Maximum QoS, or retained where retain is
/// unavailable, is refused with CONNACK 0x9B / 0x9A and the close; 3.1.1 hears 0x03 (Server
/// unavailable), its one refusal for this. MQTT-3.1.2-15 (3.1.1 MQTT-3.1.2-17): with retain
/// available, a retained will is published retained.
#[test]
fn wills_beyond_the_broker_limits_are_refused_and_retained_wills_retained() {
    let mut config = crate::common::test_config(2);
    config.mqtt.max_qos = 1;
    config.mqtt.retain_available = false;
    let limited = TestBroker::with_config(config);
    let mut over_qos = will("over", None);
    over_qos.qos = QoS::ExactlyOnce;
    let mut retained = will("kept", None);
    retained.retain = true;
    for version in [Version::V5, Version::V3_1_1] {
        for (w, reason) in [
            (&over_qos, ReasonCode::QOS_NOT_SUPPORTED),
            (&retained, ReasonCode::RETAIN_NOT_SUPPORTED),
        ] {
            let mut client = RawClient::connect_tcp(limited.shard(0), version);
            let connect = connect_packet(version, "w", true, Some(w.clone()));
            client.send(&Packet::Connect(Box::new(connect)));
            let expected = if version.is_v5() {
                reason
            } else {
                ReasonCode::SERVER_UNAVAILABLE
            };
            let packets = client.expect_closed();
            assert!(
                matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == expected && !c.session_present),
                "{version:?}: {packets:?}"
            );
        }
    }

    let broker = TestBroker::start(2);
    for version in [Version::V3_1_1, Version::V5] {
        let mut dying = RawClient::connect_tcp(broker.shard(0), version);
        dying.handshake(connect_packet(
            version,
            "kept",
            true,
            Some(retained.clone()),
        ));
        drop(dying);
        std::thread::sleep(Duration::from_millis(200));
        let (mut late, _) = RawClient::connect(broker.shard(1), version, "late", true);
        late.subscribe(1, &[("will/kept", QoS::AtMostOnce)]);
        let got = late.recv_publish();
        assert!(got.retain, "{version:?}: the will was retained");
        late.disconnect();
    }
}
