//! The shard's snapshot, taken in slices between its turns so that a large state does not stall
//! its clients (docs/PERSISTENCE.md, "Snapshots").
//!
//! The journal cuts the log when the snapshot starts: the records after the cut go to a new log,
//! which replays after the snapshot. The slices then walk the sessions (by slab key) and the
//! retained messages (by arena slot of the topic tree), then the delayed wills, writing each
//! as it is when the walk reaches it. What changes between slices is written to the new log
//! too, and every record there sets what it names (an entry queued, sent, done; a retained topic
//! set or cleared; a session's data) rather than changing it relative to before. So replaying
//! the new log over what the slices saw, whether they saw a thing before or after a change,
//! ends in the state the shard had at the end of that log. A thing that existed at the cut and
//! never changed stays in its slab key or arena slot, so the walk sees it.

use bytestring::ByteString;

use super::Shard;
use crate::cluster::tags::StreamTag;
use crate::store::record::Record;
use crate::store::{Clock, RecordWriter};

/// About how many bytes one slice encodes before the shard takes its next turn (one session
/// image or retained message more at most; a session's own limits bound its image).
const SLICE_BYTES: usize = 128 << 10;

/// At most this many slab keys or arena slots are looked at per slice, so a sparse table (many
/// vacant keys, or sessions that are not persisted) still ends a slice soon.
const SLICE_SLOTS: usize = 4096;

/// Where the snapshot under way has got to.
#[derive(Debug)]
pub(super) struct SnapshotCursor {
    stage: Stage,
    /// The message the snapshot wrote whole last (`RecordWriter::message_ref`).
    last_inline: Option<u64>,
}

#[derive(Debug)]
enum Stage {
    /// The next slab key of `sessions`.
    Sessions(usize),
    /// The next arena slot of `retained`.
    Retained(usize),
    /// The clients with a delayed will when this stage began, and the next of them.
    Wills(Vec<ByteString>, usize),
    /// The notes of stream records queued when this stage began, and the next of them.
    Notes(Vec<(StreamTag, ByteString)>, usize),
}

impl Shard {
    /// Starts a snapshot in slices (the store task asks for them with `snapshot_slice`); see
    /// `Journal::begin_snapshot` for `next_log`.
    pub(super) fn begin_snapshot(&mut self, next_log: bool) {
        let Some(journal) = self.store.as_mut() else {
            return;
        };
        journal.last_inline = None;
        journal.begin_snapshot(next_log);
        self.snapshot_cursor = Some(Box::new(SnapshotCursor {
            stage: Stage::Sessions(0),
            last_inline: None,
        }));
    }

    /// Encodes the next slice of the snapshot under way and hands it to the journal; the last
    /// one ends the snapshot. Returns whether more slices are to come.
    pub fn snapshot_slice(&mut self, clock: &Clock) -> bool {
        if !self.store.as_ref().is_some_and(|j| j.is_slicing()) {
            // None under way, or a failed write abandoned it.
            self.snapshot_cursor = None;
            return false;
        }
        let Some(mut cursor) = self.snapshot_cursor.take() else {
            return false;
        };
        let mut out = Vec::with_capacity(SLICE_BYTES + SLICE_BYTES / 4);
        let mut writer = RecordWriter {
            out: &mut out,
            last_inline: &mut cursor.last_inline,
        };
        if matches!(cursor.stage, Stage::Sessions(0)) {
            writer.record(&Record::SnapshotBegin);
        }
        let mut visited = 0;
        let done = loop {
            if writer.out.len() >= SLICE_BYTES || visited >= SLICE_SLOTS {
                break false;
            }
            visited += 1;
            if !self.snapshot_step(&mut cursor.stage, &mut writer, clock) {
                writer.record(&Record::SnapshotEnd);
                break true;
            }
        };
        if let Some(journal) = self.store.as_mut() {
            journal.push_snapshot_part(out);
            if done {
                journal.end_snapshot();
            }
        }
        if !done {
            self.snapshot_cursor = Some(cursor);
        }
        !done
    }

