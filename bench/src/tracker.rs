//! Loss, duplicate and reordering accounting for one publisher -> subscriber stream, in bounded
//! memory: a ring of `WINDOW` bits remembers which of the most recent sequence numbers are still
//! missing. A gap marks its numbers missing; a late arrival clears its bit (reordered); an arrival
//! whose bit is clear and inside the window is a duplicate. A missing number that leaves the window
//! is counted lost. An arrival older than the window cannot be told from a duplicate; it is
//! counted as reordered and takes one back from lost (MQTT brokers resend, they rarely repeat
//! that far back).

/// Sequence numbers remembered per stream. 2048 bits: 256 bytes per stream.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub struct Tracker {
    /// One past the highest sequence number seen (or the first one expected).
    next: u64,
    /// Bit `seq % WINDOW` set: `seq` (in `next - WINDOW .. next`) is missing.
    missing: [u64; WORDS],
    counts: StreamCounts,
}

/// What one stream saw. `lost` is final only after `finish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamCounts {
    /// Every arrival, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub lost: u64,
}

impl Tracker {
    /// A stream whose first sequence number is `first` (0 when the run saw the publisher start).
    pub fn new(first: u64) -> Tracker {
        Tracker {
            next: first,
            missing: [0; WORDS],
            counts: StreamCounts::default(),
        }
    }

    #[cfg(test)]
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn record(&mut self, seq: u64) {
        self.counts.received += 1;
        if seq >= self.next {
            self.advance(seq);
        } else if self.next - seq > WINDOW {
            self.counts.reordered += 1;
            self.counts.lost = self.counts.lost.saturating_sub(1);
        } else if self.take_missing(seq) {
            self.counts.reordered += 1;
        } else {
            self.counts.duplicates += 1;
        }
    }

    /// `seq` is at or past `next`: everything between is missing, `seq` itself arrived.
    fn advance(&mut self, seq: u64) {
        let gap = seq - self.next;
        if gap >= WINDOW {
            // Every bit is overwritten: what was missing is lost, and so is the gap beyond the window.
            let pending: u64 = self.missing.iter().map(|w| u64::from(w.count_ones())).sum();
            self.counts.lost += pending + (gap - WINDOW);
            self.missing = [0; WORDS];
            for skipped in seq - WINDOW..seq {
                self.set_missing(skipped);
            }
        } else {
            for skipped in self.next..seq {
                if self.take_missing(skipped) {
                    self.counts.lost += 1;
                }
                self.set_missing(skipped);
            }
            if self.take_missing(seq) {
                self.counts.lost += 1;
            }
        }
        self.next = seq + 1;
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn set_missing(&mut self, seq: u64) {
        let (word, mask) = Tracker::slot(seq);
        self.missing[word] |= mask;
    }

    /// Clears `seq`'s bit; true if it was set.
    fn take_missing(&mut self, seq: u64) -> bool {
        let (word, mask) = Tracker::slot(seq);
        let was = self.missing[word] & mask != 0;
        self.missing[word] &= !mask;
        was
    }

    /// The final counts: numbers still missing are lost, and so is everything from `next` up to
    /// `published` (how many the publisher sent, when known).
    pub fn finish(&self, published: Option<u64>) -> StreamCounts {
        let mut counts = self.counts;
        counts.lost += self
            .missing
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        if let Some(published) = published {
            counts.lost += published.saturating_sub(self.next);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arrivals: &[u64], published: Option<u64>, expected: (u64, u64, u64, u64)) {
        let mut tracker = Tracker::new(0);
        for &seq in arrivals {
            tracker.record(seq);
        }
        let counts = tracker.finish(published);
        let got = (
            counts.received,
            counts.lost,
            counts.duplicates,
            counts.reordered,
        );
        assert_eq!(
            got, expected,
            "arrivals {arrivals:?}: (received, lost, dup, reordered)"
        );
    }

    #[test]
    fn accounting_table() {
        check(&[], None, (0, 0, 0, 0));
        check(&[0, 1, 2, 3], None, (4, 0, 0, 0));
        check(&[0, 1, 2, 3], Some(4), (4, 0, 0, 0));
        // Tail loss is only visible against the publisher's count.
        check(&[0, 1], Some(4), (2, 2, 0, 0));
        // A gap.
        check(&[0, 2, 3], None, (3, 1, 0, 0));
        check(&[1, 2], Some(3), (2, 1, 0, 0));
        // Duplicates, adjacent and late.
        check(&[0, 1, 1, 2], None, (4, 0, 1, 0));
        check(&[0, 1, 2, 0], None, (4, 0, 1, 0));
        // A late arrival fills its gap.
        check(&[0, 2, 1, 3], None, (4, 0, 0, 1));
        check(&[3, 2, 1, 0], Some(4), (4, 0, 0, 3));
        // A late arrival, then the same message again.
        check(&[0, 2, 1, 1], None, (4, 0, 1, 1));
        // A gap wider than the window.
        check(&[0, 5000], None, (2, 4999, 0, 0));
        check(&[0, 5000, 5001], Some(5002), (3, 4999, 0, 0));
        // Missing numbers that slide out of the window are lost, once.
        check(&[0, 2, 3000], None, (3, 2998, 0, 0));
        // Older than the window: counted reordered, and no longer lost.
        check(&[0, 2, 3000, 1], None, (4, 2997, 0, 1));
        // Exactly at the window edge.
        check(&[0, WINDOW], None, (2, WINDOW - 1, 0, 0));
        check(&[0, WINDOW, 1], None, (3, WINDOW - 2, 0, 1));
    }

    #[test]
    fn a_stream_may_start_anywhere() {
        let mut tracker = Tracker::new(1000);
        tracker.record(1000);
        tracker.record(1001);
        assert_eq!(tracker.next(), 1002);
        assert_eq!(tracker.finish(None).lost, 0);
    }

    #[test]
    fn long_in_order_stream_stays_exact() {
        let mut tracker = Tracker::new(0);
        for seq in 0..100_000 {
            if seq % 1000 != 999 {
                tracker.record(seq);
            }
        }
        let counts = tracker.finish(Some(100_000));
        assert_eq!(counts.lost, 100);
        assert_eq!(counts.received, 99_900);
        assert_eq!(counts.duplicates + counts.reordered, 0);
    }
}
