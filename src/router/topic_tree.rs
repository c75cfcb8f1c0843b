//! [`TopicTree`]: topic name -> value, walked once per SUBSCRIBE to find every stored topic that
//! a filter matches (the rules are in the [module docs](super)). It indexes the retained store.
//!
//! The same arena layout as [`Trie`](super::Trie), without wildcard slots: a topic name's levels
//! are all literal. The walk runs on the control path, not per PUBLISH, so it allocates its stack
//! and the topic text it hands to `visit` on each call instead of keeping scratch space around.

use super::children::Children;
use super::unreachable_index;

/// The root's index; it never holds a value (even "" has one level).
const ROOT: usize = 0;

#[derive(Debug)]
struct Node<V> {
    children: Children,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: Children::default(),
            value: None,
        }
    }
}

/// One pending branch of a walk.
struct Frame<'a> {
    node: usize,
    /// The node's own level, appended to the topic text when the frame is taken.
    level: &'a str,
    /// Length of the parent's topic text; `None` if the parent is the root.
    parent_len: Option<usize>,
    /// What is left to match against the node's children.
    rest: Rest<'a>,
}

#[derive(Clone, Copy)]
enum Rest<'a> {
    /// These filter levels (at least one).
    Levels(&'a str),
    /// Nothing: only the node itself matches.
    Done,
    /// Everything below the node matches (a trailing '#').
    All,
}

/// Exact topic name -> `V`.
#[derive(Debug)]
pub struct TopicTree<V> {
    nodes: Vec<Node<V>>,
    free: Vec<usize>,
    len: usize,
    /// The path walked by `remove`, kept so removal does not allocate.
    remove_path: Vec<usize>,
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> TopicTree<V> {
    pub fn new() -> Self {
        TopicTree {
            nodes: vec![Node::new()],
            free: Vec::new(),
            len: 0,
            remove_path: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of arena nodes in use, the root included (1 when empty).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Every stored value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.nodes.iter().filter_map(|node| node.value.as_ref())
    }

    /// The arena's length: `value_at` takes `0..slots()`. A node keeps its slot while it holds
    /// a value, so a walk by slot spread over several turns sees every value that stays put
    /// meanwhile (the persistence snapshot is taken that way).
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// The value in arena slot `slot`, if it holds one.
    pub fn value_at(&self, slot: usize) -> Option<&V> {
        self.nodes.get(slot)?.value.as_ref()
    }

    /// Stores `value` under `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut index = ROOT;
        for level in topic.split('/') {
            index = match self.node(index).children.get(level) {
                Some(child) => child,
                None => self.add_child(index, level),
            };
        }
        let replaced = self.node_mut(index).value.replace(value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut index = ROOT;
        for level in topic.split('/') {
            index = self.node(index).children.get(level)?;
        }
        self.node(index).value.as_ref()
    }

    /// Takes the value of `topic` out and frees the nodes that no longer lead to any topic.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut path = std::mem::take(&mut self.remove_path);
        path.clear();
        path.push(ROOT);
        let mut index = ROOT;
        for level in topic.split('/') {
            let Some(child) = self.node(index).children.get(level) else {
                self.remove_path = path;
                return None;
            };
            index = child;
            path.push(index);
        }
        let removed = self.node_mut(index).value.take();
        if removed.is_some() {
            self.len -= 1;
            self.prune(&mut path, topic);
        }
        self.remove_path = path;
        removed
    }

    fn prune(&mut self, path: &mut Vec<usize>, topic: &str) {
        for level in topic.rsplit('/') {
            let (Some(child), Some(&parent)) = (path.pop(), path.last()) else {
                return;
            };
            let node = self.node(child);
            if node.value.is_some() || !node.children.is_empty() {
                return;
            }
            self.node_mut(parent).children.remove(level);
            *self.node_mut(child) = Node::new();
            self.free.push(child);
        }
    }

    /// Calls `visit` with the text and value of every stored topic that `filter` matches, once
    /// each, in no particular order. Iterative; the stack holds the branches not yet taken.
    pub fn for_each_matching(&self, filter: &str, mut visit: impl FnMut(&str, &V)) {
        let mut topic = String::new();
        let mut stack = Vec::new();
        self.expand(ROOT, None, Rest::Levels(filter), &mut stack);
        while let Some(frame) = stack.pop() {
            topic.truncate(frame.parent_len.unwrap_or(0));
            if frame.parent_len.is_some() {
                topic.push('/');
            }
            topic.push_str(frame.level);
            let node = self.node(frame.node);
            let matched = match frame.rest {
                Rest::Done | Rest::All => true,
                // "a/#" matches "a".
                Rest::Levels(rest) => rest == "#",
            };
            if matched && let Some(value) = &node.value {
                visit(&topic, value);
            }
            self.expand(frame.node, Some(topic.len()), frame.rest, &mut stack);
        }
    }

    /// Pushes the children of `index` that `rest` can continue into.
    fn expand<'a>(
        &'a self,
        index: usize,
        topic_len: Option<usize>,
        rest: Rest<'a>,
        stack: &mut Vec<Frame<'a>>,
    ) {
        let node = self.node(index);
        let (level, rest) = match rest {
            Rest::Done => return,
            Rest::All => ("#", Rest::All),
            Rest::Levels(levels) => match levels.split_once('/') {
                Some((level, rest)) => (level, Rest::Levels(rest)),
                None if levels == "#" => ("#", Rest::All),
                None => (levels, Rest::Done),
            },
        };
        let wildcard = level == "+" || matches!(rest, Rest::All);
        if !wildcard {
            if let Some(child) = node.children.get(level) {
                stack.push(Frame {
                    node: child,
                    level,
                    parent_len: topic_len,
                    rest,
                });
            }
            return;
        }
        for (child_level, child) in node.children.iter() {
            // A '$' topic is not matched by a wildcard in the first level of a filter.
            if index == ROOT && child_level.starts_with('$') {
                continue;
            }
            stack.push(Frame {
                node: child,
                level: child_level,
                parent_len: topic_len,
                rest,
            });
        }
    }

    fn add_child(&mut self, parent: usize, level: &str) -> usize {
        let child = match self.free.pop() {
            Some(index) => index,
            None => {
                self.nodes.push(Node::new());
                self.nodes.len() - 1
            }
        };
        self.node_mut(parent).children.insert(level, child);
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

#[cfg(test)]
mod tests;
