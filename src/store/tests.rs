//! The record codec (round trip, torn tail, bad CRC, unknown type) and replay rules.

use bytes::Bytes;
use bytestring::ByteString;

use super::record::{
    self, MessageRef, QueuedRecord, Record, RecordError, SessionRecord, StoredMessage, WillRecord,
};
use super::replay::{Replayed, Replayer};
use crate::protocol::{PacketId, PublishProperties, QoS, SubscriptionOptions, Version};
use crate::session::Subscription;

fn id(client: &str) -> ByteString {
    ByteString::from(client.to_owned())
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn message(id: u64, topic: &str, payload: &'static [u8]) -> StoredMessage {
    let properties = PublishProperties {
        message_expiry_interval_secs: Some(60),
        content_type: Some(ByteString::from_static("text/plain")),
        ..Default::default()
    };
    StoredMessage {
        id,
        topic: ByteString::from(topic.to_owned()),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: properties.into(),
        publisher: id_of("pub"),
        expires_at_ms: Some(1_700_000_000_000),
    }
}

fn id_of(text: &str) -> ByteString {
    id(text)
}

fn session(client: &str, stamp: u64) -> SessionRecord {
    SessionRecord {
        stamp,
        client_id: id(client),
        username: Some(id("user")),
        version: Version::V5,
        expiry_secs: 3600,
        expires_at_ms: None,
        next_seq: 1,
        subscriptions: vec![(
            id("a/#"),
            Subscription {
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: crate::protocol::RetainHandling::Never,
                },
                identifier: Some(7),
                read_granted_generation: 0,
            },
        )],
    }
}

fn queued(client: &str, seq: u64, message: MessageRef) -> QueuedRecord {
    QueuedRecord {
        client_id: id(client),
        seq,
        qos: QoS::AtLeastOnce,
        retain: false,
        packet_id: None,
        released: false,
        subscription_identifiers: vec![7, 9],
        shared: Some((id("x/+"), id("g"))),
        reoffered: false,
        message,
    }
}

fn every_kind() -> Vec<Record> {
    vec![
        Record::SnapshotBegin,
        Record::Session(session("c1", 5)),
        Record::Queued(queued(
            "c1",
            1,
            MessageRef::Inline(message(10, "a/b", b"hi")),
        )),
        Record::Queued(queued("c1", 2, MessageRef::Earlier(10))),
        Record::Queued(QueuedRecord::released(id("c1"), 3, pid(4))),
        Record::Sent {
            client_id: id("c1"),
            seq: 1,
            packet_id: pid(3),
        },
        Record::Released {
            client_id: id("c1"),
            seq: 1,
        },
        Record::Done {
            client_id: id("c1"),
            seq: 2,
        },
        Record::IncomingQos2 {
            client_id: id("c1"),
            packet_id: pid(9),
            awaiting: true,
        },
        Record::SessionGone {
            client_id: id("c2"),
            moved: true,
            stamp: 1,
        },
        Record::RetainSet(message(11, "r/t", b"state")),
        Record::RetainClear { topic: id("r/u") },
        Record::WillSet(WillRecord {
            client_id: id("c3"),
            username: None,
            due_ms: 1_700_000_005_000,
            delay_secs: 5,
            message: message(0, "w/t", b"gone"),
        }),
        Record::WillGone {
            client_id: id("c4"),
        },
        Record::StreamNote {
            client_id: id("c1"),
            tag: tag(1 << 40, 70_000),
        },
        Record::SnapshotEnd,
    ]
}

fn tag(sequence: u64, index: u32) -> crate::cluster::tags::StreamTag {
    crate::cluster::tags::StreamTag { sequence, index }
}

fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        record::encode(r, &mut out);
    }
    out
}

fn decode_all(bytes: Vec<u8>) -> Result<Vec<Record>, RecordError> {
    let mut buf = Bytes::from(bytes);
    let mut records = Vec::new();
    while let Some(r) = record::decode(&mut buf)? {
        records.push(r);
    }
    Ok(records)
}

#[test]
fn every_record_kind_reads_back_as_written() {
    let records = every_kind();
    assert_eq!(decode_all(encode_all(&records)).unwrap(), records);
}

#[test]
fn a_torn_tail_is_reported_at_every_cut() {
    let records = every_kind();
    let bytes = encode_all(&records);
    // Where each record ends: a cut there is a clean end, anywhere else a torn record.
    let mut ends = vec![0];
    let mut buf = Bytes::from(bytes.clone());
    while record::decode(&mut buf).unwrap().is_some() {
        ends.push(bytes.len() - buf.len());
    }
    for cut in 0..bytes.len() {
        let result = decode_all(bytes[..cut].to_vec());
        if ends.contains(&cut) {
            assert!(result.is_ok(), "cut at a record boundary {cut}");
        } else {
            assert_eq!(result, Err(RecordError::Truncated), "cut at {cut}");
        }
    }
}

