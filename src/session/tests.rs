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
        shard_messages_max: 1_000_000,
        shard_bytes_max: 1 << 30,
        shard_share_messages: 0,
        shard_share_bytes: 0,
    }
}

type Put = Result<Evicted, DropReason>;

impl SessionState {
    /// `enqueue` with every eviction counted (the deliveries here are not shared).
    fn put(&mut self, d: Delivery, on: bool, l: &SessionLimits, h: &mut Held, t: Instant) -> Put {
        self.enqueue(d, on, l, h, t, &mut Vec::new())
    }

    /// `put` for a test that does not look at the shard's totals.
    fn put_alone(&mut self, d: Delivery, on: bool, l: &SessionLimits, t: Instant) -> Put {
        self.put(d, on, l, &mut Held::default(), t)
    }
}

fn evicted_for_queue(queue_full: usize) -> Evicted {
    Evicted {
        queue_full,
        shard_full: 0,
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
        reoffered: false,
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
        s.put_alone(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now)
            .unwrap();
    }
    assert_eq!(
        s.put_alone(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now),
        Err(DropReason::QueueFull)
    );
    let mut small = limits();
    small.outbox_bytes_max = 100;
    let mut s = session();
    s.put_alone(delivery(QoS::AtLeastOnce, b"x", None), true, &small, now)
        .unwrap();
    assert_eq!(
        s.put_alone(
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
        s.put_alone(delivery(QoS::AtMostOnce, b"x", None), false, &limits(), now),
        Err(DropReason::Qos0Offline)
    );
    let mut keep = limits();
    keep.queue_qos0_offline = true;
    assert_eq!(
        s.put_alone(delivery(QoS::AtMostOnce, b"x", None), false, &keep, now),
        Ok(Evicted::default())
    );
}

/// The payloads left in the outbox, front first.
fn queued(s: &SessionState) -> Vec<(QoS, u8)> {
    s.outbox
        .iter()
        .map(|q| {
            (
                q.delivery.qos,
                q.delivery.message.payload.first().copied().unwrap_or(0),
            )
        })
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
            s.put_alone(delivery(qos, payload, None), true, &oldest, now),
            Ok(Evicted::default())
        );
    }
    // Full: the QoS 0 goes first, although it is not the oldest.
    assert_eq!(
        s.put_alone(delivery(QoS::ExactlyOnce, b"4", None), true, &oldest, now),
        Ok(evicted_for_queue(1))
    );
    let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
    assert_eq!(queued(&s), [(q1, b'1'), (q1, b'3'), (q2, b'4')]);
    // No QoS 0 left: a QoS 0 newcomer is the one dropped ...
    assert_eq!(
        s.put_alone(delivery(q0, b"5", None), true, &oldest, now),
        Err(DropReason::QueueFull)
    );
    // ... and a QoS 1 newcomer displaces the oldest.
    assert_eq!(
        s.put_alone(delivery(q1, b"6", None), true, &oldest, now),
        Ok(evicted_for_queue(1))
    );
    assert_eq!(queued(&s), [(q1, b'3'), (q2, b'4'), (q1, b'6')]);
    // By bytes: a big newcomer drops as many as it needs.
    let mut bytes = oldest;
    bytes.outbox_messages_max = 10;
    // Three of 66 bytes queued; the newcomer has 67: one must go.
    bytes.outbox_bytes_max = 2 * 66 + 67;
    assert_eq!(
        s.put_alone(delivery(q1, &[7, 7], None), true, &bytes, now),
        Ok(evicted_for_queue(1))
    );
    assert!(s.outbox_bytes() <= bytes.outbox_bytes_max);
    assert_eq!(
        s.outbox_bytes(),
        s.outbox
            .iter()
            .map(|q| q.delivery.size_bytes())
            .sum::<usize>()
    );
    // One bigger than the whole budget is dropped itself and leaves the queue alone.
    bytes.outbox_bytes_max = 100;
    assert_eq!(
        s.put_alone(delivery(q1, &[0; 64], None), true, &bytes, now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(s.outbox_len(), 3);
}

#[test]
fn window_limits_qos1_and_ids_are_unique_and_nonzero() {
    let now = Instant::now();
    let mut s = session();
    for _ in 0..3 {
        s.put_alone(delivery(QoS::AtLeastOnce, b"x", None), true, &limits(), now)
            .unwrap();
    }
    let mut expired = 0;
    let a = s
        .next_to_send(2, now, &mut expired, &mut Held::default())
        .unwrap()
        .packet_id;
    let b = s
        .next_to_send(2, now, &mut expired, &mut Held::default())
        .unwrap()
        .packet_id;
    assert!(
        s.next_to_send(2, now, &mut expired, &mut Held::default())
            .is_none(),
        "window of 2 is full"
    );
    assert_ne!(a, b);
    assert!(s.inflight.puback(a.unwrap(), &mut Held::default()));
    assert!(
        !s.inflight.puback(a.unwrap(), &mut Held::default()),
        "a second PUBACK for the same id is unknown"
    );
    assert!(
        s.next_to_send(2, now, &mut expired, &mut Held::default())
            .is_some(),
        "the ack opened the window"
    );
}

#[test]
fn qos2_outgoing_goes_sent_released_completed() {
    let now = Instant::now();
    let mut s = session();
    s.put_alone(delivery(QoS::ExactlyOnce, b"x", None), true, &limits(), now)
        .unwrap();
    let id = s
        .next_to_send(2, now, &mut 0, &mut Held::default())
        .unwrap()
        .packet_id
        .unwrap();
    assert!(
        !s.inflight.puback(id, &mut Held::default()),
        "PUBACK does not complete QoS 2"
    );
    assert!(
        !s.inflight.pubcomp(id, &mut Held::default()),
        "PUBCOMP before PUBREC is unknown"
    );
    assert!(s.inflight.pubrec(id, &mut Held::default()));
    assert!(
        s.inflight.pubrec(id, &mut Held::default()),
        "a repeated PUBREC is answered again"
    );
    assert!(s.inflight.pubcomp(id, &mut Held::default()));
    assert!(s.inflight.is_empty());
}

#[test]
fn expired_messages_are_not_sent() {
    let now = Instant::now();
    let mut s = session();
    let past = now + Duration::from_millis(1);
    s.put_alone(
        delivery(QoS::AtLeastOnce, b"old", Some(past)),
        true,
        &limits(),
        now,
    )
    .unwrap();
    s.put_alone(
        delivery(QoS::AtLeastOnce, b"new", None),
        true,
        &limits(),
        now,
    )
    .unwrap();
    let mut expired = 0;
    let later = now + Duration::from_secs(1);
    let sent = s
        .next_to_send(2, later, &mut expired, &mut Held::default())
        .unwrap();
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
        s.put_alone(delivery(QoS::AtLeastOnce, b"", None), true, &big, now)
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(sent) = s.next_to_send(70_000, now, &mut 0, &mut Held::default()) {
        assert!(seen.insert(sent.packet_id.unwrap().get()));
    }
    assert_eq!(seen.len(), 65_535, "every non-zero id used once");
}

/// The window against a plain list of the ids in use, through acknowledgements out of order,
/// the wrap from 65,535 to 1, and entries restored out of turn: every id handed out is non-zero
/// and unused, and every acknowledgement finds exactly the entries the list holds.
#[test]
fn the_window_of_packet_ids_agrees_with_a_list_of_ids_in_use() {
    let mut held = Held::default();
    for restored_out_of_turn in [false, true] {
        let mut window = Inflight::default();
        let mut in_use: Vec<u16> = Vec::new();
        let mut seq = 0;
        if restored_out_of_turn {
            for id in [9, 3, 700] {
                let packet_id = PacketId::new(id).unwrap();
                window.restore(
                    seq,
                    packet_id,
                    Some(delivery(QoS::AtLeastOnce, b"", None)),
                    &mut held,
                );
                in_use.push(id);
                seq += 1;
            }
        }
        // A fixed pseudo-random sequence (an LCG): the same run every time.
        let mut state: u32 = 0x2545_f491;
        for step in 0..200_000u32 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let ack = in_use.len() >= 64 || (state >> 16).is_multiple_of(3);
            if ack && !in_use.is_empty() {
                // Mostly the oldest, sometimes one from the middle or a stranger.
                let pick = (state >> 8) as usize % 4;
                let id = match pick {
                    0 => in_use[(state as usize >> 4) % in_use.len()],
                    1 => (state >> 4) as u16 | 1,
                    _ => in_use[0],
                };
                let known = in_use.contains(&id);
                assert_eq!(
                    window.puback(PacketId::new(id).unwrap(), &mut held),
                    known,
                    "step {step}"
                );
                in_use.retain(|&used| used != id);
            } else {
                let id = window
                    .push(seq, delivery(QoS::AtLeastOnce, b"", None), &mut held)
                    .unwrap()
                    .get();
                seq += 1;
                assert!(
                    !in_use.contains(&id),
                    "step {step}: id {id} handed out twice"
                );
                in_use.push(id);
            }
            assert_eq!(window.len(), in_use.len());
        }
        let ids: Vec<u16> = window.iter().map(|e| e.packet_id.get()).collect();
        assert_eq!(ids, in_use, "send order kept");
    }
}

