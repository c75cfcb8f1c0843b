//! The relay driven by packets: ids pass through, topics are rewritten, flows resume after a
//! reconnect, the window holds, the hop guard stops loops.

use super::*;
use crate::config::{Direction, TopicRule};

fn rules() -> Rules {
    Rules::new(vec![
        TopicRule {
            topic: "s/#".into(),
            direction: Direction::Both,
            qos: 2,
            local_prefix: "".into(),
            remote_prefix: "edge/".into(),
        },
        TopicRule {
            topic: "c/#".into(),
            direction: Direction::In,
            qos: 1,
            local_prefix: "cmd/".into(),
            remote_prefix: "".into(),
        },
    ])
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: true,
        topic: ByteString::from(topic),
        packet_id: packet_id.and_then(PacketId::new),
        properties: PublishProps::none(),
        payload: bytes::Bytes::from_static(b"x"),
    }
}

fn ack(packet_id: u16) -> PubResponse {
    response(PacketId::new(packet_id).unwrap(), ReasonCode::SUCCESS)
}

#[test]
fn an_outbound_qos1_message_is_acknowledged_locally_only_when_the_remote_acknowledges() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    relay.from_local(
        Packet::Publish(publish("s/a", QoS::AtLeastOnce, Some(7))),
        now,
    );
    let Some(Packet::Publish(sent)) = relay.to_remote.pop() else {
        panic!("nothing sent")
    };
    assert_eq!(sent.topic, "edge/s/a");
    assert_eq!(sent.packet_id, PacketId::new(7));
    assert!(sent.retain);
    assert_eq!(hops_of(&sent), 1);
    assert!(relay.to_local.is_empty());
    // The remote goes away and comes back: the message goes again with DUP.
    relay.connected(10, true, now);
    let Some(Packet::Publish(again)) = relay.to_remote.pop() else {
        panic!("not resent")
    };
    assert!(again.dup);
    relay.from_remote(Packet::PubAck(ack(7)), now);
    assert_eq!(relay.to_local, vec![Packet::PubAck(ack(7))]);
    assert_eq!(relay.inflight(), 0);
    assert_eq!(relay.counts.acks, 1);
}

#[test]
fn an_outbound_qos2_flow_passes_each_step_through() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    relay.from_local(
        Packet::Publish(publish("s/a", QoS::ExactlyOnce, Some(3))),
        now,
    );
    relay.to_remote.clear();
    relay.from_remote(Packet::PubRec(ack(3)), now);
    assert_eq!(
        relay.to_local.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubRec(ack(3))]
    );
    relay.from_local(Packet::PubRel(ack(3)), now);
    assert_eq!(
        relay.to_remote.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubRel(ack(3))]
    );
    // A reconnect now resends the PUBREL, not the message.
    relay.connected(10, true, now);
    assert_eq!(
        relay.to_remote.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubRel(ack(3))]
    );
    relay.from_remote(Packet::PubComp(ack(3)), now);
    assert_eq!(
        relay.to_local.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubComp(ack(3))]
    );
    assert_eq!(relay.inflight(), 0);
}

#[test]
fn the_remote_window_holds_messages_back_in_order() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V3_1_1, 8, 2);
    for id in 1..=4 {
        relay.from_local(
            Packet::Publish(publish("s/a", QoS::AtLeastOnce, Some(id))),
            now,
        );
    }
    let sent: Vec<_> = relay.to_remote.drain(..).collect();
    assert_eq!(sent.len(), 2);
    relay.from_remote(Packet::PubAck(ack(1)), now);
    let Some(Packet::Publish(third)) = relay.to_remote.pop() else {
        panic!("held message not sent")
    };
    assert_eq!(third.packet_id, PacketId::new(3));
    assert!(third.properties.is_empty(), "3.1.1 carries no properties");
    assert_eq!(relay.inflight(), 3);
}

