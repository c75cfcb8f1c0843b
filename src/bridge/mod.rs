//! Bridges: this broker as an MQTT client of other brokers (docs/BRIDGES.md).
//!
//! A bridge is one task on one shard (`shard` in its config, else the hash of its name). It
//! holds two connections: a session on its own shard (`local`: to the broker it is a client,
//! its subscriptions are the `out` rules) and a client connection to the remote broker
//! (`remote`). `relay` passes packets between them, rewriting topics by the rules; `link`
//! drives one remote connection; this file reconnects with exponential backoff and jitter and
//! publishes the bridge's state as `$SYS/broker/connection/<name>/state` (1 or 0, retained,
//! as Mosquitto does).

mod handshake;
mod link;
mod local;
mod relay;
pub mod remote;
pub mod rules;
pub mod set;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Bridge, BridgeVersion};
use crate::metrics::bridge::BridgeStats;
use crate::protocol::Version;
use crate::server::ShardShell;

use local::Local;
pub use relay::{HOPS_PROPERTY, Relay};

/// The shard a bridge runs on: its configured one, else a stable hash of its name (FNV-1a, the
/// same on every start).
pub fn shard_of(name: &str, bridge: &Bridge, shard_count: usize) -> usize {
    if let Some(shard) = bridge.shard {
        return shard.min(shard_count.saturating_sub(1));
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % shard_count.max(1) as u64).unwrap_or(0)
}

/// The client id of a bridge's session on this broker.
pub fn local_client_id(name: &str) -> String {
    format!("$bridge/{name}")
}

/// What a bridge knows of its configuration, resolved once at start.
#[derive(Clone)]
pub struct Settings {
    pub name: String,
    pub bridge: Bridge,
    pub version: Version,
    pub tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    /// How long the local session is kept while the bridge is not running.
    pub local_expiry_secs: u32,
    pub packet_bytes_max: usize,
}

impl Settings {
    /// Reads the TLS files; an error names the bridge and the file.
    pub fn new(
        name: &str,
        bridge: &Bridge,
        local_expiry_secs: u32,
        packet_bytes_max: usize,
    ) -> Result<Settings, crate::tls::TlsError> {
        let tls = match &bridge.ca_file {
            None => None,
            Some(ca) => {
                let cert_key = bridge.cert_file.as_deref().zip(bridge.key_file.as_deref());
                let config = crate::tls::build_client_config(ca, cert_key, &bridge.alpn)?;
                Some((config, bridge.sni.clone()))
            }
        };
        Ok(Settings {
            name: name.to_owned(),
            bridge: bridge.clone(),
            version: match bridge.version {
                BridgeVersion::V311 => Version::V3_1_1,
                BridgeVersion::V5 => Version::V5,
            },
            tls,
            local_expiry_secs,
            packet_bytes_max,
        })
    }
}

/// Exponential backoff from `min` to `max`, each wait drawn in [half, whole] (jitter, so that
/// many bridges cut off together do not reconnect together).
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new(min_ms: u32, max_ms: u32, name: &str) -> Backoff {
        let min = Duration::from_millis(u64::from(min_ms));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos().into());
        let seed = name.bytes().fold(
            0x9e37_79b9_7f4a_7c15 ^ nanos ^ u64::from(std::process::id()),
            |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3),
        );
        Backoff {
            min,
            max: Duration::from_millis(u64::from(max_ms)),
            next: min,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn wait(&mut self) -> Duration {
        // xorshift64: jitter needs no more than this.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let whole = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = whole / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.seed % span)
    }
}

/// Publishes the bridge's state on this broker, retained: `$SYS/broker/connection/<name>/state`.
fn publish_state(shell: &ShardShell, name: &str, connected: bool) {
    let topic = format!("$SYS/broker/connection/{name}/state");
    let payload = String::from(if connected { "1" } else { "0" });
    shell
        .shard
        .borrow_mut()
        .publish_sys(topic, payload, Instant::now());
    shell.handle_all(std::iter::empty());
}

/// How long a starting bridge waits for its local subscriptions to be in place everywhere.
const SUBSCRIBED_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits (bounded) for the SUBACK of each local subscription: once they are in, every shard
/// routes the `out` rules' messages to the bridge (the SUBACK barrier), and only then is the
/// bridge's state published.
async fn wait_subscribed(shell: &ShardShell, local: &mut Local, relay: &mut Relay, count: usize) {
    let deadline = Instant::now() + SUBSCRIBED_TIMEOUT;
    let mut acknowledged = 0;
    let mut packets = Vec::new();
    while acknowledged < count && Instant::now() < deadline {
        local.take(shell, &mut packets, usize::MAX);
        for packet in packets.drain(..) {
            if matches!(packet, crate::protocol::Packet::SubAck(_)) {
                acknowledged += 1;
            }
            relay.from_local(packet, Instant::now());
        }
        if acknowledged < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = shards::time::timeout(left, local.written()).await;
        }
    }
}

