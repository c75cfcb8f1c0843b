//! The cluster (docs/CLUSTER.md): this node's link to the other nodes through NATS.
//!
//! The link runs on a thread of its own (async-nats needs tokio); shards reach it through
//! [`ClusterHandle`], whose every call is a non-blocking `try_send`, and it reaches each shard
//! through a bounded channel that the shard's cluster task drains into `Shard::handle`. The
//! interest of the other nodes is a table the link publishes whole through an `ArcSwap` with a
//! version number: a shard reads the version (one atomic load) per routed message and rebuilds
//! its own trie from the table when it changed.

mod copies;
mod link;
pub mod mirror;
mod stream;
pub mod tags;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytestring::ByteString;
use shards::ShardId;

use crate::config::Cluster;
use crate::mail::{Mail, Ticket};
use crate::message::Message;
use crate::protocol::{Packet, QoS};
use crate::router::Trie;
use mirror::MirrorRecord;

pub use link::LinkThread;

/// Most nodes a cluster may have: a node set is one 64-bit word.
pub const NODES_MAX: usize = 64;

/// Filter -> the remote nodes (bit per node slot) with a subscriber to it, as the link publishes
/// it (a trie keeps a scratch buffer for matching, so each shard builds its own).
pub type InterestTable = Vec<(String, u64)>;

/// The group and the filter of a shared subscription's key, `$share/{group}/{filter}`.
pub fn split_share(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("$share/")?
        .split_once('/')
        .filter(|(group, filter)| !group.is_empty() && !filter.is_empty())
}

/// The other nodes' members of the shared groups of one filter: (group, its key, nodes).
#[derive(Debug)]
struct RemoteShares {
    filter: ByteString,
    groups: Vec<(ByteString, ByteString, u64)>,
}

/// A shared group matching a topic with members on other nodes: (filter, group, key, nodes).
pub type RemoteShare = (ByteString, ByteString, ByteString, u64);

/// What a shard sends the link.
#[derive(Debug)]
pub enum ToLink {
    /// A message published on this node for the nodes in `nodes` (slots of the link's table).
    /// `stored`: the message goes through the stream, and the link answers the shard
    /// (`Mail::ClusterStored`) with this number once the stream holds it for every node.
    Publish {
        message: Arc<Message>,
        nodes: u64,
        shard: u8,
        stored: Option<(ShardId, u64)>,
        /// For one member of this shared subscription (`$share/{group}/{filter}`) on the one
        /// node in `nodes`, not for its other subscribers.
        share: Option<ByteString>,
    },
    /// The shard's set of filters with a local subscriber changed (as `Mail::Interest`).
    Interest {
        add: Vec<bytestring::ByteString>,
        remove: Vec<bytestring::ByteString>,
    },
    /// Answer `ticket` on `shard` once every interest change so far is acknowledged by every
    /// known node (or the link is down, or the wait timed out).
    Barrier { shard: ShardId, ticket: Ticket },
    /// The session mirror's record of `client_id`: the session's data, or (`None`) gone.
    /// `stored`: answered as a message for the stream (`Mail::ClusterStored`), so that the
    /// PUBREC or PUBCOMP of a change of its QoS 2 packet ids can wait for it.
    Session {
        client_id: ByteString,
        record: Option<Box<MirrorRecord>>,
        stored: Option<(ShardId, u64)>,
    },
    /// A QoS 1/2 message queued for a persistent session here, connected or not (at the QoS
    /// it is delivered): its copy in the stream of queued messages. `stored`: answered as a message
    /// for the stream (`Mail::ClusterStored`), so that the acknowledgement of the PUBLISH that
    /// queued it can wait for the copy.
    Queued {
        client_id: ByteString,
        message: Arc<Message>,
        stored: Option<(ShardId, u64)>,
    },
    /// A session resumed here from the mirror: take what its former node queued for it.
    TakeQueued { client_id: ByteString },
    /// A client started clean where another node's session of it was mirrored: every node's
    /// copies of its messages go from the stream.
    DiscardQueued { client_id: ByteString },
    /// The copies of a persistent session's messages in the stream, but the last `keep` (0:
    /// all), are not needed any more: its client acknowledged the older ones.
    PurgeQueued { client_id: ByteString, keep: u64 },
    /// A client connected here (its CONNECT arrived `at`): the other nodes end their older
    /// connection and their session of it.
    Claim {
        client_id: bytestring::ByteString,
        at: std::time::Instant,
    },
}

