//! The copies of QoS 1/2 messages for this node's persistent sessions in the stream of queued
//! messages (docs/CLUSTER.md, "Messages queued for a persistent session"), batched: what a
//! session's shard copies while the stream stores one unit goes out in the next as one stream
//! message (several when larger than `BATCH_BYTES`), not one each, and its trims become purges
//! by stream sequence. The link keeps, per session subject, the stream sequence and number of
//! copies of each batch it stored (the oldest merged beyond `STORED_MAX`), to turn "keep the
//! last n copies" into "purge below sequence s".

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// A batch of copies is closed at this size (a single larger copy makes a batch of its own).
const BATCH_BYTES: usize = 64 * 1024;
/// Batches remembered per session subject; beyond it the two oldest are counted as one (a trim
/// then keeps a little more: duplicates after a failover, never a loss).
const STORED_MAX: usize = 1024;

/// What waits for the next unit on one session subject, in order.
enum Pending {
    /// Copies (encoded records, one after the other) and how many.
    Batch(BytesMut, u64),
    /// Keep only the last `n` copies made until here.
    Trim(u64),
    /// Drop every copy made until here (`every`: every node's copies of the client's sessions
    /// too, for a client that started clean).
    PurgeAll { every: bool },
}

/// Where a trim cuts: below a batch already stored, or below one of the unit's own batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Stored(u64),
    Batch(usize),
}

/// One session's share of a unit (on its subject): purge everything first (`purge_all`; with
/// `purge_every`, every node's subject of the session), store the batches in order, then purge
/// below `cut`.
pub struct Plan {
    pub client_id: ByteString,
    pub subject: String,
    pub purge_all: bool,
    pub purge_every: bool,
    pub batches: Vec<(Bytes, u64)>,
    pub cut: Option<Cut>,
}

/// What the stream did with a plan: the batches it stored ((sequence, copies), in order) and
/// the sequence it purged below, if any.
pub struct Done {
    pub client_id: ByteString,
    pub purged_all: bool,
    pub stored: Vec<(u64, u64)>,
    pub purged_below: Option<u64>,
}

/// Keyed by client id (its subject, a hash, is made once per unit, not per copy).
#[derive(Default)]
pub struct Copies {
    waiting: HashMap<ByteString, Vec<Pending>>,
    stored: HashMap<ByteString, Stored>,
}

/// What the stream holds of one session's copies, as this node stored them.
#[derive(Default)]
struct Stored {
    /// (stream sequence, copies) of each batch, oldest first.
    batches: VecDeque<(u64, u64)>,
    /// Everything below this sequence is purged already: a cut there would purge nothing.
    purged_below: u64,
}

impl Copies {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Adds a copy to the open batch of `client_id`'s session: `encode` appends its record
    /// (false: it did not, and left the batch as it was).
    pub fn copy(
        &mut self,
        client_id: &ByteString,
        encode: impl FnOnce(&mut BytesMut) -> bool,
    ) -> bool {
        let pending = match self.waiting.get_mut(client_id) {
            Some(pending) => pending,
            None => self.waiting.entry(client_id.clone()).or_default(),
        };
        let open =
            matches!(pending.last(), Some(Pending::Batch(batch, _)) if batch.len() < BATCH_BYTES);
        if !open {
            pending.push(Pending::Batch(BytesMut::new(), 0));
        }
        let Some(Pending::Batch(batch, count)) = pending.last_mut() else {
            return false;
        };
        let encoded = encode(batch);
        if encoded {
            *count += 1;
        }
        encoded
    }

    /// Only the last `keep` copies made so far for `client_id` are still needed (0: none).
    pub fn trim(&mut self, client_id: ByteString, keep: u64) {
        let pending = self.waiting.entry(client_id).or_default();
        pending.push(if keep == 0 {
            Pending::PurgeAll { every: false }
        } else {
            Pending::Trim(keep)
        });
    }

    /// The client started clean: every node's copies of its former sessions go, this node's
    /// made until here among them.
    pub fn discard(&mut self, client_id: ByteString) {
        let pending = self.waiting.entry(client_id).or_default();
        pending.push(Pending::PurgeAll { every: true });
    }

    /// What waits, as one plan per session (`subject`: its subject), for the next unit.
    pub fn take_plans(&mut self, subject: impl Fn(&str) -> String) -> Vec<Plan> {
        let waiting = std::mem::take(&mut self.waiting);
        waiting
            .into_iter()
            .map(|(client_id, pending)| {
                let subject = subject(&client_id);
                self.plan(client_id, subject, pending)
            })
            .collect()
    }

