//! How sessions end and what ends with them: installing and removing a session on this shard,
//! detaching it when its connection goes (ended at once, or kept until its expiry), expiry, and
//! the will message (3.1.1 §3.1.2.5, 5.0 §3.1.3.2 with the Will Delay Interval).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::conn::Phase;
use super::{ConnId, LocalSession, SessionKey, Shard};
use crate::mail::Mail;
use crate::message::Message;
use crate::protocol::Will;
use crate::session::SessionState;

impl Shard {
    /// Installs a session this shard claimed with `ticket` (granted under `generation`); the
    /// store writes it whole when it outlives its connection.
    pub(super) fn install_session(
        &mut self,
        state: SessionState,
        generation: u64,
        ticket: crate::mail::Ticket,
    ) -> SessionKey {
        let key = self.install_session_unlogged(state, generation, ticket);
        self.store_installed(key);
        key
    }

    /// `install_session` without telling the store (a session restored from it).
    pub(super) fn install_session_unlogged(
        &mut self,
        state: SessionState,
        generation: u64,
        ticket: crate::mail::Ticket,
    ) -> SessionKey {
        let client_id = state.client_id.clone();
        // Never refused here, whatever the shard-wide limits: a session that moved in belongs to
        // a connection already admitted, and what it holds was acknowledged to its publishers.
        self.held.add(state.held());
        self.subscription_count += state.subscriptions.len();
        self.subscription_bytes += state.subscription_bytes();
        let key = self.sessions.insert(LocalSession {
            state,
            conn: None,
            generation,
            ticket,
            expires_at: None,
            forward_to: None,
            moved_from: None,
            dedup: None,
            held: None,
            store: super::StoreMark::default(),
        });
        self.sessions_by_client.insert(client_id, key);
        self.add_session_subscriptions(key);
        key
    }

    /// Removes a session from this shard (its subscriptions leave the trie) and returns it.
    pub(super) fn remove_session(&mut self, key: SessionKey) -> Option<SessionState> {
        self.remove_session_subscriptions(key);
        let session = self.sessions.try_remove(key)?;
        self.held.remove(session.state.held());
        self.subscription_count = self
            .subscription_count
            .saturating_sub(session.state.subscriptions.len());
        self.subscription_bytes = self
            .subscription_bytes
            .saturating_sub(session.state.subscription_bytes());
        if self.sessions_by_client.get(&session.state.client_id) == Some(&key) {
            self.sessions_by_client.remove(&session.state.client_id);
        }
        if session.state.is_logged() {
            self.store_gone(session.state.client_id.clone(), false);
        }
        if session.state.expiry_secs > 0 {
            self.unmirror_session(&session.state.client_id);
        }
        Some(session.state)
    }

    /// The connection of a session went away: end the session now, or keep it until it expires.
    pub(super) fn detach_session(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.conn = None;
        let dropped = session.state.drop_queued_qos0(&mut self.held);
        self.counters.dropped_qos0_offline += dropped as u64;
        if session.state.expiry_secs == 0 {
            self.end_session(key, now);
        } else {
            let expiry = Duration::from_secs(u64::from(session.state.expiry_secs));
            session.expires_at = Some(now + expiry);
            expires_sooner(&mut self.sessions_expire_from, now + expiry);
            self.store_meta(key);
        }
    }

    pub(super) fn end_session(&mut self, key: SessionKey, now: Instant) {
        let generation = self.sessions.get(key).map(|s| s.generation);
        if let (Some(mut state), Some(generation)) = (self.remove_session(key), generation) {
            if let Some((_, username, will)) = self.delayed_wills.remove(&state.client_id) {
                self.store_will_gone(&state.client_id);
                self.publish_will(state.client_id.clone(), username, will.into_will(), now);
            }
            let unfinished = state.take_unfinished_shared();
            self.redispatch_shared(unfinished, now);
            let home = self.home_of(&state.client_id);
            self.send_mail(
                home,
                Mail::Release {
                    client_id: state.client_id,
                    generation,
                },
            );
        }
    }

    pub(super) fn expire_sessions(&mut self, now: Instant) {
        // A pass over every session only once one may have expired, not on every tick: the
        // connected sessions (most of them, usually) never expire here.
        let mut expired: Vec<SessionKey> = Vec::new();
        if self.sessions_expire_from.is_some_and(|from| now >= from) {
            self.sessions_expire_from = None;
            for (key, session) in &self.sessions {
                match session.expires_at {
                    Some(at) if session.conn.is_none() && now >= at => expired.push(key),
                    Some(at) if session.conn.is_none() => {
                        expires_sooner(&mut self.sessions_expire_from, at)
                    }
                    _ => {}
                }
            }
        }
        self.metrics.counts.sessions_expired += expired.len() as u64;
        for key in expired {
            self.end_session(key, now);
        }
        self.publish_due_wills(now);
    }