/// Counters and the link state, written by the link and the shards, read by `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub connected: AtomicBool,
    /// This node reads the cluster's JetStream streams (QoS 1/2 across nodes, retained
    /// messages, the session mirror).
    pub streams_open: AtomicBool,
    /// Attempts to open the streams that failed (each one logged with its reason).
    pub streams_open_failed: AtomicU64,
    pub nodes: AtomicU64,
    pub messages_out: AtomicU64,
    pub batches_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub dropped_link_full: AtomicU64,
    pub dropped_control_full: AtomicU64,
    pub dropped_disconnected: AtomicU64,
    pub dropped_inbound_full: AtomicU64,
    pub dropped_undecodable: AtomicU64,
    pub barrier_timeouts: AtomicU64,
    pub reconnects: AtomicU64,
    /// Client ids claimed by this node, and connections here taken over by another node.
    pub claims_out: AtomicU64,
    pub claims_in: AtomicU64,
    /// Session mirror records this node wrote, and records it read (any node's).
    pub mirror_out: AtomicU64,
    pub mirror_in: AtomicU64,
    /// Records of `mirror_out` replaced by a newer one of their session before they went to the
    /// stream.
    pub mirror_superseded: AtomicU64,
    /// Messages copied to the stream of queued messages, and taken back from it by this node;
    /// copies the stream took (in batches).
    pub queued_out: AtomicU64,
    pub queued_in: AtomicU64,
    pub queued_stored: AtomicU64,
    /// Mirrored sessions of dead nodes this node installed as its own offline sessions.
    pub sessions_adopted: AtomicU64,
    /// Batches the stream took, and those it did not take before `stream_ack_timeout_ms`.
    pub stream_stored: AtomicU64,
    pub stream_failed: AtomicU64,
    /// Stream batches this node took, acknowledged to the stream, and asked again (a full
    /// inbound queue).
    pub stream_in: AtomicU64,
    pub stream_acked: AtomicU64,
    pub stream_retried: AtomicU64,
    /// Batches routed and not acknowledged, held back by the tests' hook (`HOLD_ACKS_ENV`).
    pub stream_held: AtomicU64,
    /// Records of stream batches delivered again that were not fed again (fed before).
    pub stream_records_skipped: AtomicU64,
    /// Deliveries of records of stream batches delivered again that a session had queued
    /// before (its note kept, or read back from disk after a restart): not queued again.
    pub stream_deliveries_skipped: AtomicU64,
    /// Notes of stream records queued that the shards keep (a gauge: each shard adds its
    /// changes).
    pub stream_notes: AtomicU64,
}

impl ClusterStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A shard's side of the link. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct ClusterHandle {
    to_link: flume::Sender<ToLink>,
    /// Publishes stop here, below the channel's capacity: the rest is for control mail.
    publish_room: usize,
    interest: Arc<ArcSwap<InterestTable>>,
    /// Bumped by the link after each new table is stored.
    version: Arc<AtomicU64>,
    /// QoS 1/2 messages go through the stream (`cluster.jetstream`).
    durable: bool,
    /// Per shard: messages from other nodes it has routed (the link acknowledges a stream
    /// batch to NATS once every shard it fed has routed its part).
    routed_remote: Arc<[AtomicU64]>,
    pub stats: Arc<ClusterStats>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

/// A shard's side of the link: the handle, the shard's copy of the other nodes' interest, and
/// the acknowledgements (PUBACK, PUBREC) waiting for the stream.
#[derive(Debug)]
pub struct ShardLink {
    handle: ClusterHandle,
    trie: Trie<u64>,
    /// The other nodes' shared groups by filter, and per group key the turn of the next pick.
    shares: Trie<RemoteShares>,
    share_turns: HashMap<ByteString, u64>,
    seen: u64,
    /// The last number given to a message sent through the stream.
    next_stored: u64,
    /// What happened to the message `route` just handled.
    routed: Routed,
    /// (connection, packet id) -> the number of its message, or whether the stream took it.
    gate: HashMap<(u64, u16), Gate>,
    /// Acknowledgements in the order they became ready otherwise; the front waits for the stream,
    /// the rest wait behind it (acknowledgements keep their order).
    held: VecDeque<(u64, Packet)>,
    /// At the home shard of their client ids: the session mirror's records of other nodes'
    /// persistent sessions (with the node that wrote each), for a client that resumes here or
    /// for this node to adopt when their node dies.
    mirrored: HashMap<ByteString, (Box<str>, Box<MirrorRecord>)>,
    /// The number of the last copy of an offline queued message sent numbered, the highest
    /// number the stream answered, and whether an answer since the last copy was a failure.
    last_copy: u64,
    answered: u64,
    /// With persistence on: this shard's "durable" replies to other shards (the counts of their
    /// mails it handled, and whether their records are durable) that wait for the stream to
    /// hold the copies made until then: (the last copy's number, counts, ok), in order.
    held_durable: VecDeque<(u64, Vec<u64>, bool)>,
    /// Sessions (by key) whose client acknowledged messages since the last trim, or that
    /// resumed here: their copies in the stream of queued messages are trimmed at the next tick.
    trims: HashSet<usize>,
    /// The tag of the stream record being routed now, with its message's id (none for
    /// anything else).
    tag: Option<(tags::StreamTag, u64)>,
    /// Which persisted sessions here queued which records of unacknowledged stream batches
    /// (changed through `note`, `restore_note` and `forget_notes_through`, which keep the
    /// node's gauge in step).
    pub notes: tags::StreamNotes,
    /// This shard's part of the gauge `ClusterStats::stream_notes`.
    notes_counted: u64,
}

/// What `route` did with a message for other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Nothing waits: no other node, QoS 0, or the stream is off.
    Free,
    /// Its acknowledgement waits for the stream's answer to this number.
    Stored(u64),
    /// The link could not take it: the acknowledgement is refused.
    Refused,
}

#[derive(Clone, Copy, Debug)]
enum Gate {
    Waiting(u64),
    Answered(bool),
}

/// An acknowledgement the stream released: write it (`true`) or refuse it.
pub type Released = (u64, Packet, bool);

fn packet_id(packet: &Packet) -> Option<u16> {
    match packet {
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubComp(ack) => {
            Some(ack.packet_id.get())
        }
        _ => None,
    }
}