    fn plan(&self, client_id: ByteString, subject: String, pending: Vec<Pending>) -> Plan {
        // Everything before the last purge of all is gone: not stored, not counted.
        let start = pending
            .iter()
            .rposition(|p| matches!(p, Pending::PurgeAll { .. }))
            .map_or(0, |at| at + 1);
        let purge_all = start > 0;
        let purge_every = pending[..start]
            .iter()
            .any(|p| matches!(p, Pending::PurgeAll { every: true }));
        let mut batches = Vec::new();
        let mut cut = None;
        for item in pending.into_iter().skip(start) {
            match item {
                Pending::Batch(batch, count) if count > 0 => batches.push((batch.freeze(), count)),
                Pending::Batch(..) | Pending::PurgeAll { .. } => {}
                Pending::Trim(keep) => {
                    let stored = if purge_all {
                        None
                    } else {
                        self.stored.get(&client_id)
                    };
                    cut = find_cut(&batches, stored.map(|s| &s.batches), keep).filter(|cut| {
                        !matches!((cut, stored), (Cut::Stored(below), Some(s)) if *below <= s.purged_below)
                    });
                }
            }
        }
        Plan {
            client_id,
            subject,
            purge_all,
            purge_every,
            batches,
            cut,
        }
    }

    /// The stream's answer to a plan.
    pub fn done(&mut self, done: Done) {
        let client_id = done.client_id;
        let stored = self.stored.entry(client_id.clone()).or_default();
        if done.purged_all {
            // Nothing below the first batch stored after the purge is left.
            stored.batches.clear();
            stored.purged_below = done.stored.first().map_or(0, |(sequence, _)| *sequence);
        }
        stored.batches.extend(done.stored);
        if let Some(below) = done.purged_below {
            stored.batches.retain(|(sequence, _)| *sequence >= below);
            stored.purged_below = stored.purged_below.max(below);
        }
        // Beyond the limit the two oldest count as one, at the older sequence: a cut there
        // keeps both.
        while stored.batches.len() > STORED_MAX
            && let Some((sequence, oldest)) = stored.batches.pop_front()
            && let Some(next) = stored.batches.front_mut()
        {
            *next = (sequence, next.1 + oldest);
        }
        if stored.batches.is_empty() {
            self.stored.remove(&client_id);
        }
    }
}

