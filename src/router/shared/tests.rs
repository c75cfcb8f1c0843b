use std::collections::BTreeMap;

use super::*;

fn counts<T: Ord>(picks: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for pick in picks {
        *counts.entry(pick).or_insert(0) += 1;
    }
    counts
}

#[test]
fn round_robin_takes_turns() {
    let mut group = RoundRobin::new();
    assert_eq!(group.pick(), None);
    for member in ["a", "b", "c"] {
        assert!(group.insert(member));
    }
    assert!(!group.insert("b"));
    let picks: Vec<&str> = (0..6).map(|_| *group.pick().unwrap()).collect();
    assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn round_robin_is_fair() {
    let mut group = RoundRobin::new();
    for member in 0..7 {
        group.insert(member);
    }
    group.pick();
    group.pick();
    let picks = counts((0..7 * 50).map(|_| *group.pick().unwrap()));
    assert!(picks.values().all(|&count| count == 50), "{picks:?}");
}

#[test]
fn round_robin_remove_keeps_the_turn() {
    let mut group = RoundRobin::new();
    for member in ["a", "b", "c", "d"] {
        group.insert(member);
    }
    assert_eq!(group.pick(), Some(&"a"));
    assert_eq!(group.pick(), Some(&"b"));
    assert!(group.remove(&"a"));
    assert!(!group.remove(&"a"));
    assert_eq!(group.pick(), Some(&"c"));
    assert!(group.remove(&"d"));
    assert_eq!(group.pick(), Some(&"b"));
    assert_eq!(group.pick(), Some(&"c"));
    assert!(group.remove(&"c"));
    assert_eq!(group.pick(), Some(&"b"));
    assert!(group.remove(&"b"));
    assert_eq!(group.pick(), None);
}

#[test]
fn round_robin_pick_where_skips_and_passes_the_turn() {
    let mut group = RoundRobin::new();
    for member in 0..5 {
        group.insert(member);
    }
    assert_eq!(group.pick_where(|&m| m % 2 == 1), Some(&1));
    assert_eq!(group.pick_where(|&m| m % 2 == 1), Some(&3));
    assert_eq!(group.pick_where(|&m| m % 2 == 1), Some(&1));
    assert_eq!(group.pick_where(|_| false), None);
    assert_eq!(
        group.pick(),
        Some(&2),
        "a failed pick_where leaves the turn where it was"
    );
    let odd = counts((0..100).map(|_| *group.pick_where(|&m| m != 0 && m != 4).unwrap()));
    assert!(
        odd.values().all(|&count| (33..=34).contains(&count)),
        "{odd:?}"
    );
}

#[test]
fn weighted_shards_are_picked_in_proportion() {
    let mut shards = WeightedShards::new();
    assert_eq!(shards.pick(), None);
    shards.add(0, 1);
    shards.add(3, 2);
    shards.add(7, 5);
    shards.add(3, 1);
    assert_eq!(shards.total(), 9);
    assert_eq!(shards.members(3), 3);
    let picks = counts((0..9 * 100).map(|_| shards.pick().unwrap()));
    assert_eq!(picks, BTreeMap::from([(0, 100), (3, 300), (7, 500)]));
}

#[test]
fn weighted_shards_interleave_smoothly() {
    let mut shards = WeightedShards::new();
    shards.add(1, 2);
    shards.add(2, 1);
    let picks: Vec<usize> = (0..6).map(|_| shards.pick().unwrap()).collect();
    assert_eq!(picks, [1, 2, 1, 1, 2, 1]);
    let mut heavy = WeightedShards::new();
    heavy.add(0, 5);
    heavy.add(1, 1);
    heavy.add(2, 1);
    let cycle: Vec<usize> = (0..7).map(|_| heavy.pick().unwrap()).collect();
    assert_eq!(
        cycle,
        [0, 0, 1, 0, 2, 0, 0],
        "never more than three in a row"
    );
}

#[test]
fn weighted_shards_follow_removals() {
    let mut shards = WeightedShards::new();
    shards.add(0, 2);
    shards.add(1, 2);
    shards.pick();
    assert_eq!(shards.remove(0, 5), 2);
    assert_eq!(shards.remove(0, 1), 0);
    assert_eq!(shards.remove(9, 1), 0);
    assert_eq!(shards.total(), 2);
    assert!((0..10).all(|_| shards.pick() == Some(1)));
    assert_eq!(shards.remove(1, 1), 1);
    shards.add(2, 3);
    let picks = counts((0..4 * 25).map(|_| shards.pick().unwrap()));
    assert_eq!(picks, BTreeMap::from([(1, 25), (2, 75)]));
    shards.remove(1, 1);
    shards.remove(2, 3);
    assert!(shards.is_empty());
    assert_eq!(shards.pick(), None);
}