    /// 5.0 §3.1.3.2.2: with a Will Delay Interval the will waits until the delay passes or the
    /// session ends, whichever comes first, and is dropped if the client reconnects meanwhile.
    pub(super) fn will_on_close(
        &mut self,
        client_id: ByteString,
        username: Option<ByteString>,
        will: Will,
        now: Instant,
    ) {
        let delay = will.properties.will_delay_interval_secs.unwrap_or(0);
        let session_expiry = self
            .session(&client_id)
            .filter(|s| s.conn.is_none())
            .map(|s| s.state.expiry_secs);
        match session_expiry {
            Some(expiry) if delay > 0 => {
                let wait = Duration::from_secs(u64::from(delay.min(expiry)));
                self.store_will(&client_id, &username, now + wait, &will);
                // It was held by its connection a moment ago: held again, whatever the count.
                let will = self.will_bytes.hold(will);
                self.delayed_wills
                    .insert(client_id, (now + wait, username, will));
            }
            _ => self.publish_will(client_id, username, will, now),
        }
    }

    /// Graceful shutdown ends every session with the process, so every will is due now: those
    /// of the connections still open (3.1.1 MQTT-3.1.2-8: closed without DISCONNECT; 5.0
    /// §3.1.2.5: the server closes without a DISCONNECT 0x00) and the delayed ones (5.0
    /// §3.1.3.2.2: the session ends before the delay passes). The connections stay open, so
    /// subscribers on this shard get the wills before their own goodbye.
    pub fn publish_wills_at_shutdown(&mut self, now: Instant) {
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.will.is_some()
                    && !conn.is_closing()
                    && matches!(conn.phase, Phase::Active { .. } | Phase::Resuming { .. })
            })
            .map(|(conn_id, _)| *conn_id)
            .collect();
        // With persistence a session outlives the process: a will with a delay waits for it on
        // disk (5.0 §3.1.3.2.2: until the delay passes or the session ends), as it would after
        // any other close. Without it every session ends now, and so every will is due.
        let sessions_survive = self.store_enabled();
        for conn_id in open {
            let Some(conn) = self.conns.get_mut(&conn_id) else {
                continue;
            };
            let Some(will) = conn.will.take() else {
                continue;
            };
            let (client_id, username) = (conn.client_id.clone(), conn.username.clone());
            let persisted_expiry = match conn.phase {
                Phase::Active { session } | Phase::Resuming { session } => self
                    .sessions
                    .get(session)
                    .filter(|s| s.state.is_logged())
                    .map(|s| s.state.expiry_secs),
                _ => None,
            };
            let delay = will.properties.will_delay_interval_secs.unwrap_or(0);
            match persisted_expiry {
                Some(expiry) if sessions_survive && delay > 0 => {
                    let due = now + Duration::from_secs(u64::from(delay.min(expiry)));
                    self.store_will(&client_id, &username, due, &will);
                    self.delayed_wills.insert(client_id, (due, username, will));
                }
                _ => self.publish_will(client_id, username, will.into_will(), now),
            }
        }
        if !sessions_survive {
            for (client_id, (_, username, will)) in std::mem::take(&mut self.delayed_wills) {
                self.publish_will(client_id, username, will.into_will(), now);
            }
        }
    }

    /// Publishes the delayed wills whose time has come.
    pub(super) fn publish_due_wills(&mut self, now: Instant) {
        let due: Vec<ByteString> = self
            .delayed_wills
            .iter()
            .filter(|(_, (at, _, _))| now >= *at)
            .map(|(client_id, _)| client_id.clone())
            .collect();
        for client_id in due {
            if let Some((_, username, will)) = self.delayed_wills.remove(&client_id) {
                self.store_will_gone(&client_id);
                self.publish_will(client_id, username, will.into_will(), now);
            }
        }
    }

    /// Sends a will, if the ACL lets its client write to its topic now (checked at send time, so
    /// a reload in between counts).
    pub(super) fn publish_will(
        &mut self,
        client_id: ByteString,
        username: Option<ByteString>,
        will: Will,
        now: Instant,
    ) {
        if !self.may_write(&client_id, username.as_deref(), &will.topic) {
            tracing::info!(client_id = %client_id, topic = %will.topic, "will not sent: not authorized");
            self.count_denied_publish();
            return;
        }
        let expires_at = will
            .properties
            .message_expiry_interval_secs
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        let properties = will.properties.to_publish().into();
        let message = Arc::new(Message {
            id: self.take_message_id(),
            topic: will.topic,
            payload: will.payload,
            qos: will.qos.min(self.settings.max_qos),
            retain: will.retain && self.settings.retain_available,
            properties,
            publisher: client_id,
            received_at: now,
            expires_at,
        });
        self.route(message, now);
    }
}

/// Brings `from`, the time before which no offline session expires, forward to `at`: every
/// offline session's expiry set goes through it, or `expire_sessions` would not see it.
pub(super) fn expires_sooner(from: &mut Option<Instant>, at: Instant) {
    *from = Some(from.map_or(at, |from| from.min(at)));
}