impl ShardLink {
    pub fn new(handle: ClusterHandle) -> ShardLink {
        ShardLink {
            handle,
            trie: Trie::new(),
            shares: Trie::new(),
            share_turns: HashMap::new(),
            seen: 0,
            next_stored: 0,
            routed: Routed::Free,
            gate: HashMap::new(),
            held: VecDeque::new(),
            mirrored: HashMap::new(),
            last_copy: 0,
            answered: 0,
            held_durable: VecDeque::new(),
            trims: HashSet::new(),
            tag: None,
            notes: tags::StreamNotes::default(),
            notes_counted: 0,
        }
    }

    /// Session `client_id` queued the stream record of `tag`.
    pub fn note(&mut self, tag: tags::StreamTag, client_id: ByteString) {
        self.notes.note(tag, client_id);
        self.count_notes();
    }

    /// A note read back at start.
    pub fn restore_note(&mut self, tag: tags::StreamTag, client_id: ByteString) {
        self.notes.restore(tag, client_id);
        self.count_notes();
    }

    /// The stream's acknowledgement floor reached `floor`: the notes of batches up to it go.
    pub fn forget_notes_through(&mut self, floor: u64) {
        self.notes.forget_through(floor);
        self.count_notes();
    }

    fn count_notes(&mut self) {
        let now = self.notes.len() as u64;
        let gauge = &self.handle.stats.stream_notes;
        if now >= self.notes_counted {
            gauge.fetch_add(now - self.notes_counted, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(self.notes_counted - now, Ordering::Relaxed);
        }
        self.notes_counted = now;
    }

    /// The tag of the stream record routed now, message `id` (`None` once it is routed).
    pub fn set_tag(&mut self, tag: Option<(tags::StreamTag, u64)>) {
        self.tag = tag;
    }

    /// The tag of message `id` while it is routed (not of another message queued meanwhile,
    /// such as a shared one offered again to another member).
    pub fn tag_of(&self, id: u64) -> Option<tags::StreamTag> {
        self.tag
            .and_then(|(tag, routed)| (routed == id).then_some(tag))
    }

    /// Rebuilds the tries when the link published a new table.
    fn refresh(&mut self) {
        let version = self.handle.version.load(Ordering::Acquire);
        if version == self.seen {
            return;
        }
        // The table read may be newer than `version`: then the next call rebuilds again.
        self.seen = version;
        let table = self.handle.interest.load_full();
        self.trie = Trie::new();
        self.shares = Trie::new();
        for (filter, nodes) in table.iter() {
            let Some((group, inner)) = split_share(filter) else {
                *self.trie.get_or_insert_with(filter, || 0) |= *nodes;
                continue;
            };
            let shares = self.shares.get_or_insert_with(inner, || RemoteShares {
                filter: ByteString::from(inner),
                groups: Vec::new(),
            });
            let key = ByteString::from(filter.as_str());
            shares.groups.push((ByteString::from(group), key, *nodes));
        }
        let shares = &self.shares;
        self.share_turns.retain(|key, _| {
            split_share(key).is_some_and(|(_, inner)| shares.get(inner).is_some())
        });
    }

    /// The remote nodes interested in `topic` (empty: send nothing to NATS).
    pub fn nodes_for(&mut self, topic: &str) -> u64 {
        self.refresh();
        let mut nodes = 0;
        self.trie.for_each_match(topic, |set| nodes |= *set);
        nodes
    }

    /// The shared groups matching `topic` that have members on other nodes, into `out`.
    pub fn shares_for(&mut self, topic: &str, out: &mut Vec<RemoteShare>) {
        self.refresh();
        self.shares.for_each_match(topic, |shares| {
            for (group, key, nodes) in &shares.groups {
                out.push((shares.filter.clone(), group.clone(), key.clone(), *nodes));
            }
        });
    }

    /// Picks where one message of a shared group goes, in turn among this node (`here`: it has
    /// members) and each other node with members: `None` for this node, else that node's bit.
    /// Each node with members gets an equal share, whatever its number of members.
    pub fn pick_share(&mut self, key: &ByteString, here: bool, nodes: u64) -> Option<u64> {
        let candidates = u64::from(here) + u64::from(nodes.count_ones());
        if candidates == 0 {
            return None;
        }
        let turn = match self.share_turns.get_mut(key) {
            Some(turn) => turn,
            None => self.share_turns.entry(key.clone()).or_insert(0),
        };
        let mut index = *turn % candidates;
        *turn = turn.wrapping_add(1);
        if here {
            if index == 0 {
                return None;
            }
            index -= 1;
        }
        let mut rest = nodes;
        for _ in 0..index {
            rest &= rest - 1;
        }
        Some(rest & rest.wrapping_neg())
    }

    pub fn handle(&self) -> &ClusterHandle {
        &self.handle
    }

    /// Called by `route` before it looks at the other nodes.
    pub fn begin_route(&mut self) {
        self.routed = Routed::Free;
    }

    /// Sends a message to the other nodes in `nodes`: QoS 1/2 through the stream when it is on
    /// (see `routed`), QoS 0 or with the stream off over core NATS.
    /// `share`: the copy for one member of that shared subscription on the node in `nodes`.
    /// Several sends for one message (its subscribers, shared groups) make one answer: refused
    /// if any was, else the last number (the stream answers numbers in order).
    pub fn send(
        &mut self,
        message: Arc<Message>,
        nodes: u64,
        shard: ShardId,
        share: Option<ByteString>,
    ) {
        if !self.handle.durable || message.qos == QoS::AtMostOnce {
            self.handle.publish(message, nodes, shard, None, share);
            return;
        }
        let number = self.next_stored + 1;
        let taken = self
            .handle
            .publish(message, nodes, shard, Some((shard, number)), share);
        self.routed = match (taken, self.routed) {
            (_, Routed::Refused) | (false, _) => Routed::Refused,
            (true, _) => {
                self.next_stored = number;
                Routed::Stored(number)
            }
        };
    }

    /// A copy of a message queued by `shard` for the offline persistent session of
    /// `client_id`, for the stream of queued messages. While NATS is connected it is numbered
    /// as a message for the stream, so that when a `route` made it, the acknowledgement waits
    /// for the copy as for the other nodes' copies; while it is not, the copy goes unnumbered
    /// (and is lost if the link is not back in time): local clients never wait for NATS.
    pub fn copy_queued(&mut self, client_id: ByteString, message: Arc<Message>, shard: ShardId) {
        let number = self.numbered(shard, |stored| ToLink::Queued {
            client_id,
            message,
            stored,
        });
        if let Some(number) = number {
            self.last_copy = number;
        }
    }

    /// A record of the session mirror after its QoS 2 packet ids awaiting PUBREL changed,
    /// numbered as `copy_queued` numbers a copy: the PUBREC of a `route` that made it waits for
    /// it, and the returned number is for a PUBCOMP to wait on (none while NATS is not
    /// connected, or when the link's queue is full: nothing waits then).
    pub fn mirror_numbered(
        &mut self,
        client_id: ByteString,
        record: Box<MirrorRecord>,
        shard: ShardId,
    ) -> Option<u64> {
        self.numbered(shard, |stored| ToLink::Session {
            client_id,
            record: Some(record),
            stored,
        })
    }

    /// Sends session mail `mail` makes, numbered while NATS is connected (unnumbered, it is
    /// lost if the link is not back in time: local clients never wait for NATS); a number the
    /// link took is what the acknowledgement of the `route` under way waits for.
    fn numbered(
        &mut self,
        shard: ShardId,
        mail: impl FnOnce(Option<(ShardId, u64)>) -> ToLink,
    ) -> Option<u64> {
        let number = self.next_stored + 1;
        let stored = self
            .handle
            .stats
            .connected
            .load(Ordering::Acquire)
            .then_some((shard, number));
        if !self.handle.session_mail(mail(stored)) || stored.is_none() {
            return None;
        }
        self.next_stored = number;
        if self.routed != Routed::Refused {
            self.routed = Routed::Stored(number);
        }
        Some(number)
    }

    /// The copies of session `key`'s messages are due for a trim (its client acknowledged one,
    /// or it resumed here). Noted once until the next trim.
    pub fn trim_due(&mut self, key: usize) {
        self.trims.insert(key);
    }

    /// The sessions due for a trim since the last call.
    pub fn take_trims(&mut self) -> HashSet<usize> {
        std::mem::take(&mut self.trims)
    }

    /// Asks the link to drop the copies of `client_id`'s messages in the stream but the last
    /// `keep` (0: all). In order with the copies this shard sent before.
    pub fn trim_copies(&self, client_id: ByteString, keep: u64) {
        self.handle
            .session_mail(ToLink::PurgeQueued { client_id, keep });
    }

    /// What the last `route` did with its message for the other nodes.
    pub fn routed(&self) -> Routed {
        self.routed
    }

    /// The acknowledgement of `packet_id` on `conn` waits for the stream to take message `number`.
    pub fn hold(&mut self, conn: u64, packet_id: u16, number: u64) {
        self.gate.insert((conn, packet_id), Gate::Waiting(number));
    }

    /// An acknowledgement ready to go as far as the shard is concerned: returned (with whether
    /// the stream took its message) when nothing waits for the stream before it, held otherwise.
    pub fn pass(&mut self, conn: u64, packet: Packet) -> Option<(Packet, bool)> {
        if self.gate.is_empty() && self.held.is_empty() {
            return Some((packet, true));
        }
        let key = packet_id(&packet).map(|id| (conn, id));
        let answer = match key.and_then(|key| self.gate.get(&key)) {
            Some(Gate::Waiting(_)) => None,
            Some(Gate::Answered(ok)) => Some(*ok),
            None => Some(true),
        };
        match answer {
            Some(ok) if self.held.is_empty() => {
                if let Some(key) = key {
                    self.gate.remove(&key);
                }
                Some((packet, ok))
            }
            _ => {
                self.held.push_back((conn, packet));
                None
            }
        }
    }

    /// An acknowledgement refused on the shard itself (its records could not be made durable):
    /// it goes out refused, in order behind any held before it, and whatever entry its message
    /// had here is let go with it (left behind, it grew the table and refused a later message
    /// reusing the packet id).
    pub fn pass_refused(&mut self, conn: u64, packet: Packet) -> Option<Packet> {
        if let Some(id) = packet_id(&packet) {
            self.gate.insert((conn, id), Gate::Answered(false));
        }
        self.pass(conn, packet).map(|(packet, _)| packet)
    }

    /// The stream answered every message numbered up to `upto` (`ok`: it took them): the
    /// acknowledgements now free go to `out`, in order.
    /// `refused`: numbers of mirror records the stream did not take (up to `upto`), whose
    /// acknowledgements are refused even when `ok`.
    pub fn stored(&mut self, upto: u64, ok: bool, refused: &[u64], out: &mut Vec<Released>) {
        self.answered = self.answered.max(upto);
        for (mark, _, durable) in &mut self.held_durable {
            if *mark <= upto {
                *durable &= ok;
            }
        }
        for gate in self.gate.values_mut() {
            if let Gate::Waiting(number) = *gate
                && number <= upto
            {
                *gate = Gate::Answered(ok && !refused.contains(&number));
            }
        }
        while let Some((conn, packet)) = self.held.front() {
            let key = packet_id(packet).map(|id| (*conn, id));
            let answer = match key.and_then(|key| self.gate.get(&key)) {
                Some(Gate::Waiting(_)) => break,
                Some(Gate::Answered(ok)) => *ok,
                None => true,
            };
            if let Some(key) = key {
                self.gate.remove(&key);
            }
            if let Some((conn, packet)) = self.held.pop_front() {
                out.push((conn, packet, answer));
            }
        }
    }

    /// With persistence on, a "durable" reply to other shards (`received`, `ok`): returned when
    /// the stream holds every copy of an offline queued message this shard made so far (those
    /// of the mail the reply covers among them), held otherwise, in order behind any held.
    pub fn hold_durable(&mut self, received: Vec<u64>, ok: bool) -> Option<(Vec<u64>, bool)> {
        if self.held_durable.is_empty() && self.last_copy <= self.answered {
            return Some((received, ok));
        }
        self.held_durable.push_back((self.last_copy, received, ok));
        None
    }

    /// The held "durable" replies whose copies the stream has answered, in order.
    pub fn durable_released(&mut self, out: &mut Vec<(Vec<u64>, bool)>) {
        while self
            .held_durable
            .front()
            .is_some_and(|(mark, _, _)| *mark <= self.answered)
        {
            if let Some((_, received, ok)) = self.held_durable.pop_front() {
                out.push((received, ok));
            }
        }
    }

    /// A record of the session mirror for a client id whose home is this shard, written by
    /// `node`: another node's session is kept (replacing an older record), this node's own
    /// (`own`) or a gone one removes it.
    pub fn mirrored(
        &mut self,
        client_id: ByteString,
        record: Option<Box<MirrorRecord>>,
        node: Box<str>,
        own: bool,
    ) {
        match record {
            Some(record) if !own => {
                self.mirrored.insert(client_id, (node, record));
            }
            _ => {
                self.mirrored.remove(&client_id);
            }
        }
    }

    /// Takes the mirrored session of `client_id` (another node's), if any and not expired at
    /// `now_ms` (ms since the Unix epoch).
    pub fn take_mirrored(&mut self, client_id: &str, now_ms: u64) -> Option<Box<MirrorRecord>> {
        self.mirrored
            .remove(client_id)
            .map(|(_, record)| record)
            .filter(|record| record.session.expires_at_ms.is_none_or(|at| at > now_ms))
    }

    /// Takes every mirrored session `node` wrote that has not expired at `now_ms` (the node
    /// died and this node adopts them); expired ones are dropped.
    pub fn take_mirrored_of(&mut self, node: &str, now_ms: u64) -> Vec<Box<MirrorRecord>> {
        let ids: Vec<ByteString> = self
            .mirrored
            .iter()
            .filter(|(_, (writer, _))| &**writer == node)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| self.take_mirrored(id, now_ms))
            .collect()
    }

