//! `Mail`: everything one shard says to another, on one screen. A closed set of owned, `Send`
//! values; messages travel as `Arc<Message>`, sessions as `Box<SessionState>` (moved, never shared).
//!
//! Data plane: `Publish`. Control plane: interest replication, the subscribe barrier with its
//! retained lookup, retained writes to the topic's home shard, and the client-id directory
//! (claim, takeover, handover, release) partitioned by client id.

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

/// A delivery for a session that moved to the receiving shard (see `shard::moving`).
#[derive(Debug)]
pub struct Forward {
    pub client_id: ByteString,
    pub delivery: Delivery,
    /// Shards this delivery has been forwarded through.
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
        session: Option<Box<SessionState>>,
    },
    Forward(Box<Forward>),
    /// From a session's new owner to its former one: its interest is in place everywhere.
    Confirmed {
        client_id: ByteString,
    },
    /// From a former owner: nothing more will be forwarded for this session.
    Released {
        client_id: ByteString,
    },
    /// To the home shard: the session of `generation` ended; forget its owner.
    Release {
        client_id: ByteString,
        generation: u64,
    },
}

const _: () = assert!(std::mem::size_of::<Mail>() <= 64);
