//! PUBLISH and its acknowledgements from the server (3.1.1 §3.3-3.7, 5.0 §3.3-3.7, §4.3).

use std::time::Duration;

use ringmq::protocol::{Packet, QoS, ReasonCode, Version};

use crate::common::{RawClient, TestBroker, pid, response};
use crate::conformance::raw;

fn puback_reason(client: &mut RawClient, topic: &str, id: u16) -> ReasonCode {
    client.publish(topic, b"x", QoS::AtLeastOnce, false, Some(id));
    match client.recv() {
        Packet::PubAck(ack) if ack.packet_id == pid(id) => ack.reason,
        other => panic!("expected PUBACK {id}, got {other:?}"),
    }
}

/// 5.0 §3.4.2.1 / §3.5.2.1: PUBACK and PUBREC say 0x10 (No matching subscribers) when no
/// subscription matched, on this shard or any other; 0x00 when a plain or shared subscription on
/// any shard did. 3.1.1 acknowledgements carry no reason code at all.
#[test]
fn puback_and_pubrec_say_no_matching_subscribers() {
    let broker = TestBroker::start(4);
    let (mut publisher, _) = RawClient::connect(broker.shard(0), Version::V5, "pub", true);
    assert_eq!(
        puback_reason(&mut publisher, "nobody/here", 1),
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    publisher.publish("nobody/here", b"x", QoS::ExactlyOnce, false, Some(2));
    match publisher.recv() {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(response(pid(2))));
    assert!(matches!(publisher.recv(), Packet::PubComp(c) if c.reason == ReasonCode::SUCCESS));

    // A subscriber on another shard, one on this shard, a shared group on a third.
    let (mut remote, _) = RawClient::connect(broker.shard(1), Version::V5, "remote", true);
    remote.subscribe(1, &[("remote/+", QoS::AtMostOnce)]);
    let (mut local, _) = RawClient::connect(broker.shard(0), Version::V5, "local", true);
    local.subscribe(1, &[("local/#", QoS::AtMostOnce)]);
    let (mut member, _) = RawClient::connect(broker.shard(2), Version::V5, "member", true);
    member.subscribe(1, &[("$share/g/shared/t", QoS::AtMostOnce)]);
    for (id, topic) in [(3, "remote/x"), (4, "local/x"), (5, "shared/t")] {
        assert_eq!(
            puback_reason(&mut publisher, topic, id),
            ReasonCode::SUCCESS,
            "{topic}"
        );
    }
    assert_eq!(
        puback_reason(&mut publisher, "remote/x/y", 6),
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    remote.recv_publish();
    local.recv_publish();
    member.recv_publish();

    // 3.1.1: PUBACK is the packet id alone (remaining length 2), subscribers or not.
    let (mut old, _) = RawClient::connect(broker.shard(0), Version::V3_1_1, "old", true);
    old.publish("nobody/here", b"x", QoS::AtLeastOnce, false, Some(7));
    let bytes = raw::read_exact(&mut old, 4, Duration::from_secs(5));
    assert_eq!(bytes, [0x40, 0x02, 0x00, 0x07]);
}
