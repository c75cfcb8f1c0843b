//! The codec under fuzzing, compiled from the broker's own source file tree. `protocol` depends on
//! nothing else in the crate (only `bytes`, `bytestring`, `thiserror`), so building just it keeps
//! sanitizer builds fast and lets fuzzing run while other parts of the tree are mid-change.

#[path = "../../src/protocol/mod.rs"]
pub mod protocol;