/// Runs one bridge until its task is dropped (shutdown): the local session, then connections
/// to the remote, one after another.
pub(crate) async fn run(shell: Rc<ShardShell>, settings: Settings, stats: Arc<BridgeStats>) {
    let name = settings.name.clone();
    let bridge = &settings.bridge;
    let rules = rules::Rules::new(bridge.topics.clone());
    let local_filters = rules.local_filters();
    let client_id = local_client_id(&name);
    let mut relay = Relay::new(
        rules,
        settings.version,
        bridge.hops_max,
        usize::from(bridge.inflight_max),
    );
    let mut local = Local::open(
        &shell,
        &client_id,
        bridge.inflight_max,
        settings.local_expiry_secs,
        &local_filters,
    );
    wait_subscribed(&shell, &mut local, &mut relay, local_filters.len()).await;
    publish_state(&shell, &name, false);
    let mut backoff = Backoff::new(bridge.reconnect_min_ms, bridge.reconnect_max_ms, &name);
    let mut attempt = 0usize;
    let mut connected_once = false;
    let mut try_private = bridge.try_private && settings.version == Version::V3_1_1;
    tracing::info!(bridge = %name, shard = shell.ctx.id().index(), "bridge started");
    loop {
        if local.is_closed(&shell) {
            tracing::warn!(bridge = %name, "the bridge's local session was closed (another client took its id?): opening it again");
            local.close(&shell, false);
            local = Local::open(
                &shell,
                &client_id,
                bridge.inflight_max,
                settings.local_expiry_secs,
                &local_filters,
            );
        }
        let address = &bridge.addresses[attempt % bridge.addresses.len()];
        attempt = attempt.wrapping_add(1);
        let timeout = Duration::from_millis(u64::from(bridge.connect_timeout_ms));
        let connecting =
            handshake::connect(&settings, address, try_private, relay.free_packet_id());
        let outcome = match shards::time::timeout(timeout, connecting).await {
            Ok(outcome) => outcome,
            Err(_) => Err(handshake::Failure::Timeout(timeout)),
        };
        match outcome {
            Ok(mut connection) => {
                backoff.reset();
                attempt = attempt.wrapping_sub(1);
                if std::mem::replace(&mut connected_once, true) {
                    BridgeStats::add(&stats.reconnects, 1);
                }
                BridgeStats::set(&stats.connected, 1);
                publish_state(&shell, &name, true);
                tracing::info!(bridge = %name, %address, session_present = connection.session_present, "bridge connected");
                let reason = link::serve(
                    &shell,
                    &settings,
                    &mut local,
                    &mut relay,
                    &mut connection,
                    &stats,
                )
                .await;
                connection.stream.close().await;
                BridgeStats::set(&stats.connected, 0);
                publish_state(&shell, &name, false);
                tracing::warn!(bridge = %name, %address, %reason, "bridge disconnected");
            }
            Err(handshake::Failure::ProtocolRefused) if try_private => {
                tracing::info!(bridge = %name, %address, "the remote refused the bridge protocol bit: trying plain 3.1.1");
                try_private = false;
                attempt = attempt.wrapping_sub(1);
                continue;
            }
            Err(failure) => {
                BridgeStats::add(&stats.connect_failures, 1);
                tracing::warn!(bridge = %name, %address, error = %failure, "bridge connection failed");
            }
        }
        link::set_queued(&shell, &local, &stats);
        let wait = backoff.wait();
        tracing::debug!(bridge = %name, ?wait, "bridge: next attempt");
        shards::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_max_with_jitter_and_resets() {
        let mut backoff = Backoff::new(100, 1_000, "b");
        let waits: Vec<Duration> = (0..6).map(|_| backoff.wait()).collect();
        let wholes = [100, 200, 400, 800, 1_000, 1_000];
        for (wait, whole) in waits.iter().zip(wholes) {
            let whole = Duration::from_millis(whole);
            assert!(
                *wait >= whole / 2 && *wait <= whole,
                "{wait:?} not in [{:?}, {whole:?}]",
                whole / 2
            );
        }
        backoff.reset();
        assert!(backoff.wait() <= Duration::from_millis(100));
    }

    #[test]
    fn a_bridge_has_a_stable_shard() {
        let bridge = Bridge::default();
        let first = shard_of("cloud", &bridge, 4);
        assert_eq!(first, shard_of("cloud", &bridge, 4));
        assert!(first < 4);
        let pinned = Bridge {
            shard: Some(2),
            ..Bridge::default()
        };
        assert_eq!(shard_of("cloud", &pinned, 4), 2);
    }
}
