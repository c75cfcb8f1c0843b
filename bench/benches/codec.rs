//! Goal: the cost of the codec on the broker's hot paths. Every received PUBLISH is decoded once
//! and encoded once per subscriber, so PUBLISH is measured at 64 B, 1 KiB and 64 KiB payloads in
//! 3.1.1 and 5.0; CONNECT and SUBSCRIBE are measured once each as the control-plane reference.
//! Buffers are prepared outside the timed region; throughput counts frame bytes.
//!
//! Run: `cargo bench -p bench --bench codec`.

use std::hint::black_box;

use bytes::BytesMut;
use divan::Bencher;
use divan::counter::BytesCount;
use ringmq::protocol::{
    ByteString, Bytes, Connect, ConnectProperties, Packet, PacketId, Publish, QoS, Subscribe,
    SubscribeFilter, SubscribeProperties, SubscriptionOptions, Version, decode, encode,
    encode_publish,
};

fn main() {
    divan::main();
}

const PAYLOAD_BYTES: [usize; 3] = [64, 1024, 65_536];

/// Large enough for every frame here; the limit check itself is part of what is measured.
const PACKET_BYTES_MAX: usize = 1 << 20;

fn publish(payload_bytes: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("site-17/device-0042/temperature"),
        packet_id: PacketId::new(42),
        properties: Default::default(),
        payload: Bytes::from(vec![0xA5; payload_bytes]),
    })
}

fn connect(version: Version) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: ByteString::from_static("device-0042"),
        will: None,
        username: Some(ByteString::from_static("fleet")),
        password: Some(Bytes::from_static(b"secret")),
        properties: ConnectProperties {
            session_expiry_interval_secs: version.is_v5().then_some(3600),
            receive_maximum: version.is_v5().then_some(100),
            ..Default::default()
        },
    }))
}

fn subscribe(version: Version) -> Packet {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).unwrap(),
        properties: SubscribeProperties {
            subscription_identifier: version.is_v5().then_some(12),
            ..Default::default()
        },
        filters: [
            "site-17/+/temperature",
            "site-17/device-0042/#",
            "$SYS/broker/uptime",
        ]
        .into_iter()
        .map(|filter| SubscribeFilter {
            filter: ByteString::from_static(filter),
            options,
        })
        .collect(),
    })
}

fn frame(packet: &Packet, version: Version) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf, PACKET_BYTES_MAX).unwrap();
    buf.to_vec()
}

fn bench_decode(bencher: Bencher, packet: &Packet, version: Version) {
    let frame = frame(packet, version);
    bencher
        .counter(BytesCount::new(frame.len()))
        .with_inputs(|| {
            // A connection's read buffer is already shared after its first frame; splitting off
            // nothing here pays that one-time promotion outside the timed region.
            let mut buf = BytesMut::from(&frame[..]);
            drop(buf.split_to(0));
            buf
        })
        .bench_local_values(|mut buf| decode(black_box(&mut buf), version, PACKET_BYTES_MAX));
}

fn bench_encode(bencher: Bencher, packet: &Packet, version: Version) {
    let len = frame(packet, version).len();
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| BytesMut::with_capacity(len))
        .bench_local_refs(|buf| encode(black_box(packet), version, buf, PACKET_BYTES_MAX));
}

#[divan::bench(args = PAYLOAD_BYTES)]
fn decode_publish_3_1_1(bencher: Bencher, payload_bytes: usize) {
    bench_decode(bencher, &publish(payload_bytes), Version::V3_1_1);
}

#[divan::bench(args = PAYLOAD_BYTES)]
fn decode_publish_5(bencher: Bencher, payload_bytes: usize) {
    bench_decode(bencher, &publish(payload_bytes), Version::V5);
}

#[divan::bench(args = PAYLOAD_BYTES)]
fn encode_publish_3_1_1(bencher: Bencher, payload_bytes: usize) {
    bench_encode(bencher, &publish(payload_bytes), Version::V3_1_1);
}

#[divan::bench(args = PAYLOAD_BYTES)]
fn encode_publish_5(bencher: Bencher, payload_bytes: usize) {
    bench_encode(bencher, &publish(payload_bytes), Version::V5);
}

/// The fan-out path: a PUBLISH written from borrowed parts, as for each subscriber.
#[divan::bench(args = PAYLOAD_BYTES)]
fn encode_publish_ref_5(bencher: Bencher, payload_bytes: usize) {
    let packet = publish(payload_bytes);
    let Packet::Publish(publish) = &packet else {
        unreachable!()
    };
    let len = frame(&packet, Version::V5).len();
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| BytesMut::with_capacity(len))
        .bench_local_refs(|buf| {
            encode_publish(
                black_box(&publish.as_ref()),
                Version::V5,
                buf,
                PACKET_BYTES_MAX,
            )
        });
}

#[divan::bench(args = [Version::V3_1_1, Version::V5])]
fn decode_connect(bencher: Bencher, version: Version) {
    bench_decode(bencher, &connect(version), version);
}

#[divan::bench(args = [Version::V3_1_1, Version::V5])]
fn encode_connect(bencher: Bencher, version: Version) {
    bench_encode(bencher, &connect(version), version);
}

#[divan::bench(args = [Version::V3_1_1, Version::V5])]
fn decode_subscribe(bencher: Bencher, version: Version) {
    bench_decode(bencher, &subscribe(version), version);
}

#[divan::bench(args = [Version::V3_1_1, Version::V5])]
fn encode_subscribe(bencher: Bencher, version: Version) {
    bench_encode(bencher, &subscribe(version), version);
}