    /// A message from another node has been routed by `shard`.
    pub fn routed_remote(&self, shard: ShardId) {
        if let Some(count) = self.handle.routed_remote.get(shard.index()) {
            count.fetch_add(1, Ordering::Release);
        }
    }
}

impl ClusterHandle {
    /// The cluster's streams are on (`cluster.jetstream`): retained writes, the session mirror
    /// and the copies of offline queued messages go through them.
    pub fn shares_retained(&self) -> bool {
        self.durable
    }

    /// Queues a message for the other nodes; false (counted) when the link's queue is full.
    pub fn publish(
        &self,
        message: Arc<Message>,
        nodes: u64,
        shard: ShardId,
        stored: Option<(ShardId, u64)>,
        share: Option<ByteString>,
    ) -> bool {
        if self.to_link.len() >= self.publish_room {
            ClusterStats::add(&self.stats.dropped_link_full, 1);
            return false;
        }
        let shard = u8::try_from(shard.index()).unwrap_or(u8::MAX);
        let sent = self
            .to_link
            .try_send(ToLink::Publish {
                message,
                nodes,
                shard,
                stored,
                share,
            })
            .is_ok();
        if !sent {
            ClusterStats::add(&self.stats.dropped_link_full, 1);
        }
        sent
    }

    /// Queues a record for the session mirror (`None`: the session is gone).
    pub fn mirror(&self, client_id: ByteString, record: Option<Box<MirrorRecord>>) -> bool {
        self.session_mail(ToLink::Session {
            client_id,
            record,
            stored: None,
        })
    }