#[test]
fn a_flipped_bit_fails_the_checksum() {
    let bytes = encode_all(&every_kind());
    for position in [8, 9, 20, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x10;
        assert!(
            matches!(
                decode_all(damaged),
                Err(RecordError::BadChecksum | RecordError::Truncated | RecordError::TooLarge(_))
            ),
            "bit flipped at {position}"
        );
    }
}

#[test]
fn an_unknown_record_type_is_an_error_not_skipped() {
    let body = [200u8, 1, 2, 3];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    assert_eq!(decode_all(bytes), Err(RecordError::UnknownType(200)));
}

#[test]
fn a_body_cut_short_inside_a_valid_frame_is_malformed() {
    // A Done record without its sequence number, framed with a correct CRC.
    let body = [8u8, 2, 0, b'c', b'1'];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    assert!(matches!(decode_all(bytes), Err(RecordError::Malformed(_))));
}

fn replay(records: Vec<Record>) -> Replayed {
    let mut replayer = Replayer::new();
    for r in records {
        replayer.apply(r);
    }
    replayer.finish()
}

#[test]
fn entries_follow_their_changes() {
    let state = replay(every_kind());
    let c1 = &state.sessions[&id("c1")];
    let seqs: Vec<u64> = c1.entries.keys().copied().collect();
    assert_eq!(seqs, vec![1, 3], "seq 2 was done");
    let first = &c1.entries[&1];
    assert_eq!(first.record.packet_id, Some(pid(3)));
    assert!(first.record.released);
    assert_eq!(first.message.as_ref().unwrap().payload, &b"hi"[..]);
    assert!(c1.entries[&3].message.is_none());
    assert!(c1.incoming_qos2.contains(&9));
    assert!(state.retained.contains_key(&id("r/t")));
    assert!(state.wills.contains_key(&id("c3")));
    assert_eq!(state.max_message_counter, 11);
    assert_eq!(state.orphans, 0);
}

#[test]
fn new_message_ids_start_above_every_recovered_counter_whichever_shard_made_it() {
    // Shard 0's counter 500 is below shard 1's counter 7 as a whole id.
    let state = replay(vec![
        Record::Session(session("c", 1)),
        Record::Queued(queued("c", 1, MessageRef::Inline(message(500, "a", b"x")))),
        Record::RetainSet(message((1 << 48) | 7, "r", b"y")),
    ]);
    assert_eq!(state.max_message_counter, 500);
}

#[test]
fn a_new_image_starts_the_session_afresh_and_the_same_stamp_keeps_its_entries() {
    let base = vec![
        Record::Session(session("c", 1)),
        Record::Queued(queued("c", 1, MessageRef::Inline(message(1, "a", b"x")))),
    ];
    let mut same = base.clone();
    same.push(Record::Session(SessionRecord {
        expiry_secs: 10,
        ..session("c", 1)
    }));
    let state = replay(same);
    assert_eq!(state.sessions[&id("c")].entries.len(), 1);
    assert_eq!(state.sessions[&id("c")].meta.expiry_secs, 10);
    let mut fresh = base;
    fresh.push(Record::Session(session("c", 2)));
    assert!(replay(fresh).sessions[&id("c")].entries.is_empty());
}

#[test]
fn a_moved_session_yields_to_the_newer_image_elsewhere_but_not_to_nothing() {
    let old = replay(vec![
        Record::Session(session("c", 1)),
        Record::SessionGone {
            client_id: id("c"),
            moved: true,
            stamp: 1,
        },
    ]);
    let new = replay(vec![Record::Session(SessionRecord {
        expiry_secs: 99,
        ..session("c", 2)
    })]);
    let merged = Replayed::merge(vec![old.clone(), new.clone()]);
    assert_eq!(merged.sessions[&id("c")].meta.stamp, 2);
    let merged = Replayed::merge(vec![new, old.clone()]);
    assert_eq!(merged.sessions[&id("c")].meta.stamp, 2);
    let alone = Replayed::merge(vec![old]);
    assert_eq!(
        alone.sessions[&id("c")].meta.stamp,
        1,
        "kept when nothing newer exists"
    );
}

#[test]
fn a_session_ended_on_another_shard_after_it_moved_does_not_come_back() {
    let old = replay(vec![
        Record::Session(session("c", 1)),
        Record::SessionGone {
            client_id: id("c"),
            moved: true,
            stamp: 2,
        },
    ]);
    let ended = replay(vec![Record::SessionGone {
        client_id: id("c"),
        moved: false,
        stamp: 3,
    }]);
    assert!(
        Replayed::merge(vec![old.clone(), ended.clone()])
            .sessions
            .is_empty()
    );
    assert!(Replayed::merge(vec![ended, old]).sessions.is_empty());
    // An image newer than the end is a session begun again.
    let again = replay(vec![Record::Session(session("c", 4))]);
    let ended = replay(vec![Record::SessionGone {
        client_id: id("c"),
        moved: false,
        stamp: 3,
    }]);
    assert_eq!(Replayed::merge(vec![again, ended]).sessions.len(), 1);
}

