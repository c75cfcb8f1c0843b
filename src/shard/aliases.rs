//! Topic aliases (MQTT 5.0 §3.3.2.3.4), both directions, and the shard-wide cap on what their
//! tables hold (`limits.topic_alias_bytes_per_shard_max`).
//!
//! Broker-to-client: each connection keeps aliases for its most recently used topics, up to the
//! smaller of the client's Topic Alias Maximum and `mqtt.topic_alias_to_client_max`. A topic seen
//! again is sent as its alias with an empty topic name; a new topic takes a free alias, or the
//! least recently used one's (the PUBLISH that re-binds it carries the full topic name, as the
//! spec requires). When the shard's cap has no room for a new topic, it is sent in full with no
//! alias (always allowed).
//!
//! Client-to-broker: the client binds aliases up to our Topic Alias Maximum (`mqtt.
//! topic_alias_max`); a binding the shard's cap has no room for is refused with DISCONNECT 0x97
//! Quota exceeded (the client relies on the binding, so it cannot just be forgotten).
//!
//! Each entry costs its topic's bytes plus `ALIAS_ENTRY_BYTES`, and holds a copy of the topic:
//! a slice would keep alive the whole read buffer the topic arrived in.

use std::collections::HashMap;

use bytestring::ByteString;

/// Estimated cost of one alias entry besides its topic: map entry, string header, use stamp.
pub const ALIAS_ENTRY_BYTES: usize = crate::config::budget::ALIAS_ENTRY_BYTES as usize;

/// The shard's cap on alias tables, and what they hold now.
#[derive(Debug)]
pub struct AliasAllowance {
    held: usize,
    max: usize,
    /// Broker-to-client aliases not assigned for want of room, not yet counted in the metrics.
    refused: u64,
}

impl AliasAllowance {
    pub fn new(max: usize) -> AliasAllowance {
        AliasAllowance {
            held: 0,
            max,
            refused: 0,
        }
    }

    /// The refusals since the last call (for the metrics).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Replaces an entry of `old` bytes by one of `new` bytes, if the cap allows.
    fn replace(&mut self, old: usize, new: usize) -> bool {
        let held = self.held.saturating_sub(old);
        if new > old && held.saturating_add(new) > self.max {
            return false;
        }
        self.held = held + new;
        true
    }

    fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }
}

fn entry_bytes(topic: &str) -> usize {
    topic.len() + ALIAS_ENTRY_BYTES
}

/// A copy of `topic` in an allocation of its own.
fn owned(topic: &ByteString) -> ByteString {
    ByteString::from(&**topic)
}

/// The aliases a client bound (client-to-broker). Most clients bind none: the table is
/// allocated at the first binding, and costs a connection one pointer until then.
#[derive(Debug, Default)]
pub struct ClientAliases {
    table: Option<Box<ClientTable>>,
}

#[derive(Debug, Default)]
struct ClientTable {
    by_alias: HashMap<u16, ByteString>,
    bytes: usize,
}

/// The shard's alias tables are at their cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasesFull;

impl ClientAliases {
    pub fn get(&self, alias: u16) -> Option<&ByteString> {
        self.table.as_ref()?.by_alias.get(&alias)
    }

    /// Binds `alias` to `topic`, replacing what it named.
    pub fn bind(
        &mut self,
        alias: u16,
        topic: &ByteString,
        allowance: &mut AliasAllowance,
    ) -> Result<(), AliasesFull> {
        let old = self.get(alias).map_or(0, |t| entry_bytes(t));
        let new = entry_bytes(topic);
        if !allowance.replace(old, new) {
            return Err(AliasesFull);
        }
        let table = self.table.get_or_insert_default();
        table.bytes = table.bytes - old + new;
        table.by_alias.insert(alias, owned(topic));
        Ok(())
    }

    /// Gives the table's bytes back to the shard (the connection is gone).
    pub fn release(&mut self, allowance: &mut AliasAllowance) {
        if let Some(table) = self.table.take() {
            allowance.release(table.bytes);
        }
    }
}

/// The aliases the broker bound (broker-to-client), up to `max`. The table is allocated at the
/// first alias: a connection that gets none (3.1.1, or aliases off) pays one pointer.
#[derive(Debug, Default)]
pub struct TopicAliases {
    max: u16,
    table: Option<Box<TopicTable>>,
}