#[test]
fn inbound_messages_are_rewritten_and_unknown_ones_acknowledged() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    relay.from_remote(
        Packet::Publish(publish("c/reboot", QoS::AtLeastOnce, Some(9))),
        now,
    );
    let Some(Packet::Publish(local)) = relay.to_local.pop() else {
        panic!("not published locally")
    };
    assert_eq!(local.topic, "cmd/c/reboot");
    assert_eq!(local.packet_id, PacketId::new(9));
    relay.from_local(Packet::PubAck(ack(9)), now);
    assert_eq!(
        relay.to_remote.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubAck(ack(9))]
    );
    relay.from_remote(
        Packet::Publish(publish("other", QoS::ExactlyOnce, Some(4))),
        now,
    );
    assert_eq!(
        relay.to_remote.drain(..).collect::<Vec<_>>(),
        vec![Packet::PubRec(ack(4))]
    );
    assert_eq!(relay.counts.dropped, 1);
}

#[test]
fn the_hop_guard_stops_a_message_that_crossed_too_many_bridges() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 2, 10);
    let mut looped = publish("s/a", QoS::AtLeastOnce, Some(5));
    looped
        .properties
        .make_mut()
        .user_properties
        .push((ByteString::from(HOPS_PROPERTY), ByteString::from("2")));
    relay.from_local(Packet::Publish(looped), now);
    assert!(relay.to_remote.is_empty());
    assert_eq!(relay.to_local, vec![Packet::PubAck(ack(5))]);
    assert_eq!(relay.counts.dropped, 1);
}

#[test]
fn a_pubrel_of_a_previous_run_goes_to_the_remote_and_its_pubcomp_completes_it() {
    // A restarted bridge: the resumed local session sends PUBREL for a flow the new relay never
    // saw. The remote may hold the message, so the PUBREL goes there.
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    relay.from_local(Packet::PubRel(ack(9)), now);
    assert_eq!(relay.to_remote, vec![Packet::PubRel(ack(9))]);
    assert!(relay.to_local.is_empty());
    assert_eq!(relay.inflight(), 1);
    relay.to_remote.clear();
    let unknown = response(PacketId::new(9).unwrap(), ReasonCode(0x92));
    relay.from_remote(Packet::PubComp(unknown.clone()), now);
    assert_eq!(relay.to_local, vec![Packet::PubComp(unknown)]);
    assert_eq!(relay.inflight(), 0);
}

#[test]
fn flows_read_before_the_first_connection_reach_the_remote_once() {
    // Messages the local session delivers while the bridge starts are queued and tracked; the
    // connection sends each once, with DUP, not the queued copy as well.
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    relay.from_local(
        Packet::Publish(publish("s/a", QoS::AtLeastOnce, Some(4))),
        now,
    );
    relay.from_local(Packet::Publish(publish("s/b", QoS::AtMostOnce, None)), now);
    relay.from_local(Packet::PubRel(ack(5)), now);
    relay.connected(10, false, now);
    let ids: Vec<(Option<PacketId>, bool)> = relay
        .to_remote
        .iter()
        .filter_map(|packet| match packet {
            Packet::Publish(publish) => Some((publish.packet_id, publish.dup)),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![(None, false), (PacketId::new(4), true)]);
    let releases = relay
        .to_remote
        .iter()
        .filter(|packet| matches!(packet, Packet::PubRel(_)))
        .count();
    assert_eq!(releases, 1);
}

#[test]
fn the_subscribe_of_the_in_rules_takes_an_id_no_flow_uses() {
    let now = Instant::now();
    let mut relay = Relay::new(rules(), Version::V5, 8, 10);
    assert_eq!(relay.free_packet_id(), PacketId::MIN);
    for id in [1, 2, 4] {
        relay.from_local(
            Packet::Publish(publish("s/a", QoS::AtLeastOnce, Some(id))),
            now,
        );
    }
    assert_eq!(relay.free_packet_id(), PacketId::new(3).unwrap());
}
