//! The shard's part in persistence (see `crate::store` and docs/PERSISTENCE.md): which changes
//! become records, the acknowledgements that wait for them, and the state restored at start.
//!
//! Changes are written at the end of each batch of events (`flush_store`), not as they happen:
//! a delivery queued and sent at QoS 0, or queued and acknowledged, within one batch leaves no
//! record at all. Session-wide records (a session gone, retained messages, wills) are written
//! before the sessions' own changes, in the order they happened, so that a session ended and
//! begun again within a batch reads back as the new one.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use super::{LocalSession, SessionKey, Shard};
use crate::mail::Mail;
use crate::message::Message;
use crate::protocol::{Packet, Will};
use crate::session::LogOp;
use crate::store::journal::{Held, PendingAck, StoreJob};
use crate::store::record::Record;
use crate::store::restore::Restored;
use crate::store::{Clock, FsyncMode, Journal, RecordWriter};

/// A change that is not a session's own, kept in order until the end of the batch.
#[derive(Debug)]
pub(super) enum Pending {
    SessionGone {
        client_id: ByteString,
        moved: bool,
        stamp: u64,
    },
    Retain(Arc<Message>),
    RetainClear(ByteString),
    Will {
        client_id: ByteString,
        username: Option<ByteString>,
        due: Instant,
        will: Box<Will>,
    },
    WillGone(ByteString),
}

/// How a session is written at the end of the batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreMark {
    /// Names this image of the session among the shards' logs (0: not persisted).
    pub stamp: u64,
    /// Write it whole (it was installed here).
    pub image: bool,
    /// Write its own data again (subscriptions, expiry, connected or not).
    pub meta: bool,
}

impl Shard {
    /// Turns persistence on for this shard (before any event).
    pub fn enable_store(&mut self, mode: FsyncMode) {
        self.store = Some(Box::new(Journal::new(mode, self.shard_count)));
    }

    pub fn store_enabled(&self) -> bool {
        self.store.is_some()
    }

    /// Installs what the log said this shard owns: offline sessions (and their interest, mailed
    /// to every shard), retained messages and delayed wills. Then tells every shard it is done,
    /// after the interest mail (`Restored`).
    pub fn restore(&mut self, restored: Restored) {
        self.next_message_id = self.next_message_id.max(restored.message_id_floor);
        for session in restored.sessions {
            let client_id = session.state.client_id.clone();
            let (generation, _) = self.directory.claim(client_id, self.id);
            let ticket = self.take_ticket();
            let mut state = session.state;
            state.set_logged(self.store.is_some());
            let key = self.install_session_unlogged(state, generation, ticket);
            if let Some(local) = self.sessions.get_mut(key) {
                local.expires_at = Some(session.expires_at);
                super::lifecycle::expires_sooner(
                    &mut self.sessions_expire_from,
                    session.expires_at,
                );
                local.store = StoreMark {
                    stamp: session.stamp,
                    image: false,
                    meta: false,
                };
            }
        }
        for message in restored.retained {
            let size = message.size_bytes();
            self.retained_bytes += size;
            let topic = message.topic.clone();
            self.retained.insert(&topic, message);
        }
        for will in restored.wills {
            self.delayed_wills.insert(
                will.client_id,
                (will.due, will.username, self.will_bytes.hold(will.will)),
            );
        }
        if let Some(cluster) = self.cluster.as_mut() {
            for (client_id, tag) in restored.notes {
                cluster.restore_note(tag, client_id);
            }
        }
        // The new generation starts from this state: its first snapshot is taken in slices
        // while the shard serves, before its first log (store_task).
        self.begin_snapshot(false);
        self.broadcast_mail(|| Mail::Restored);
    }

    /// Counts a `Restored` mail; true once every other shard has sent one.
    pub(super) fn on_restored(&mut self) {
        self.restored_peers += 1;
    }

    /// Whether every other shard has installed what it restored (so this shard's interest index
    /// knows every restored subscription before it takes a client).
    pub fn peers_restored(&self) -> bool {
        self.restored_peers + 1 >= self.shard_count
    }

    /// A session's state changed: write its changes at the end of the batch.
    pub(super) fn store_touch(&mut self, key: SessionKey) {
        let Some(journal) = self.store.as_mut() else {
            return;
        };
        if self
            .sessions
            .get(key)
            .is_some_and(|s| s.state.has_log() || s.store.image || s.store.meta)
        {
            journal.touched_local();
            self.store_dirty.push(key);
        }
    }

