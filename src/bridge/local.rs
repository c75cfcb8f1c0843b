//! The bridge's side on this broker: a 5.0 session on the bridge's shard, driven through the
//! same events a client connection sends (`Accepted`, `Authenticated`, `Packet`, `Drained`,
//! `Closed`) and reading the bytes the shard writes for it. To the rest of the broker it is a
//! client like any other: its `out` rules are subscriptions (found through the interest index on
//! every shard), its `in` rules publishes. Its outbox is the bridge's queue: bounded by the
//! session limits, dropping by the session drop policy, and kept across a restart with
//! persistence on (the session is persistent).
//!
//! Every subscription carries No Local, so what the bridge publishes here from the remote never
//! goes back out through the same bridge, and Retain As Published, so the retain flag crosses.

use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use bytes::BytesMut;
use bytestring::ByteString;

use super::rules::Filter;
use crate::protocol::{
    self, Connect, ConnectProperties, Packet, RetainHandling, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions, Version,
};
use crate::server::ShardShell;
use crate::shard::{ConnId, Event};

/// The address a bridge's local session shows as its peer (logs, metrics).
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// The bridge's session on its shard.
pub(crate) struct Local {
    /// Held to close the connection when the bridge stops (its task dropped at shutdown or
    /// reload): the session then waits offline, as any persistent session.
    shell: Rc<ShardShell>,
    pub conn: ConnId,
    /// Bytes the shard wrote and the bridge has not decoded yet.
    buf: BytesMut,
    pub client_id: String,
}

