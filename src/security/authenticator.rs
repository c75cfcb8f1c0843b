//! MQTT 5.0 enhanced authentication (§4.12): a CONNECT with an Authentication Method is routed to
//! the [`Authenticator`] of that method, which answers each step with success, a challenge for an
//! AUTH packet, or a refusal. ringmq ships no method; an embedder registers them with
//! `server::start_with`. Without a method of that name the CONNECT gets CONNACK 0x8C (Bad
//! authentication method, MQTT-4.12.0-1) and the connection is closed.

use bytes::Bytes;

use crate::protocol::ReasonCode;

/// The answer of one step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Authenticated; `username`, when given, is the identity the ACL keys on; `data`, when
    /// given, goes to the client in CONNACK (e.g. SCRAM's server-final message).
    Success {
        username: Option<String>,
        data: Option<Bytes>,
    },
    /// Send this Authentication Data in AUTH 0x18 (Continue authentication) and wait for the
    /// client's next AUTH.
    Continue { data: Bytes },
    /// Refuse the connection with this CONNACK reason code (e.g. 0x87 Not authorized).
    Fail { reason: ReasonCode },
}

/// One method, shared by every shard (so `Send + Sync`). Steps run on the connection's shard and
/// must be quick: a slow method should hand its work elsewhere.
pub trait Authenticator: Send + Sync {
    /// The Authentication Method it answers, e.g. `SCRAM-SHA-256`.
    fn method(&self) -> &str;

    /// The first step, from the CONNECT: client id, username and Authentication Data. Returns
    /// the answer and the state of the exchange for further steps.
    fn start(
        &self,
        client_id: &str,
        username: Option<&str>,
        data: Option<&[u8]>,
    ) -> (AuthStep, Box<dyn AuthenticatorExchange>);
}

/// The state of one exchange, for the client's next AUTH packets.
pub trait AuthenticatorExchange: Send {
    /// The client's next Authentication Data.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}