    /// A session's own data changed (subscriptions, expiry, connected or not).
    pub(super) fn store_meta(&mut self, key: SessionKey) {
        self.mirror_session(key);
        if self.store.is_none() {
            return;
        }
        if let Some(session) = self.sessions.get_mut(key)
            && session.state.is_logged()
        {
            session.store.meta = true;
            self.store_touch(key);
        }
    }

    /// A session was installed here: persist it (whole) when it outlives its connection.
    pub(super) fn store_installed(&mut self, key: SessionKey) {
        self.mirror_session(key);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let persisted = self.store.is_some() && session.state.expiry_secs > 0;
        // A session that was persisted where it came from and is not any more (a clean start,
        // or an expiry of 0 now) ends on disk here: its former shard only noted that it moved.
        let was_persisted = session.state.is_logged();
        session.state.set_logged(persisted);
        if was_persisted && !persisted {
            let client_id = session.state.client_id.clone();
            self.store_gone(client_id, false);
            return;
        }
        if persisted && let Some(journal) = self.store.as_mut() {
            let wall_ms = Clock::at(Instant::now()).wall_ms;
            session.store = StoreMark {
                stamp: journal.next_stamp(wall_ms),
                image: true,
                meta: false,
            };
            self.store_touch(key);
        }
    }

    /// A persisted session left this shard (ended, or `moved` to another shard).
    pub(super) fn store_gone(&mut self, client_id: ByteString, moved: bool) {
        if let Some(journal) = self.store.as_mut() {
            let stamp = journal.next_stamp(Clock::at(Instant::now()).wall_ms);
            self.store_pending.push(Pending::SessionGone {
                client_id,
                moved,
                stamp,
            });
        }
    }

    /// A retained message of this shard's partition was set or cleared.
    pub(super) fn store_retained_change(&mut self, message: &Arc<Message>) {
        let Some(journal) = self.store.as_mut() else {
            return;
        };
        if !crate::store::persists_retained(&message.topic) {
            return;
        }
        journal.touched_local();
        self.store_pending.push(if message.payload.is_empty() {
            Pending::RetainClear(message.topic.clone())
        } else {
            Pending::Retain(Arc::clone(message))
        });
    }

    /// A retained topic of this shard's partition lost its message.
    pub(super) fn store_retained_clear(&mut self, topic: &ByteString) {
        if self.store.is_some() && crate::store::persists_retained(topic) {
            self.store_pending.push(Pending::RetainClear(topic.clone()));
        }
    }

    pub(super) fn store_will(
        &mut self,
        client_id: &ByteString,
        username: &Option<ByteString>,
        due: Instant,
        will: &Will,
    ) {
        if self.store.is_some() {
            self.store_pending.push(Pending::Will {
                client_id: client_id.clone(),
                username: username.clone(),
                due,
                will: Box::new(will.clone()),
            });
        }
    }

    pub(super) fn store_will_gone(&mut self, client_id: &ByteString) {
        if self.store.is_some() {
            self.store_pending
                .push(Pending::WillGone(client_id.clone()));
        }
    }

    // ---- Acknowledgements ----

    /// Before routing a message whose acknowledgement may wait for the disk.
    pub(super) fn store_begin_route(&mut self) {
        if let Some(journal) = self.store.as_mut() {
            journal.begin_route();
        }
    }

    /// Sends a PUBACK or PUBREC now, or (persistence on) once the records of the message routed
    /// since `store_begin_route` are durable everywhere it made any.
    pub(super) fn ack_when_durable(&mut self, conn: super::ConnId, packet: Packet) {
        let held = match self.store.as_mut() {
            Some(journal) => journal.hold_ack(conn, packet),
            _ => Some(packet),
        };
        if let Some(packet) = held {
            self.write_ack(conn, packet);
        }
    }

    /// Data mail out (counted for durable acknowledgements).
    pub(super) fn store_mailed(&mut self, to: ShardId, mail: &Mail) {
        if to != self.id
            && mail.is_data()
            && let Some(journal) = self.store.as_mut()
        {
            journal.mailed(to);
        }
    }

    /// Data mail in.
    pub(super) fn store_mail_handled(&mut self, from: ShardId, mail: &Mail) {
        if from != self.id
            && mail.is_data()
            && let Some(journal) = self.store.as_mut()
        {
            journal.mail_handled(from);
        }
    }

    pub(super) fn on_durable(&mut self, from: ShardId, count: u64, ok: bool) {
        if let Some(journal) = self.store.as_mut() {
            journal.durable_reply(from, count, ok);
        }
        self.release_acks();
    }

