//! The JetStream side of the link (docs/CLUSTER.md, "QoS 1/2 across nodes"): one stream per
//! cluster, `ringmq_<name>`, holding batches of QoS 1/2 messages on one subject per target node,
//! and one durable pull consumer per node reading its own subject.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use super::ClusterStats;
use super::copies::{Cut, Done, Plan};
use crate::config::Cluster;

/// One attempt to store a batch (send and the stream's answer).
const STORE_TRY: Duration = Duration::from_secs(2);
/// Pause before the next attempt.
const STORE_PAUSE: Duration = Duration::from_millis(200);
/// A batch a node took but did not acknowledge is delivered again after this (also the longest a
/// restarted node waits for what its previous run took and never acknowledged).
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// The stream's window for recognising a batch sent again (`Nats-Msg-Id`).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Batches a node may have taken and not yet acknowledged.
const ACK_PENDING_MAX: i64 = 1024;

pub fn subject(name: &str, node: &str) -> String {
    format!("ringmq.{name}.node.{node}.stored")
}

/// The subject of a retained topic: the SHA-256 of the topic in hex (a topic may hold what a
/// subject token may not, and be longer than a subject may be); the topic itself travels in the
/// message.
pub fn retained_subject(name: &str, topic: &str) -> String {
    hashed_subject(format!("ringmq.{name}.retained."), topic)
}

/// The subject of a client id's session in the session mirror (hashed as a retained topic).
pub fn session_subject(name: &str, client_id: &str) -> String {
    hashed_subject(format!("ringmq.{name}.sessions."), client_id)
}

fn hashed_subject(mut subject: String, text: &str) -> String {
    use sha2::Digest;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    subject.reserve(64);
    for byte in sha2::Sha256::digest(text.as_bytes()) {
        subject.push(char::from(HEX[usize::from(byte >> 4)]));
        subject.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    subject
}

/// Why stream `name` could not be made, with the fix when JetStream could not set aside
/// `cluster.stream_max_bytes` for it: each of the four streams reserves that much of nats-server's
/// file store (by default 75% of its disk's free space) when it is made.
fn not_created(
    name: &str,
    config: &Cluster,
    error: &jetstream::context::CreateStreamError,
) -> String {
    use jetstream::ErrorCode;
    use jetstream::context::CreateStreamErrorKind;
    if let CreateStreamErrorKind::JetStream(inner) = error.kind() {
        let code = inner.error_code();
        if code == ErrorCode::STORAGE_RESOURCES_EXCEEDED
            || code == ErrorCode::INSUFFICIENT_RESOURCES
        {
            return format!(
                "stream {name}: {error}: nats-server cannot set aside cluster.stream_max_bytes = \
                 {} bytes for each of the cluster's 4 streams; lower cluster.stream_max_bytes, or \
                 give nats-server more file store (`jetstream {{ max_file_store }}`, or more free \
                 disk under its store directory)",
                config.stream_max_bytes
            );
        }
    }
    format!("stream {name}: {error}")
}

/// A stream on disk named `name` over `subject`, within `stream_max_bytes`.
fn file_stream(config: &Cluster, name: String, subject: String) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subject],
        max_bytes: i64::try_from(config.stream_max_bytes).unwrap_or(i64::MAX),
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A stream keeping the last message per subject, until replaced: `ringmq_<cluster>_<what>`
/// over `ringmq.<cluster>.<what>.*`.
fn last_per_subject_config(config: &Cluster, what: &str) -> stream::Config {
    stream::Config {
        max_messages_per_subject: 1,
        ..file_stream(
            config,
            format!("ringmq_{}_{what}", config.name),
            format!("ringmq.{}.{what}.*", config.name),
        )
    }
}

/// The retained stream (made if missing), read from the last message of every topic on: a node
/// that starts, or opens it again, learns every retained message, then each change.
pub async fn open_retained(
    js: jetstream::Context,
    config: Cluster,
) -> Result<consumer::pull::Ordered, String> {
    open_last_per_subject(js, &config, "retained").await
}

/// The session mirror (made if missing), read as the retained stream is: the last record of
/// every client id, then each change.
pub async fn open_sessions(
    js: jetstream::Context,
    config: Cluster,
) -> Result<consumer::pull::Ordered, String> {
    open_last_per_subject(js, &config, "sessions").await
}

async fn open_last_per_subject(
    js: jetstream::Context,
    config: &Cluster,
    what: &str,
) -> Result<consumer::pull::Ordered, String> {
    let stream_config = last_per_subject_config(config, what);
    let name = stream_config.name.clone();
    let stream = js
        .get_or_create_stream(stream_config)
        .await
        .map_err(|error| not_created(&name, config, &error))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("ringmq.{}.{what}.*", config.name),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|error| format!("stream {name}: {error}"))?;
    consumer
        .messages()
        .await
        .map_err(|error| format!("stream {name}: {error}"))
}

