use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::router::trie::tests::naive_matches;

fn matching(tree: &TopicTree<String>, filter: &str) -> Vec<String> {
    let mut found = Vec::new();
    tree.for_each_matching(filter, |topic, value| {
        assert_eq!(topic, value, "the text handed to visit is the stored topic");
        found.push(topic.to_owned());
    });
    found.sort();
    found
}

fn check(filter: &str, topics: &[&str], expected: &[&str]) {
    let mut tree = TopicTree::new();
    for topic in topics {
        tree.insert(topic, topic.to_string());
    }
    let mut expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(matching(&tree, filter), expected, "filter {filter:?}");
}

#[test]
fn matching_rules() {
    let topics = [
        "a", "a/b", "a/b/c", "a//c", "/a", "", "$SYS/x", "$SYS", "b/$x", "a/",
    ];
    let table: &[(&str, &[&str])] = &[
        ("a", &["a"]),
        ("a/b", &["a/b"]),
        ("#", &["a", "a/b", "a/b/c", "a//c", "/a", "", "b/$x", "a/"]),
        ("+", &["a", ""]),
        ("+/+", &["a/b", "/a", "a/", "b/$x"]),
        ("a/#", &["a", "a/b", "a/b/c", "a//c", "a/"]),
        ("a/+", &["a/b", "a/"]),
        ("a/+/c", &["a/b/c", "a//c"]),
        ("a/+/#", &["a/b", "a/b/c", "a//c", "a/"]),
        ("/#", &["/a", ""]),
        ("+/$x", &["b/$x"]),
        ("$SYS/#", &["$SYS/x", "$SYS"]),
        ("$SYS/+", &["$SYS/x"]),
        ("+/x", &[]),
        ("", &[""]),
        ("a/#/b", &[]),
        ("nothing/#", &[]),
    ];
    for &(filter, expected) in table {
        check(filter, &topics, expected);
    }
}

#[test]
fn insert_replace_get_remove() {
    let mut tree = TopicTree::new();
    assert_eq!(tree.insert("a/b", 1), None);
    assert_eq!(tree.insert("a/b", 2), Some(1));
    assert_eq!(tree.insert("a", 3), None);
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.get("a/b"), Some(&2));
    assert_eq!(tree.get("a/c"), None);
    assert_eq!(tree.remove("a"), Some(3));
    assert_eq!(tree.remove("a"), None);
    assert_eq!(tree.node_count(), 3);
    assert_eq!(tree.remove("a/b"), Some(2));
    assert!(tree.is_empty());
    assert_eq!(tree.node_count(), 1);
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "a", "b", "$", "$a", "+", "#"])
}

fn levels(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..=max).prop_map(|levels| levels.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_the_naive_matcher_and_a_map_model(
        ops in prop::collection::vec((any::<bool>(), levels(4)), 0..64),
        filters in prop::collection::vec(levels(5), 1..16),
    ) {
        let mut tree = TopicTree::new();
        let mut model = BTreeMap::new();
        for (insert, topic) in ops {
            if insert {
                prop_assert_eq!(
                    tree.insert(&topic, topic.clone()),
                    model.insert(topic.clone(), topic)
                );
            } else {
                prop_assert_eq!(tree.remove(&topic), model.remove(&topic));
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        for topic in model.keys() {
            prop_assert_eq!(tree.get(topic), Some(topic));
        }
        for filter in &filters {
            let expected: Vec<String> =
                model.keys().filter(|t| naive_matches(filter, t)).cloned().collect();
            prop_assert_eq!(matching(&tree, filter), expected, "filter {:?}", filter);
        }
        for topic in model.keys() {
            prop_assert!(tree.remove(topic).is_some());
        }
        prop_assert!(tree.is_empty());
        prop_assert_eq!(tree.node_count(), 1);
    }
}