    fn release_acks(&mut self) {
        let mut ready = Vec::new();
        if let Some(journal) = self.store.as_mut() {
            journal.ready_acks(&mut ready);
        }
        for (PendingAck { held, .. }, durable) in ready {
            match held {
                Held::Ack(conn, packet) if durable => self.write_ack(conn, packet),
                Held::Ack(conn, packet) => self.refuse_ack_in_order(conn, packet),
                Held::Remote => self.count_routed_remote(),
            }
        }
    }

    /// A message from another node was routed: it counts (and the link acknowledges its stream
    /// batch) once the records it made here and on the shards it was mailed to are durable.
    pub(super) fn routed_remote_when_durable(&mut self) {
        let now = self
            .store
            .as_mut()
            .is_none_or(|journal| journal.hold_remote());
        if now {
            self.count_routed_remote();
        }
    }

    /// Tells every shard how many of its data mails this shard has handled, and whether their
    /// records are durable (`ok`) or lost with a failed write.
    pub(super) fn reply_durable(&mut self, received: Vec<u64>, ok: bool) {
        for (index, count) in received.into_iter().enumerate() {
            if index != self.id.index() && count > 0 {
                self.send_mail(ShardId::new(index), Mail::Durable { count, ok });
            }
        }
    }

    // ---- What the shell does after each batch ----

    /// Writes the batch's changes as records (the clock dates deadlines in wall-clock time).
    pub fn flush_store(&mut self, clock: &Clock) {
        let Some(mut journal) = self.store.take() else {
            return;
        };
        let pending = std::mem::take(&mut self.store_pending);
        let mut dirty = std::mem::take(&mut self.store_dirty);
        if let Some((out, last_inline)) = journal.records() {
            let mut writer = RecordWriter { out, last_inline };
            for change in pending {
                write_pending(&mut writer, change, clock);
            }
            let mut ops = std::mem::take(&mut self.store_ops);
            for key in dirty.drain(..) {
                if let Some(session) = self.sessions.get_mut(key) {
                    write_session(&mut writer, session, &mut ops, clock);
                }
            }
            self.store_ops = ops;
            // After the `Queued` records they vouch for, in the same write: a cut write never
            // keeps a note without its records.
            if let Some(cluster) = self.cluster.as_mut() {
                for (tag, client_id) in cluster.notes.take_unwritten() {
                    writer.record(&Record::StreamNote { client_id, tag });
                }
            }
        } else {
            // Kept in memory: the snapshot that makes the log whole again writes them.
            if let Some(cluster) = self.cluster.as_mut() {
                cluster.notes.take_unwritten();
            }
            // A broken log keeps nothing; sessions still drop what they noted.
            let mut ops = std::mem::take(&mut self.store_ops);
            for key in dirty.drain(..) {
                if let Some(session) = self.sessions.get_mut(key) {
                    ops.clear();
                    session.state.take_log(&mut ops);
                    session.store.image = false;
                    session.store.meta = false;
                }
            }
            self.store_ops = ops;
        }
        self.store_dirty = dirty;
        journal.batch_written();
        let snapshot_due = journal.snapshot_due();
        self.store = Some(journal);
        if snapshot_due {
            self.begin_snapshot(true);
        }
    }

    /// Queues a snapshot of everything this shard persists, taken in one step: only to make a
    /// broken log whole again (a running log takes its snapshots in slices, see `snapshot`).
    fn push_snapshot(&mut self, clock: &Clock) {
        let size_hint = self.store.as_ref().map_or(0, |j| j.snapshot_bytes());
        let out = self.encode_snapshot(clock, size_hint);
        if let Some(journal) = self.store.as_mut() {
            journal.last_inline = None;
            journal.push_snapshot(out);
        }
        self.snapshot_cursor = None;
    }

    /// The snapshot chunks at the head of the store's work (`Journal::take_snapshot_chunks`).
    pub fn take_snapshot_chunks(&mut self) -> Vec<crate::store::Chunk> {
        self.store
            .as_mut()
            .map(|journal| journal.take_snapshot_chunks())
            .unwrap_or_default()
    }

