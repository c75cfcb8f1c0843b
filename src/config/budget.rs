//! The memory budget: the worst case one shard can need, computed from `[limits]` term by term,
//! checked against `limits.memory_budget_bytes` before anything starts.
//!
//! Every term is a count times a size in bytes, both taken from the limits, so the sum is an upper
//! bound on what client input can make a shard hold (fixed-size bookkeeping is estimated per
//! entry and rounded up). Messages shared between sessions are counted once per session, as if
//! every queued message were distinct. Session terms count `sessions_per_shard_max` (online and
//! offline) times the per-session limits, or the shard-wide cap where that is smaller (the
//! messages sessions hold, queued and in flight, and their subscriptions); connection terms the
//! connection limit of the shard.

use std::fmt;

use super::{Config, ConfigError};

/// Bytes asked of the kernel per read beyond the frame being assembled (`connection.rs`).
pub const READ_CHUNK_BYTES: u64 = 16 * 1024;
/// Bytes waiting in a connection's write buffer above which deliveries stay in the outbox.
pub const WRITE_BUFFER_BYTES: u64 = 64 * 1024;
/// The read buffer each WebSocket connection keeps for its life (`ws.rs`).
pub const WEBSOCKET_READ_BUFFER_BYTES: u64 = 8 * 1024;
/// The delivery runs a connection and its writer track for the delivery latency (`shard/unsent.rs`:
/// two lists of at most 256 runs of 40 bytes; asserted there).
pub const DELIVERY_RUNS_BYTES: u64 = 2 * 256 * 40;
/// Packets a connection may send before its CONNACK is out (`shard/mod.rs`).
pub const EARLY_PACKETS_MAX: u64 = 64;
/// Estimated fixed cost of one connection: its tasks, `Conn`, session and map entries.
const CONNECTION_OVERHEAD_BYTES: u64 = 4 * 1024;
/// Estimated cost of one queued or in-flight delivery besides the message bytes.
const DELIVERY_OVERHEAD_BYTES: u64 = 128;
/// Estimated cost of one QoS 2 packet id received and awaiting PUBREL (a hash set entry).
const INCOMING_QOS2_ID_BYTES: u64 = 16;
/// Estimated cost of one subscription besides its filter text: session map, trie node, interest.
const SUBSCRIPTION_OVERHEAD_BYTES: u64 = 256;
/// Estimated cost of one retained message besides its bytes (`Message::size_bytes` counts 64).
const RETAINED_OVERHEAD_BYTES: u64 = 128;
/// Estimated cost of one pending control request (a barrier or a claim).
const CONTROL_OVERHEAD_BYTES: u64 = 512;
/// Estimated cost of one topic alias besides its topic (`shard/aliases.rs`).
pub const ALIAS_ENTRY_BYTES: u64 = 64;
/// The size bound of one `Mail` (asserted in `mail.rs`).
const MAIL_BYTES: u64 = 64;

/// One line of the budget: `count` x `each_bytes`, and the keys that set them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub name: &'static str,
    pub count: u64,
    pub each_bytes: u64,
    /// The keys to lower to make this term smaller.
    pub keys: &'static str,
}

impl Term {
    pub fn total_bytes(&self) -> u64 {
        self.count.saturating_mul(self.each_bytes)
    }
}

/// The worst case of one shard, term by term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub shards: usize,
    pub terms: Vec<Term>,
    pub budget_bytes: u64,
}

