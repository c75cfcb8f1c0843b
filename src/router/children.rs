//! The literal children of one arena node, keyed by topic level.
//!
//! Most nodes have a handful of children ("sensors/{site}/temp" fans out wide at one or two levels
//! and stays narrow everywhere else), so a node keeps up to [`SMALL_CHILDREN_MAX`] of them in a
//! vector scanned linearly, which beats hashing the level for so few entries, and switches to a
//! hash map beyond that. It switches back only when it has shrunk to half the threshold, so a
//! node hovering around the threshold does not convert back and forth on every change.

/// Levels come from clients, so the hasher is keyed per process (ahash's `RandomState`) against
/// collision flooding; it costs about a third fewer instructions per match than std's SipHash
/// (1091 against 1564 on the 10k-filter benchmark trie, counted with cachegrind).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Above this many children a node hashes its levels instead of scanning them. Instructions
/// per `for_each_match` on the 10k / 100k-filter benchmark tries (cachegrind): 1055 / 1107 with
/// 4, 1091 / 1120 with 8, 1087 / 1129 with 16. Within 3% of each other; 8 keeps more nodes in
/// one compact vector.
pub(crate) const SMALL_CHILDREN_MAX: usize = 8;

/// How small a hashed node must get before it goes back to a vector.
const SMALL_CHILDREN_AGAIN: usize = SMALL_CHILDREN_MAX / 2;

const _: () = assert!(SMALL_CHILDREN_AGAIN < SMALL_CHILDREN_MAX);

/// Level -> arena index of the child node.
#[derive(Debug)]
pub(crate) enum Children {
    Small(Vec<(Box<str>, usize)>),
    Large(HashMap<Box<str>, usize>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Small(Vec::new())
    }
}

impl Children {
    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<usize> {
        match self {
            Children::Small(entries) => entries
                .iter()
                .find(|(key, _)| **key == *level)
                .map(|&(_, node)| node),
            Children::Large(map) => map.get(level).copied(),
        }
    }

    /// Adds a child; the caller has checked that `level` is not there yet.
    pub(crate) fn insert(&mut self, level: &str, node: usize) {
        match self {
            Children::Small(entries) if entries.len() < SMALL_CHILDREN_MAX => {
                entries.push((level.into(), node));
            }
            Children::Small(entries) => {
                let mut map: HashMap<Box<str>, usize> = entries.drain(..).collect();
                map.insert(level.into(), node);
                *self = Children::Large(map);
            }
            Children::Large(map) => {
                map.insert(level.into(), node);
            }
        }
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<usize> {
        match self {
            Children::Small(entries) => {
                let position = entries.iter().position(|(key, _)| **key == *level)?;
                Some(entries.swap_remove(position).1)
            }
            Children::Large(map) => {
                let node = map.remove(level)?;
                if map.len() <= SMALL_CHILDREN_AGAIN {
                    *self = Children::Small(map.drain().collect());
                }
                Some(node)
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Children::Small(entries) => entries.len(),
            Children::Large(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (level, child) pair, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        let (small, large) = match self {
            Children::Small(entries) => (Some(entries.iter()), None),
            Children::Large(map) => (None, Some(map.iter())),
        };
        let small = small
            .into_iter()
            .flatten()
            .map(|(key, node)| (&**key, *node));
        let large = large
            .into_iter()
            .flatten()
            .map(|(key, node)| (&**key, *node));
        small.chain(large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_map_and_shrinks_back() {
        let mut children = Children::default();
        let count = SMALL_CHILDREN_MAX * 3;
        for i in 0..count {
            children.insert(&i.to_string(), i + 1);
        }
        assert!(matches!(children, Children::Large(_)));
        assert_eq!(children.len(), count);
        for i in 0..count {
            assert_eq!(children.get(&i.to_string()), Some(i + 1));
        }
        for i in 0..count {
            assert_eq!(children.remove(&i.to_string()), Some(i + 1));
            assert_eq!(children.remove(&i.to_string()), None);
            assert_eq!(children.iter().count(), count - i - 1);
        }
        assert!(matches!(children, Children::Small(_)));
        assert!(children.is_empty());
    }
}