    /// Everything this shard persists, encoded as a snapshot in one step.
    pub(super) fn encode_snapshot(&self, clock: &Clock, size_hint: usize) -> Vec<u8> {
        let sessions = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state.is_logged() && s.forward_to.is_none())
            .map(|(_, s)| (s.store.stamp, &s.state, s.expires_at));
        let wills = self
            .delayed_wills
            .iter()
            .map(|(client_id, (due, username, will))| (client_id, username, *due, &**will));
        let notes = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.notes.all())
            .unwrap_or_default();
        let parts = crate::store::SnapshotParts {
            retained: self.retained.values(),
            wills,
            notes,
        };
        crate::store::write_snapshot(sessions, parts, clock, size_hint)
    }

    /// What the store task should write now, if anything.
    pub fn take_store_job(&mut self) -> Option<StoreJob> {
        let journal = self.store.as_mut()?;
        journal.has_work().then(|| journal.take_job())
    }

    /// The size of the last snapshot written.
    pub fn store_snapshot_bytes(&self) -> u64 {
        self.store.as_ref().map_or(0, |j| j.snapshot_bytes() as u64)
    }

    pub fn store_has_work(&self) -> bool {
        self.store.as_ref().is_some_and(|j| j.has_work())
    }

    /// The store task finished a job: records up to `appended` are durable (or the write
    /// failed). Acknowledgements and durable replies go out.
    pub fn on_stored(&mut self, appended: u64, received: Option<Vec<u64>>, failed: bool) {
        let Some(journal) = self.store.as_mut() else {
            return;
        };
        if failed {
            if !journal.is_broken() {
                tracing::error!(
                    shard = self.id.index(),
                    "store: write failed; QoS 1/2 publishes are refused until a snapshot can be written"
                );
            }
            let lost = journal.fail();
            let received = received.unwrap_or_else(|| journal.received_counts());
            self.metrics.counts.store_failures += 1;
            for ack in lost {
                match ack.held {
                    Held::Ack(conn, packet) => self.refuse_ack_in_order(conn, packet),
                    // Kept in memory, and written by the snapshot that makes the log whole
                    // again; holding it back would stop every later batch from the stream.
                    Held::Remote => self.count_routed_remote(),
                }
            }
            self.reply_durable(received, false);
            return;
        }
        journal.durable_to(appended);
        // While the log is broken nothing handled was written: say so.
        let ok = !journal.is_broken();
        if let Some(received) = received {
            self.reply_durable_after_copies(received, ok);
        }
        self.release_acks();
    }

    /// A snapshot after a failure was written: the log is whole again.
    pub fn on_store_recovered(&self) {
        tracing::info!(shard = self.id.index(), "store: writing again");
    }

    /// While the log is broken: try a snapshot (from the tick), unless one (or records) still
    /// waits to be written. Counts of mail handled to report do not hold it back: before the
    /// new generation is in force nothing takes them, and the retry would never come.
    pub fn retry_store(&mut self, clock: &Clock) {
        if self
            .store
            .as_ref()
            .is_some_and(|j| j.is_broken() && !j.has_records())
        {
            self.push_snapshot(clock);
        }
    }

    /// Whether a QoS 1/2 publish can be taken now (the log is not broken).
    pub(super) fn store_accepts(&self) -> bool {
        !self.store.as_ref().is_some_and(|j| j.is_broken())
    }

    pub fn store_broken(&self) -> bool {
        !self.store_accepts()
    }

    /// An acknowledgement that could not be made durable: 5.0 gets it with 0x97 (Quota
    /// exceeded), older clients lose their connection (they have no way to hear a refusal).
    pub(super) fn refuse_ack(&mut self, conn: super::ConnId, packet: Packet) {
        let is_v5 = self.conns.get(&conn).is_some_and(|c| c.version.is_v5());
        match packet {
            Packet::PubAck(mut ack) if is_v5 => {
                ack.reason = crate::protocol::ReasonCode::QUOTA_EXCEEDED;
                self.write_packet(conn, &Packet::PubAck(ack));
            }
            Packet::PubRec(mut rec) if is_v5 => {
                // A PUBREC with an error ends the exchange (MQTT 4.3.3): the id is free again,
                // and the same id in a new PUBLISH is a new message, not a duplicate.
                self.set_incoming_qos2(conn, rec.packet_id, false);
                rec.reason = crate::protocol::ReasonCode::QUOTA_EXCEEDED;
                self.write_packet(conn, &Packet::PubRec(rec));
            }
            Packet::PubRec(rec) => {
                // 3.x: closed; the client sends the message again (DUP), which must be taken as
                // not received rather than as a duplicate of one that was.
                self.set_incoming_qos2(conn, rec.packet_id, false);
                self.mark_closing(conn);
            }
            Packet::PubComp(comp) => {
                // Closed; the client sends the PUBREL again, which must find its id known
                // (its release was not made durable), here and in the mirror.
                self.set_incoming_qos2(conn, comp.packet_id, true);
                self.mark_closing(conn);
            }
            _ => self.mark_closing(conn),
        }
    }

    /// Releases an incoming QoS 2 id whose PUBREC is refused (`awaiting` false: the id is the
    /// client's again), or takes back one whose PUBCOMP is refused (`awaiting` true: it awaits
    /// its PUBREL again). The mirror gets the change too, not waited for: the connection closes
    /// either way, and what the client sends again waits for its own record.
    fn set_incoming_qos2(
        &mut self,
        conn: super::ConnId,
        packet_id: crate::protocol::PacketId,
        awaiting: bool,
    ) {
        let Some(key) = self.session_of(conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let changed = if awaiting {
            session.state.receive_qos2(packet_id)
        } else {
            session.state.release_qos2(packet_id)
        };
        if changed {
            self.store_touch(key);
            self.mirror_session(key);
        }
    }

    /// The session of connection `conn`, once it has one.
    fn session_of(&self, conn: super::ConnId) -> Option<super::SessionKey> {
        match self.conns.get(&conn).map(|c| &c.phase) {
            Some(
                super::conn::Phase::Active { session } | super::conn::Phase::Resuming { session },
            ) => Some(*session),
            _ => None,
        }
    }
}

