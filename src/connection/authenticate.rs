//! Authentication of the first CONNECT, in the connection's task before the shard sees it: the
//! certificate identity of an mTLS listener, enhanced authentication (5.0 §4.12), anonymous
//! clients, and the password file, whose checks run on the verifier threads so that the shard
//! keeps serving its other clients meanwhile.
//!
//! Refusals follow the spec's codes: wrong credentials are 0x86 (3.1.1: 0x04 Bad user name or
//! password), a refused anonymous client 0x87 (3.1.1: 0x05 Not authorized), a full verifier queue
//! 0x88 (3.1.1: 0x03 Server unavailable). The answer does not say which part was wrong: an unknown
//! user and a wrong password get the same code after the same work.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::Client;
use crate::protocol::{self, Auth, AuthProperties, Connect, Packet, ReasonCode, Version};
use crate::security::{AuthStep, Authenticator, VerifyError};
use crate::server::ShardShell;
use crate::shard::{EnhancedAuth, Event};
use crate::transport::Reader;

/// AUTH round trips one enhanced authentication may take.
const AUTH_ROUNDS_MAX: usize = 8;
/// How long the client may take to answer an AUTH challenge.
const AUTH_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The events for the shard: the authenticated CONNECT (with the username the ACL keys on), or
/// its refusal.
pub(super) async fn connect(
    shell: &ShardShell,
    client: &Client<'_>,
    mut connect: Box<Connect>,
    reader: &mut Reader,
    buf: &mut BytesMut,
) -> Result<[Event; 2], Event> {
    let conn = client.conn;
    let version = connect.version;
    match check(shell, client, &mut connect, reader, buf).await {
        Ok(enhanced) => Ok([
            Event::Authenticated { conn, enhanced },
            Event::Packet {
                conn,
                packet: Packet::Connect(connect),
            },
        ]),
        Err(reason) => {
            tracing::info!(peer = %client.peer(shell), client_id = %connect.client_id,
                reason = ?reason, "CONNECT refused by authentication");
            Err(Event::AuthRefused {
                conn,
                version,
                reason,
            })
        }
    }
}

/// Accepts (with the enhanced-authentication method that ran, if one did) or refuses.
async fn check(
    shell: &ShardShell,
    client: &Client<'_>,
    connect: &mut Connect,
    reader: &mut Reader,
    buf: &mut BytesMut,
) -> Result<Option<EnhancedAuth>, ReasonCode> {
    let security = &shell.security;
    if let Some(identity) = &client.identity {
        // Mosquitto's use_identity_as_username: the certificate is the credential (a CONNECT
        // that also names an AUTH method is refused by the shard: no method ran).
        connect.username = Some(ByteString::from(&**identity));
        connect.password = None;
        return Ok(None);
    }
    if let Some(method) = connect.properties.authentication_method.clone() {
        let authenticator = security
            .authenticator(&method)
            .ok_or(ReasonCode::BAD_AUTHENTICATION_METHOD)?;
        let (username, data) = enhanced(shell, client, authenticator, connect, reader, buf).await?;
        if let Some(username) = username {
            connect.username = Some(ByteString::from(username));
        }
        return Ok(Some(EnhancedAuth { method, data }));
    }
    let passwords = shell.snapshot().passwords.clone();
    match (&connect.username, passwords) {
        (Some(username), Some(passwords)) => {
            let password = connect.password.as_deref().unwrap_or_default().to_vec();
            let verdict = match &security.verifier {
                Some(verifier) => {
                    verifier
                        .verify(passwords, username.to_string(), password)
                        .await
                }
                None => Err(VerifyError::Stopped),
            };
            match verdict {
                Ok(true) => Ok(None),
                Ok(false) => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                Err(VerifyError::Busy | VerifyError::Stopped) => {
                    Err(ReasonCode::SERVER_UNAVAILABLE)
                }
            }
        }
        _ if security.allow_anonymous => Ok(None),
        _ => Err(ReasonCode::NOT_AUTHORIZED),
    }
}

/// Runs an enhanced-authentication exchange; the username it establishes, if any.
async fn enhanced(
    shell: &ShardShell,
    client: &Client<'_>,
    authenticator: &Arc<dyn Authenticator>,
    connect: &Connect,
    reader: &mut Reader,
    buf: &mut BytesMut,
) -> Result<(Option<String>, Option<Bytes>), ReasonCode> {
    let method = authenticator.method().to_owned();
    let (mut step, mut exchange) = authenticator.start(
        &connect.client_id,
        connect.username.as_deref(),
        connect.properties.authentication_data.as_deref(),
    );
    for _ in 0..AUTH_ROUNDS_MAX {
        let data = match step {
            AuthStep::Success { username, data } => return Ok((username, data)),
            AuthStep::Fail { reason } => return Err(reason),
            AuthStep::Continue { data } => data,
        };
        let challenge = Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: AuthProperties {
                authentication_method: Some(ByteString::from(method.as_str())),
                authentication_data: Some(data),
                ..AuthProperties::default()
            },
        };
        shell.handle(Event::AuthChallenge {
            conn: client.conn,
            auth: Box::new(challenge),
        });
        let answer =
            shards::time::timeout(AUTH_STEP_TIMEOUT, read_packet(shell, client, reader, buf))
                .await
                .map_err(|_| ReasonCode::NOT_AUTHORIZED)??;
        let Packet::Auth(answer) = answer else {
            return Err(ReasonCode::PROTOCOL_ERROR);
        };
        // MQTT-4.12.0-5: the same method throughout.
        if answer.reason != ReasonCode::CONTINUE_AUTHENTICATION
            || answer.properties.authentication_method.as_deref() != Some(method.as_str())
        {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        step = exchange.step(answer.properties.authentication_data.as_deref());
    }
    Err(ReasonCode::NOT_AUTHORIZED)
}

/// The client's next packet (5.0), read into `buf`.
async fn read_packet(
    shell: &ShardShell,
    client: &Client<'_>,
    reader: &mut Reader,
    buf: &mut BytesMut,
) -> Result<Packet, ReasonCode> {
    let packet_bytes_max = shell.shard.borrow().settings().packet_bytes_max;
    // The exchange's own reservation of the partial-packet allowance: what it leaves in `buf` is
    // reserved again by the reader's next read.
    let mut reservation = super::partial::Reservation::new(&shell.partial);
    loop {
        match protocol::decode(buf, Version::V5, packet_bytes_max) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(error) => return Err(error.reason_code()),
        }
        // Nothing parks while it authenticates: its own `Ends`, with no flag ever up.
        let ends = super::Ends::new();
        if super::read_more(shell, client.conn, reader, &ends, buf, &mut reservation)
            .await
            .is_none()
        {
            return Err(ReasonCode::UNSPECIFIED_ERROR);
        }
    }
}
