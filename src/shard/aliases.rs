//! Broker-to-client topic aliases (MQTT 5.0 §3.3.2.3.4): each connection keeps aliases for its
//! most recently used topics, up to the smaller of the client's Topic Alias Maximum and
//! `mqtt.topic_alias_to_client_max`. A topic seen again is sent as its alias with an empty topic
//! name; a new topic takes a free alias, or the least recently used one's (the PUBLISH that
//! re-binds it carries the full topic name, as the spec requires).

use std::collections::HashMap;

use bytestring::ByteString;

#[derive(Debug, Default)]
pub struct TopicAliases {
    max: u16,
    by_topic: HashMap<ByteString, (u16, u64)>,
    clock: u64,
}

/// How to send a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// The alias is bound: send it with an empty topic name.
    Known(u16),
    /// Bind the alias: send it with the full topic name.
    Bind(u16),
}

impl TopicAliases {
    pub fn new(max: u16) -> TopicAliases {
        TopicAliases {
            max,
            ..TopicAliases::default()
        }
    }

    /// The alias to use for `topic`, or `None` when aliases are off. Eviction scans the table,
    /// which is bounded by `max`.
    pub fn alias_for(&mut self, topic: &ByteString) -> Option<AliasUse> {
        if self.max == 0 {
            return None;
        }
        self.clock += 1;
        if let Some((alias, used)) = self.by_topic.get_mut(topic) {
            *used = self.clock;
            return Some(AliasUse::Known(*alias));
        }
        let alias = if self.by_topic.len() < usize::from(self.max) {
            u16::try_from(self.by_topic.len() + 1).ok()?
        } else {
            let oldest = self
                .by_topic
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(topic, (alias, _))| (topic.clone(), *alias))?;
            self.by_topic.remove(&oldest.0);
            oldest.1
        };
        self.by_topic.insert(topic.clone(), (alias, self.clock));
        Some(AliasUse::Bind(alias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_reuses_and_evicts_least_recently_used() {
        let mut aliases = TopicAliases::new(2);
        let (a, b, c) = (
            ByteString::from("a"),
            ByteString::from("b"),
            ByteString::from("c"),
        );
        assert_eq!(aliases.alias_for(&a), Some(AliasUse::Bind(1)));
        assert_eq!(aliases.alias_for(&b), Some(AliasUse::Bind(2)));
        assert_eq!(aliases.alias_for(&a), Some(AliasUse::Known(1)));
        // b is the least recently used: c takes its alias.
        assert_eq!(aliases.alias_for(&c), Some(AliasUse::Bind(2)));
        assert_eq!(aliases.alias_for(&b), Some(AliasUse::Bind(1)));
        assert_eq!(TopicAliases::new(0).alias_for(&a), None);
    }
}