fn write_pending(writer: &mut RecordWriter<'_>, change: Pending, clock: &Clock) {
    let record = match change {
        Pending::SessionGone {
            client_id,
            moved,
            stamp,
        } => Record::SessionGone {
            client_id,
            moved,
            stamp,
        },
        Pending::Retain(message) => {
            Record::RetainSet(crate::store::stored_message(&message, clock))
        }
        Pending::RetainClear(topic) => Record::RetainClear { topic },
        Pending::Will {
            client_id,
            username,
            due,
            will,
        } => Record::WillSet(crate::store::will_record(
            client_id, username, due, &will, clock,
        )),
        Pending::WillGone(client_id) => Record::WillGone { client_id },
    };
    writer.record(&record);
}

/// A session's changes since the last batch. An entry queued and gone within the batch leaves
/// no record; one queued and sent is written once, sent.
fn write_session(
    writer: &mut RecordWriter<'_>,
    session: &mut LocalSession,
    ops: &mut Vec<LogOp>,
    clock: &Clock,
) {
    ops.clear();
    session.state.take_log(ops);
    let state = &session.state;
    if !state.is_logged() {
        return;
    }
    if std::mem::take(&mut session.store.image) {
        session.store.meta = false;
        writer.session_image(session.store.stamp, state, session.expires_at, clock);
        return;
    }
    if std::mem::take(&mut session.store.meta) {
        writer.session_meta(session.store.stamp, state, session.expires_at, clock);
    }
    // Entries queued in this batch had their `Queued` record written with their state as it is
    // now, or skipped (gone already): later changes to them need no record. Sequence numbers are
    // given in order, so those are exactly the ones from the batch's first `Queued` on.
    let first_queued = ops
        .iter()
        .find_map(|op| match op {
            LogOp::Queued(seq) => Some(*seq),
            _ => None,
        })
        .unwrap_or(u64::MAX);
    let written = |seq: u64| seq >= first_queued;
    let client_id = &state.client_id;
    for op in ops.iter() {
        match *op {
            LogOp::Queued(seq) => {
                if let Some(queued) = state.queued_by_seq(seq) {
                    let record = writer.queued_record(state, seq, &queued.delivery, None, clock);
                    writer.record(&Record::Queued(record));
                } else if let Some(entry) = state.inflight.by_seq(seq) {
                    let record = match &entry.state {
                        crate::session::InflightState::Sent(delivery) => {
                            writer.queued_record(state, seq, delivery, Some(entry.packet_id), clock)
                        }
                        crate::session::InflightState::Released => {
                            crate::store::record::QueuedRecord::released(
                                client_id.clone(),
                                seq,
                                entry.packet_id,
                            )
                        }
                    };
                    writer.record(&Record::Queued(record));
                }
            }
            LogOp::Sent(seq, packet_id) if !written(seq) => {
                writer.record(&Record::Sent {
                    client_id: client_id.clone(),
                    seq,
                    packet_id,
                });
            }
            LogOp::Released(seq) if !written(seq) => {
                writer.record(&Record::Released {
                    client_id: client_id.clone(),
                    seq,
                });
            }
            LogOp::Done(seq) if !written(seq) => {
                writer.record(&Record::Done {
                    client_id: client_id.clone(),
                    seq,
                });
            }
            LogOp::IncomingQos2(packet_id, awaiting) => {
                writer.record(&Record::IncomingQos2 {
                    client_id: client_id.clone(),
                    packet_id,
                    awaiting,
                });
            }
            LogOp::Sent(..) | LogOp::Released(_) | LogOp::Done(_) => {}
        }
    }
}