/// The batch from which the last `keep` copies are kept, searching the unit's `batches` (newest
/// first) and then those `stored` before: `None` when they do not hold that many (nothing is
/// purged: the older copies are unknown here, from a former run, and may be needed).
fn find_cut(
    batches: &[(Bytes, u64)],
    stored: Option<&VecDeque<(u64, u64)>>,
    keep: u64,
) -> Option<Cut> {
    let mut left = keep;
    for (index, (_, count)) in batches.iter().enumerate().rev() {
        if *count >= left {
            return Some(Cut::Batch(index));
        }
        left -= count;
    }
    for (sequence, count) in stored?.iter().rev() {
        if *count >= left {
            return Some(Cut::Stored(*sequence));
        }
        left -= count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "c";

    fn client() -> ByteString {
        ByteString::from_static(CLIENT)
    }

    fn copy(copies: &mut Copies, n: usize) {
        for _ in 0..n {
            assert!(copies.copy(&client(), |batch| {
                batch.extend_from_slice(b"record");
                true
            }));
        }
    }

    fn one_plan(copies: &mut Copies) -> Plan {
        let mut plans = copies.take_plans(|client_id| format!("s.{client_id}"));
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].subject, "s.c");
        plans.remove(0)
    }

    /// The stream stores the plan's batches at sequences from `first` on and purges as planned.
    fn stored(copies: &mut Copies, plan: &Plan, first: u64) {
        let stored: Vec<(u64, u64)> = (first..)
            .zip(plan.batches.iter().map(|(_, count)| *count))
            .collect();
        let purged_below = match plan.cut {
            Some(Cut::Stored(sequence)) => Some(sequence),
            Some(Cut::Batch(index)) => Some(stored[index].0),
            None => None,
        };
        copies.done(Done {
            client_id: plan.client_id.clone(),
            purged_all: plan.purge_all,
            stored,
            purged_below,
        });
    }

    #[test]
    fn copies_of_one_unit_make_one_batch() {
        let mut copies = Copies::default();
        copy(&mut copies, 100);
        let plan = one_plan(&mut copies);
        assert!(!plan.purge_all);
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0].1, 100);
        assert_eq!(plan.batches[0].0.len(), 600);
        assert_eq!(plan.cut, None);
        assert!(copies.is_empty());
    }

    #[test]
    fn a_large_unit_is_split_at_the_batch_size() {
        let mut copies = Copies::default();
        let big = vec![0_u8; BATCH_BYTES / 2 + 1];
        for _ in 0..3 {
            copies.copy(&client(), |batch| {
                batch.extend_from_slice(&big);
                true
            });
        }
        let plan = one_plan(&mut copies);
        let counts: Vec<u64> = plan.batches.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [2, 1]);
    }

    #[test]
    fn a_copy_not_encoded_is_not_counted() {
        let mut copies = Copies::default();
        copy(&mut copies, 2);
        assert!(!copies.copy(&client(), |_| false));
        assert_eq!(one_plan(&mut copies).batches[0].1, 2);
    }

    #[test]
    fn a_trim_cuts_below_the_batch_holding_the_oldest_copy_kept() {
        let mut copies = Copies::default();
        // Three units of 10, 5 and 8 copies, stored at sequences 1, 2 and 3.
        for (n, sequence) in [(10, 1), (5, 2), (8, 3)] {
            copy(&mut copies, n);
            let plan = one_plan(&mut copies);
            stored(&mut copies, &plan, sequence);
        }
        // The last 13 copies: those of sequences 2 and 3.
        copies.trim(client(), 13);
        let plan = one_plan(&mut copies);
        assert_eq!(plan.cut, Some(Cut::Stored(2)));
        stored(&mut copies, &plan, 4);
        // The last 14: more than the 13 this node stored and did not purge; nothing is purged
        // (older copies may be a former run's).
        copies.trim(client(), 14);
        assert_eq!(one_plan(&mut copies).cut, None);
        // The last 9: from sequence 2 on, purged below already: nothing to ask the stream.
        copies.trim(client(), 9);
        assert_eq!(one_plan(&mut copies).cut, None);
        copies.trim(client(), 8);
        assert_eq!(one_plan(&mut copies).cut, Some(Cut::Stored(3)));
    }

    #[test]
    fn a_trim_within_the_unit_counts_the_unit_s_copies_first() {
        let mut copies = Copies::default();
        copy(&mut copies, 10);
        let plan = one_plan(&mut copies);
        stored(&mut copies, &plan, 7);
        copy(&mut copies, 4);
        copies.trim(client(), 3);
        // Copies after the trim are in a batch of their own.
        copy(&mut copies, 2);
        let plan = one_plan(&mut copies);
        let counts: Vec<u64> = plan.batches.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [4, 2]);
        assert_eq!(plan.cut, Some(Cut::Batch(0)));
        stored(&mut copies, &plan, 8);
        // What remains: the batches at 8 and 9, 6 copies; the one at 7 was purged.
        // The last 6 or 5 (from 8 on): below 8 is purged already; the last 2 (from 9 on).
        copies.trim(client(), 6);
        assert_eq!(one_plan(&mut copies).cut, None);
        copies.trim(client(), 5);
        assert_eq!(one_plan(&mut copies).cut, None);
        copies.trim(client(), 2);
        assert_eq!(one_plan(&mut copies).cut, Some(Cut::Stored(9)));
        copies.trim(client(), 7);
        assert_eq!(one_plan(&mut copies).cut, None);
    }

    #[test]
    fn a_purge_of_all_drops_the_copies_before_it() {
        let mut copies = Copies::default();
        copy(&mut copies, 10);
        let plan = one_plan(&mut copies);
        stored(&mut copies, &plan, 1);
        copy(&mut copies, 3);
        copies.trim(client(), 0);
        copy(&mut copies, 2);
        copies.trim(client(), 5);
        let plan = one_plan(&mut copies);
        assert!(plan.purge_all);
        let counts: Vec<u64> = plan.batches.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [2]);
        // Only 2 copies exist after the purge: nothing more to cut.
        assert_eq!(plan.cut, None);
        stored(&mut copies, &plan, 2);
        // The last 2 are the batch at 2, and the purge of all left nothing below it.
        copies.trim(client(), 2);
        assert_eq!(one_plan(&mut copies).cut, None);
        copies.trim(client(), 1);
        assert_eq!(one_plan(&mut copies).cut, None);
        copies.trim(client(), 0);
        let plan = one_plan(&mut copies);
        stored(&mut copies, &plan, 3);
        assert!(copies.stored.is_empty());
    }

    #[test]
    fn a_discard_purges_every_nodes_copies_and_a_later_trim_its_own_only() {
        let mut copies = Copies::default();
        copy(&mut copies, 3);
        copies.discard(client());
        copy(&mut copies, 2);
        let plan = one_plan(&mut copies);
        assert!(plan.purge_all && plan.purge_every);
        let counts: Vec<u64> = plan.batches.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [2]);
        stored(&mut copies, &plan, 1);
        // A purge of all after the discard in the same unit still purges every node's.
        copies.discard(client());
        copies.trim(client(), 0);
        let plan = one_plan(&mut copies);
        assert!(plan.purge_all && plan.purge_every);
        copies.trim(client(), 0);
        let plan = one_plan(&mut copies);
        assert!(plan.purge_all && !plan.purge_every);
    }

    #[test]
    fn batches_beyond_the_limit_merge_at_the_older_sequence() {
        let mut copies = Copies::default();
        for sequence in 1..=(STORED_MAX as u64 + 2) {
            copy(&mut copies, 1);
            let plan = one_plan(&mut copies);
            stored(&mut copies, &plan, sequence);
        }
        let kept = &copies.stored[CLIENT];
        assert_eq!(kept.batches.len(), STORED_MAX);
        assert_eq!(kept.batches.front(), Some(&(1, 3)));
        // Every copy kept: the cut is at the oldest sequence, purging nothing needed.
        copies.trim(client(), STORED_MAX as u64 + 2);
        assert_eq!(one_plan(&mut copies).cut, Some(Cut::Stored(1)));
    }
}
