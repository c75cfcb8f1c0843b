//! Shard identities and sets of shards. A `ShardId` is the one name of a shard everywhere: mailbox
//! addressing, listener placement, thread names. The executor's own numbering never leaks out.

use std::fmt;

/// The most shards one runtime runs. `ShardSet` is a fixed bitset of this many bits.
pub const MAX_SHARDS: usize = 256;

const WORDS: usize = MAX_SHARDS / 64;
const _: () = assert!(MAX_SHARDS.is_multiple_of(64));
const _: () = assert!(MAX_SHARDS <= u16::MAX as usize + 1);

/// The index of one shard, `0..shard_count`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ShardId(u16);

impl ShardId {
    /// The shard with index `index`.
    ///
    /// # Panics
    /// If `index >= MAX_SHARDS`: shard indices come from our own configuration, never from a peer.
    pub fn new(index: usize) -> ShardId {
        assert!(index < MAX_SHARDS, "shard index {index} >= MAX_SHARDS");
        ShardId(index as u16)
    }

    /// The shard with index `index`, or `None` if it is out of range.
    pub fn try_new(index: usize) -> Option<ShardId> {
        (index < MAX_SHARDS).then_some(ShardId(index as u16))
    }

    /// The index, for addressing arrays.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// A set of shards: a 256-bit bitset, `Copy`, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug, Hash)]
pub struct ShardSet {
    words: [u64; WORDS],
}

impl ShardSet {
    /// The empty set.
    pub const fn new() -> ShardSet {
        ShardSet { words: [0; WORDS] }
    }

    /// Shards `0..count` (`count` is clamped to `MAX_SHARDS`).
    pub fn all(count: usize) -> ShardSet {
        let mut set = ShardSet::new();
        for index in 0..count.min(MAX_SHARDS) {
            set.insert(ShardId::new(index));
        }
        set
    }

    /// Adds `shard`; true if it was not there before.
    pub fn insert(&mut self, shard: ShardId) -> bool {
        let (word, bit) = Self::locate(shard);
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        !was
    }

    /// Removes `shard`; true if it was there.
    pub fn remove(&mut self, shard: ShardId) -> bool {
        let (word, bit) = Self::locate(shard);
        let was = self.words[word] & bit != 0;
        self.words[word] &= !bit;
        was
    }

    pub fn contains(&self, shard: ShardId) -> bool {
        let (word, bit) = Self::locate(shard);
        self.words[word] & bit != 0
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn union(&self, other: &ShardSet) -> ShardSet {
        self.zip(other, |a, b| a | b)
    }

    pub fn intersection(&self, other: &ShardSet) -> ShardSet {
        self.zip(other, |a, b| a & b)
    }

    /// Shards in `self` and not in `other`.
    pub fn difference(&self, other: &ShardSet) -> ShardSet {
        self.zip(other, |a, b| a & !b)
    }

    /// Shards in ascending order.
    pub fn iter(&self) -> ShardSetIter {
        ShardSetIter {
            set: *self,
            word: 0,
        }
    }

    fn zip(&self, other: &ShardSet, op: impl Fn(u64, u64) -> u64) -> ShardSet {
        let mut out = ShardSet::new();
        for (i, word) in out.words.iter_mut().enumerate() {
            *word = op(self.words[i], other.words[i]);
        }
        out
    }

    fn locate(shard: ShardId) -> (usize, u64) {
        (shard.index() / 64, 1u64 << (shard.index() % 64))
    }
}

impl std::ops::BitOr for ShardSet {
    type Output = ShardSet;
    fn bitor(self, rhs: ShardSet) -> ShardSet {
        self.union(&rhs)
    }
}

impl std::ops::BitOrAssign for ShardSet {
    fn bitor_assign(&mut self, rhs: ShardSet) {
        *self = self.union(&rhs);
    }
}

impl std::ops::BitAnd for ShardSet {
    type Output = ShardSet;
    fn bitand(self, rhs: ShardSet) -> ShardSet {
        self.intersection(&rhs)
    }
}

impl std::ops::Sub for ShardSet {
    type Output = ShardSet;
    fn sub(self, rhs: ShardSet) -> ShardSet {
        self.difference(&rhs)
    }
}

impl FromIterator<ShardId> for ShardSet {
    fn from_iter<I: IntoIterator<Item = ShardId>>(iter: I) -> ShardSet {
        let mut set = ShardSet::new();
        for shard in iter {
            set.insert(shard);
        }
        set
    }
}

impl IntoIterator for ShardSet {
    type Item = ShardId;
    type IntoIter = ShardSetIter;
    fn into_iter(self) -> ShardSetIter {
        self.iter()
    }
}

/// Ascending iterator over a `ShardSet` (works on a copy, so the set may change meanwhile).
pub struct ShardSetIter {
    set: ShardSet,
    word: usize,
}

impl Iterator for ShardSetIter {
    type Item = ShardId;
    fn next(&mut self) -> Option<ShardId> {
        while self.word < WORDS {
            let bits = self.set.words[self.word];
            if bits == 0 {
                self.word += 1;
                continue;
            }
            let bit = bits.trailing_zeros() as usize;
            self.set.words[self.word] &= bits - 1;
            return Some(ShardId::new(self.word * 64 + bit));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_match_a_vec_model() {
        let mut set = ShardSet::new();
        let mut model: Vec<usize> = Vec::new();
        for index in [0, 63, 64, 5, 255, 128, 5] {
            let fresh = set.insert(ShardId::new(index));
            assert_eq!(fresh, !model.contains(&index));
            if fresh {
                model.push(index);
            }
        }
        model.sort_unstable();
        let listed: Vec<usize> = set.iter().map(ShardId::index).collect();
        assert_eq!(listed, model);
        assert_eq!(set.len(), model.len());
        assert!(set.remove(ShardId::new(64)));
        assert!(!set.remove(ShardId::new(64)));
        assert!(!set.contains(ShardId::new(64)));
        assert!(set.contains(ShardId::new(255)));
    }

    #[test]
    fn all_union_difference() {
        let all = ShardSet::all(4);
        assert_eq!(all.len(), 4);
        let mut one = ShardSet::new();
        one.insert(ShardId::new(2));
        assert_eq!((all - one).len(), 3);
        assert_eq!(all & one, one);
        assert_eq!(one | all, all);
        assert!(ShardSet::new().is_empty());
        assert_eq!(ShardSet::all(1000).len(), MAX_SHARDS);
        assert_eq!(ShardId::new(7).to_string(), "shard 7");
        assert_eq!(ShardId::try_new(MAX_SHARDS), None);
    }
}