#[test]
fn an_ended_session_is_gone_and_changes_for_unknown_sessions_are_counted() {
    let state = replay(vec![
        Record::Session(session("c", 1)),
        Record::SessionGone {
            client_id: id("c"),
            moved: false,
            stamp: 1,
        },
        Record::Done {
            client_id: id("c"),
            seq: 1,
        },
        Record::Queued(queued("c", 2, MessageRef::Earlier(77))),
    ]);
    assert!(state.sessions.is_empty());
    assert_eq!(state.orphans, 2);
}

/// The notes of stream records queued (docs/CLUSTER.md, "Exactly once"): kept per client id,
/// merged across the shards' logs, gone with their session's end, and handed at the split to
/// the home shard of their session, for the sessions that are restored only.
#[test]
fn stream_notes_are_restored_with_their_sessions() {
    let first = replay(vec![
        Record::Session(session("a", 1)),
        Record::Queued(queued("a", 1, MessageRef::Inline(message(5, "t", b"x")))),
        Record::StreamNote {
            client_id: id("a"),
            tag: tag(7, 0),
        },
        Record::Session(session("gone", 1)),
        Record::StreamNote {
            client_id: id("gone"),
            tag: tag(7, 0),
        },
        Record::SessionGone {
            client_id: id("gone"),
            moved: false,
            stamp: 1,
        },
        Record::StreamNote {
            client_id: id("nobody"),
            tag: tag(7, 1),
        },
    ]);
    assert!(!first.notes.contains_key("gone"), "gone with its session");
    // The same session's notes from another shard's log (it moved there and queued more).
    let second = replay(vec![
        Record::Session(session("b", 1)),
        Record::StreamNote {
            client_id: id("a"),
            tag: tag(9, 2),
        },
        Record::StreamNote {
            client_id: id("b"),
            tag: tag(7, 0),
        },
    ]);
    let merged = Replayed::merge(vec![first, second]);
    let of = |client: &str| -> Vec<_> { merged.notes[client].iter().copied().collect() };
    assert_eq!(of("a"), vec![tag(7, 0), tag(9, 2)]);
    assert_eq!(of("b"), vec![tag(7, 0)]);
    let clock = super::Clock::now();
    let home = |client: &str| usize::from(client == "b");
    let parts = super::restore::split(merged, 2, home, &clock);
    let notes = |shard: usize| {
        let mut notes = parts[shard].notes.clone();
        notes.sort();
        notes
    };
    assert_eq!(notes(0), vec![(id("a"), tag(7, 0)), (id("a"), tag(9, 2))]);
    assert_eq!(notes(1), vec![(id("b"), tag(7, 0))]);
}

mod acks {
    use shards::ShardId;

    use super::pid;
    use crate::protocol::{Packet, PubResponse, ReasonCode};
    use crate::store::FsyncMode;
    use crate::store::journal::{Held, Journal, PendingAck};

    fn puback(id: u16) -> Packet {
        Packet::PubAck(PubResponse {
            packet_id: pid(id),
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        })
    }

