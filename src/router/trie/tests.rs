use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// The reference matcher: split both strings and compare level by level, straight from the rules
/// in the module docs.
pub(crate) fn naive_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    let last = filter.len() - 1;
    if topic.starts_with('$') && matches!(filter.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    for (i, level) in filter.iter().enumerate() {
        match (*level, topic_levels.get(i)) {
            ("#", _) if i == last => return true,
            ("+", Some(_)) => {}
            (level, Some(&topic_level)) if level == topic_level => {}
            _ => return false,
        }
    }
    filter.len() == topic_levels.len()
}

fn matched_filters(trie: &Trie<String>, topic: &str) -> Vec<String> {
    let mut found = Vec::new();
    trie.for_each_match(topic, |filter| found.push(filter.clone()));
    found.sort();
    found
}

fn check(filter: &str, topic: &str, expected: bool) {
    assert_eq!(
        naive_matches(filter, topic),
        expected,
        "naive: {filter:?} vs {topic:?}"
    );
    let mut trie = Trie::new();
    trie.get_or_insert_with(filter, || filter.to_owned());
    let found = matched_filters(&trie, topic);
    let expected_found = if expected {
        vec![filter.to_owned()]
    } else {
        vec![]
    };
    assert_eq!(found, expected_found, "trie: {filter:?} vs {topic:?}");
}

#[test]
fn matching_rules() {
    let table: &[(&str, &str, bool)] = &[
        // Exact levels.
        ("a", "a", true),
        ("a", "b", false),
        ("a/b", "a/b", true),
        ("a/b", "a", false),
        ("a", "a/b", false),
        ("a/b", "a/bc", false),
        // Empty levels are levels.
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("/a", "/a", true),
        ("/a", "a", false),
        ("a/", "a/", true),
        ("a/", "a", false),
        ("/", "/", true),
        // '+' is exactly one level, an empty one included.
        ("+", "a", true),
        ("+", "", true),
        ("+", "a/b", false),
        ("+", "/", false),
        ("+/+", "/x", true),
        ("+/+", "a/b", true),
        ("+/+", "a", false),
        ("+/+", "a/b/c", false),
        ("/+", "/x", true),
        ("/+", "x", false),
        ("a/+", "a/", true),
        ("a/+", "a", false),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a//c", true),
        ("a/+/c", "a/b/d", false),
        // '#' matches the parent and any number of children.
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "/", true),
        ("#", "", true),
        ("a/#", "a", true),
        ("a/#", "a/b", true),
        ("a/#", "a/b/c", true),
        ("a/#", "a/", true),
        ("a/#", "b", false),
        ("a/#", "ab", false),
        ("a/b/#", "a", false),
        ("/#", "/a", true),
        ("/#", "a", false),
        ("a/+/#", "a/b", true),
        ("a/+/#", "a/b/c/d", true),
        ("a/+/#", "a", false),
        ("+/#", "a", true),
        ("+/#", "a/b", true),
        // '$' topics are not matched by a wildcard in the first level.
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("+", "$SYS", false),
        ("+/#", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/+", "$SYS/x", true),
        ("$SYS/x", "$SYS/x", true),
        ("a/+", "a/$x", true),
        ("a/#", "a/$x", true),
        ("#", "a/$x", true),
        // Malformed filters match literally and do not panic.
        ("a/#/b", "a/#/b", true),
        ("a/#/b", "a/x/b", false),
        ("a+", "a+", true),
        ("a+", "ab", false),
        ("#/a", "x/a", false),
        ("", "", true),
        ("", "a", false),
    ];
    for &(filter, topic, expected) in table {
        check(filter, topic, expected);
    }
}

