//! The deliveries in a connection's write buffer that its writer has not yet written, kept so the
//! writer can time them when the write completes: the delivery latency (the read that brought the
//! PUBLISH -> that write completed) and the write stage (encoded -> write completed).
//!
//! They are kept as runs, not one entry per message: deliveries whose PUBLISH came in the same
//! read, encoded in the same batch, with the same QoS and path, are one run with a count. One
//! read of a busy publisher brings many messages, so a run usually holds many. The number of runs
//! a write buffer carries is bounded (`UNSENT_RUNS_MAX`): when it is reached, further deliveries
//! wait in the session's outbox until the writer has taken the buffer, as they do when the buffer
//! reaches `write_buffer_bytes_max`.
//!
//! No clock is read here: a run is dated with the `now` of the batch that encodes it, and the
//! shell stamps the batch's runs with one clock reading when the batch ends (`Shard::stamp_encoded`),
//! so a run's "encoded" instant is when its batch was handled.

use std::time::Instant;

use crate::metrics::Path;
use crate::protocol::QoS;

/// Runs one write buffer may carry (40 bytes each): enough for a write to carry the messages of
/// hundreds of publishers' reads at saturation, small enough that a busy subscriber's tracking
/// stays within about 10 KiB.
pub const UNSENT_RUNS_MAX: usize = 256;
// The memory budget counts two full lists per connection (the connection's and its writer's).
const _: () = assert!(
    2 * UNSENT_RUNS_MAX * std::mem::size_of::<UnsentRun>()
        <= crate::config::budget::DELIVERY_RUNS_BYTES as usize
);

/// Runs of capacity a connection's list, and its writer's, keep between writes (640 bytes each):
/// enough that a steady stream allocates nothing per write, little enough for idle connections.
pub const UNSENT_RUNS_IDLE_MAX: usize = 16;

/// `count` deliveries that share their read, their encoding batch, QoS and path.
#[derive(Debug, Clone, Copy)]
pub struct UnsentRun {
    /// The read completion that brought the PUBLISH's last byte (`Message::received_at`).
    pub read_at: Instant,
    /// The end of the batch that encoded them (until stamped, that batch's `now`).
    pub encoded_at: Instant,
    pub qos: QoS,
    pub path: Path,
    pub count: u32,
}

#[derive(Debug, Default)]
pub struct Unsent {
    runs: Vec<UnsentRun>,
    /// Runs before this index are stamped; the rest were encoded in the batch under way.
    stamped: usize,
}

impl Unsent {
    /// Whether one more delivery can be tracked (without it the write buffer takes no more).
    pub fn has_room(&self) -> bool {
        self.runs.len() < UNSENT_RUNS_MAX
    }

    /// Tracks one delivery encoded in the batch under way, at `now`. True when it is the first
    /// of this batch, so the connection has to be stamped when the batch ends.
    pub fn push(&mut self, read_at: Instant, qos: QoS, path: Path, now: Instant) -> bool {
        let first_of_batch = self.stamped == self.runs.len();
        if !first_of_batch
            && let Some(last) = self.runs.last_mut()
            && last.read_at == read_at
            && last.qos == qos
            && last.path == path
            && last.count < u32::MAX
        {
            last.count += 1;
            return false;
        }
        self.runs.push(UnsentRun {
            read_at,
            encoded_at: now,
            qos,
            path,
            count: 1,
        });
        first_of_batch
    }

    /// Dates the runs of the batch that just ended.
    pub fn stamp(&mut self, at: Instant) {
        for run in self.runs.iter_mut().skip(self.stamped) {
            run.encoded_at = at;
        }
        self.stamped = self.runs.len();
    }

    /// Hands every run to the writer, which is taking the whole write buffer: they swap with
    /// `spare`, the writer's emptied list, so neither side allocates per write.
    pub fn take(&mut self, spare: &mut Vec<UnsentRun>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.runs, spare);
        self.stamped = 0;
        if self.runs.capacity() > UNSENT_RUNS_IDLE_MAX {
            // An idle connection keeps no tracking space; a busy one grows it again.
            self.runs = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn runs_merge_within_a_batch_and_split_across_batches() {
        let start = Instant::now();
        let later = start + Duration::from_micros(5);
        let mut unsent = Unsent::default();
        assert!(unsent.push(start, QoS::AtMostOnce, Path::Local, start));
        assert!(!unsent.push(start, QoS::AtMostOnce, Path::Local, start));
        assert!(!unsent.push(start, QoS::AtLeastOnce, Path::Local, start));
        assert!(!unsent.push(later, QoS::AtLeastOnce, Path::Local, start));
        unsent.stamp(later);
        // A new batch never merges into a stamped run, even with the same read.
        assert!(unsent.push(later, QoS::AtLeastOnce, Path::Local, later));
        let mut taken = Vec::new();
        unsent.take(&mut taken);
        let counts: Vec<u32> = taken.iter().map(|run| run.count).collect();
        assert_eq!(counts, [2, 1, 1, 1]);
        assert!(taken.iter().take(3).all(|run| run.encoded_at == later));
        assert_eq!(unsent.stamped, 0);
        assert!(unsent.runs.is_empty());
    }

    #[test]
    fn room_is_bounded() {
        let start = Instant::now();
        let mut unsent = Unsent::default();
        let mut pushed = 0u64;
        while unsent.has_room() {
            let read_at = start + Duration::from_micros(pushed);
            unsent.push(read_at, QoS::AtMostOnce, Path::Local, start);
            pushed += 1;
        }
        assert_eq!(pushed, UNSENT_RUNS_MAX as u64);
    }
}
