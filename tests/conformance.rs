//! Goal: the normative statements of MQTT 3.1, 3.1.1 and 5.0 addressed to the server, checked at
//! the packet level (raw bytes where a client library would hide the behaviour) with clients on
//! chosen shards. `docs/CONFORMANCE.md` maps each statement to the test here (or elsewhere) that
//! checks it; `tests/conformance_map.rs` keeps that map true.

mod common;

mod conformance {
    pub mod connack;
    pub mod disconnect;
    pub mod malformed;
    pub mod publish;
    pub mod raw;
    pub mod subscribe;
    pub mod will;
}