    /// Writes what the cursor points at and moves it on; false once everything is written.
    fn snapshot_step(
        &self,
        stage: &mut Stage,
        writer: &mut RecordWriter<'_>,
        clock: &Clock,
    ) -> bool {
        match stage {
            Stage::Sessions(key) if *key < self.sessions.capacity() => {
                if let Some(session) = self.sessions.get(*key)
                    && session.state.is_logged()
                    && session.forward_to.is_none()
                {
                    let stamp = session.store.stamp;
                    writer.session_image(stamp, &session.state, session.expires_at, clock);
                }
                *key += 1;
            }
            Stage::Sessions(_) => *stage = Stage::Retained(0),
            Stage::Retained(slot) if *slot < self.retained.slots() => {
                if let Some(message) = self.retained.value_at(*slot)
                    && crate::store::persists_retained(&message.topic)
                {
                    let stored = crate::store::stored_message(message, clock);
                    writer.record(&Record::RetainSet(stored));
                }
                *slot += 1;
            }
            Stage::Retained(_) => {
                let clients = self.delayed_wills.keys().cloned().collect();
                *stage = Stage::Wills(clients, 0);
            }
            Stage::Wills(clients, next) => {
                let Some(client_id) = clients.get(*next) else {
                    let notes = self
                        .cluster
                        .as_ref()
                        .map(|cluster| cluster.notes.all())
                        .unwrap_or_default();
                    *stage = Stage::Notes(notes, 0);
                    return true;
                };
                if let Some((due, username, will)) = self.delayed_wills.get(client_id) {
                    let record = crate::store::will_record(
                        client_id.clone(),
                        username.clone(),
                        *due,
                        will,
                        clock,
                    );
                    writer.record(&Record::WillSet(record));
                }
                *next += 1;
            }
            Stage::Notes(notes, next) => {
                let Some((tag, client_id)) = notes.get(*next) else {
                    return false;
                };
                writer.record(&Record::StreamNote {
                    client_id: client_id.clone(),
                    tag: *tag,
                });
                *next += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use bytestring::ByteString;
    use shards::ShardId;

    use super::Shard;
    use crate::config::Config;
    use crate::mail::Mail;
    use crate::message::Message;
    use crate::protocol::{
        Connect, Packet, PacketId, Publish, PublishProps, QoS, Subscribe, SubscribeFilter,
        SubscriptionOptions, Version,
    };
    use crate::session::{Delivery, SessionState, Subscription};
    use crate::shard::{ConnId, Event, Settings};
    use crate::store::journal::Chunk;
    use crate::store::record::{self, Record};
    use crate::store::replay::{Replayed, Replayer};
    use crate::store::restore::{Restored, RestoredSession};
    use crate::store::{Clock, FsyncMode};

    /// One shard with persistence on, driven as its shell drives it, keeping what the store
    /// task would write: the log before the cut, the snapshot slices and the log after the cut.
    struct Harness {
        shard: Shard,
        clock: Clock,
        next_conn: ConnId,
        next_packet_id: u16,
        cut: bool,
        ended: bool,
        snapshot: Vec<u8>,
        log_after_cut: Vec<u8>,
        /// Record bytes the store task has been given so far.
        appended: u64,
    }

    impl Harness {
        fn new(restored: Restored) -> Harness {
            Harness::joined(restored, None)
        }

        /// As `new`, in a cluster (before the restore, as the shell does) when `cluster` is set.
        fn joined(restored: Restored, cluster: Option<crate::cluster::ClusterHandle>) -> Harness {
            let settings = Arc::new(Settings::from_config(&Config::default(), 1));
            let mut shard = Shard::new(ShardId::new(0), 1, settings);
            if let Some(cluster) = cluster {
                shard.set_cluster(cluster);
            }
            shard.enable_store(FsyncMode::Always);
            let mut harness = Harness {
                shard,
                clock: Clock::now(),
                next_conn: 1,
                next_packet_id: 0,
                cut: false,
                ended: false,
                snapshot: Vec::new(),
                log_after_cut: Vec::new(),
                appended: 0,
            };
            harness.shard.restore(restored);
            harness.settle();
            harness
        }

        /// Handles `event`, then the mail the shard sent itself, then flushes the batch's
        /// records and takes what the store task would write.
        fn handle(&mut self, event: Event) {
            let now = self.clock.instant;
            self.shard.handle(event, now);
            self.settle();
        }

        fn settle(&mut self) {
            self.shard.handle_own_mail(self.clock.instant);
            self.shard.flush_store(&self.clock);
            self.take_job();
        }

        fn take_job(&mut self) {
            let Some(job) = self.shard.take_store_job() else {
                return;
            };
            self.appended = self.appended.max(job.appended);
            for chunk in job.chunks {
                match chunk {
                    Chunk::Records(bytes) if self.cut => self.log_after_cut.extend(bytes),
                    Chunk::Records(_) => {}
                    Chunk::SnapshotBegin { .. } => {
                        self.cut = true;
                        self.snapshot.clear();
                        self.log_after_cut.clear();
                    }
                    Chunk::SnapshotPart(bytes) => self.snapshot.extend(bytes),
                    Chunk::SnapshotEnd => self.ended = true,
                    Chunk::Snapshot(_) => panic!("a running log takes no snapshot in one step"),
                }
            }
        }

        /// One slice, taken as the store task takes it.
        fn slice(&mut self) -> bool {
            let more = self.shard.snapshot_slice(&self.clock);
            self.take_job();
            more
        }

        fn connect(&mut self, client_id: &str, clean_start: bool) -> ConnId {
            let conn = self.next_conn;
            self.next_conn += 1;
            let peer = ([127, 0, 0, 1], 1024 + conn as u16).into();
            self.handle(Event::Accepted { conn, peer });
            let connect = Connect {
                version: Version::V3_1_1,
                clean_start,
                keep_alive_secs: 0,
                client_id: ByteString::from(client_id),
                will: None,
                username: None,
                password: None,
                properties: Default::default(),
            };
            self.handle(Event::Packet {
                conn,
                packet: Packet::Connect(Box::new(connect)),
            });
            conn
        }

        fn packet_id(&mut self) -> PacketId {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            PacketId::new(self.next_packet_id).unwrap()
        }

        fn subscribe(&mut self, conn: ConnId, filter: &str) {
            let subscribe = Subscribe {
                packet_id: self.packet_id(),
                properties: Default::default(),
                filters: vec![SubscribeFilter {
                    filter: ByteString::from(filter),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                }],
            };
            self.handle(Event::Packet {
                conn,
                packet: Packet::Subscribe(subscribe),
            });
        }

        fn publish(&mut self, conn: ConnId, topic: &str, payload: &[u8], retain: bool) {
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain,
                topic: ByteString::from(topic),
                packet_id: Some(self.packet_id()),
                properties: Default::default(),
                payload: Bytes::copy_from_slice(payload),
            };
            self.handle(Event::Packet {
                conn,
                packet: Packet::Publish(publish),
            });
        }

        /// The state the snapshot and the log after its cut give back.
        fn read_back(&self) -> Replayed {
            let mut replayer = Replayer::new();
            let mut snapshot = Bytes::from(self.snapshot.clone());
            assert!(matches!(
                record::decode(&mut snapshot),
                Ok(Some(Record::SnapshotBegin))
            ));
            let mut whole = false;
            while let Some(record) = record::decode(&mut snapshot).unwrap() {
                assert!(!whole, "nothing after the snapshot's end");
                whole = matches!(record, Record::SnapshotEnd);
                replayer.apply(record);
            }
            assert!(whole, "the snapshot ends with its end record");
            let mut log = Bytes::from(self.log_after_cut.clone());
            while let Some(record) = record::decode(&mut log).unwrap() {
                replayer.apply(record);
            }
            replayer.finish()
        }

        /// The shard's state as a snapshot taken in one step now reads back.
        fn state_now(&self) -> Replayed {
            let bytes = self.shard.encode_snapshot(&self.clock, 0);
            let mut bytes = Bytes::from(bytes);
            let mut replayer = Replayer::new();
            while let Some(record) = record::decode(&mut bytes).unwrap() {
                replayer.apply(record);
            }
            replayer.finish()
        }
    }

    fn message(id: u64, topic: &str, payload: Bytes, clock: &Clock) -> Arc<Message> {
        Arc::new(Message {
            id,
            topic: ByteString::from(topic),
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProps::none(),
            publisher: ByteString::from_static("filler"),
            received_at: clock.instant,
            expires_at: None,
        })
    }

    fn delivery(message: Arc<Message>) -> Delivery {
        Delivery::plain(message)
    }

    /// `sessions` offline sessions `s{n}` subscribed to `q/{n}` with `queued` messages each, and
    /// `retained` retained messages `r/{n}`, 1 KiB each: many slices.
    fn restored(sessions: usize, queued: usize, retained: usize) -> Restored {
        let clock = Clock::now();
        let payload = Bytes::from(vec![b'x'; 1024]);
        let mut id = 0;
        let mut next_id = || {
            id += 1;
            id
        };
        let mut restored = Restored::default();
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        for n in 0..sessions {
            let mut state = SessionState::new(format!("s{n}").into(), Version::V3_1_1, 86_400);
            let filter = format!("q/{n}");
            let subscription = Subscription {
                options,
                identifier: None,
                read_granted_generation: 0,
            };
            state
                .subscriptions
                .insert(filter.as_str().into(), subscription);
            let mut deliveries = Vec::new();
            for seq in 1..=queued as u64 {
                let message = message(next_id(), &filter, payload.clone(), &clock);
                deliveries.push((seq, delivery(message)));
            }
            let next_seq = deliveries.len() as u64 + 1;
            let state = state.restore(deliveries, Vec::new(), [], next_seq, clock.instant);
            let expires_at = clock.instant + Duration::from_secs(86_400);
            restored.sessions.push(RestoredSession {
                state,
                stamp: 1,
                expires_at,
            });
        }
        restored.retained = (0..retained)
            .map(|n| message(next_id(), &format!("r/{n}"), payload.clone(), &clock))
            .collect();
        restored.message_id_floor = id + 1;
        restored
    }

    /// What must match, one entry per session, retained topic and will: sessions (their data,
    /// entries and QoS 2 ids), retained messages and wills. (Orphan counts and ended sessions
    /// differ by design: the log names things the slices may not have seen.)
    fn essence(state: &Replayed) -> BTreeMap<String, String> {
        let sessions = state.sessions.iter().map(|(id, s)| {
            let entries: Vec<_> = s.entries.values().collect();
            // A session's own record is rewritten when its data changes, not per entry: its
            // next sequence number is read as `SessionState::restore` reads it.
            let mut meta = s.meta.clone();
            let last = s.entries.keys().next_back().map_or(0, |seq| seq + 1);
            meta.next_seq = meta.next_seq.max(last);
            let value = format!("{meta:?} {entries:?} {:?}", s.incoming_qos2);
            (format!("session {id}"), value)
        });
        let retained = state
            .retained
            .iter()
            .map(|(topic, m)| (format!("retained {topic}"), format!("{m:?}")));
        let wills = state
            .wills
            .iter()
            .map(|(id, w)| (format!("will {id}"), format!("{w:?}")));
        sessions.chain(retained).chain(wills).collect()
    }

    /// The keys whose values differ, or that only one side has (none when they are equal).
    fn differences(read: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = read.keys().chain(now.keys()).collect();
        keys.into_iter()
            .filter(|key| read.get(*key) != now.get(*key))
            .map(|key| match (read.get(key), now.get(key)) {
                (Some(_), None) => format!("{key}: read back, not in the state"),
                (None, Some(_)) => format!("{key}: in the state, not read back"),
                (Some(a), Some(b)) => {
                    let cut = |s: &str| s.chars().take(300).collect::<String>();
                    format!("{key}: read back {} / state {}", cut(a), cut(b))
                }
                (None, None) => unreachable!(),
            })
            .collect()
    }

    /// Changes between slices: retained topics set, overwritten and cleared (some the walk has
    /// passed, some it has not), restored sessions ended or taken over (their queues sent), new
    /// persistent sessions made and left.
    fn change(harness: &mut Harness, publisher: ConnId, step: usize) {
        let topic = format!("r/{}", (step * 37) % 800);
        match step % 5 {
            0 => harness.publish(publisher, &topic, b"", true),
            1 => harness.publish(publisher, &topic, format!("v{step}").as_bytes(), true),
            2 => {
                let client_id = format!("s{}", (step * 13) % 60);
                harness.connect(&client_id, step.is_multiple_of(2));
            }
            3 => {
                let conn = harness.connect(&format!("new{step}"), false);
                harness.subscribe(conn, &format!("q/{}", step % 60));
                harness.handle(Event::Closed { conn });
            }
            _ => harness.publish(publisher, &format!("q/{}", step % 60), b"m", false),
        }
    }

    #[test]
    fn a_snapshot_in_slices_with_the_log_after_its_cut_reads_back_as_the_state() {
        let mut harness = Harness::new(restored(60, 8, 800));
        let publisher = harness.connect("publisher", true);
        // The first snapshot (begun by `restore`), then one cut from a running log.
        for round in 0..2 {
            if round == 1 {
                harness.shard.begin_snapshot(true);
                harness.take_job();
            }
            assert!(harness.cut && !harness.ended);
            let mut slices = 0;
            let mut step = round * 1000;
            while harness.slice() {
                slices += 1;
                assert!(slices < 10_000, "the snapshot ends");
                for _ in 0..3 {
                    change(&mut harness, publisher, step);
                    step += 1;
                }
            }
            assert!(harness.ended);
            assert!(slices >= 8, "{slices} slices: the state spans many");
            assert!(
                !harness.log_after_cut.is_empty(),
                "changes came between slices"
            );
            let (read, now) = (essence(&harness.read_back()), essence(&harness.state_now()));
            assert!(now.len() > 800, "{} items", now.len());
            let differences = differences(&read, &now);
            assert!(differences.is_empty(), "round {round}: {differences:#?}");
            harness.cut = false;
            harness.ended = false;
        }
    }

    #[test]
    fn a_failed_write_abandons_the_snapshot_under_way() {
        let mut harness = Harness::new(restored(10, 2, 300));
        assert!(harness.slice());
        assert!(harness.shard.store.as_ref().is_some_and(|j| j.is_slicing()));
        harness.shard.on_stored(0, None, true);
        assert!(!harness.shard.snapshot_slice(&harness.clock));
        assert!(harness.shard.snapshot_cursor.is_none());
        assert!(harness.shard.store_broken());
    }

    #[test]
    fn a_broken_log_retries_its_snapshot_though_mail_came_meanwhile() {
        let mut harness = Harness::new(restored(10, 2, 300));
        harness.shard.on_stored(0, None, true);
        assert!(harness.shard.store_broken());
        // Data mail handled since the failure: counts to report, but no records to write.
        harness
            .shard
            .store
            .as_mut()
            .unwrap()
            .mail_handled(ShardId::new(0));
        harness.shard.retry_store(&harness.clock);
        assert!(
            !harness.shard.take_snapshot_chunks().is_empty(),
            "the tick's retry queues a snapshot"
        );
    }

    #[test]
    fn a_message_from_another_node_counts_as_routed_once_its_records_are_synced() {
        let mut harness = Harness::new(restored(1, 0, 0));
        let (handle, routed) = crate::cluster::ClusterHandle::unlinked(1);
        harness.shard.set_cluster(handle);
        let routed = move || routed[0].load(std::sync::atomic::Ordering::Acquire);
        let from = ShardId::new(0);
        let payload = Bytes::from_static(b"remote");
        // Nobody here keeps it: nothing to sync, it counts at once (the link may acknowledge).
        let nobody = message(1 << 60, "none/0", payload.clone(), &harness.clock);
        harness.handle(Event::Mail {
            from,
            mail: Mail::Remote(nobody),
        });
        assert_eq!(routed(), 1);
        // Queued for the offline persistent session `s0`: written, not synced yet.
        let before = harness.appended;
        let queued = message((1 << 60) + 1, "q/0", payload, &harness.clock);
        harness.handle(Event::Mail {
            from,
            mail: Mail::Remote(queued),
        });
        assert!(
            harness.appended > before,
            "its record went to the store task"
        );
        assert_eq!(routed(), 1, "not counted before the sync");
        harness.shard.on_stored(before, None, false);
        assert_eq!(routed(), 1, "an older sync does not cover it");
        harness.shard.on_stored(harness.appended, None, false);
        assert_eq!(routed(), 2, "counted once the store synced its record");
    }

    /// A message of a stream batch (docs/CLUSTER.md, "Exactly once"): queued for the offline
    /// persisted session `s0`, its note is written after the `Queued` record in the same write,
    /// read back with the session, and on the run restored from it the same record (the batch
    /// delivered again) is not queued again while another record of the batch is; once the
    /// stream's acknowledgement floor passes the batch, the note goes from the next snapshot.
    #[test]
    fn a_stream_record_queued_before_a_restart_is_not_queued_again() {
        use crate::cluster::tags::StreamTag;
        let tagged = |message: Arc<Message>, index: u32| Event::Mail {
            from: ShardId::new(0),
            mail: Mail::RemoteTagged {
                message,
                tag: StreamTag {
                    sequence: 42,
                    index,
                },
            },
        };
        let (handle, _) = crate::cluster::ClusterHandle::unlinked(1);
        let mut first = Harness::joined(restored(1, 0, 0), Some(handle));
        while first.slice() {}
        let payload = Bytes::from_static(b"remote");
        let queued = message((1 << 60) + 1, "q/0", payload.clone(), &first.clock);
        first.handle(tagged(Arc::clone(&queued), 0));
        let mut log = Bytes::from(first.log_after_cut.clone());
        let mut kinds = Vec::new();
        while let Some(record) = record::decode(&mut log).unwrap() {
            kinds.push(match record {
                Record::Queued(_) => "queued",
                Record::StreamNote { .. } => "note",
                _ => "other",
            });
        }
        let queued_at = kinds.iter().position(|k| *k == "queued").expect("queued");
        let noted_at = kinds.iter().position(|k| *k == "note").expect("noted");
        assert!(queued_at < noted_at, "the note after its record: {kinds:?}");
        let read = first.read_back();
        let tag = |index| StreamTag {
            sequence: 42,
            index,
        };
        let notes_of = |state: &Replayed| {
            state
                .notes
                .get("s0")
                .map(|tags| tags.iter().copied().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(notes_of(&read), vec![tag(0)]);
        assert_eq!(
            notes_of(&first.state_now()),
            vec![tag(0)],
            "a whole snapshot too"
        );
        let entries = |state: &Replayed| state.sessions["s0"].entries.len();
        assert_eq!(entries(&read), 1);
        // The next run, from what the first wrote.
        let clock = first.clock;
        let restored = crate::store::restore::split(read, 1, |_| 0, &clock);
        let (handle, _) = crate::cluster::ClusterHandle::unlinked(1);
        let stats = Arc::clone(&handle.stats);
        let mut second = Harness::joined(restored.into_iter().next().unwrap(), Some(handle));
        while second.slice() {}
        assert_eq!(
            notes_of(&second.read_back()),
            vec![tag(0)],
            "its first snapshot"
        );
        let gauge = || {
            stats
                .stream_notes
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(gauge(), 1, "the restored note counted");
        second.handle(tagged(queued, 0));
        assert_eq!(entries(&second.state_now()), 1, "not queued a second time");
        let skipped = || {
            stats
                .stream_deliveries_skipped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(skipped(), 1);
        let next = message((1 << 60) + 2, "q/0", payload, &second.clock);
        second.handle(tagged(next, 1));
        assert_eq!(
            entries(&second.state_now()),
            2,
            "another record of the batch is"
        );
        assert_eq!(notes_of(&second.state_now()), vec![tag(0), tag(1)]);
        second.handle(Event::Mail {
            from: ShardId::new(0),
            mail: Mail::StreamAckFloor(42),
        });
        assert!(
            notes_of(&second.state_now()).is_empty(),
            "acknowledged: forgotten"
        );
        assert_eq!(gauge(), 0);
    }
    /// A shared group's record of a stream batch (docs/CLUSTER.md, "Exactly once"): queued for
    /// one of two offline members before a restart; on the run restored from it, with the
    /// group's turn on the other member, the record delivered again is queued for neither
    /// (every member's note is checked, not only the one the turn picks).
    #[test]
    fn a_shared_record_queued_before_a_restart_is_not_queued_again_for_another_member() {
        use crate::cluster::tags::StreamTag;
        use crate::mail::SharedPublish;
        let shared = |message: Arc<Message>, index: Option<u32>| Event::Mail {
            from: ShardId::new(0),
            mail: Mail::RemoteShared(Box::new(SharedPublish {
                message,
                filter: ByteString::from_static("q/+"),
                group: ByteString::from_static("g"),
                hops: 0,
                reoffer: None,
                tag: index.map(|index| StreamTag {
                    sequence: 42,
                    index,
                }),
            })),
        };
        let mut members = restored(2, 0, 0);
        for session in &mut members.sessions {
            let subscription = *session.state.subscriptions.values().next().unwrap();
            session.state.subscriptions.clear();
            let key = ByteString::from_static("$share/g/q/+");
            session.state.subscriptions.insert(key, subscription);
        }
        let (handle, _) = crate::cluster::ClusterHandle::unlinked(1);
        let mut first = Harness::joined(members, Some(handle));
        while first.slice() {}
        let clock = first.clock;
        let queued = message((1 << 60) + 1, "q/0", Bytes::from_static(b"remote"), &clock);
        first.handle(shared(Arc::clone(&queued), Some(0)));
        let entries = |state: &Replayed, id: &str| state.sessions[id].entries.len();
        let read = first.read_back();
        let holder = ["s0", "s1"]
            .into_iter()
            .find(|id| entries(&read, id) == 1)
            .expect("one member queued it");
        let other = if holder == "s0" { "s1" } else { "s0" };
        assert_eq!(entries(&read, other), 0);
        let restored = crate::store::restore::split(read, 1, |_| 0, &clock);
        let (handle, _) = crate::cluster::ClusterHandle::unlinked(1);
        let stats = Arc::clone(&handle.stats);
        let mut second = Harness::joined(restored.into_iter().next().unwrap(), Some(handle));
        while second.slice() {}
        // Messages without a tag until one goes to the holder: the turn is then the other's.
        let mut turned = false;
        for id in 0..4 {
            let before = entries(&second.state_now(), holder);
            let local = message((1 << 60) + 10 + id, "q/0", Bytes::new(), &second.clock);
            second.handle(shared(local, None));
            if entries(&second.state_now(), holder) > before {
                turned = true;
                break;
            }
        }
        assert!(turned, "the group's turn reached the holder");
        let now = second.state_now();
        let (held, others) = (entries(&now, holder), entries(&now, other));
        second.handle(shared(queued, Some(0)));
        let now = second.state_now();
        assert_eq!(
            entries(&now, holder),
            held,
            "not queued again for its holder"
        );
        assert_eq!(
            entries(&now, other),
            others,
            "nor for the member whose turn it was"
        );
        let skipped = stats
            .stream_deliveries_skipped
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(skipped, 1);
    }
}
