//! Problem information towards 5.0 clients: Reason Strings on refusals and errors, and the
//! client's Request Problem Information (5.0 §3.1.2.11.7).
//!
//! Every packet the broker writes passes `with_problem_information`, so the rule holds in one
//! place whatever code built the packet:
//! - CONNACK and DISCONNECT with an error code get a Reason String saying what went wrong,
//!   whatever the client asked (the spec lets the server send them on these two);
//! - acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK) and AUTH get one on an
//!   error code only if the client asked for problem information (the default), and lose any
//!   Reason String and User Properties if it set Request Problem Information to 0
//!   (MQTT-3.1.2-29);
//! - PUBLISH is never touched.
//!
//! A Reason String must not push a packet over the client's Maximum Packet Size (MQTT-3.4.2-2 and
//! siblings): `without_problem_information` is the fallback the writer sends instead.

use bytestring::ByteString;

use crate::protocol::{AckProperties, Packet, ReasonCode};

/// The packet to write instead of `packet`, if problem information changes it. `None` (the
/// common case, and every successful acknowledgement) means `packet` goes as it is.
pub fn with_problem_information(packet: &Packet, requested: bool) -> Option<Packet> {
    match packet {
        Packet::ConnAck(connack)
            if needs_text(connack.reason, &connack.properties.reason_string) =>
        {
            let mut connack = connack.clone();
            connack.properties.reason_string = Some(text(connack.reason));
            Some(Packet::ConnAck(connack))
        }
        Packet::Disconnect(disconnect)
            if needs_text(disconnect.reason, &disconnect.properties.reason_string) =>
        {
            let mut disconnect = disconnect.clone();
            disconnect.properties.reason_string = Some(text(disconnect.reason));
            Some(Packet::Disconnect(disconnect))
        }
        Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::Auth(_) => acknowledgement(packet, requested),
        _ => None,
    }
}

/// `packet` without Reason String and User Properties on the packets where the client can do
/// without them (everything but PUBLISH, whose User Properties belong to the message).
pub fn without_problem_information(packet: &Packet) -> Packet {
    let mut packet = packet.clone();
    match &mut packet {
        Packet::ConnAck(connack) => {
            connack.properties.reason_string = None;
            connack.properties.user_properties.clear();
        }
        Packet::Disconnect(disconnect) => {
            disconnect.properties.reason_string = None;
            disconnect.properties.user_properties.clear();
        }
        Packet::Auth(auth) => {
            auth.properties.reason_string = None;
            auth.properties.user_properties.clear();
        }
        _ => {
            if let Some(properties) = ack_properties(&mut packet) {
                *properties = AckProperties::default();
            }
        }
    }
    packet
}

fn acknowledgement(packet: &Packet, requested: bool) -> Option<Packet> {
    if !requested {
        let has_any = match packet {
            Packet::Auth(auth) => {
                auth.properties.reason_string.is_some()
                    || !auth.properties.user_properties.is_empty()
            }
            _ => ack_reasons(packet).is_some_and(|(_, p)| *p != AckProperties::default()),
        };
        return has_any.then(|| without_problem_information(packet));
    }
    let (reasons, properties) = ack_reasons(packet)?;
    let failure = reasons.iter().copied().find(|r| r.0 >= 0x80)?;
    if properties.reason_string.is_some() {
        return None;
    }
    let mut packet = packet.clone();
    if let Some(properties) = ack_properties(&mut packet) {
        properties.reason_string = Some(text(failure));
    }
    Some(packet)
}

fn ack_reasons(packet: &Packet) -> Option<(&[ReasonCode], &AckProperties)> {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some((std::slice::from_ref(&r.reason), &r.properties))
        }
        Packet::SubAck(suback) => Some((&suback.reasons, &suback.properties)),
        Packet::UnsubAck(unsuback) => Some((&unsuback.reasons, &unsuback.properties)),
        _ => None,
    }
}

fn ack_properties(packet: &mut Packet) -> Option<&mut AckProperties> {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some(&mut r.properties)
        }
        Packet::SubAck(suback) => Some(&mut suback.properties),
        Packet::UnsubAck(unsuback) => Some(&mut unsuback.properties),
        _ => None,
    }
}

fn needs_text(reason: ReasonCode, reason_string: &Option<ByteString>) -> bool {
    reason.0 >= 0x80 && reason_string.is_none()
}

fn text(reason: ReasonCode) -> ByteString {
    ByteString::from_static(reason_text(reason))
}

