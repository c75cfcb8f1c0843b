//! `Mail`: everything one shard says to another, on one screen. A closed set of owned, `Send`
//! values; messages travel as `Arc<Message>`, sessions as `Box<Moved>` (moved, never shared).
//!
//! Data plane: `Publish`. Control plane: interest replication, the subscribe barrier with its
//! retained lookup, retained writes to the topic's home shard, and the client-id directory
//! (claim, takeover, handover, release) partitioned by client id.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytestring::ByteString;
use shards::ShardId;

use crate::message::Message;
use crate::session::{Delivery, SessionState};

/// A request number, unique on the shard that asked; replies carry it back.
pub type Ticket = u64;

/// One retained lookup of a subscribe barrier: a filter and how many messages may come back.
#[derive(Debug, Clone)]
pub struct RetainedQuery {
    pub filter: ByteString,
    pub limit: usize,
}

/// The sender's member count of one shared-subscription group changed.
#[derive(Debug)]
pub struct SharedInterest {
    pub filter: ByteString,
    pub group: ByteString,
    pub members: u32,
}

/// A message for one member of a shared-subscription group on the receiving shard.
#[derive(Debug)]
pub struct SharedPublish {
    pub message: Arc<Message>,
    pub filter: ByteString,
    pub group: ByteString,
    /// Shards this message has already visited looking for a member.
    pub hops: u8,
    /// Offered again after `drop_oldest` evicted it from a member, for this reason: it goes only
    /// to a member with room, and is dropped (counted so) when none has any.
    pub reoffer: Option<crate::session::DropReason>,
    /// A record of a stream batch from another node: its tag, so that the member that queued
    /// it before the batch came again (after a restart) does not get it twice.
    pub tag: Option<crate::cluster::tags::StreamTag>,
}

/// A session handed over to a new owner, with the ids of the messages its dedup window saw while
/// it was still moving in (see `shard::moving`): the window moves with the session.
#[derive(Debug)]
pub struct Moved {
    pub state: SessionState,
    pub seen: Option<HashSet<u64>>,
}

/// A delivery for a session that moved to the receiving shard (see `shard::moving`).
#[derive(Debug)]
pub struct Forward {
    pub client_id: ByteString,
    /// The receiver's claim the session was passed to: the link of the chain this delivery follows.
    pub ticket: Ticket,
    pub delivery: Delivery,
    /// Shards this delivery has been forwarded through (saturating; for tracing).
    pub hops: u8,
    /// The delivery is a record of a stream batch from another node: its tag, so that the
    /// moved session notes it (or finds its note) as it would have on the former owner.
    pub tag: Option<crate::cluster::tags::StreamTag>,
}

#[derive(Debug)]
pub enum Mail {
    /// A message published on the sending shard, for this shard's local subscribers only.
    Publish(Arc<Message>),
    /// The sender's set of filters with at least one local subscriber changed.
    Interest {
        add: Vec<ByteString>,
        remove: Vec<ByteString>,
    },
    SharedInterest(Box<SharedInterest>),
    SharedPublish(Box<SharedPublish>),
    /// Subscribe barrier: the reply proves every earlier mail from the sender (its `Interest`) was
    /// applied here, and carries this shard's retained messages matching `queries`.
    Barrier {
        ticket: Ticket,
        queries: Vec<RetainedQuery>,
    },
    BarrierReply {
        ticket: Ticket,
        /// (index into the queries, message).
        retained: Vec<(usize, Arc<Message>)>,
    },
    /// A retained write for a topic whose home is the receiving shard (empty payload deletes).
    Retain(Arc<Message>),
    /// From the topic's home shard: the retained write with message `id` is applied.
    RetainStored {
        topic: ByteString,
        id: u64,
    },
    /// To the client id's home shard: the sender wants to own this client's session (`resumes`:
    /// the connection asked to continue it, Clean Start 0).
    Claim {
        client_id: ByteString,
        ticket: Ticket,
        resumes: bool,
    },
    /// From the home shard: the claim is recorded under `generation`; when `previous` is set the
    /// session's former owner has been told to hand it over.
    ClaimReply {
        ticket: Ticket,
        generation: u64,
        previous: Option<ShardId>,
        /// No shard had the session: another node's, from the cluster's session mirror.
        mirrored: Option<Box<crate::cluster::mirror::MirrorRecord>>,
    },
    /// From the home shard to the former owner: close the client's connection and hand its
    /// session to `new_owner` with `ticket` (`resumes` as in the claim).
    Takeover {
        client_id: ByteString,
        new_owner: ShardId,
        ticket: Ticket,
        resumes: bool,
    },
    /// The session of a taken-over client, or `None` if the former owner no longer had one.
    Handover {
        ticket: Ticket,
        session: Option<Box<Moved>>,
    },
    Forward(Box<Forward>),
    /// From a session's new owner (its claim `ticket`) to the shard it came from: the session's
    /// interest is in place everywhere.
    Confirmed {
        client_id: ByteString,
        ticket: Ticket,
    },
    /// From the shard a session came from to its new owner (claim `ticket` there): nothing more
    /// will be forwarded for it.
    Released {
        client_id: ByteString,
        ticket: Ticket,
    },
    /// To the home shard: the session of `generation` ended; forget its owner.
    Release {
        client_id: ByteString,
        generation: u64,
    },
    /// Persistence: the records made by the first `count` data mails from the receiver (see
    /// `Mail::is_data`) are durable here (`ok`), or could not be written (the log failed).
    Durable {
        count: u64,
        ok: bool,
    },
    /// Persistence: the sender has installed the state it restored at start, and its interest
    /// mail went before this one.
    Restored,
    /// From the cluster link (`from` is the receiving shard itself): a message published on
    /// another node, for this node's subscribers (see docs/CLUSTER.md).
    Remote(Arc<Message>),
    /// From the cluster link: a message of a stream batch (QoS 1/2 from another node), with its
    /// tag, for this node's subscribers; a session that queued it before (the batch delivered
    /// again after a restart) does not get it again (docs/CLUSTER.md, "Exactly once").
    RemoteTagged {
        message: Arc<Message>,
        tag: crate::cluster::tags::StreamTag,
    },
    /// A `RemoteTagged` message routed by the sending shard, for this shard's local subscribers
    /// (a local publish goes as `Publish`, without a tag).
    PublishTagged {
        message: Arc<Message>,
        tag: crate::cluster::tags::StreamTag,
    },
    /// From the cluster link: every stream batch up to this stream sequence is acknowledged;
    /// the notes of their records go.
    StreamAckFloor(u64),
    /// From the cluster link: a message published on another node for one member of a shared
    /// group (`hops` 0), which this node's members take (see docs/CLUSTER.md); a record of a
    /// stream batch carries its tag, as `RemoteTagged` does.
    RemoteShared(Box<SharedPublish>),
    /// From the cluster link, to the client id's home shard: the session mirror's record of a
    /// persistent session (`None`: gone), written by `node` (`own`: this node).
    MirroredSession {
        client_id: ByteString,
        record: Option<Box<crate::cluster::mirror::MirrorRecord>>,
        node: Box<str>,
        own: bool,
    },
    /// From the cluster link to every shard: `node` died and this node adopts its persistent
    /// sessions; each shard installs those whose mirrored records it keeps (docs/CLUSTER.md).
    AdoptSessions {
        node: ByteString,
    },
    /// From the cluster link to the client id's home shard, which passes it to the session's
    /// shard: a message queued for the session on the node it resumed from.
    QueuedFor {
        client_id: ByteString,
        message: Arc<Message>,
    },
    /// From the cluster link: the stream holds (`ok`), or did not take in time, every message
    /// this shard numbered up to `upto` (see `cluster::ShardLink::send`), except the mirror
    /// records numbered `refused` (only the acknowledgements waiting for those are refused).
    ClusterStored {
        upto: u64,
        ok: bool,
        refused: Box<[u64]>,
    },
    /// From the cluster link, to the topic's home shard: a retained write from the cluster's
    /// retained stream (empty payload deletes).
    RemoteRetain(Arc<Message>),
    /// From the cluster link, to every shard: this client connected on another node at `at`;
    /// its older connection and its session here end (a client id is unique in the cluster).
    RemoteClaim {
        client_id: ByteString,
        at: Instant,
    },
}

