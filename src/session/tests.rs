//! The session driven directly: queue limits, the in-flight window, packet ids, QoS 2 receive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::*;

fn limits() -> SessionLimits {
    SessionLimits {
        outbox_messages_max: 3,
        outbox_bytes_max: 10_000,
        inflight_messages_max: 2,
        subscriptions_max: 10,
        queue_qos0_offline: false,
        drop_oldest: false,
    }
}

fn delivery(qos: QoS, payload: &'static [u8], expires_at: Option<Instant>) -> Delivery {
    Delivery {
        message: Arc::new(Message {
            id: 0,
            topic: ByteString::from_static("t"),
            payload: Bytes::from_static(payload),
            qos,
            retain: false,
            properties: Default::default(),
            publisher: ByteString::from_static("p"),
            received_at: Instant::now(),
            expires_at,
        }),
        qos,
        retain: false,
        subscription_identifiers: Vec::new(),
        shared: None,
    }
}

fn session() -> SessionState {
    SessionState::new(ByteString::from_static("c"), Version::V3_1_1, 60)
}

#[test]
fn outbox_is_bounded_by_count_and_bytes() {
    let now = Instant::now();
    let mut s = session();
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now)
            .unwrap();
    }
    assert_eq!(
        s.enqueue(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now),
        Err(DropReason::QueueFull)
    );
    let mut small = limits();
    small.outbox_bytes_max = 100;
    let mut s = session();
    s.enqueue(delivery(QoS::AtLeastOnce, b"x", None), true, &small, now)
        .unwrap();
    assert_eq!(
        s.enqueue(
            delivery(QoS::AtLeastOnce, &[0; 64], None),
            true,
            &small,
            now
        ),
        Err(DropReason::QueueFull)
    );
    assert!(s.outbox_bytes() <= 100);
}

#[test]
fn offline_sessions_keep_qos0_only_when_configured() {
    let now = Instant::now();
    let mut s = session();
    assert_eq!(
        s.enqueue(delivery(QoS::AtMostOnce, b"x", None), false, &limits(), now),
        Err(DropReason::Qos0Offline)
    );
    let mut keep = limits();
    keep.queue_qos0_offline = true;
    assert_eq!(
        s.enqueue(delivery(QoS::AtMostOnce, b"x", None), false, &keep, now),
        Ok(0)
    );
}

/// The payloads left in the outbox, front first.
fn queued(s: &SessionState) -> Vec<(QoS, u8)> {
    s.outbox
        .iter()
        .map(|(_, d)| (d.qos, d.message.payload.first().copied().unwrap_or(0)))
        .collect()
}

#[test]
fn drop_oldest_makes_room_qos0_first_and_never_for_qos0() {
    let now = Instant::now();
    let mut oldest = limits();
    oldest.drop_oldest = true;
    let mut s = session();
    for (qos, payload) in [
        (QoS::AtLeastOnce, b"1"),
        (QoS::AtMostOnce, b"2"),
        (QoS::AtLeastOnce, b"3"),
    ] {
        assert_eq!(
            s.enqueue(delivery(qos, payload, None), true, &oldest, now),
            Ok(0)
        );
    }
    // Full: the QoS 0 goes first, although it is not the oldest.
    assert_eq!(
        s.enqueue(delivery(QoS::ExactlyOnce, b"4", None), true, &oldest, now),
        Ok(1)
    );
    let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
    assert_eq!(queued(&s), [(q1, b'1'), (q1, b'3'), (q2, b'4')]);
    // No QoS 0 left: a QoS 0 newcomer is the one dropped ...
    assert_eq!(
        s.enqueue(delivery(q0, b"5", None), true, &oldest, now),
        Err(DropReason::QueueFull)
    );
    // ... and a QoS 1 newcomer displaces the oldest.
    assert_eq!(
        s.enqueue(delivery(q1, b"6", None), true, &oldest, now),
        Ok(1)
    );
    assert_eq!(queued(&s), [(q1, b'3'), (q2, b'4'), (q1, b'6')]);
    // By bytes: a big newcomer drops as many as it needs.
    let mut bytes = oldest;
    bytes.outbox_messages_max = 10;
    // Three of 66 bytes queued; the newcomer has 67: one must go.
    bytes.outbox_bytes_max = 2 * 66 + 67;
    assert_eq!(
        s.enqueue(delivery(q1, &[7, 7], None), true, &bytes, now),
        Ok(1)
    );
    assert!(s.outbox_bytes() <= bytes.outbox_bytes_max);
    assert_eq!(
        s.outbox_bytes(),
        s.outbox.iter().map(|(_, d)| d.size_bytes()).sum::<usize>()
    );
    // One bigger than the whole budget is dropped itself and leaves the queue alone.
    bytes.outbox_bytes_max = 100;
    assert_eq!(
        s.enqueue(delivery(q1, &[0; 64], None), true, &bytes, now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(s.outbox_len(), 3);
}

#[test]
fn window_limits_qos1_and_ids_are_unique_and_nonzero() {
    let now = Instant::now();
    let mut s = session();
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now)
            .unwrap();
    }
    let mut expired = 0;
    let a = s.next_to_send(2, now, &mut expired).unwrap().packet_id;
    let b = s.next_to_send(2, now, &mut expired).unwrap().packet_id;
    assert!(
        s.next_to_send(2, now, &mut expired).is_none(),
        "window of 2 is full"
    );
    assert_ne!(a, b);
    assert!(s.inflight.puback(a.unwrap()));
    assert!(
        !s.inflight.puback(a.unwrap()),
        "a second PUBACK for the same id is unknown"
    );
    assert!(
        s.next_to_send(2, now, &mut expired).is_some(),
        "the ack opened the window"
    );
}