impl Budget {
    /// The worst case of one shard of `shards` under `config`'s limits.
    pub fn of(config: &Config, shards: usize) -> Budget {
        let limits = &config.limits;
        let shards_u64 = shards.max(1) as u64;
        let packet = u64::from(limits.packet_bytes_max);
        let topic = u64::from(limits.topic_bytes_max);
        let inflight = u64::from(limits.inflight_messages_max);
        // A session's QoS 2 ids awaiting PUBREL: 5.0 clients are held to the Receive Maximum,
        // 3.x clients to a cap of their own.
        let awaiting_pubrel = inflight.max(u64::from(limits.incoming_qos2_v3_max));
        let connections = u64::from(limits.connections_per_shard_max)
            .min(u64::from(limits.connections_max).div_ceil(shards_u64));
        let sessions = u64::from(limits.sessions_per_shard_max);
        let peers = shards_u64.saturating_sub(1);
        // Any connection may be a WebSocket one once a WebSocket listener exists: it holds its
        // read buffer, a frame and a fragmented message being assembled (at most the largest
        // listener's limits) and a copy of the batch being written.
        let websocket_limits = config
            .listeners
            .ws
            .values()
            .cloned()
            .chain(config.listeners.wss.values().map(|l| l.websocket()))
            .map(|l| u64::from(l.frame_bytes_max) + u64::from(l.message_bytes_max))
            .max();
        let mailbox = u64::from(config.runtime.mailbox_messages_max);
        let subscriptions = sessions
            .saturating_mul(u64::from(limits.subscriptions_per_session_max))
            .min(limits.subscriptions_per_shard_max);
        let term = |name, count, each_bytes, keys| Term {
            name,
            count,
            each_bytes,
            keys,
        };
        let terms = vec![
            // A connection's read is at most one chunk of the shard's buffer (or a partial packet
            // waiting for room); buffers beyond that come from the shard-wide allowance below.
            term(
                "connections (state + read + early packets + delivery runs)",
                connections,
                CONNECTION_OVERHEAD_BYTES
                    + READ_CHUNK_BYTES
                    + DELIVERY_RUNS_BYTES
                    + EARLY_PACKETS_MAX * DELIVERY_OVERHEAD_BYTES,
                "limits.connections_per_shard_max",
            ),
            // Connections within their fair share write even at the cap, a share in their
            // buffer and one in the write under way: three times it at most (`shard/writes.rs`).
            term(
                "write buffers (shard-wide cap, three times)",
                1,
                connections
                    .saturating_mul(WRITE_BUFFER_BYTES + packet)
                    .min(limits.write_buffer_bytes_per_shard_max.saturating_mul(3)),
                "limits.write_buffer_bytes_per_shard_max",
            ),
            term(
                "partly read packets (shard-wide allowance)",
                1,
                limits.partial_packet_bytes_per_shard_max,
                "limits.partial_packet_bytes_per_shard_max",
            ),
            term(
                "WebSocket buffers (read + frame + message + write)",
                websocket_limits.map_or(0, |_| connections),
                websocket_limits.map_or(0, |limits| {
                    WEBSOCKET_READ_BUFFER_BYTES + limits + WRITE_BUFFER_BYTES
                }),
                "listeners.ws.<name>.message_bytes_max, listeners.ws.<name>.frame_bytes_max",
            ),
            term(
                "messages held by sessions (queued + in flight)",
                1,
                sessions
                    .saturating_mul(
                        limits
                            .outbox_bytes_max
                            .saturating_add(inflight.saturating_mul(packet)),
                    )
                    // Sessions under their fair share still queue at the cap: at most twice it.
                    .min(limits.queued_bytes_per_shard_max.saturating_mul(2)),
                "limits.queued_bytes_per_shard_max, limits.outbox_bytes_max",
            ),
            term(
                "entries of messages held by sessions",
                sessions
                    .saturating_mul(u64::from(limits.outbox_messages_max) + inflight)
                    .min(limits.queued_messages_per_shard_max.saturating_mul(2)),
                DELIVERY_OVERHEAD_BYTES,
                "limits.queued_messages_per_shard_max, limits.outbox_messages_max",
            ),
            term(
                "QoS 2 ids from clients awaiting PUBREL",
                sessions.saturating_mul(awaiting_pubrel),
                INCOMING_QOS2_ID_BYTES,
                "limits.sessions_per_shard_max, limits.inflight_messages_max, \
                 limits.incoming_qos2_v3_max",
            ),
            term(
                "subscriptions (entries)",
                subscriptions,
                SUBSCRIPTION_OVERHEAD_BYTES,
                "limits.subscriptions_per_shard_max",
            ),
            term(
                "subscription filters (shard-wide cap)",
                1,
                subscriptions
                    .saturating_mul(topic)
                    .min(limits.subscription_bytes_per_shard_max),
                "limits.subscription_bytes_per_shard_max, limits.topic_bytes_max",
            ),
            term(
                "topic aliases (both directions)",
                1,
                connections
                    .saturating_mul(
                        u64::from(config.mqtt.topic_alias_max)
                            + u64::from(config.mqtt.topic_alias_to_client_max),
                    )
                    .saturating_mul(topic + ALIAS_ENTRY_BYTES)
                    .min(limits.topic_alias_bytes_per_shard_max),
                "limits.topic_alias_bytes_per_shard_max",
            ),
            term(
                "wills (shard-wide cap)",
                1,
                sessions
                    .saturating_mul(u64::from(limits.will_bytes_max))
                    .min(limits.will_bytes_per_shard_max),
                "limits.will_bytes_per_shard_max, limits.will_bytes_max",
            ),
            term(
                "retained store (this shard's part)",
                1,
                limits.retained_bytes_max.div_ceil(shards_u64)
                    + limits.retained_messages_max.div_ceil(shards_u64) * RETAINED_OVERHEAD_BYTES,
                "limits.retained_bytes_max, limits.retained_messages_max",
            ),
            term(
                "cross-shard rings and queues",
                peers * 2,
                mailbox * MAIL_BYTES,
                "runtime.mailbox_messages_max",
            ),
            term(
                "pending control requests",
                u64::from(limits.control_pending_max),
                CONTROL_OVERHEAD_BYTES,
                "limits.control_pending_max",
            ),
            term(
                "receive buffer pool",
                u64::from(config.runtime.recv_buffers),
                u64::from(config.runtime.recv_buffer_bytes),
                "runtime.recv_buffers, runtime.recv_buffer_bytes",
            ),
            term(
                "io_uring buffers",
                1,
                config.runtime.io_memory_bytes,
                "runtime.io_memory_bytes",
            ),
        ];
        Budget {
            shards,
            terms,
            budget_bytes: limits.memory_budget_bytes,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.terms
            .iter()
            .fold(0, |sum: u64, term| sum.saturating_add(term.total_bytes()))
    }

    /// The largest term: the first thing to lower.
    pub fn largest(&self) -> Option<&Term> {
        self.terms.iter().max_by_key(|term| term.total_bytes())
    }

    /// Refuses a worst case over the budget, naming the largest term and its keys.
    pub fn check(&self) -> Result<(), ConfigError> {
        let total = self.total_bytes();
        if total <= self.budget_bytes {
            return Ok(());
        }
        let (name, keys) = self
            .largest()
            .map_or(("", ""), |term| (term.name, term.keys));
        Err(ConfigError::invalid(
            "limits.memory_budget_bytes",
            self.budget_bytes,
            format!(
                "the worst case of one shard ({} shards) is {total} bytes ({}), over the budget; \
                 the largest term is {name}",
                self.shards,
                human(total)
            ),
            format!("lower {keys}, or raise limits.memory_budget_bytes"),
        ))
    }
}

impl fmt::Display for Budget {
    /// One line per term, then the total against the budget.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory budget per shard ({} shards):", self.shards)?;
        for term in &self.terms {
            writeln!(
                f,
                "  {:<50} {:>10} x {:>12} B = {:>10}  ({})",
                term.name,
                term.count,
                term.each_bytes,
                human(term.total_bytes()),
                term.keys
            )?;
        }
        write!(
            f,
            "  {:<50} {:>40} of {} (limits.memory_budget_bytes)",
            "worst case",
            human(self.total_bytes()),
            human(self.budget_bytes)
        )
    }
}