/// The shard's tally equals the sum of what its sessions hold, after every step.
#[track_caller]
fn assert_tally(shard: &Held, sessions: &[&SessionState]) {
    let mut sum = Held::default();
    for s in sessions {
        sum.add(s.held());
    }
    assert_eq!(*shard, sum);
}

#[test]
fn the_shard_tally_follows_enqueue_send_ack_and_drops() {
    let now = Instant::now();
    let mut shard = Held::default();
    let mut limits = limits();
    limits.outbox_messages_max = 10;
    let (mut a, mut b) = (session(), session());
    let size = delivery(QoS::AtLeastOnce, b"x", None).size_bytes();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtMostOnce] {
        a.put(delivery(qos, b"x", None), true, &limits, &mut shard, now)
            .unwrap();
    }
    b.put(
        delivery(QoS::AtLeastOnce, b"x", None),
        true,
        &limits,
        &mut shard,
        now,
    )
    .unwrap();
    assert_eq!(
        shard,
        Held {
            messages: 4,
            bytes: 4 * size
        }
    );
    assert_tally(&shard, &[&a, &b]);
    // Into the window: still held. QoS 0 written: let go.
    let one = a.next_to_send(2, now, &mut 0, &mut shard).unwrap();
    let two = a.next_to_send(2, now, &mut 0, &mut shard).unwrap();
    assert_eq!(shard.messages, 4);
    let zero = a.next_to_send(2, now, &mut 0, &mut shard).unwrap();
    assert_eq!(zero.packet_id, None);
    assert_eq!(shard.messages, 3);
    assert_tally(&shard, &[&a, &b]);
    assert!(a.inflight.puback(one.packet_id.unwrap(), &mut shard));
    assert_eq!(shard.messages, 2);
    // QoS 2: the message is let go at PUBREC, only the id waits for PUBCOMP.
    assert!(a.inflight.pubrec(two.packet_id.unwrap(), &mut shard));
    assert_eq!(shard.messages, 1);
    assert!(a.inflight.pubrec(two.packet_id.unwrap(), &mut shard));
    assert!(a.inflight.pubcomp(two.packet_id.unwrap(), &mut shard));
    assert_eq!(shard.messages, 1);
    assert_tally(&shard, &[&a, &b]);
    // Queued QoS 0 goes with the connection.
    a.put(
        delivery(QoS::AtMostOnce, b"x", None),
        true,
        &limits,
        &mut shard,
        now,
    )
    .unwrap();
    assert_eq!(shard.messages, 2);
    assert_eq!(a.drop_queued_qos0(&mut shard), 1);
    assert_eq!(
        shard,
        Held {
            messages: 1,
            bytes: size
        }
    );
    assert_tally(&shard, &[&a, &b]);
    // A window entry forgotten (too large for the client) is let go too.
    let sent = b.next_to_send(2, now, &mut 0, &mut shard).unwrap();
    assert!(b.inflight.forget(sent.packet_id.unwrap(), &mut shard));
    assert_eq!(shard, Held::default());
    assert_tally(&shard, &[&a, &b]);
}