#[test]
fn qos2_outgoing_goes_sent_released_completed() {
    let now = Instant::now();
    let mut s = session();
    s.enqueue(delivery(QoS::ExactlyOnce, b"x", None), true, &limits(), now)
        .unwrap();
    let id = s.next_to_send(2, now, &mut 0).unwrap().packet_id.unwrap();
    assert!(!s.inflight.puback(id), "PUBACK does not complete QoS 2");
    assert!(!s.inflight.pubcomp(id), "PUBCOMP before PUBREC is unknown");
    assert!(s.inflight.pubrec(id));
    assert!(s.inflight.pubrec(id), "a repeated PUBREC is answered again");
    assert!(s.inflight.pubcomp(id));
    assert!(s.inflight.is_empty());
}

#[test]
fn expired_messages_are_not_sent() {
    let now = Instant::now();
    let mut s = session();
    let past = now + Duration::from_millis(1);
    s.enqueue(
        delivery(QoS::AtLeastOnce, b"old", Some(past)),
        true,
        &limits(),
        now,
    )
    .unwrap();
    s.enqueue(
        delivery(QoS::AtLeastOnce, b"new", None),
        true,
        &limits(),
        now,
    )
    .unwrap();
    let mut expired = 0;
    let later = now + Duration::from_secs(1);
    let sent = s.next_to_send(2, later, &mut expired).unwrap();
    assert_eq!(&sent.delivery.message.payload[..], b"new");
    assert_eq!(
        sent.queued_at, now,
        "the outbox wait starts when it was queued"
    );
    assert_eq!(expired, 1);
}

#[test]
fn qos2_incoming_is_delivered_once_until_released() {
    let mut s = session();
    let id = PacketId::new(5).unwrap();
    assert!(s.receive_qos2(id));
    assert!(!s.receive_qos2(id), "a repeat before PUBREL is not new");
    assert!(s.release_qos2(id));
    assert!(!s.release_qos2(id));
    assert!(s.receive_qos2(id), "after PUBREL the id may be used again");
}

#[test]
fn packet_ids_skip_ids_in_use_and_wrap() {
    let now = Instant::now();
    let mut s = session();
    let mut big = limits();
    big.outbox_messages_max = 70_000;
    big.outbox_bytes_max = usize::MAX;
    for _ in 0..65_535 {
        s.enqueue(delivery(QoS::AtLeastOnce, b"", None), true, &big, now)
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(sent) = s.next_to_send(70_000, now, &mut 0) {
        assert!(seen.insert(sent.packet_id.unwrap().get()));
    }
    assert_eq!(seen.len(), 65_535, "every non-zero id used once");
}
