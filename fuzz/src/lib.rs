//! The parts of the broker under fuzzing, compiled from the broker's own source tree. Each of
//! these modules depends on nothing else in the crate (only on its own external crates), so
//! building just them keeps sanitizer builds fast and lets fuzzing run while other parts of the
//! tree are mid-change.

#[path = "../../src/protocol/mod.rs"]
pub mod protocol;

#[path = "../../src/router/mod.rs"]
pub mod router;

#[path = "../../src/config/mod.rs"]
pub mod config;

#[path = "../../src/auth/mod.rs"]
pub mod auth;