impl Mail {
    /// Mail that may make records in the receiver's log: what a durable acknowledgement waits
    /// for (see `store::journal`).
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Mail::Publish(_)
                | Mail::PublishTagged { .. }
                | Mail::SharedPublish(_)
                | Mail::Retain(_)
                | Mail::Forward(_)
                | Mail::Handover { .. }
        )
    }
}

const _: () = assert!(std::mem::size_of::<Mail>() <= 64);

/// Mail as it crosses a ring: the mail and when the sending shard moved it in, so the receiver
/// can record how long it waited (`ringmq_ring_wait_seconds`).
#[derive(Debug)]
pub struct Envelope {
    pub mail: Mail,
    pub posted: Stamp,
}

// A ring slot holds the mail and one more word.
const _: () = assert!(std::mem::size_of::<Envelope>() <= 72);

/// A point in time as microseconds since the process's mail epoch, wrapping every 71 minutes.
/// Four bytes instead of a 16-byte `Instant`; differences are right for waits under 71 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u32);

impl Stamp {
    /// `now` as a stamp. The sender reads the clock once per batch and stamps the whole batch.
    pub fn at(now: Instant) -> Stamp {
        let micros = now.saturating_duration_since(epoch()).as_micros();
        // Keeping the low 32 bits is the wrap-around: only differences are read.
        Stamp(micros as u32)
    }

    /// Whole microseconds from `earlier` to this stamp (0 if `earlier` is in fact later).
    pub fn micros_since(self, earlier: Stamp) -> u64 {
        let elapsed = self.0.wrapping_sub(earlier.0);
        // A stamp from the future shows up as a wait of more than half the wrap: call it 0.
        if elapsed > u32::MAX / 2 {
            return 0;
        }
        u64::from(elapsed)
    }
}

/// The instant stamps count from: fixed at the first use (the broker's start).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stamps_measure_waits_and_never_go_negative() {
        let start = epoch() + Duration::from_secs(5);
        let posted = Stamp::at(start);
        let check = |later: Duration, expected: u64| {
            let taken = Stamp::at(start + later);
            assert_eq!(taken.micros_since(posted), expected, "{later:?}");
        };
        check(Duration::ZERO, 0);
        check(Duration::from_micros(1), 1);
        check(Duration::from_millis(250), 250_000);
        check(Duration::from_secs(60), 60_000_000);
        let later = Stamp::at(start + Duration::from_secs(1));
        assert_eq!(posted.micros_since(later), 0, "taken before posted");
        assert_eq!(Stamp::at(epoch()).micros_since(Stamp::at(epoch())), 0);
    }

    #[test]
    fn stamps_wrap_after_71_minutes() {
        let wrap = Duration::from_micros(1 << 32);
        let before_wrap = epoch() + wrap - Duration::from_micros(10);
        let posted = Stamp::at(before_wrap);
        let taken = Stamp::at(before_wrap + Duration::from_micros(30));
        assert_eq!(taken.micros_since(posted), 30);
    }
}