    /// Queues session mail for the streams (the mirror, queued messages) within the room
    /// publishes have: it must not take the room of interest changes. False (counted) when
    /// full, or when the streams are off.
    pub fn session_mail(&self, mail: ToLink) -> bool {
        if !self.durable {
            return false;
        }
        let sent = self.to_link.len() < self.publish_room && self.to_link.try_send(mail).is_ok();
        if !sent {
            ClusterStats::add(&self.stats.dropped_link_full, 1);
        }
        sent
    }

    /// Queues interest or a barrier; false (counted) when even the control room is full.
    pub fn control(&self, mail: ToLink) -> bool {
        let sent = self.to_link.try_send(mail).is_ok();
        if !sent {
            ClusterStats::add(&self.stats.dropped_control_full, 1);
        }
        sent
    }
}

#[cfg(test)]
impl ClusterHandle {
    /// A handle whose link is not running (its queue holds 64), for `shards` shards, with their
    /// counts of messages from other nodes routed.
    pub fn unlinked(shards: usize) -> (ClusterHandle, Arc<[AtomicU64]>) {
        let (handle, routed_remote, _) = Self::with_inbox(shards);
        (handle, routed_remote)
    }

    /// `unlinked`, with the link's end of the queue (what the shards sent).
    pub fn with_inbox(shards: usize) -> (ClusterHandle, Arc<[AtomicU64]>, flume::Receiver<ToLink>) {
        let (to_link, inbox) = flume::bounded(64);
        let routed_remote: Arc<[AtomicU64]> = (0..shards).map(|_| AtomicU64::new(0)).collect();
        let handle = ClusterHandle {
            to_link,
            publish_room: 48,
            interest: Arc::new(ArcSwap::from_pointee(InterestTable::new())),
            version: Arc::new(AtomicU64::new(0)),
            durable: true,
            routed_remote: Arc::clone(&routed_remote),
            stats: Arc::new(ClusterStats::default()),
        };
        (handle, routed_remote, inbox)
    }
}

