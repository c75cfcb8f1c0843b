//! The server closing a connection with a reason (5.0 §4.13, §3.14; 3.1.1 §3.2.2.3, §4.8): the
//! client reads the reason before the end of the stream, even while it is still writing.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::protocol::{self, Packet, Publish, QoS, ReasonCode, Version};

use crate::common::{RawClient, TestBroker, pid, test_config};

fn publish_bytes(qos: QoS, id: Option<u16>, payload_bytes: usize) -> BytesMut {
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from("t"),
        packet_id: id.map(pid),
        properties: Default::default(),
        payload: Bytes::from(vec![b'x'; payload_bytes]),
    };
    let mut out = BytesMut::new();
    protocol::encode(&Packet::Publish(publish), Version::V5, &mut out, usize::MAX).unwrap();
    out
}

/// Writes a 1 KB PUBLISH every 10 ms for 300 ms without reading, as a client busy sending does
/// after the broker has answered; a write that fails (the broker reset the connection) fails.
fn keep_writing(client: &mut RawClient) {
    let publish = publish_bytes(QoS::AtMostOnce, None, 1000);
    for i in 0..30 {
        if let Err(e) = client.stream.write_all(&publish) {
            panic!(
                "{:?}: write {i} after the answer failed: {e}",
                client.version
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything the broker sends until the end of the stream; fails on a reset or an error.
fn read_to_end(client: &mut RawClient) -> Vec<Packet> {
    let mut bytes = BytesMut::new();
    let mut chunk = [0u8; 65536];
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read {} bytes, then: {e}", bytes.len()),
        }
    }
    let mut packets = Vec::new();
    while let Some(packet) = protocol::decode(&mut bytes, client.version, usize::MAX).unwrap() {
        packets.push(packet);
    }
    packets
}

/// 5.0 §4.13.1, §4.9 flow control: a client over the broker's Receive Maximum gets
/// DISCONNECT 0x93, and reads it even though it went on writing before it looked: the broker
/// half-closes and discards the input for a bounded time instead of closing with unread input
/// (which resets the connection and loses the DISCONNECT).
#[test]
fn disconnect_reason_survives_a_client_that_keeps_writing() {
    let mut config = test_config(2);
    config.limits.inflight_messages_max = 2;
    let broker = TestBroker::with_config(config);
    let (mut client, _) = RawClient::connect(broker.shard(0), Version::V5, "eager", true);
    let mut burst = BytesMut::new();
    for id in 1..=3 {
        burst.extend_from_slice(&publish_bytes(QoS::ExactlyOnce, Some(id), 16));
    }
    client.stream.write_all(&burst).unwrap();
    keep_writing(&mut client);
    // The client looks only now, after the broker has long closed its side.
    let packets = read_to_end(&mut client);
    let reasons: Vec<_> = packets
        .iter()
        .map(|p| match p {
            Packet::PubRec(rec) => (1, rec.reason),
            Packet::Disconnect(d) => {
                // MQTT-3.14.2-2: never a Session Expiry Interval from the server.
                assert_eq!(d.properties.session_expiry_interval_secs, None);
                (14, d.reason)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (1, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            (1, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            (14, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        ]
    );
}

/// The same for a refused CONNECT (5.0 CONNACK 0x85, 3.1.1 return code 2) followed by more
/// packets the client sent without waiting: the CONNACK, then the end of the stream.
#[test]
fn refusing_connack_survives_a_client_that_keeps_writing() {
    let broker = TestBroker::start(2);
    for version in [Version::V5, Version::V3_1_1] {
        let mut client = RawClient::connect_tcp(broker.shard(1), version);
        // Over `limits.client_id_bytes_max` (256).
        let id = "x".repeat(1000);
        let connect = crate::common::connect_packet(version, &id, true, None);
        client.send(&Packet::Connect(Box::new(connect)));
        keep_writing(&mut client);
        let packets = read_to_end(&mut client);
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason == ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            "{version:?}: {packets:?}"
        );
    }
}
