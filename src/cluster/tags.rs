//! Exactly once across a restart of the receiving node (docs/CLUSTER.md, "Exactly once for QoS 2
//! across nodes"): each record of a stream batch carries a tag, (stream sequence, index in the
//! batch), to every shard that routes it. A shard that queues it for a persisted session notes
//! (tag, client id), writes that note with the session's `Queued` record in the same journal
//! write, and keeps it in memory until the stream's acknowledgement floor passes the batch.
//! After a crash the notes are read back with the sessions; when the stream delivers the batch
//! again, a session that holds the note is not given the record a second time.

use std::collections::BTreeSet;

use bytestring::ByteString;

/// Where a record of a stream batch came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamTag {
    /// The batch's stream sequence.
    pub sequence: u64,
    /// The record's place in the batch (from 0).
    pub index: u32,
}

/// Most notes a shard keeps; beyond, the oldest go (their record, if delivered again after
/// a crash, may then be queued twice: a duplicate, never a loss).
pub const NOTES_MAX: usize = 65_536;

/// A shard's notes: the sessions (by client id) that queued each tagged record, for the batches
/// the stream may still deliver again. Ordered by tag, so a lookup or an insert is a tree
/// search whatever the number of sessions a record went to, and the oldest batches come first.
#[derive(Debug, Default)]
pub struct StreamNotes {
    held: BTreeSet<(StreamTag, ByteString)>,
    /// Noted since the last journal write, to be written with it.
    unwritten: Vec<(StreamTag, ByteString)>,
    /// Notes dropped at the bound.
    pub dropped: u64,
}

impl StreamNotes {
    /// Whether the session of `client_id` queued the record of `tag` before.
    pub fn queued_before(&self, tag: StreamTag, client_id: &ByteString) -> bool {
        // A clone of a `ByteString` shares its bytes: no allocation.
        self.held.contains(&(tag, client_id.clone()))
    }

    /// The session of `client_id` queued the record of `tag` now: kept, and written with the
    /// batch's records.
    pub fn note(&mut self, tag: StreamTag, client_id: ByteString) {
        if self.insert(tag, client_id.clone()) {
            self.unwritten.push((tag, client_id));
        }
    }

    /// A note read back from the log at start (already on disk).
    pub fn restore(&mut self, tag: StreamTag, client_id: ByteString) {
        self.insert(tag, client_id);
    }

    fn insert(&mut self, tag: StreamTag, client_id: ByteString) -> bool {
        if !self.held.insert((tag, client_id)) {
            return false;
        }
        while self.held.len() > NOTES_MAX && self.held.pop_first().is_some() {
            self.dropped += 1;
        }
        true
    }

    /// Every batch up to stream sequence `floor` is acknowledged to the stream, which never
    /// delivers it again: its notes go.
    pub fn forget_through(&mut self, floor: u64) {
        let first_kept = StreamTag {
            sequence: floor.saturating_add(1),
            index: 0,
        };
        self.held = self.held.split_off(&(first_kept, ByteString::new()));
    }

    /// The notes made since the last journal write, oldest first.
    pub fn take_unwritten(&mut self) -> Vec<(StreamTag, ByteString)> {
        std::mem::take(&mut self.unwritten)
    }

    /// Every note kept, for a snapshot.
    pub fn all(&self) -> Vec<(StreamTag, ByteString)> {
        self.held.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(sequence: u64, index: u32) -> StreamTag {
        StreamTag { sequence, index }
    }

    #[test]
    fn notes_name_the_session_and_go_once_the_floor_passes_their_batch() {
        let mut notes = StreamNotes::default();
        notes.note(tag(7, 0), "a".into());
        notes.note(tag(7, 0), "b".into());
        notes.note(tag(7, 0), "a".into());
        notes.note(tag(9, 3), "a".into());
        notes.restore(tag(12, 1), "c".into());
        assert_eq!(notes.len(), 4);
        assert!(notes.queued_before(tag(7, 0), &"a".into()));
        assert!(notes.queued_before(tag(7, 0), &"b".into()));
        assert!(
            !notes.queued_before(tag(7, 1), &"a".into()),
            "another record"
        );
        assert!(
            !notes.queued_before(tag(9, 3), &"b".into()),
            "another session"
        );
        // Written once each, restored ones not again.
        let unwritten = notes.take_unwritten();
        assert_eq!(
            unwritten,
            vec![
                (tag(7, 0), "a".into()),
                (tag(7, 0), "b".into()),
                (tag(9, 3), "a".into())
            ]
        );
        assert!(notes.take_unwritten().is_empty());
        notes.forget_through(8);
        assert!(!notes.queued_before(tag(7, 0), &"a".into()));
        assert!(notes.queued_before(tag(9, 3), &"a".into()));
        assert_eq!(notes.len(), 2);
        notes.forget_through(12);
        assert!(notes.is_empty());
        assert!(notes.all().is_empty());
    }

    #[test]
    fn notes_are_bounded_and_the_oldest_batch_goes_first() {
        let mut notes = StreamNotes::default();
        for i in 0..NOTES_MAX as u64 + 10 {
            notes.note(tag(i + 1, 0), "s".into());
        }
        assert_eq!(notes.len(), NOTES_MAX);
        assert_eq!(notes.dropped, 10);
        assert!(!notes.queued_before(tag(10, 0), &"s".into()));
        assert!(notes.queued_before(tag(11, 0), &"s".into()));
    }
}
