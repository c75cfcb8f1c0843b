//! The subscription trie against a naive matcher (MQTT 4.7). The input is lines: the first is a
//! topic name, the others filters. Valid filters go into the trie; the set of filters the trie
//! matches for the topic must be the set the naive matcher accepts, also after removing every
//! other filter (which exercises pruning).

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use ringmq_fuzz::router::Trie;

/// 4.7.1: `#` alone in the last level, `+` alone in its level; not empty.
fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "#" => i + 1 == levels.len(),
            "+" => true,
            other => !other.contains(['#', '+']),
        })
}

fn naive_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(filter.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    for (i, level) in filter.iter().enumerate() {
        match (*level, topic_levels.get(i)) {
            ("#", _) if i + 1 == filter.len() => return true,
            ("+", Some(_)) => {}
            (level, Some(&topic_level)) if level == topic_level => {}
            _ => return false,
        }
    }
    filter.len() == topic_levels.len()
}

fn check(trie: &Trie<String>, filters: &BTreeSet<&str>, topic: &str) {
    let mut found = BTreeSet::new();
    trie.for_each_match(topic, |filter| {
        assert!(found.insert(filter.clone()), "{filter:?} matched twice");
    });
    let expected: BTreeSet<String> = filters
        .iter()
        .filter(|filter| naive_matches(filter, topic))
        .map(|filter| filter.to_string())
        .collect();
    assert_eq!(found, expected, "topic {topic:?}");
    assert_eq!(trie.len(), filters.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(topic) = lines.next() else {
        return;
    };
    if topic.is_empty() || topic.contains(['#', '+']) {
        return;
    }
    let mut filters: BTreeSet<&str> = lines.filter(|filter| valid_filter(filter)).collect();
    let mut trie = Trie::new();
    for filter in &filters {
        trie.get_or_insert_with(filter, || filter.to_string());
    }
    check(&trie, &filters, topic);
    let removed: Vec<&str> = filters.iter().step_by(2).copied().collect();
    for filter in removed {
        assert_eq!(trie.remove(filter).as_deref(), Some(filter));
        filters.remove(filter);
    }
    check(&trie, &filters, topic);
});
