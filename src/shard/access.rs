//! Authorization against the ACL file, and the shard's side of authentication (the connection
//! task authenticates; the shard answers a refusal and sends AUTH challenges).
//!
//! Checked: every PUBLISH (Write), every SUBSCRIBE filter (Subscribe) and every delivery,
//! retained messages included (Read), and wills when they are sent (Write). Without an ACL file
//! the only check is that no client publishes to `$SYS` (which the broker alone writes). A client
//! id or username with `+`, `#` or `/` never widens a `pattern` rule (see `auth::acl`).
//!
//! A refused PUBLISH: 5.0 gets PUBACK or PUBREC 0x87 (Not authorized; §3.4.2.1, §3.5.2.1) and the
//! message is dropped; 3.1.1 has no code for it, so `auth.denied_publish_v3` chooses between
//! Mosquitto's answer (acknowledge and drop) and closing the connection. A refused filter gets
//! 0x87 in SUBACK (3.1.1: 0x80 Failure).

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{Access, Acl, ClientIdentity};
use crate::config::DeniedPublish;
use crate::protocol::{Packet, PacketId, PubResponse, QoS, ReasonCode, Version};

use super::{ConnId, EnhancedAuth, SessionKey, Shard};

impl Shard {
    /// Installs the ACL of the (re)load numbered `generation`; `None` allows everything. Read
    /// decisions cached under another generation are checked again.
    pub fn set_acl(&mut self, acl: Option<Arc<Acl>>, generation: u64) {
        self.acl = acl;
        self.acl_generation = generation.saturating_add(1);
    }

    /// May this client publish to `topic`? `$SYS` is the broker's alone.
    pub(super) fn may_write(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            return false;
        }
        self.acl.as_ref().is_none_or(|acl| {
            let client = ClientIdentity {
                client_id,
                username,
            };
            acl.check(&client, topic, Access::Write)
        })
    }

    /// May the session `key` subscribe to `filter` (a `$share/<group>/` prefix is not part of
    /// what the ACL sees)?
    pub(super) fn may_subscribe(&self, key: SessionKey, filter: &str) -> bool {
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, filter)| filter);
        self.session_may(key, filter, Access::Subscribe)
    }

    /// May the session `key` receive a message on `topic`? Checked per delivery, so a deny rule
    /// inside a wider subscription filters what it denies.
    pub(super) fn may_read(&self, key: SessionKey, topic: &str) -> bool {
        self.session_may(key, topic, Access::Read)
    }

    fn session_may(&self, key: SessionKey, topic_or_filter: &str, access: Access) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        let Some(session) = self.sessions.get(key) else {
            return false;
        };
        let client = ClientIdentity {
            client_id: &session.state.client_id,
            username: session.state.username.as_deref(),
        };
        acl.check(&client, topic_or_filter, access)
    }

    pub(super) fn count_denied_publish(&mut self) {
        self.metrics
            .messages_dropped(crate::metrics::DropReason::NotAuthorized, 1);
    }

    /// Answers a PUBLISH the ACL refuses; the message goes nowhere.
    pub(super) fn deny_publish(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        qos: QoS,
        packet_id: Option<PacketId>,
        now: Instant,
    ) {
        self.count_denied_publish();
        let version = self.conns.get(&conn_id).map_or(Version::V5, |c| c.version);
        let mut reason = ReasonCode::NOT_AUTHORIZED;
        if !version.is_v5() {
            if self.settings.denied_publish_v3 == DeniedPublish::Disconnect {
                return self.close_with_reason(conn_id, ReasonCode::NOT_AUTHORIZED, now);
            }
            reason = ReasonCode::SUCCESS;
        }
        let Some(packet_id) = packet_id else {
            return;
        };
        let response = PubResponse {
            packet_id,
            reason,
            properties: Default::default(),
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.write_packet(conn_id, &Packet::PubAck(response)),
            QoS::ExactlyOnce => {
                // 3.1.1 goes on with PUBREL: remember the id so PUBCOMP answers it. A 5.0 PUBREC
                // with a failure code ends the exchange (§4.3.3).
                if reason == ReasonCode::SUCCESS
                    && let Some(session) = self.sessions.get_mut(key)
                {
                    session.state.receive_qos2(packet_id);
                    self.store_touch(key);
                }
                self.write_packet(conn_id, &Packet::PubRec(response));
            }
        }
    }

    /// The CONNECT that follows passed authentication (by `enhanced`, if it names a method).
    pub(super) fn on_authenticated(&mut self, conn_id: ConnId, enhanced: Option<EnhancedAuth>) {
        self.metrics.authentication(true);
        if let Some(connecting) = self
            .conns
            .get_mut(&conn_id)
            .and_then(|c| c.connecting.as_mut())
        {
            connecting.enhanced_auth = enhanced;
        }
    }

    /// CONNACK with the refusal, then close; counted as a failed authentication.
    pub(super) fn on_auth_refused(
        &mut self,
        conn_id: ConnId,
        version: Version,
        reason: ReasonCode,
    ) {
        self.metrics.authentication(false);
        self.metrics
            .packet_received(crate::metrics::PacketKind::Connect);
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.version = version;
        self.refuse_connect(conn_id, reason);
    }

    /// Sends an AUTH 0x18 of an enhanced-authentication exchange (5.0 only).
    pub(super) fn on_auth_challenge(&mut self, conn_id: ConnId, auth: Box<crate::protocol::Auth>) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.version = Version::V5;
        self.write_packet(conn_id, &Packet::Auth(auth));
    }
}
