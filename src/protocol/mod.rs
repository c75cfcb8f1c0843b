//! The MQTT 3.1 / 3.1.1 / 5.0 codec: pure functions from bytes to [`Packet`] and back. No I/O, no
//! async, and no panics on any input: every path that client bytes reach returns an error instead,
//! and the lints below hold that line for this whole module.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod packet;
pub mod properties;
pub mod types;

pub use packet::*;
pub use properties::*;
pub use types::*;