fn stream_config(config: &Cluster) -> stream::Config {
    let max_age = Duration::from_secs(u64::from(config.stream_max_age_s));
    stream::Config {
        // A batch is deleted once its node acknowledged it; a full stream refuses new batches
        // (their publishers are refused) rather than dropping waiting ones.
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_age,
        duplicate_window: DUPLICATE_WINDOW.min(max_age),
        ..file_stream(
            config,
            format!("ringmq_{}", config.name),
            format!("ringmq.{}.node.*.stored", config.name),
        )
    }
}

/// The stream (made if missing) and this node's consumer of it, ready to read.
pub async fn open(
    js: jetstream::Context,
    config: Cluster,
) -> Result<consumer::pull::Stream, String> {
    let stream = js
        .get_or_create_stream(stream_config(&config))
        .await
        .map_err(|error| not_created(&format!("ringmq_{}", config.name), &config, &error))?;
    let durable = format!("ringmq_{}", config.node_id);
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subject(&config.name, &config.node_id),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| format!("consumer {durable}: {error}"))?;
    consumer
        .messages()
        .await
        .map_err(|error| format!("consumer {durable}: {error}"))
}

/// The stream sequence up to which this node's consumer has every batch acknowledged (the
/// stream never delivers those again), or `None` when NATS did not answer in time.
pub async fn ack_floor(js: jetstream::Context, config: Cluster) -> Option<u64> {
    let durable = format!("ringmq_{}", config.node_id);
    let stream = format!("ringmq_{}", config.name);
    let query = async {
        let consumer: consumer::PullConsumer =
            js.get_consumer_from_stream(durable, stream).await.ok()?;
        Some(consumer.cached_info().ack_floor.stream_sequence)
    };
    tokio::time::timeout(STORE_TRY, query).await.ok().flatten()
}

/// Stores one batch, trying again (with the same `Nats-Msg-Id`, so a batch stored but not
/// answered is not stored twice) until the stream takes it (its stream sequence) or `deadline`
/// passes (`None`).
pub async fn store(
    js: jetstream::Context,
    subject: String,
    id: String,
    payload: Bytes,
    deadline: Instant,
    stats: Arc<ClusterStats>,
) -> Option<u64> {
    loop {
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(id.as_str());
        let attempt = async {
            js.send_publish(subject.clone(), publish)
                .await
                .map_err(|error| error.to_string())?
                .await
                .map_err(|error| error.to_string())
        };
        match tokio::time::timeout(STORE_TRY, attempt).await {
            Ok(Ok(ack)) => {
                ClusterStats::add(&stats.stream_stored, 1);
                return Some(ack.sequence);
            }
            Ok(Err(error)) => tracing::debug!(%error, "cluster: stream did not take a batch"),
            Err(_) => tracing::debug!("cluster: stream did not answer a batch in time"),
        }
        if Instant::now() + STORE_PAUSE >= deadline {
            tracing::warn!(%subject, "cluster: stream did not take a batch in time");
            ClusterStats::add(&stats.stream_failed, 1);
            return None;
        }
        tokio::time::sleep(STORE_PAUSE).await;
    }
}

/// The subjects of the messages queued for a client's session, kept for its resume on another
/// node (docs/CLUSTER.md, "Messages queued for a persistent session"): this base (the only
/// subject before nodes had their own, still read so that a rolling upgrade loses nothing) and
/// one below it per node that copies (`queued_node_subject`).
pub fn queued_subject(name: &str, client_id: &str) -> String {
    hashed_subject(format!("ringmq.{name}.queued."), client_id)
}

/// The subject on which `node` copies the messages it queues for `client_id`'s session: a
/// trim by that node purges its own copies only, never another node's (two nodes may hold a
/// session of one client id for a while).
pub fn queued_node_subject(name: &str, client_id: &str, node: &str) -> String {
    let mut subject = queued_subject(name, client_id);
    subject.push('.');
    subject.push_str(node);
    subject
}

/// Most queued messages a node takes back for one session (the rest stay in the stream until
/// the session ends or resumes again).
const QUEUED_TAKEN_MAX: usize = 100_000;

fn queued_config(config: &Cluster) -> stream::Config {
    stream::Config {
        max_age: Duration::from_secs(u64::from(config.stream_max_age_s)),
        discard: stream::DiscardPolicy::New,
        ..file_stream(
            config,
            format!("ringmq_{}_queued", config.name),
            format!("ringmq.{}.queued.>", config.name),
        )
    }
}

/// Makes the stream of queued messages if it is missing, and widens the subjects of one made
/// before nodes had subjects of their own (`ringmq.<name>.queued.*`) to take them.
pub async fn open_queued(js: jetstream::Context, config: Cluster) -> Result<(), String> {
    let wanted = queued_config(&config);
    let name = wanted.name.clone();
    let stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|error| not_created(&name, &config, &error))?;
    let made = &stream.cached_info().config;
    if made.subjects == wanted.subjects {
        return Ok(());
    }
    let widened = stream::Config {
        subjects: wanted.subjects,
        ..made.clone()
    };
    js.update_stream(widened)
        .await
        .map(|_| tracing::info!(stream = %name, "cluster: queued stream widened to per-node subjects"))
        .map_err(|error| format!("stream {name}: {error}"))
}