#[test]
fn expired_messages_leave_the_shard_tally() {
    let now = Instant::now();
    let mut shard = Held::default();
    let mut s = session();
    let soon = Some(now + Duration::from_secs(1));
    s.put(
        delivery(QoS::AtLeastOnce, b"x", soon),
        true,
        &limits(),
        &mut shard,
        now,
    )
    .unwrap();
    assert_eq!(shard.messages, 1);
    let mut expired = 0;
    let later = now + Duration::from_secs(2);
    assert!(s.next_to_send(2, later, &mut expired, &mut shard).is_none());
    assert_eq!((expired, shard), (1, Held::default()));
}

/// A shard of two sessions holding three QoS 1 messages of `size` bytes, "1" and "2" in `a`
/// and "3" in `b`, with a shard-wide cap of those three messages' bytes.
struct FullShard {
    now: Instant,
    shard: Held,
    size: usize,
    limits: SessionLimits,
    a: SessionState,
    b: SessionState,
}

fn full_shard(drop_oldest: bool) -> FullShard {
    let now = Instant::now();
    let mut shard = Held::default();
    let size = delivery(QoS::AtLeastOnce, b"x", None).size_bytes();
    let mut limits = limits();
    limits.drop_oldest = drop_oldest;
    limits.shard_bytes_max = 3 * size;
    let (mut a, mut b) = (session(), session());
    let q1 = QoS::AtLeastOnce;
    for (payload, into_a) in [(b"1", true), (b"2", true), (b"3", false)] {
        let s = if into_a { &mut a } else { &mut b };
        s.put(delivery(q1, payload, None), true, &limits, &mut shard, now)
            .unwrap();
    }
    FullShard {
        now,
        shard,
        size,
        limits,
        a,
        b,
    }
}

