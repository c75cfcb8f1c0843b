//! The invariants every scenario shares: some hold after every `handle`, the rest whenever no
//! mail is pending. Per-handle checks read cached views of each shard, refreshed only for the
//! shard just handled (nothing else changed), so checking after every event stays cheap.

use std::collections::{BTreeMap, BTreeSet};

use ringmq::protocol::ReasonCode;
use ringmq::shard::{ConnId, home_of};
use shards::ShardId;

use super::world::{Client, World};

/// What the per-handle checks read of each shard.
pub struct Views {
    /// `local[s]`: filters with a local subscriber on s.
    local: Vec<BTreeSet<String>>,
    /// `interest[t][s]`: filters t believes s has subscribers for.
    interest: Vec<Vec<BTreeSet<String>>>,
    /// `online[s]`: client ids whose session on s is bound to a connection that is not closing.
    online: Vec<Vec<(String, ConnId)>>,
}

impl Views {
    pub fn new(n: usize) -> Views {
        Views {
            local: vec![BTreeSet::new(); n],
            interest: vec![vec![BTreeSet::new(); n]; n],
            online: vec![Vec::new(); n],
        }
    }
}

impl World {
    /// Invariants that hold after every `handle` (here, on shard `handled`).
    /// `mail_in`: the event was mail other than `Publish`, the only kind that can change
    /// interest (`on_interest` alone writes the interest trie).
    pub(super) fn check_always(&mut self, handled: usize, mail_in: bool) {
        self.refresh_views(handled, mail_in);
        let shard = &self.shards[handled];
        assert_eq!(
            (shard.held(), shard.subscription_count()),
            shard.recount_held(),
            "shard {handled}: the kept totals of held messages and subscriptions drifted from \
             its sessions'"
        );
        let mut online: BTreeMap<&str, usize> = BTreeMap::new();
        for (shard, ids) in self.views.online.iter().enumerate() {
            for (id, _) in ids {
                if let Some(other) = online.insert(id, shard) {
                    panic!("client {id} online on shards {other} and {shard}");
                }
            }
        }
        self.check_no_false_negatives(handled);
    }

    fn refresh_views(&mut self, handled: usize, mail_in: bool) {
        let shard = &self.shards[handled];
        self.views.local[handled] = shard.local_filters().into_iter().collect();
        for s in (0..self.n).filter(|_| mail_in) {
            let interest = shard.interest_filters(ShardId::new(s));
            self.views.interest[handled][s] = interest.into_iter().collect();
        }
        let mut online = Vec::new();
        for id in &self.client_ids {
            let Some(conn_id) = shard.session(id).and_then(|s| s.conn) else {
                continue;
            };
            let Some(conn) = shard.conn(conn_id) else {
                panic!("shard {handled}: session {id} bound to missing connection {conn_id}");
            };
            assert_eq!(
                conn.client_id, *id,
                "shard {handled}: session {id} bound to another client's connection"
            );
            if !conn.is_closing() {
                online.push((id.clone(), conn_id));
            }
        }
        self.views.online[handled] = online;
    }

    /// One live (CONNACK'd, not closed) connection per client id, as the clients see it: checked
    /// when `conn` reads a successful CONNACK, the only way a connection becomes live.
    pub(super) fn check_one_live_connection(&self, conn: ConnId) {
        let id = &self.clients[&conn].client_id;
        for conns in &self.open {
            for other in conns.iter().filter(|c| **c != conn) {
                let client = &self.clients[other];
                // Its close may be set on the shard and not read yet in this same handle.
                let closing = self.shards[client.shard]
                    .conn(*other)
                    .is_none_or(|c| c.is_closing());
                assert!(
                    !(client.is_live() && !closing && client.client_id == *id),
                    "client {id} has two live connections: {other} and {conn}"
                );
            }
        }
    }

    /// A filter with a local subscriber on s is in t's interest for s once s's mail to t is in.
    /// Only pairs with `handled` on one side can have changed since the last check.
    fn check_no_false_negatives(&self, handled: usize) {
        for s in 0..self.n {
            for t in 0..self.n {
                let changed = s == handled || t == handled;
                if t == s || !changed || !self.pending[s][t].is_empty() {
                    continue;
                }
                let interest = &self.views.interest[t][s];
                if let Some(missing) = self.views.local[s].difference(interest).next() {
                    panic!(
                        "false negative: shard {s} has local {missing:?}, shard {t} knows \
                         {interest:?} with no mail pending {s} -> {t}"
                    );
                }
            }
        }
    }

    /// Invariants of a quiet world (no mail pending).
    pub fn check_quiescent(&self) {
        assert!(!self.mail_pending(), "check_quiescent with mail pending");
        for s in 0..self.n {
            assert!(
                !self.shards[s].has_mail(),
                "shard {s} has mail at quiescence"
            );
            // Every session move finished: no stub, relay, tombstone or dedup window is left.
            assert_eq!(
                self.shards[s].moving_len(),
                0,
                "shard {s} still holds session moves at quiescence"
            );
            let mut local = self.shards[s].local_filters();
            local.sort();
            let own = self.shards[s].interest_filters(ShardId::new(s));
            assert!(
                own.is_empty(),
                "shard {s} holds interest for itself: {own:?}"
            );
            for t in (0..self.n).filter(|t| *t != s) {
                let mut interest = self.shards[t].interest_filters(ShardId::new(s));
                interest.sort();
                assert_eq!(
                    interest, local,
                    "shard {t}'s interest for shard {s} differs from its local filters"
                );
            }
        }
        for (conn_id, client) in &self.clients {
            if client.closed {
                continue;
            }
            let connack = client.connack.as_ref().map(|a| a.reason);
            assert_eq!(
                connack,
                Some(ReasonCode::SUCCESS),
                "conn {conn_id} ({}) is open without a successful CONNACK at quiescence",
                client.client_id
            );
            assert!(
                client.awaiting.is_empty(),
                "conn {conn_id} ({}) still waits for answers to {:?}",
                client.client_id,
                client.awaiting
            );
        }
        for id in &self.client_ids {
            self.check_directory(id);
        }
    }

    /// At quiescence: at most one shard has the session, the directory names it, and a live
    /// connection is bound to it.
    fn check_directory(&self, id: &str) {
        let holders: Vec<usize> = (0..self.n)
            .filter(|s| self.shards[*s].session(id).is_some())
            .collect();
        assert!(
            holders.len() <= 1,
            "client {id}: session held by shards {holders:?}"
        );
        let home = home_of(id, self.n).index();
        let owner = self.shards[home].directory_owner(id).map(ShardId::index);
        assert_eq!(
            owner,
            holders.first().copied(),
            "client {id}: directory at shard {home} names {owner:?}, sessions on {holders:?}"
        );
        let live: Vec<(&ConnId, &Client)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.client_id == id && c.is_live())
            .collect();
        if let Some((conn_id, client)) = live.first() {
            let session = self.shards[client.shard].session(id);
            assert_eq!(
                session.and_then(|s| s.conn),
                Some(**conn_id),
                "client {id}: live connection {conn_id} on shard {} is not bound to its session",
                client.shard
            );
        }
    }
}