#[derive(Debug, Default)]
struct TopicTable {
    by_topic: HashMap<ByteString, (u16, u64)>,
    clock: u64,
    bytes: usize,
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
        TopicAliases { max, table: None }
    }

    /// The alias to use for `topic`, or `None` when aliases are off or the shard's cap has no
    /// room for it (`Err(AliasesFull)`: send the full topic). Eviction scans the table, which is
    /// bounded by `max`.
    pub fn alias_for(
        &mut self,
        topic: &ByteString,
        allowance: &mut AliasAllowance,
    ) -> Result<Option<AliasUse>, AliasesFull> {
        if self.max == 0 {
            return Ok(None);
        }
        let table = self.table.get_or_insert_default();
        table.clock += 1;
        if let Some((alias, used)) = table.by_topic.get_mut(topic) {
            *used = table.clock;
            return Ok(Some(AliasUse::Known(*alias)));
        }
        let new = entry_bytes(topic);
        let (alias, old) = if table.by_topic.len() < usize::from(self.max) {
            let Ok(alias) = u16::try_from(table.by_topic.len() + 1) else {
                return Ok(None);
            };
            if !allowance.replace(0, new) {
                allowance.refused += 1;
                return Err(AliasesFull);
            }
            (alias, 0)
        } else {
            let Some((oldest, alias)) = table
                .by_topic
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(topic, (alias, _))| (topic.clone(), *alias))
            else {
                return Ok(None);
            };
            let old = entry_bytes(&oldest);
            if !allowance.replace(old, new) {
                allowance.refused += 1;
                return Err(AliasesFull);
            }
            table.by_topic.remove(&oldest);
            (alias, old)
        };
        table.bytes = table.bytes - old + new;
        table.by_topic.insert(owned(topic), (alias, table.clock));
        Ok(Some(AliasUse::Bind(alias)))
    }

    /// Gives the table's bytes back to the shard (the connection is gone).
    pub fn release(&mut self, allowance: &mut AliasAllowance) {
        if let Some(table) = self.table.take() {
            allowance.release(table.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_reuses_and_evicts_least_recently_used() {
        let mut allowance = AliasAllowance::new(usize::MAX);
        let mut aliases = TopicAliases::new(2);
        let (a, b, c) = (
            ByteString::from("a"),
            ByteString::from("b"),
            ByteString::from("c"),
        );
        let mut alias_for = |topic| aliases.alias_for(topic, &mut allowance);
        assert_eq!(alias_for(&a), Ok(Some(AliasUse::Bind(1))));
        assert_eq!(alias_for(&b), Ok(Some(AliasUse::Bind(2))));
        assert_eq!(alias_for(&a), Ok(Some(AliasUse::Known(1))));
        // b is the least recently used: c takes its alias.
        assert_eq!(alias_for(&c), Ok(Some(AliasUse::Bind(2))));
        assert_eq!(alias_for(&b), Ok(Some(AliasUse::Bind(1))));
        assert_eq!(TopicAliases::new(0).alias_for(&a, &mut allowance), Ok(None));
    }

    #[test]
    fn both_directions_stay_within_the_shard_cap_and_give_it_back() {
        let long = ByteString::from("x".repeat(100));
        let short = ByteString::from("y");
        let entry = 100 + ALIAS_ENTRY_BYTES;
        let mut allowance = AliasAllowance::new(2 * entry);
        let mut to_client = TopicAliases::new(8);
        let mut from_client = ClientAliases::default();
        assert_eq!(
            to_client.alias_for(&long, &mut allowance),
            Ok(Some(AliasUse::Bind(1)))
        );
        assert_eq!(from_client.bind(1, &long, &mut allowance), Ok(()));
        assert_eq!(allowance.held(), 2 * entry);
        // Full: a new topic goes without an alias, a new binding is refused...
        assert_eq!(
            to_client.alias_for(&short, &mut allowance),
            Err(AliasesFull)
        );
        assert_eq!(
            from_client.bind(2, &short, &mut allowance),
            Err(AliasesFull)
        );
        // ... but a known topic keeps its alias, and re-binding to a shorter topic fits.
        assert_eq!(
            to_client.alias_for(&long, &mut allowance),
            Ok(Some(AliasUse::Known(1)))
        );
        assert_eq!(from_client.bind(1, &short, &mut allowance), Ok(()));
        assert_eq!(allowance.held(), entry + 1 + ALIAS_ENTRY_BYTES);
        assert_eq!(from_client.get(1), Some(&short));
        from_client.release(&mut allowance);
        to_client.release(&mut allowance);
        assert_eq!(allowance.held(), 0);
    }
}