    fn ready(journal: &mut Journal) -> Vec<(u16, bool)> {
        let mut out = Vec::new();
        journal.ready_acks(&mut out);
        out.into_iter()
            .map(|(ack, durable)| match ack.held {
                Held::Ack(_, Packet::PubAck(response)) => (response.packet_id.get(), durable),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn acknowledgements_wait_for_local_and_remote_records_and_leave_in_order() {
        let mut journal = Journal::new(FsyncMode::Always, 3);
        let peer = ShardId::new(2);
        // 1: a local record; 2: mailed to shard 2; 3: nothing to wait for, but behind them.
        journal.begin_route();
        journal.touched_local();
        journal.records().unwrap().0.extend_from_slice(b"record");
        assert!(journal.hold_ack(7, puback(1)).is_none());
        journal.begin_route();
        journal.mailed(peer);
        assert!(journal.hold_ack(7, puback(2)).is_none());
        journal.begin_route();
        assert!(
            journal.hold_ack(7, puback(3)).is_none(),
            "queued behind the others"
        );
        journal.batch_written();
        assert!(ready(&mut journal).is_empty());
        let job = journal.take_job();
        journal.durable_to(job.appended);
        assert_eq!(ready(&mut journal), vec![(1, true)]);
        journal.durable_reply(peer, 1, true);
        assert_eq!(ready(&mut journal), vec![(2, true), (3, true)]);
        journal.begin_route();
        assert!(
            journal.hold_ack(7, puback(4)).is_some(),
            "nothing waits: at once"
        );
    }

    #[test]
    fn a_shard_that_failed_to_write_settles_the_acknowledgements_as_refused() {
        let mut journal = Journal::new(FsyncMode::Always, 2);
        let peer = ShardId::new(1);
        journal.begin_route();
        journal.mailed(peer);
        assert!(journal.hold_ack(1, puback(1)).is_none());
        journal.begin_route();
        journal.mailed(peer);
        assert!(journal.hold_ack(1, puback(2)).is_none());
        journal.batch_written();
        journal.durable_reply(peer, 1, false);
        assert_eq!(ready(&mut journal), vec![(1, false)]);
        journal.durable_reply(peer, 2, true);
        assert_eq!(ready(&mut journal), vec![(2, true)]);
    }

    #[test]
    fn a_message_from_another_node_counts_once_its_records_are_durable() {
        let mut journal = Journal::new(FsyncMode::Always, 2);
        let peer = ShardId::new(1);
        journal.begin_route();
        assert!(journal.hold_remote(), "no records: it counts at once");
        journal.begin_route();
        journal.touched_local();
        journal.records().unwrap().0.extend_from_slice(b"record");
        journal.mailed(peer);
        assert!(!journal.hold_remote());
        journal.begin_route();
        assert!(
            journal.hold_ack(3, puback(1)).is_none(),
            "a client's acknowledgement waits behind it"
        );
        journal.batch_written();
        let job = journal.take_job();
        journal.durable_to(job.appended);
        let mut out = Vec::new();
        journal.ready_acks(&mut out);
        assert!(
            out.is_empty(),
            "the copy mailed to shard 1 is not durable yet"
        );
        journal.durable_reply(peer, 1, true);
        journal.ready_acks(&mut out);
        assert!(matches!(
            out.as_slice(),
            [
                (
                    PendingAck {
                        held: Held::Remote,
                        ..
                    },
                    true
                ),
                (
                    PendingAck {
                        held: Held::Ack(3, _),
                        ..
                    },
                    true
                )
            ]
        ));
    }
}

mod snapshots {
    use crate::store::FsyncMode;
    use crate::store::journal::{Chunk, Journal};

    const MIB: usize = 1 << 20;

    fn kinds(chunks: &[Chunk]) -> Vec<&'static str> {
        chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Records(_) => "records",
                Chunk::Snapshot(_) => "snapshot",
                Chunk::SnapshotBegin { next_log: true } => "begin, next log",
                Chunk::SnapshotBegin { next_log: false } => "begin",
                Chunk::SnapshotPart(_) => "part",
                Chunk::SnapshotEnd => "end",
            })
            .collect()
    }

    /// The records not yet taken by the store task come to `bytes`.
    fn unwritten(journal: &mut Journal, bytes: usize) {
        journal.records().unwrap().0.resize(bytes, 7);
        journal.batch_written();
    }

    #[test]
    fn the_first_snapshot_of_a_run_sets_when_the_next_is_due_and_none_is_due_while_one_is_taken() {
        let mut journal = Journal::new(FsyncMode::Always, 1);
        // At start the shard's first snapshot precedes its first log.
        journal.begin_snapshot(false);
        unwritten(&mut journal, 70 * MIB);
        assert!(!journal.snapshot_due(), "not while one is under way");
        journal.push_snapshot_part(vec![1; 40 * MIB]);
        journal.end_snapshot();
        assert_eq!(journal.snapshot_bytes(), 40 * MIB);
        // The records written meanwhile follow the snapshot; only the snapshot chunks go
        // before the new generation is in force.
        let job = journal.take_snapshot_chunks();
        assert_eq!(kinds(&job), ["begin", "part", "end"]);
        assert!(journal.has_work());
        // Twice the snapshot (80 MiB), not the 64 MiB minimum, is what makes the next due.
        assert!(!journal.snapshot_due());
        unwritten(&mut journal, 80 * MIB + 1);
        assert!(journal.snapshot_due());
        journal.begin_snapshot(true);
        assert!(!journal.snapshot_due());
        assert_eq!(
            kinds(&journal.take_job().chunks),
            ["records", "begin, next log"]
        );
    }

    #[test]
    fn a_failure_abandons_the_snapshot_under_way() {
        let mut journal = Journal::new(FsyncMode::Always, 1);
        journal.begin_snapshot(true);
        journal.push_snapshot_part(vec![1; 10]);
        assert!(journal.is_slicing());
        let _ = journal.fail();
        assert!(!journal.is_slicing() && journal.is_broken());
        journal.push_snapshot_part(vec![1; 10]);
        journal.end_snapshot();
        assert!(
            journal.take_job().chunks.is_empty(),
            "nothing of it is written"
        );
    }
}