#[test]
fn every_matching_filter_once() {
    let filters = [
        "#", "+", "a", "a/#", "a/+", "+/#", "+/b", "a/b", "a/b/#", "$SYS/#", "+/+/#",
    ];
    let mut trie = Trie::new();
    for filter in filters {
        trie.get_or_insert_with(filter, || filter.to_owned());
    }
    assert_eq!(trie.len(), filters.len());
    let expected = |topic: &str| {
        let mut expected: Vec<String> = filters
            .iter()
            .filter(|f| naive_matches(f, topic))
            .map(|f| f.to_string())
            .collect();
        expected.sort();
        expected
    };
    for topic in ["a", "a/b", "a/b/c", "$SYS/x", "b", "", "/", "a/"] {
        assert_eq!(matched_filters(&trie, topic), expected(topic), "{topic:?}");
    }
    assert_eq!(
        matched_filters(&trie, "a/b"),
        ["+/#", "+/+/#", "+/b", "#", "a/#", "a/+", "a/b", "a/b/#"]
            .map(String::from)
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}

#[test]
fn get_insert_remove_and_prune() {
    let mut trie = Trie::new();
    assert!(trie.is_empty());
    *trie.get_or_insert_with("a/+/c", || 1) += 10;
    *trie.get_or_insert_with("a/+/c", || 100) += 1;
    trie.get_or_insert_with("a/#", || 2);
    trie.get_or_insert_with("#", || 3);
    assert_eq!(trie.len(), 3);
    assert_eq!(trie.get("a/+/c"), Some(&12));
    assert_eq!(trie.get("a/#"), Some(&2));
    assert_eq!(trie.get("#"), Some(&3));
    assert_eq!(trie.get("a/+"), None);
    assert_eq!(trie.get("a"), None);
    *trie.get_mut("a/#").unwrap() = 20;
    assert_eq!(trie.get("a/#"), Some(&20));
    assert_eq!(trie.remove("a/+"), None);
    assert_eq!(trie.remove("a/+/c"), Some(12));
    assert_eq!(trie.remove("a/+/c"), None);
    assert_eq!(trie.node_count(), 2, "root and 'a' (still holds a/#)");
    assert_eq!(trie.remove("a/#"), Some(20));
    assert_eq!(trie.remove("#"), Some(3));
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1);
}

#[test]
fn iter_gives_back_the_filter_text() {
    let filters = ["#", "+", "/", "", "a//b", "a/#", "+/+/#", "$SYS/+", "a/#/b"];
    let mut trie = Trie::new();
    for (i, filter) in filters.iter().enumerate() {
        trie.get_or_insert_with(filter, || i);
    }
    let mut listed: Vec<(String, usize)> = trie.iter().map(|(f, &v)| (f, v)).collect();
    listed.sort();
    let mut expected: Vec<(String, usize)> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| (f.to_string(), i))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn deep_topics_do_not_recurse() {
    let deep_topic = vec!["x"; 100_000].join("/");
    let deep_filter = vec!["+"; 100_000].join("/");
    let mut trie = Trie::new();
    trie.get_or_insert_with(&deep_filter, || 1);
    trie.get_or_insert_with("#", || 2);
    let mut sum = 0;
    trie.for_each_match(&deep_topic, |v| sum += v);
    assert_eq!(sum, 3);
    assert_eq!(trie.remove(&deep_filter), Some(1));
    assert_eq!(trie.node_count(), 1);
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "a", "b", "$", "$a", "+", "#"])
}

fn levels(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..=max).prop_map(|levels| levels.join("/"))
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String),
    Remove(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        levels(4).prop_map(Op::Insert),
        levels(4).prop_map(Op::Remove)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_like_the_naive_matcher(
        filters in prop::collection::btree_set(levels(4), 0..24),
        topics in prop::collection::vec(levels(5), 1..16),
    ) {
        let mut trie = Trie::new();
        for filter in &filters {
            trie.get_or_insert_with(filter, || filter.clone());
        }
        for topic in &topics {
            let expected: Vec<String> =
                filters.iter().filter(|f| naive_matches(f, topic)).cloned().collect();
            prop_assert_eq!(matched_filters(&trie, topic), expected, "topic {:?}", topic);
        }
    }

    #[test]
    fn agrees_with_a_map_model(ops in prop::collection::vec(op(), 0..64)) {
        let mut trie = Trie::new();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(filter) => {
                    let stored = trie.get_or_insert_with(&filter, || filter.clone()).clone();
                    let modelled = model.entry(filter.clone()).or_insert(filter).clone();
                    prop_assert_eq!(stored, modelled);
                }
                Op::Remove(filter) => {
                    prop_assert_eq!(trie.remove(&filter), model.remove(&filter));
                }
            }
            prop_assert_eq!(trie.len(), model.len());
        }
        let listed: BTreeMap<String, String> =
            trie.iter().map(|(filter, value)| (filter, value.clone())).collect();
        prop_assert_eq!(&listed, &model);
        for filter in model.keys() {
            prop_assert_eq!(trie.get(filter), Some(filter));
        }
        for filter in model.keys() {
            prop_assert!(trie.remove(filter).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1);
    }
}