/// Bytes in the largest binary unit that keeps a whole part.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(name) if unit == 0 => format!("{bytes} {name}"),
        Some(name) => format!("{value:.1} {name}"),
        None => format!("{bytes} B"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_defaults_fit_the_default_budget_on_any_shard_count() {
        for shards in 1..=256 {
            let budget = Budget::of(&Config::default(), shards);
            assert!(budget.check().is_ok(), "{budget}");
        }
    }

    fn term<'a>(budget: &'a Budget, name: &str) -> &'a Term {
        let found = budget.terms.iter().find(|term| term.name == name);
        found.unwrap_or_else(|| panic!("no term {name:?} in {budget}"))
    }

    #[test]
    fn the_defaults_with_a_websocket_listener_fit_the_default_budget() {
        let budget = Budget::of(&with_websocket_listener(), 1);
        assert!(budget.check().is_ok(), "{budget}");
        let websocket = term(
            &budget,
            "WebSocket buffers (read + frame + message + write)",
        );
        assert_eq!(websocket.count, 100_000);
        assert_eq!(websocket.each_bytes, (8 + 256 + 256 + 64) * 1024);
        assert_eq!(
            term(&Budget::of(&Config::default(), 1), websocket.name).total_bytes(),
            0
        );
    }

    #[test]
    fn a_small_budget_names_the_largest_term_and_its_keys() {
        let mut config = Config::default();
        config.limits.connections_per_shard_max = 1000;
        config.limits.connections_max = 1000;
        config.limits.queued_bytes_per_shard_max = 1 << 40;
        config.limits.memory_budget_bytes = 1 << 30;
        let error = Budget::of(&config, 2).check().unwrap_err().to_string();
        assert!(
            error.contains("limits.memory_budget_bytes = 1073741824"),
            "{error}"
        );
        assert!(
            error.contains("the largest term is messages held by sessions"),
            "{error}"
        );
        assert!(
            error.contains("lower limits.queued_bytes_per_shard_max, limits.outbox_bytes_max"),
            "{error}"
        );
        config.limits.queued_bytes_per_shard_max = 1 << 30;
        config.limits.subscription_bytes_per_shard_max = 1 << 40;
        let error = Budget::of(&config, 2).check().unwrap_err().to_string();
        assert!(
            error.contains("the largest term is subscription filters"),
            "{error}"
        );
        assert!(
            error.contains("lower limits.subscription_bytes_per_shard_max, limits.topic_bytes_max"),
            "{error}"
        );
    }

    #[test]
    fn each_term_is_count_times_size() {
        let mut config = Config::default();
        config.limits.connections_per_shard_max = 10;
        config.limits.sessions_per_shard_max = 10;
        config.limits.connections_max = 10;
        config.limits.outbox_bytes_max = 1_000_000;
        config.limits.outbox_messages_max = 10;
        config.limits.inflight_messages_max = 2;
        config.limits.packet_bytes_max = 1000;
        let budget = Budget::of(&config, 1);
        let held = term(&budget, "messages held by sessions (queued + in flight)");
        assert_eq!(held.total_bytes(), 10 * (1_000_000 + 2 * 1000));
        let entries = term(&budget, "entries of messages held by sessions");
        assert_eq!(entries.count, 10 * (10 + 2));
        assert_eq!(entries.each_bytes, DELIVERY_OVERHEAD_BYTES);
        assert_eq!(
            budget.total_bytes(),
            budget.terms.iter().map(Term::total_bytes).sum::<u64>()
        );
    }

    #[test]
    fn session_terms_are_bounded_by_the_shard_caps() {
        let mut config = Config::default();
        config.limits.sessions_per_shard_max = 100_000;
        config.limits.queued_bytes_per_shard_max = 1 << 30;
        config.limits.queued_messages_per_shard_max = 5_000;
        config.limits.subscriptions_per_shard_max = 7_000;
        let budget = Budget::of(&config, 4);
        // Twice the caps: sessions under their fair share queue over them (docs/HARDENING.md).
        let held = term(&budget, "messages held by sessions (queued + in flight)");
        assert_eq!(held.total_bytes(), 2 << 30);
        let entries = term(&budget, "entries of messages held by sessions");
        assert_eq!(entries.count, 10_000);
        let subscriptions = term(&budget, "subscriptions (entries)");
        assert_eq!(subscriptions.count, 7_000);
        // Sessions times the per-session limits where that is the smaller.
        config.limits.sessions_per_shard_max = 100;
        config.limits.connections_per_shard_max = 100;
        config.limits.subscriptions_per_session_max = 3;
        let budget = Budget::of(&config, 4);
        assert_eq!(term(&budget, "subscriptions (entries)").count, 300);
    }

    pub(crate) fn with_websocket_listener() -> Config {
        let mut config = Config::default();
        config
            .listeners
            .ws
            .insert(String::from("ws"), Default::default());
        config
    }

    #[test]
    fn the_default_budget_is_what_the_default_limits_need_not_more() {
        // The default budget is the worst case of the defaults with a WebSocket listener rounded
        // up, not a number picked to let anything start: the slack is under a fifth of it.
        let config = with_websocket_listener();
        let worst = (1..=256)
            .map(|shards| Budget::of(&config, shards).total_bytes())
            .max()
            .unwrap_or(0);
        let budget = Config::default().limits.memory_budget_bytes;
        assert!(
            worst <= budget && budget - worst < worst / 5,
            "{worst} of {budget}"
        );
    }

    #[test]
    fn connections_per_shard_are_capped_by_the_broker_total() {
        let mut config = Config::default();
        config.limits.connections_max = 1000;
        config.limits.connections_per_shard_max = 1000;
        let budget = Budget::of(&config, 4);
        assert_eq!(budget.terms.first().map(|term| term.count), Some(250));
    }

    #[test]
    fn a_realistic_small_config_fits_a_few_gib() {
        let mut config = Config::default();
        config.limits.connections_per_shard_max = 10_000;
        config.limits.sessions_per_shard_max = 10_000;
        config.limits.outbox_bytes_max = 262_144;
        config.limits.inflight_messages_max = 8;
        config.limits.packet_bytes_max = 65_536;
        config.limits.subscriptions_per_session_max = 16;
        config.limits.topic_bytes_max = 256;
        config.limits.retained_bytes_max = 1 << 28;
        config.limits.will_bytes_max = 4096;
        // Half the default shard-wide caps on held messages (which sessions under their fair
        // share may exceed up to twice), the default cap on subscriptions.
        config.limits.queued_bytes_per_shard_max = 1 << 29;
        config.limits.queued_messages_per_shard_max = 500_000;
        config.limits.memory_budget_bytes = 4 << 30;
        let budget = Budget::of(&config, 2);
        assert!(budget.check().is_ok(), "{budget}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
