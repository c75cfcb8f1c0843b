//! `Mail`: everything one shard says to another, on one screen. A closed set of owned, `Send`
//! values; messages travel as `Arc<Message>`, sessions as `Box<Moved>` (moved, never shared).
//!
//! Data plane: `Publish`. Control plane: interest replication, the subscribe barrier with its
//! retained lookup, retained writes to the topic's home shard, and the client-id directory
//! (claim, takeover, handover, release) partitioned by client id.

use std::collections::HashSet;
use std::sync::Arc;

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
    /// To the client id's home shard: the sender wants to own this client's session.
    Claim {
        client_id: ByteString,
        ticket: Ticket,
    },
    /// From the home shard: the claim is recorded under `generation`; when `previous` is set the
    /// session's former owner has been told to hand it over.
    ClaimReply {
        ticket: Ticket,
        generation: u64,
        previous: Option<ShardId>,
    },
    /// From the home shard to the former owner: close the client's connection and hand its
    /// session to `new_owner` with `ticket`.
    Takeover {
        client_id: ByteString,
        new_owner: ShardId,
        ticket: Ticket,
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
}

const _: () = assert!(std::mem::size_of::<Mail>() <= 64);