/// The messages queued on the subjects of the session whose base subject is `base` (the base
/// itself and one level below it, every node's), in stream order, at most `QUEUED_TAKEN_MAX`;
/// then those read are purged (and only those: what a node copies meanwhile stays).
pub async fn take_queued(js: jetstream::Context, name: String, base: String) -> Vec<Bytes> {
    let Ok(stream) = js.get_stream_no_info(format!("ringmq_{name}_queued")).await else {
        return Vec::new();
    };
    let every_node = format!("{base}.*");
    let mut taken = Vec::new();
    for filter in [base, every_node] {
        let mut next = 1;
        while taken.len() < QUEUED_TAKEN_MAX {
            let found = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(filter.clone())
                .send()
                .await;
            let Ok(message) = found else {
                break;
            };
            next = message.sequence + 1;
            taken.push((message.sequence, message.payload));
        }
        if next > 1 && stream.purge().filter(&filter).sequence(next).await.is_err() {
            tracing::debug!(%filter, "cluster: queued messages taken, not purged");
        }
    }
    taken.sort_by_key(|(sequence, _)| *sequence);
    taken.into_iter().map(|(_, payload)| payload).collect()
}

/// How a purge of the messages queued on a subject cuts.
enum Purge {
    All,
    Below(u64),
}

/// Removes the messages queued on `subject` (all, or those below a stream sequence); `subject`
/// may end with a wildcard.
async fn purge_queued(js: &jetstream::Context, name: &str, subject: &str, purge: Purge) -> bool {
    let Ok(stream) = js.get_stream_no_info(format!("ringmq_{name}_queued")).await else {
        return false;
    };
    let request = stream.purge().filter(subject);
    match purge {
        Purge::All => request.await.is_ok(),
        Purge::Below(sequence) => request.sequence(sequence).await.is_ok(),
    }
}

/// Carries out a session subject's share of a unit (`Plan`): a purge of all first, its batches
/// of copies in order (the rest not tried after one the stream did not take: stored after it,
/// they would be out of order), then the trim's purge, only when every batch is stored. A purge
/// that fails leaves copies already acknowledged: duplicates after a failover, not losses.
/// `ids`: a message id per batch. Returns what was done, and whether every batch was stored.
pub async fn store_copies(
    js: jetstream::Context,
    name: String,
    plan: Plan,
    ids: Vec<String>,
    deadline: Instant,
    stats: Arc<ClusterStats>,
) -> (Done, bool) {
    let Plan {
        client_id,
        subject,
        purge_all,
        purge_every,
        batches,
        cut,
    } = plan;
    let mut done = Done {
        client_id,
        purged_all: purge_all,
        stored: Vec::with_capacity(batches.len()),
        purged_below: None,
    };
    // Every node's subject of the session: its base (`<base>.<node>` is this node's) and the
    // level below it.
    let base = subject
        .rsplit_once('.')
        .map_or(subject.as_str(), |(base, _)| base);
    let purged = if purge_every {
        purge_queued(&js, &name, base, Purge::All).await
            && purge_queued(&js, &name, &format!("{base}.*"), Purge::All).await
    } else {
        !purge_all || purge_queued(&js, &name, &subject, Purge::All).await
    };
    if !purged {
        tracing::debug!(%subject, "cluster: queued messages not purged");
    }
    for ((payload, count), id) in batches.into_iter().zip(ids) {
        let stored = store(
            js.clone(),
            subject.clone(),
            id,
            payload,
            deadline,
            stats.clone(),
        );
        let Some(sequence) = stored.await else {
            return (done, false);
        };
        ClusterStats::add(&stats.queued_stored, count);
        done.stored.push((sequence, count));
    }
    let below = match cut {
        Some(Cut::Stored(sequence)) => Some(sequence),
        Some(Cut::Batch(index)) => done.stored.get(index).map(|(sequence, _)| *sequence),
        None => None,
    };
    if let Some(below) = below {
        if purge_queued(&js, &name, &subject, Purge::Below(below)).await {
            done.purged_below = Some(below);
        } else {
            tracing::debug!(%subject, "cluster: queued messages not trimmed");
        }
    }
    (done, true)
}

#[cfg(test)]
mod tests {
    /// The subject of a client id ends with the SHA-256 of the id in lower-case hex (subjects
    /// already in a stream must not change).
    #[test]
    fn a_hashed_subject_is_the_sha256_in_hex() {
        assert_eq!(
            super::queued_subject("c", "a"),
            "ringmq.c.queued.ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }

    /// A node's subject of a session is one level below the session's (old) subject, which the
    /// stream's `ringmq.<name>.queued.>` and a take's `<base>.*` both match.
    #[test]
    fn a_node_subject_is_one_level_below_the_sessions() {
        let base = super::queued_subject("c", "a");
        assert_eq!(
            super::queued_node_subject("c", "a", "node-1"),
            format!("{base}.node-1")
        );
    }
}
