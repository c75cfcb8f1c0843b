//! The topic index: pure data structures that map topic filters and topic names to values.
//!
//! MQTT 3.1.1 §4.7 and 5.0 §4.7: a topic is split into levels on '/', and empty levels are real
//! levels ("a//b", "/a"). In a filter, '+' matches exactly one level (an empty one too) and '#', as
//! the last level, matches its parent level and any number of child levels ("a/#" matches "a",
//! "a/b" and "a/b/c"; "#" matches every topic). A topic whose first level starts with '$' is not
//! matched by a filter whose first level is a wildcard: "$SYS/x" is matched by "$SYS/#" and
//! "$SYS/+", never by "#" or "+/x".
//!
//! Filters reach this module already validated, but nothing here panics if they are not: a level
//! is a wildcard only if it is exactly "+", or exactly "#" in last place; anything else, such as
//! "a+" or a '#' in the middle of a filter, is an ordinary level matched literally.
//!
//! - [`Trie`]: filter -> value; `for_each_match(topic)` runs once per PUBLISH (local subscriptions,
//!   replicated interest).
//! - [`TopicTree`]: topic name -> value; `for_each_matching(filter)` runs once per SUBSCRIBE (the
//!   retained store's index).
//! - [`RoundRobin`], [`WeightedShards`]: picking one member, or one shard, of a shared-subscription
//!   group.
//!
//! No I/O, no async, no clock, and no recursion: walks use explicit stacks, whose depth is bounded
//! by the number of levels of the topic or filter (itself bounded by `topic_levels_max` upstream).
//! Nodes live in arenas and refer to each other by index. Those indices are made only by the
//! arenas themselves, so a dangling one is a bug in this module rather than a client mistake; the
//! few places that index an arena say so, and fail like an `assert!` would.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod children;
pub mod shared;
pub mod topic_tree;
pub mod trie;

pub use shared::{RoundRobin, WeightedShards};
pub use topic_tree::TopicTree;
pub use trie::Trie;

/// Arena indices are made only by the arenas, so a dangling one is a bug in this module, never
/// the result of client input: fail loudly, as an `assert!` would.
#[cold]
#[inline(never)]
#[expect(
    clippy::panic,
    reason = "an invariant of this module, not reachable by input"
)]
fn unreachable_index(index: usize) -> ! {
    panic!("router arena: dangling node index {index}")
}
