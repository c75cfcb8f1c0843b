//! The MQTT 3.1 / 3.1.1 / 5.0 codec: pure functions from bytes to [`Packet`] and back. No I/O, no
//! async, and no panics on any input: every path that client bytes reach returns an error instead,
//! and the lints below hold that line for this whole module.
//!
//! Map: `codec` (frames, dispatch, the public `decode` / `encode`), one file per packet family
//! (`connect`, `publish`, `subscribe`, `control`), `property` (one 5.0 property on the wire) and
//! `property_sets` (which packet allows which), `wire` (integers, strings), `topic` (§4.7 names,
//! filters, matching), `error` (reason-coded errors).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod codec;
mod connect;
mod control;
mod error;
pub mod packet;
pub mod properties;
mod property;
mod property_sets;
mod publish;
mod subscribe;
pub mod topic;
pub mod types;
mod wire;

#[cfg(test)]
mod tests;

/// The buffer types of the model, so users build packets without naming the crates.
pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use codec::{decode, encode, encode_publish, frame_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::*;
pub use publish::PublishRef;
pub use topic::{
    Subscription, TopicError, TopicFilter, matches, parse_subscription, topic_levels,
    validate_topic_name,
};
pub use types::*;
pub use wire::VAR_INT_MAX;