impl Local {
    /// Opens the session: CONNECT (persistent, `inflight_max` as Receive Maximum) and one
    /// SUBSCRIBE per `out` filter, with the filter's rule index + 1 as Subscription Identifier.
    pub(crate) fn open(
        shell: &Rc<ShardShell>,
        client_id: &str,
        inflight_max: u16,
        expiry_secs: u32,
        filters: &[Filter],
    ) -> Local {
        let conn = shell.next_conn_id();
        shell.writers.borrow_mut().insert(conn);
        let connect = Connect {
            version: Version::V5,
            clean_start: false,
            keep_alive_secs: 0,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval_secs: Some(expiry_secs),
                receive_maximum: Some(inflight_max),
                ..ConnectProperties::default()
            },
        };
        let stale = stale_filters(shell, client_id, filters);
        let mut events = vec![
            Event::Accepted { conn, peer: PEER },
            Event::Authenticated {
                conn,
                enhanced: None,
            },
            Event::Packet {
                conn,
                packet: Packet::Connect(Box::new(connect)),
            },
        ];
        for (index, filter) in filters.iter().enumerate() {
            let subscribe = Subscribe {
                packet_id: u16::try_from(index + 1)
                    .ok()
                    .and_then(crate::protocol::PacketId::new)
                    .unwrap_or(crate::protocol::PacketId::MAX),
                properties: SubscribeProperties {
                    subscription_identifier: u32::try_from(filter.rule + 1).ok(),
                    user_properties: Vec::new(),
                },
                filters: vec![SubscribeFilter {
                    filter: ByteString::from(filter.filter.as_str()),
                    options: SubscriptionOptions {
                        qos: filter.qos,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::OnNewSubscription,
                    },
                }],
            };
            events.push(Event::Packet {
                conn,
                packet: Packet::Subscribe(subscribe),
            });
        }
        if !stale.is_empty() {
            // Rules removed from the config while the session was kept: their subscriptions go.
            events.push(Event::Packet {
                conn,
                packet: Packet::Unsubscribe(protocol::Unsubscribe {
                    packet_id: protocol::PacketId::MAX,
                    properties: protocol::UnsubscribeProperties::default(),
                    filters: stale,
                }),
            });
        }
        shell.handle_all(events);
        Local {
            shell: Rc::clone(shell),
            conn,
            buf: BytesMut::new(),
            client_id: client_id.to_owned(),
        }
    }

    /// Resolves when the shard buffered bytes for the session (or it is gone).
    pub(crate) fn written(&self) -> impl std::future::Future<Output = ()> + '_ {
        crate::connection::woken(&self.shell.writers, self.conn)
    }

    /// True once the shard closed the session's connection (a client took the id over, or the
    /// broker is stopping).
    pub(crate) fn is_closed(&self, shell: &ShardShell) -> bool {
        shell
            .shard
            .borrow()
            .conn(self.conn)
            .is_none_or(|conn| conn.is_closing())
    }

    /// Takes what the shard wrote for the bridge and decodes the whole packets in it into
    /// `packets`, at most `max` of them (the rest stays for the next call). The shard's buffer
    /// is taken only once the previous one is decoded, so messages the remote cannot take yet
    /// wait in the session's outbox, under its limits, not in this buffer.
    pub(crate) fn take(&mut self, shell: &ShardShell, packets: &mut Vec<Packet>, max: usize) {
        if self.buf.is_empty() {
            let taken = {
                let mut shard = shell.shard.borrow_mut();
                let mut discarded = Vec::new();
                let taken = shard.take_out(self.conn, &mut discarded, usize::MAX);
                // Copied into the bridge's buffer at once: no longer held by the shard.
                let taken = taken.map(|(out, _)| out);
                shard.written(taken.as_ref().map_or(0, BytesMut::len));
                taken
            };
            if let Some(out) = taken
                && !out.is_empty()
            {
                self.buf.extend_from_slice(&out);
                // Room in the shard's buffer again: queued deliveries may follow.
                shell.handle(Event::Drained { conn: self.conn });
            }
        }
        while packets.len() < max {
            match protocol::decode(&mut self.buf, Version::V5, usize::MAX) {
                Ok(Some(packet)) => packets.push(packet),
                Ok(None) => break,
                Err(error) => {
                    // Our own broker's output: a bug, not input. Said loudly, then dropped.
                    tracing::error!(%error, "bridge: undecodable output from the local session");
                    self.buf.clear();
                    break;
                }
            }
        }
    }

    /// True when decoded-but-unread packets remain buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands packets to the shard as if the bridge's client had sent them.
    pub(crate) fn send(&self, shell: &ShardShell, packets: impl IntoIterator<Item = Packet>) {
        let conn = self.conn;
        shell.handle_all(
            packets
                .into_iter()
                .map(|packet| Event::Packet { conn, packet }),
        );
    }

    /// Ends the connection; the session stays (it is persistent) unless `end_session`.
    pub(crate) fn close(self, shell: &ShardShell, end_session: bool) {
        if end_session {
            let disconnect = protocol::Disconnect {
                reason: protocol::ReasonCode::SUCCESS,
                properties: protocol::DisconnectProperties {
                    session_expiry_interval_secs: Some(0),
                    ..protocol::DisconnectProperties::default()
                },
            };
            self.send(shell, [Packet::Disconnect(disconnect)]);
        }
        drop(self);
    }
}

/// The subscriptions the bridge's session (when it is on this shard) has beyond `filters`.
fn stale_filters(shell: &ShardShell, client_id: &str, filters: &[Filter]) -> Vec<ByteString> {
    let shard = shell.shard.borrow();
    let Some(session) = shard.session(client_id) else {
        return Vec::new();
    };
    session
        .state
        .subscriptions
        .keys()
        .filter(|existing| {
            !filters
                .iter()
                .any(|f| f.filter == existing.as_ref() as &str)
        })
        .cloned()
        .collect()
}

impl Local {
    /// Ends the bridge's session and drops what it queued (a bridge removed from the config);
    /// returns how many messages it held.
    pub(crate) fn discard(shell: &Rc<ShardShell>, client_id: &str) -> usize {
        let queued = shell
            .shard
            .borrow()
            .session(client_id)
            .map_or(0, |session| session.state.outbox_len());
        let local = Local::open(shell, client_id, 1, 0, &[]);
        local.close(shell, true);
        queued
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Dropped from inside `handle` only if the executor itself is being torn down; then
        // the shard goes too and there is nothing to tell it.
        if self.shell.shard.try_borrow_mut().is_err() {
            return;
        }
        self.shell.handle(Event::Closed { conn: self.conn });
        self.shell.writers.borrow_mut().remove(self.conn);
    }
}
