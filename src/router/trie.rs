//! [`Trie`]: topic filter -> value, walked once per PUBLISH to find every filter that matches a
//! topic (the rules are in the [module docs](super)).
//!
//! Nodes live in one arena (`Vec`, indices, free list), so the trie is a few large allocations
//! rather than one per node, and removing a filter prunes the nodes it leaves empty. A node keeps
//! its '+' child and its '#' value in their own slots, next to its literal children: matching a
//! level then costs one lookup of the literal level, and the wildcards cost nothing to find.

use std::cell::Cell;

use super::children::Children;
use super::unreachable_index;

/// The root's index. The root is nobody's child, so in a child slot it also means "no child".
const ROOT: usize = 0;
const NO_CHILD: usize = ROOT;

#[derive(Debug)]
struct Node<V> {
    /// Literal levels, including ones that look like wildcards but are not (see module docs).
    children: Children,
    /// The child reached by a '+' level, or [`NO_CHILD`].
    plus: usize,
    /// The value of the filter that ends at this node.
    value: Option<V>,
    /// The value of the filter that is this node's path followed by "/#" ("#" at the root).
    multi: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: Children::default(),
            plus: NO_CHILD,
            value: None,
            multi: None,
        }
    }

    fn is_unused(&self) -> bool {
        self.value.is_none()
            && self.multi.is_none()
            && self.plus == NO_CHILD
            && self.children.is_empty()
    }

    /// The child reached through `level` of a filter.
    fn edge(&self, level: &str) -> Option<usize> {
        if level == "+" {
            (self.plus != NO_CHILD).then_some(self.plus)
        } else {
            self.children.get(level)
        }
    }
}

/// Where a filter's value is kept: the node its levels lead to, or that node's '#' slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Value,
    Multi,
}

/// Splits a filter into the levels that lead to its node (`None`: the root itself) and its slot.
fn parse(filter: &str) -> (Option<&str>, Slot) {
    if filter == "#" {
        (None, Slot::Multi)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), Slot::Multi)
    } else {
        (Some(filter), Slot::Value)
    }
}

/// One pending branch of a match: a node, and the byte offset in the topic of the level it must
/// match next (past the end once every level is matched).
#[derive(Clone, Copy, Debug)]
struct Frame {
    node: usize,
    position: usize,
}

/// Topic filter -> `V`, one value per distinct filter.
///
/// The broker keeps, per filter, e.g. the map of its local subscribers or the per-shard interest
/// counts, and finds them all for a topic with [`Trie::for_each_match`].
pub struct Trie<V> {
    nodes: Vec<Node<V>>,
    /// Unused slots of `nodes`, reused before the arena grows.
    free: Vec<usize>,
    /// Number of stored filters.
    len: usize,
    /// The explicit stack of `for_each_match`, kept between calls so that matching does not
    /// allocate once it has grown to the deepest topic seen. It sits in a `Cell` so matching can
    /// take `&self`: the call moves the vector out and puts it back (no `RefCell` borrow flag
    /// that could panic). A nested call from inside `visit` finds an empty vector and merely
    /// allocates its own. The price is that `Trie` is not `Sync`, which a structure owned by one
    /// shard never needs to be.
    match_stack: Cell<Vec<Frame>>,
    /// The path walked by `remove`, kept for the same reason.
    remove_path: Vec<usize>,
}

