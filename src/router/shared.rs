//! Picking one member of a shared-subscription group (MQTT 5.0 §4.8.2, `$share/{group}/{filter}`):
//! each message to the group goes to one member only.
//!
//! The choice is made twice: the publishing shard picks one shard among those with members, in
//! proportion to their member counts ([`WeightedShards`]), and that shard picks one of its local
//! members ([`RoundRobin`]). Both are deterministic, so tests and the simulator can predict them.

/// Round robin over the members of a group, in insertion order.
#[derive(Debug, Clone)]
pub struct RoundRobin<K> {
    members: Vec<K>,
    /// Index of the member to try first on the next pick (may equal `members.len()`).
    next: usize,
}

impl<K> Default for RoundRobin<K> {
    fn default() -> Self {
        RoundRobin {
            members: Vec::new(),
            next: 0,
        }
    }
}

impl<K: PartialEq> RoundRobin<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, member: &K) -> bool {
        self.members.contains(member)
    }

    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.members.iter()
    }

    /// Adds `member` last in the rotation; false (and no change) if it is already a member.
    pub fn insert(&mut self, member: K) -> bool {
        if self.contains(&member) {
            return false;
        }
        self.members.push(member);
        true
    }

    /// Removes `member`, keeping the others' order and whose turn it is; false if absent.
    pub fn remove(&mut self, member: &K) -> bool {
        let Some(position) = self.members.iter().position(|m| m == member) else {
            return false;
        };
        self.members.remove(position);
        if position < self.next {
            self.next -= 1;
        }
        true
    }

    /// The member whose turn it is, and the turn passes on. Over `n * len()` picks with no
    /// change to the group, each member is picked exactly `n` times.
    pub fn pick(&mut self) -> Option<&K> {
        self.pick_where(|_| true)
    }

    /// The first member, from whose turn it is, for which `ok` holds (e.g. one whose outbox has
    /// room); the turn passes to the one after it. `None`, and no change, if there is none.
    pub fn pick_where(&mut self, mut ok: impl FnMut(&K) -> bool) -> Option<&K> {
        let len = self.members.len();
        let start = if self.next < len { self.next } else { 0 };
        let chosen = (start..len)
            .chain(0..start)
            .find(|&i| self.members.get(i).is_some_and(&mut ok))?;
        self.next = chosen + 1;
        self.members.get(chosen)
    }
}

/// Shard -> number of group members on it, and a pick among shards weighted by those numbers:
/// smooth weighted round robin (as in nginx), which spreads a shard's turns evenly over a cycle
/// rather than bunching them (weights 2:1 give a, b, a rather than a, a, b).
///
/// Over `n * total()` picks with no change in between, each shard is picked exactly `n` times
/// its member count. Any change restarts the cycle, so that exactness holds from the change on.
#[derive(Debug, Clone, Default)]
pub struct WeightedShards {
    /// Shards with at least one member, sorted by shard so ties are broken the same way on
    /// every shard.
    entries: Vec<Entry>,
    total: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    members: usize,
    /// The smooth WRR credit. It stays within `[-total, total]`, which `i128` holds for any
    /// `usize` total.
    current: i128,
}

impl WeightedShards {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total members over all shards.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Shards with at least one member.
    pub fn shards(&self) -> usize {
        self.entries.len()
    }

    /// Members on `shard`.
    pub fn members(&self, shard: usize) -> usize {
        self.entries
            .iter()
            .find(|entry| entry.shard == shard)
            .map_or(0, |entry| entry.members)
    }

    /// Counts `n` more members on `shard`.
    pub fn add(&mut self, shard: usize, n: usize) {
        if n == 0 {
            return;
        }
        match self
            .entries
            .binary_search_by_key(&shard, |entry| entry.shard)
        {
            Ok(position) => {
                if let Some(entry) = self.entries.get_mut(position) {
                    entry.members = entry.members.saturating_add(n);
                }
            }
            Err(position) => {
                self.entries.insert(
                    position,
                    Entry {
                        shard,
                        members: n,
                        current: 0,
                    },
                );
            }
        }
        self.restart();
    }

    /// Counts `n` fewer members on `shard` (not below zero); returns how many were removed.
    pub fn remove(&mut self, shard: usize, n: usize) -> usize {
        let Ok(position) = self
            .entries
            .binary_search_by_key(&shard, |entry| entry.shard)
        else {
            return 0;
        };
        let Some(entry) = self.entries.get_mut(position) else {
            return 0;
        };
        let removed = n.min(entry.members);
        entry.members -= removed;
        if entry.members == 0 {
            self.entries.remove(position);
        }
        if removed > 0 {
            self.restart();
        }
        removed
    }

    /// The next shard, or `None` if the group has no members.
    pub fn pick(&mut self) -> Option<usize> {
        let mut best: Option<&mut Entry> = None;
        for entry in &mut self.entries {
            entry.current += entry.members as i128;
            if best
                .as_ref()
                .is_none_or(|best| entry.current > best.current)
            {
                best = Some(entry);
            }
        }
        let best = best?;
        best.current -= self.total as i128;
        Some(best.shard)
    }

    fn restart(&mut self) {
        self.total = 0;
        for entry in &mut self.entries {
            entry.current = 0;
            self.total = self.total.saturating_add(entry.members);
        }
    }
}

#[cfg(test)]
mod tests;