/// What an error code means for this broker, in words a client's log can show.
pub fn reason_text(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::MALFORMED_PACKET => "malformed packet",
        ReasonCode::PROTOCOL_ERROR => "protocol error",
        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR => "refused by the broker",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => {
            "client identifier not valid (empty, too long, or empty with a persistent session)"
        }
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => "bad user name or password",
        ReasonCode::NOT_AUTHORIZED => "not authorized",
        ReasonCode::SERVER_UNAVAILABLE => "server unavailable",
        ReasonCode::SERVER_BUSY => "server busy: too many connections or pending connects",
        ReasonCode::BANNED => "banned",
        ReasonCode::SERVER_SHUTTING_DOWN => "server shutting down",
        ReasonCode::BAD_AUTHENTICATION_METHOD => "authentication method not supported",
        ReasonCode::KEEP_ALIVE_TIMEOUT => "nothing received within 1.5 times the keep alive",
        ReasonCode::SESSION_TAKEN_OVER => "session taken over by a new connection",
        ReasonCode::TOPIC_FILTER_INVALID => "topic filter not valid or over the broker's limits",
        ReasonCode::TOPIC_NAME_INVALID => "topic name not valid or over the broker's limits",
        ReasonCode::PACKET_IDENTIFIER_IN_USE => "packet identifier in use",
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND => "packet identifier not found",
        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED => {
            "more unacknowledged QoS 2 publishes than the broker's receive maximum"
        }
        ReasonCode::TOPIC_ALIAS_INVALID => "topic alias 0, unknown, or above the maximum",
        ReasonCode::PACKET_TOO_LARGE => "packet larger than the maximum packet size",
        ReasonCode::MESSAGE_RATE_TOO_HIGH => "message rate too high",
        ReasonCode::QUOTA_EXCEEDED => "quota exceeded (user properties, filters, subscriptions)",
        ReasonCode::ADMINISTRATIVE_ACTION => "disconnected by an administrator",
        ReasonCode::PAYLOAD_FORMAT_INVALID => "payload declared UTF-8 (format indicator 1) is not",
        ReasonCode::RETAIN_NOT_SUPPORTED => "retained messages not supported",
        ReasonCode::QOS_NOT_SUPPORTED => "QoS above the broker's maximum",
        ReasonCode::USE_ANOTHER_SERVER => "use another server",
        ReasonCode::SERVER_MOVED => "server moved",
        ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "shared subscriptions not supported",
        ReasonCode::CONNECTION_RATE_EXCEEDED => "connection rate exceeded",
        ReasonCode::MAXIMUM_CONNECT_TIME => "maximum connect time reached",
        ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED => {
            "subscription identifiers not supported"
        }
        ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "wildcard subscriptions not supported",
        _ => "unspecified error",
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::protocol::{ConnAck, Disconnect, PubResponse, SubAck};

    fn pubcomp(reason: ReasonCode, properties: AckProperties) -> Packet {
        Packet::PubComp(PubResponse {
            packet_id: NonZeroU16::MIN,
            reason,
            properties,
        })
    }

    fn reason_string(packet: &Packet) -> Option<&str> {
        match packet {
            Packet::ConnAck(c) => c.properties.reason_string.as_deref(),
            Packet::Disconnect(d) => d.properties.reason_string.as_deref(),
            Packet::PubComp(r) => r.properties.reason_string.as_deref(),
            Packet::SubAck(s) => s.properties.reason_string.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn errors_get_a_reason_string_unless_the_client_declined() {
        let not_found = pubcomp(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, Default::default());
        let suback = Packet::SubAck(SubAck {
            packet_id: NonZeroU16::MIN,
            properties: Default::default(),
            reasons: vec![ReasonCode(1), ReasonCode::TOPIC_FILTER_INVALID],
        });
        let refused = Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            properties: Default::default(),
        }));
        let closed = Packet::Disconnect(Disconnect {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            properties: Default::default(),
        });
        // (packet, client asked, reason string expected)
        let cases = [
            (&not_found, true, Some("packet identifier not found")),
            (&not_found, false, None),
            (
                &suback,
                true,
                Some("topic filter not valid or over the broker's limits"),
            ),
            (&suback, false, None),
            (
                &refused,
                false,
                Some(
                    "client identifier not valid (empty, too long, or empty with a persistent session)",
                ),
            ),
            (
                &closed,
                false,
                Some("session taken over by a new connection"),
            ),
        ];
        for (packet, requested, expected) in cases {
            let sent =
                with_problem_information(packet, requested).unwrap_or_else(|| packet.clone());
            assert_eq!(
                reason_string(&sent),
                expected,
                "{packet:?} requested={requested}"
            );
        }
    }

    #[test]
    fn success_is_untouched_and_declined_information_is_removed() {
        let ok = pubcomp(ReasonCode::SUCCESS, Default::default());
        assert_eq!(with_problem_information(&ok, true), None);
        assert_eq!(with_problem_information(&ok, false), None);
        let annotated = pubcomp(
            ReasonCode::SUCCESS,
            AckProperties {
                reason_string: Some(ByteString::from("why")),
                user_properties: vec![(ByteString::from("k"), ByteString::from("v"))],
            },
        );
        assert_eq!(with_problem_information(&annotated, true), None);
        assert_eq!(with_problem_information(&annotated, false), Some(ok));
    }
}