impl<V> std::fmt::Debug for Trie<V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Trie")
            .field("len", &self.len)
            .field("node_count", &self.node_count())
            .finish_non_exhaustive()
    }
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Trie<V> {
    pub fn new() -> Self {
        Trie {
            nodes: vec![Node::new()],
            free: Vec::new(),
            len: 0,
            match_stack: Cell::new(Vec::new()),
            remove_path: Vec::new(),
        }
    }

    /// Number of distinct filters stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of arena nodes in use, the root included: 1 for an empty trie, whatever was
    /// inserted and removed before. Grows with the number of distinct levels stored.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    pub fn get(&self, filter: &str) -> Option<&V> {
        let (prefix, slot) = parse(filter);
        let node = self.node(self.find(prefix)?);
        match slot {
            Slot::Value => node.value.as_ref(),
            Slot::Multi => node.multi.as_ref(),
        }
    }

    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let (prefix, slot) = parse(filter);
        let index = self.find(prefix)?;
        let node = self.node_mut(index);
        match slot {
            Slot::Value => node.value.as_mut(),
            Slot::Multi => node.multi.as_mut(),
        }
    }

    /// The value of `filter`, made with `make` (and counted) if the filter is new.
    pub fn get_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        let (prefix, slot) = parse(filter);
        let mut index = ROOT;
        for level in prefix.into_iter().flat_map(|prefix| prefix.split('/')) {
            index = match self.node(index).edge(level) {
                Some(child) => child,
                None => self.add_child(index, level),
            };
        }
        let node = match self.nodes.get_mut(index) {
            Some(node) => node,
            None => unreachable_index(index),
        };
        let value = match slot {
            Slot::Value => &mut node.value,
            Slot::Multi => &mut node.multi,
        };
        if value.is_none() {
            self.len += 1;
        }
        value.get_or_insert_with(make)
    }

    /// Takes the value of `filter` out and frees the nodes that no longer lead to any filter.
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        let (prefix, slot) = parse(filter);
        let levels = || prefix.into_iter().flat_map(|prefix| prefix.split('/'));
        let mut path = std::mem::take(&mut self.remove_path);
        path.clear();
        path.push(ROOT);
        let mut index = ROOT;
        for level in levels() {
            let Some(child) = self.node(index).edge(level) else {
                self.remove_path = path;
                return None;
            };
            index = child;
            path.push(index);
        }
        let node = self.node_mut(index);
        let removed = match slot {
            Slot::Value => node.value.take(),
            Slot::Multi => node.multi.take(),
        };
        if removed.is_some() {
            self.len -= 1;
            self.prune(&mut path, prefix);
        }
        self.remove_path = path;
        removed
    }

    /// Frees the unused nodes at the end of `path` (the root, then one node per level of
    /// `prefix`), deepest first, stopping at the first node still in use.
    fn prune(&mut self, path: &mut Vec<usize>, prefix: Option<&str>) {
        for level in prefix.into_iter().flat_map(|prefix| prefix.rsplit('/')) {
            let (Some(child), Some(&parent)) = (path.pop(), path.last()) else {
                return;
            };
            if !self.node(child).is_unused() {
                return;
            }
            let parent = self.node_mut(parent);
            if level == "+" {
                parent.plus = NO_CHILD;
            } else {
                parent.children.remove(level);
            }
            *self.node_mut(child) = Node::new();
            self.free.push(child);
        }
    }

    /// Calls `visit` once for every stored filter that matches `topic`, in no particular order.
    ///
    /// Iterative, with an explicit stack no deeper than the topic's levels, and allocation-free
    /// once that stack has grown to the deepest topic seen.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&V)) {
        let mut stack = self.match_stack.take();
        stack.clear();
        // A '$' topic is not matched by a wildcard in the first level of a filter.
        let dollar = topic.starts_with('$');
        let end = topic.len();
        stack.push(Frame {
            node: ROOT,
            position: 0,
        });
        while let Some(mut frame) = stack.pop() {
            // Follow the literal branch in place and push only the '+' branches, so the stack
            // holds at most one frame per level.
            loop {
                let node = self.node(frame.node);
                let Some(rest) = topic.get(frame.position..) else {
                    // Every level matched: "a/b" and "a/b/#" both match "a/b".
                    if let Some(value) = &node.value {
                        visit(value);
                    }
                    if let Some(value) = &node.multi {
                        visit(value);
                    }
                    break;
                };
                let wildcards = !(dollar && frame.node == ROOT);
                if wildcards && let Some(value) = &node.multi {
                    visit(value);
                }
                let (level, next) = next_level(rest, frame.position, end);
                if wildcards && node.plus != NO_CHILD {
                    stack.push(Frame {
                        node: node.plus,
                        position: next,
                    });
                }
                match node.children.get(level) {
                    Some(child) => {
                        frame = Frame {
                            node: child,
                            position: next,
                        }
                    }
                    None => break,
                }
            }
        }
        self.match_stack.set(stack);
    }

    /// Every stored filter, as text, with its value, in no particular order. Allocates; meant for
    /// snapshots and tests.
    pub fn iter(&self) -> impl Iterator<Item = (String, &V)> {
        let mut entries = Vec::with_capacity(self.len);
        // (node, the node's filter text; None for the root)
        let mut stack: Vec<(usize, Option<String>)> = vec![(ROOT, None)];
        while let Some((index, path)) = stack.pop() {
            let node = self.node(index);
            let join = |level: &str| match &path {
                Some(path) => format!("{path}/{level}"),
                None => level.to_owned(),
            };
            if let (Some(value), Some(path)) = (&node.value, &path) {
                entries.push((path.clone(), value));
            }
            if let Some(value) = &node.multi {
                entries.push((join("#"), value));
            }
            if node.plus != NO_CHILD {
                stack.push((node.plus, Some(join("+"))));
            }
            for (level, child) in node.children.iter() {
                stack.push((child, Some(join(level))));
            }
        }
        entries.into_iter()
    }

    /// The node that `prefix` leads to (the root for `None`), without creating anything.
    fn find(&self, prefix: Option<&str>) -> Option<usize> {
        let mut index = ROOT;
        for level in prefix.into_iter().flat_map(|prefix| prefix.split('/')) {
            index = self.node(index).edge(level)?;
        }
        Some(index)
    }

    /// Creates the child of `parent` reached by `level` (known to be missing) and returns it.
    fn add_child(&mut self, parent: usize, level: &str) -> usize {
        let child = match self.free.pop() {
            Some(index) => index,
            None => {
                self.nodes.push(Node::new());
                self.nodes.len() - 1
            }
        };
        let parent = self.node_mut(parent);
        if level == "+" {
            parent.plus = child;
        } else {
            parent.children.insert(level, child);
        }
        child
    }

    #[inline]
    fn node(&self, index: usize) -> &Node<V> {
        match self.nodes.get(index) {
            Some(node) => node,
            None => unreachable_index(index),
        }
    }

    #[inline]
    fn node_mut(&mut self, index: usize) -> &mut Node<V> {
        match self.nodes.get_mut(index) {
            Some(node) => node,
            None => unreachable_index(index),
        }
    }
}

/// The level at the start of `rest` (which starts at byte `position` of a topic of `end` bytes)
/// and the position of the level after it (`end + 1` if there is none).
///
/// A plain byte loop: levels are a few bytes long, and `str::split_once` spends more setting up
/// its vectorized search than this spends finding the '/' (measured: about 400 of 1300
/// instructions per match went to `memchr`).
#[inline]
fn next_level(rest: &str, position: usize, end: usize) -> (&str, usize) {
    match rest.bytes().position(|byte| byte == b'/') {
        // '/' is ASCII, so splitting there is on a char boundary.
        Some(slash) => (rest.get(..slash).unwrap_or(rest), position + slash + 1),
        None => (rest, end + 1),
    }
}

#[cfg(test)]
pub(crate) mod tests;