#[test]
fn the_shard_cap_drops_new_messages_across_sessions() {
    let FullShard {
        now,
        mut shard,
        size,
        limits,
        mut a,
        mut b,
    } = full_shard(false);
    let q1 = QoS::AtLeastOnce;
    // Each session is far under its own limit; together they hold the shard's.
    assert_eq!(
        b.put(delivery(q1, b"x", None), false, &limits, &mut shard, now),
        Err(DropReason::ShardFull)
    );
    assert_eq!(shard.bytes, 3 * size);
    // By count as well.
    let mut by_count = limits;
    by_count.shard_bytes_max = 1 << 20;
    by_count.shard_messages_max = 3;
    assert_eq!(
        a.put(delivery(q1, b"x", None), false, &by_count, &mut shard, now),
        Err(DropReason::ShardFull)
    );
    // The session limit is named first when both are reached.
    by_count.outbox_messages_max = 2;
    assert_eq!(
        a.put(delivery(q1, b"x", None), false, &by_count, &mut shard, now),
        Err(DropReason::QueueFull)
    );
    assert_tally(&shard, &[&a, &b]);
}

#[test]
fn the_shard_cap_with_drop_oldest_makes_room_in_the_receiving_session() {
    let mut f = full_shard(true);
    let (now, limits) = (f.now, f.limits);
    let (q0, q1) = (QoS::AtMostOnce, QoS::AtLeastOnce);
    // a makes room by dropping its own oldest, counted as shard-full.
    assert_eq!(
        f.a.put(delivery(q1, b"4", None), true, &limits, &mut f.shard, now),
        Ok(Evicted {
            queue_full: 0,
            shard_full: 1
        })
    );
    assert_eq!(queued(&f.a), [(q1, b'2'), (q1, b'4')]);
    // A QoS 0 newcomer never displaces QoS 1: it is dropped itself.
    assert_eq!(
        f.a.put(delivery(q0, b"5", None), true, &limits, &mut f.shard, now),
        Err(DropReason::ShardFull)
    );
    // A session with nothing queued cannot make room: the newcomer is dropped.
    let mut c = session();
    assert_eq!(
        c.put(delivery(q1, b"6", None), true, &limits, &mut f.shard, now),
        Err(DropReason::ShardFull)
    );
    assert_eq!(f.shard.bytes, 3 * f.size);
    assert_tally(&f.shard, &[&f.a, &f.b, &c]);
}

#[test]
fn a_session_moving_carries_what_it_holds_between_shard_tallies() {
    let now = Instant::now();
    let (mut from, mut to) = (Held::default(), Held::default());
    let mut s = session();
    for _ in 0..3 {
        s.put(
            delivery(QoS::AtLeastOnce, b"x", None),
            false,
            &limits(),
            &mut from,
            now,
        )
        .unwrap();
    }
    s.next_to_send(2, now, &mut 0, &mut from).unwrap();
    // Moving out takes off everything it holds, in flight included; moving in adds it.
    let held = s.held();
    assert_eq!(held.messages, 3);
    from.remove(held);
    to.add(held);
    assert_eq!(from, Held::default());
    assert_tally(&to, &[&s]);
}