/// A started link: the shards' handle, one inbox per shard, and the thread.
pub struct Started {
    pub handle: ClusterHandle,
    pub inboxes: Vec<flume::Receiver<Mail>>,
    pub thread: LinkThread,
}

/// Starts the link thread for `shard_count` shards. It connects in the background: a node
/// whose NATS is unreachable still starts and serves its local clients.
pub fn start(config: &Cluster, shard_count: usize) -> std::io::Result<Started> {
    let capacity = config.link_queue_max as usize;
    let (to_link, from_shards) = flume::bounded(capacity);
    let mut inboxes = Vec::with_capacity(shard_count);
    let mut to_shards = Vec::with_capacity(shard_count);
    for _ in 0..shard_count {
        let (sender, receiver) = flume::bounded(config.inbound_queue_max as usize);
        to_shards.push(sender);
        inboxes.push(receiver);
    }
    let interest = Arc::new(ArcSwap::from_pointee(InterestTable::new()));
    let version = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(ClusterStats::default());
    let routed_remote: Arc<[AtomicU64]> = (0..shard_count).map(|_| AtomicU64::new(0)).collect();
    let thread = link::spawn(
        config.clone(),
        from_shards,
        to_shards,
        link::Published {
            table: Arc::clone(&interest),
            version: Arc::clone(&version),
        },
        Arc::clone(&stats),
        Arc::clone(&routed_remote),
    )?;
    Ok(Started {
        handle: ClusterHandle {
            to_link,
            publish_room: capacity - capacity / 4,
            interest,
            version,
            durable: config.jetstream,
            routed_remote,
            stats,
        },
        inboxes,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::protocol::PubResponse;

    fn link() -> ShardLink {
        ShardLink::new(ClusterHandle::unlinked(0).0)
    }

    fn puback(id: u16) -> Packet {
        Packet::PubAck(PubResponse {
            packet_id: NonZeroU16::new(id).unwrap(),
            reason: crate::protocol::ReasonCode::SUCCESS,
            properties: Default::default(),
        })
    }

    fn released(out: &[Released]) -> Vec<(u64, Option<u16>, bool)> {
        out.iter()
            .map(|(conn, packet, ok)| (*conn, packet_id(packet), *ok))
            .collect()
    }

    #[test]
    fn shared_subscription_keys_split_into_group_and_filter() {
        let check = |key: &str, expected: Option<(&str, &str)>| {
            assert_eq!(split_share(key), expected, "{key}");
        };
        check("$share/g/a/+", Some(("g", "a/+")));
        check("$share/g/#", Some(("g", "#")));
        check("$share//a", None);
        check("$share/g/", None);
        check("$share/g", None);
        check("a/b", None);
    }

    #[test]
    fn a_shared_group_takes_turns_between_this_node_and_each_other_node() {
        let mut link = link();
        let key = ByteString::from_static("$share/g/a");
        let picks: Vec<Option<u64>> = (0..6)
            .map(|_| link.pick_share(&key, true, 0b1010))
            .collect();
        assert_eq!(
            picks,
            [
                None,
                Some(0b10),
                Some(0b1000),
                None,
                Some(0b10),
                Some(0b1000)
            ]
        );
        let other = ByteString::from_static("$share/h/a");
        let picks: Vec<Option<u64>> = (0..3)
            .map(|_| link.pick_share(&other, false, 0b101))
            .collect();
        assert_eq!(picks, [Some(0b1), Some(0b100), Some(0b1)]);
    }

    /// A mirrored record of `client_id`'s session, expiring at `expires_at_ms` (`None`: its
    /// client was connected).
    fn session_record(client_id: &str, expires_at_ms: Option<u64>) -> Box<MirrorRecord> {
        let session = crate::store::record::SessionRecord {
            stamp: 0,
            client_id: client_id.into(),
            username: None,
            version: crate::protocol::Version::V5,
            expiry_secs: 60,
            expires_at_ms,
            next_seq: 1,
            subscriptions: Vec::new(),
        };
        Box::new(MirrorRecord {
            session,
            incoming_qos2: Vec::new(),
        })
    }

    #[test]
    fn the_home_shard_keeps_other_nodes_sessions_until_taken_or_gone() {
        let mut link = link();
        let record = |expires_at_ms| session_record("c", expires_at_ms);
        let id = ByteString::from_static("c");
        link.mirrored(id.clone(), Some(record(None)), "n2".into(), false);
        assert!(link.take_mirrored("c", 5_000).is_some());
        assert!(link.take_mirrored("c", 5_000).is_none(), "taken once");
        // This node's own record, or a gone one, removes it.
        link.mirrored(id.clone(), Some(record(None)), "n2".into(), false);
        link.mirrored(id.clone(), Some(record(None)), "n2".into(), true);
        assert!(link.take_mirrored("c", 5_000).is_none());
        link.mirrored(id.clone(), Some(record(None)), "n2".into(), false);
        link.mirrored(id.clone(), None, "n2".into(), false);
        assert!(link.take_mirrored("c", 5_000).is_none());
        // One that expired while its client was away is not resumed.
        link.mirrored(id.clone(), Some(record(Some(4_000))), "n2".into(), false);
        assert!(link.take_mirrored("c", 5_000).is_none());
        link.mirrored(id, Some(record(Some(6_000))), "n2".into(), false);
        assert!(link.take_mirrored("c", 5_000).is_some());
    }

    #[test]
    fn a_dead_nodes_sessions_are_taken_for_adoption_and_no_other_nodes() {
        let mut link = link();
        let record = session_record;
        for (id, node, expires) in [
            ("a", "n1", None),
            ("b", "n1", Some(6_000)),
            ("c", "n1", Some(4_000)),
            ("d", "n3", None),
        ] {
            link.mirrored(id.into(), Some(record(id, expires)), node.into(), false);
        }
        // "e" was n1's, then another node wrote it: not n1's any more.
        link.mirrored("e".into(), Some(record("e", None)), "n1".into(), false);
        link.mirrored("e".into(), Some(record("e", None)), "n3".into(), false);
        let mut taken: Vec<String> = link
            .take_mirrored_of("n1", 5_000)
            .into_iter()
            .map(|r| r.session.client_id.to_string())
            .collect();
        taken.sort();
        assert_eq!(taken, ["a", "b"], "n1's unexpired sessions");
        assert!(link.take_mirrored_of("n1", 5_000).is_empty(), "taken once");
        assert!(
            link.take_mirrored("c", 0).is_none(),
            "the expired one is dropped"
        );
        assert!(link.take_mirrored("d", 5_000).is_some());
        assert!(link.take_mirrored("e", 5_000).is_some());
    }

    /// A QoS 1 message, as queued for an offline session.
    fn queued_message() -> Arc<Message> {
        Arc::new(Message {
            id: 1,
            topic: "t".into(),
            payload: bytes::Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: crate::protocol::PublishProps::none(),
            publisher: "p".into(),
            received_at: std::time::Instant::now(),
            expires_at: None,
        })
    }

    #[test]
    fn an_ack_waits_for_the_copy_its_route_queued_while_nats_is_connected() {
        let (handle, _, inbox) = ClusterHandle::with_inbox(1);
        let mut link = ShardLink::new(handle);
        let copy = |link: &mut ShardLink| {
            let message = queued_message();
            link.copy_queued("c".into(), message, ShardId::new(0));
        };
        // Disconnected: the copy is not waited for.
        link.begin_route();
        copy(&mut link);
        assert_eq!(link.routed(), Routed::Free);
        link.handle.stats.connected.store(true, Ordering::Release);
        link.begin_route();
        copy(&mut link);
        copy(&mut link);
        assert_eq!(link.routed(), Routed::Stored(2), "the last copy's number");
        let numbers: Vec<Option<u64>> = inbox
            .drain()
            .map(|mail| match mail {
                ToLink::Queued { stored, .. } => stored.map(|(_, number)| number),
                other => panic!("expected a copy, got {other:?}"),
            })
            .collect();
        assert_eq!(numbers, [None, Some(1), Some(2)]);
        link.hold(1, 7, 2);
        assert!(link.pass(1, puback(7)).is_none(), "held for the copies");
        let mut out = Vec::new();
        link.stored(1, true, &[], &mut out);
        assert!(out.is_empty(), "the second copy is not stored yet");
        link.stored(2, true, &[], &mut out);
        assert_eq!(released(&out), [(1, Some(7), true)]);
        // A route that queued nothing waits for nothing.
        link.begin_route();
        assert_eq!(link.routed(), Routed::Free);
    }

    /// The mirror record of a change of a session's QoS 2 packet ids is numbered as a copy is:
    /// the PUBREC of the route that made it, and a PUBCOMP held on its number, wait for the
    /// stream; while NATS is not connected nothing waits.
    #[test]
    fn a_pubrec_and_a_pubcomp_wait_for_the_mirror_record_of_their_packet_id() {
        let (handle, _, inbox) = ClusterHandle::with_inbox(1);
        let mut link = ShardLink::new(handle);
        let mirror = |link: &mut ShardLink, ids: Vec<u16>| {
            let mut record = session_record("c", None);
            record.incoming_qos2 = ids;
            link.mirror_numbered("c".into(), record, ShardId::new(0))
        };
        link.begin_route();
        assert_eq!(mirror(&mut link, vec![7]), None, "NATS not connected");
        assert_eq!(link.routed(), Routed::Free);
        link.handle.stats.connected.store(true, Ordering::Release);
        link.begin_route();
        assert_eq!(mirror(&mut link, vec![7]), Some(1));
        assert_eq!(link.routed(), Routed::Stored(1), "the PUBREC waits for it");
        let pubcomp = mirror(&mut link, Vec::new()).expect("numbered");
        let mails: Vec<(Option<u64>, Vec<u16>)> = inbox
            .drain()
            .map(|mail| match mail {
                ToLink::Session { stored, record, .. } => (
                    stored.map(|(_, number)| number),
                    record.map(|r| r.incoming_qos2).unwrap_or_default(),
                ),
                other => panic!("expected a mirror record, got {other:?}"),
            })
            .collect();
        assert_eq!(
            mails,
            [(None, vec![7]), (Some(1), vec![7]), (Some(2), vec![])]
        );
        let comp = Packet::PubComp(PubResponse {
            packet_id: NonZeroU16::new(7).unwrap(),
            reason: crate::protocol::ReasonCode::SUCCESS,
            properties: Default::default(),
        });
        link.hold(1, 7, pubcomp);
        assert!(link.pass(1, comp).is_none(), "held for the record");
        let mut out = Vec::new();
        link.stored(1, true, &[], &mut out);
        assert!(out.is_empty(), "its record is not stored yet");
        link.stored(2, true, &[], &mut out);
        assert_eq!(released(&out), [(1, Some(7), true)]);
    }

    #[test]
    fn a_durable_reply_waits_for_the_copies_made_before_it() {
        let (handle, _, _inbox) = ClusterHandle::with_inbox(1);
        let mut link = ShardLink::new(handle);
        assert_eq!(
            link.hold_durable(vec![0, 3], true),
            Some((vec![0, 3], true))
        );
        link.handle.stats.connected.store(true, Ordering::Release);
        let message = queued_message();
        link.copy_queued("c".into(), Arc::clone(&message), ShardId::new(0));
        assert!(
            link.hold_durable(vec![0, 4], true).is_none(),
            "copy 1 not stored"
        );
        link.copy_queued("c".into(), message, ShardId::new(0));
        assert!(
            link.hold_durable(vec![0, 5], true).is_none(),
            "behind the first"
        );
        let (mut acks, mut replies) = (Vec::new(), Vec::new());
        link.stored(1, true, &[], &mut acks);
        link.durable_released(&mut replies);
        assert_eq!(replies, [(vec![0, 4], true)]);
        replies.clear();
        link.stored(2, false, &[], &mut acks);
        link.durable_released(&mut replies);
        assert_eq!(replies, [(vec![0, 5], false)], "its copy was not stored");
    }

    #[test]
    fn nothing_waiting_passes_at_once() {
        let mut link = link();
        assert!(matches!(link.pass(1, puback(1)), Some((_, true))));
    }

    #[test]
    fn acknowledgements_wait_for_the_stream_and_keep_their_order() {
        let mut link = link();
        link.hold(1, 1, 1);
        link.hold(1, 2, 2);
        assert!(link.pass(1, puback(1)).is_none());
        // Needs no stream, but comes after one that does.
        assert!(link.pass(2, puback(7)).is_none());
        assert!(link.pass(1, puback(2)).is_none());
        let mut out = Vec::new();
        link.stored(1, true, &[], &mut out);
        assert_eq!(released(&out), [(1, Some(1), true), (2, Some(7), true)]);
        out.clear();
        link.stored(2, false, &[], &mut out);
        assert_eq!(released(&out), [(1, Some(2), false)]);
        // All settled: the next passes at once again.
        assert!(matches!(link.pass(3, puback(3)), Some((_, true))));
    }

    /// A mirror record the stream did not take refuses the acknowledgement waiting for its
    /// number only; the others of the same answer go with success.
    #[test]
    fn a_refused_mirror_record_refuses_only_the_acknowledgement_waiting_for_it() {
        let mut link = link();
        for number in 1..=3 {
            link.hold(u64::from(number), number, number.into());
            assert!(link.pass(u64::from(number), puback(number)).is_none());
        }
        let mut out = Vec::new();
        link.stored(3, true, &[2], &mut out);
        assert_eq!(
            released(&out),
            [(1, Some(1), true), (2, Some(2), false), (3, Some(3), true)]
        );
    }

    #[test]
    fn a_refusal_of_the_local_log_leaves_no_entry_and_keeps_the_order() {
        let mut link = link();
        link.hold(1, 1, 1);
        assert!(link.pass(1, puback(1)).is_none());
        // Refused locally while its message also waits for the stream, behind the first.
        link.hold(1, 2, 2);
        assert!(link.pass_refused(1, puback(2)).is_none());
        let mut out = Vec::new();
        link.stored(2, true, &[], &mut out);
        assert_eq!(released(&out), [(1, Some(1), true), (1, Some(2), false)]);
        assert!(link.gate.is_empty() && link.held.is_empty());
        // With nothing held it goes at once, and the id is free for the next message.
        assert!(link.pass_refused(1, puback(3)).is_some());
        assert!(link.gate.is_empty());
        assert!(matches!(link.pass(1, puback(3)), Some((_, true))));
    }

    #[test]
    fn an_answer_before_the_local_log_released_the_acknowledgement_is_kept() {
        let mut link = link();
        link.hold(4, 9, 1);
        let mut out = Vec::new();
        link.stored(1, false, &[], &mut out);
        assert!(out.is_empty());
        assert!(matches!(link.pass(4, puback(9)), Some((_, false))));
    }
}
