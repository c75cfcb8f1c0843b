//! ringmq: an MQTT 3.1 / 3.1.1 / 5.0 broker built thread-per-core on io_uring.
//!
//! Each CPU core runs one shard (see the `shards` crate) that owns its listener, its connections,
//! its sessions and its part of the topic index. This crate holds the broker: the codec
//! ([`protocol`]), the config ([`config`]), the topic index ([`router`]) and the per-shard broker.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod config;
mod connect_rate;
mod connection;
pub mod mail;
pub mod message;
pub mod metrics;
pub mod packet_trace;
pub mod protocol;
pub mod readiness;
pub mod router;
pub mod security;
pub mod server;
pub mod service;
pub mod session;
pub mod shard;
pub mod store;
pub mod sys;
pub mod tls;
pub(crate) mod transport;
pub mod ws;