#[test]
fn a_session_under_its_fair_share_queues_at_the_shard_cap() {
    let FullShard {
        now,
        mut shard,
        size,
        mut limits,
        mut a,
        b,
    } = full_shard(false);
    let q1 = QoS::AtLeastOnce;
    // A fair share of two messages: a new session gets two over the cap, not three.
    limits.shard_share_messages = 2;
    limits.shard_share_bytes = 2 * size;
    let mut healthy = session();
    for payload in [b"4", b"5"] {
        assert_eq!(
            healthy.put(delivery(q1, payload, None), true, &limits, &mut shard, now,),
            Ok(Evicted::default())
        );
    }
    assert_eq!(
        healthy.put(delivery(q1, b"6", None), true, &limits, &mut shard, now,),
        Err(DropReason::ShardFull)
    );
    // Sending does not free a share: in flight is still held.
    let sent = healthy.next_to_send(2, now, &mut 0, &mut shard).unwrap();
    assert_eq!(
        healthy.put(delivery(q1, b"6", None), true, &limits, &mut shard, now,),
        Err(DropReason::ShardFull)
    );
    // An ack does.
    assert!(healthy.inflight.puback(sent.packet_id.unwrap(), &mut shard));
    assert_eq!(
        healthy.put(delivery(q1, b"6", None), true, &limits, &mut shard, now,),
        Ok(Evicted::default())
    );
    // The session over its share (`a` holds two of the three) is refused, by bytes as well.
    assert_eq!(
        a.put(delivery(q1, b"7", None), true, &limits, &mut shard, now,),
        Err(DropReason::ShardFull)
    );
    limits.shard_share_messages = 100;
    assert_eq!(a.room(size, &limits, &shard), Err(DropReason::ShardFull));
    limits.shard_share_bytes = 3 * size;
    assert_eq!(a.room(size, &limits, &shard), Ok(()));
    assert_tally(&shard, &[&a, &b, &healthy]);
}

fn shared(mut d: Delivery) -> Delivery {
    d.shared = Some(Box::new((
        ByteString::from_static("t"),
        ByteString::from_static("g"),
    )));
    d
}

#[test]
fn drop_oldest_hands_back_evicted_shared_messages_of_qos_1_and_2_once() {
    let now = Instant::now();
    let mut shard = Held::default();
    let mut limits = limits();
    limits.drop_oldest = true;
    limits.outbox_messages_max = 2;
    let mut s = session();
    let q1 = QoS::AtLeastOnce;
    let mut reoffer = Vec::new();
    let mut offer = |s: &mut SessionState, d: Delivery, reoffer: &mut Vec<_>| {
        s.enqueue(d, true, &limits, &mut shard, now, reoffer)
    };
    let mut again = shared(delivery(q1, b"2", None));
    again.reoffered = true;
    for d in [shared(delivery(q1, b"1", None)), again] {
        offer(&mut s, d, &mut reoffer).unwrap();
    }
    // "1" (shared, QoS 1, first offer) is handed back, not counted.
    let evicted = offer(&mut s, delivery(q1, b"3", None), &mut reoffer);
    assert_eq!(evicted, Ok(Evicted::default()));
    assert_eq!(reoffer.len(), 1);
    assert_eq!(&reoffer[0].0.message.payload[..], b"1");
    assert_eq!(reoffer[0].1, DropReason::QueueFull);
    // "2" was offered once already: evicted, it counts as dropped.
    let evicted = offer(&mut s, delivery(q1, b"4", None), &mut reoffer);
    assert_eq!(evicted, Ok(evicted_for_queue(1)));
    assert_eq!(reoffer.len(), 1);
    // A message offered again never evicts: it is refused.
    let mut late = shared(delivery(q1, b"5", None));
    late.reoffered = true;
    let refused = offer(&mut s, late, &mut reoffer);
    assert_eq!(refused, Err(DropReason::QueueFull));
    // A shared QoS 0 message is dropped, counted.
    let mut q0 = session();
    for payload in [b"6", b"7"] {
        let d = shared(delivery(QoS::AtMostOnce, payload, None));
        offer(&mut q0, d, &mut reoffer).unwrap();
    }
    let evicted = offer(&mut q0, delivery(q1, b"8", None), &mut reoffer);
    assert_eq!(evicted, Ok(evicted_for_queue(1)));
    assert_eq!(reoffer.len(), 1);
    assert_eq!(shard.messages, 4);
}
