//! DISCONNECT (§3.14) and AUTH (§3.15); PINGREQ and PINGRESP have no body at all.
//!
//! In 5.0 both DISCONNECT and AUTH may stop early: a remaining length of 0 means reason 0x00 and no
//! properties, and a reason code without a property length means no properties (§3.14.2.2.1,
//! §3.15.2.2.1). Encode writes those short forms when it can. Before 5.0 DISCONNECT has no body and
//! AUTH does not exist. Authentication Data without Authentication Method is a Protocol Error.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::{Auth, Disconnect};
use super::properties::{AuthProperties, DisconnectProperties};
use super::property::Properties;
use super::property_sets::{self, Decode};
use super::types::{ReasonCode, Version};
use super::wire::{Reader, packet_type};

/// The reason code and properties of a DISCONNECT or AUTH body, each optional.
fn decode_tail<P: Decode>(
    reader: &mut Reader,
    packet_type: u8,
) -> Result<(ReasonCode, P), DecodeError> {
    if reader.is_empty() {
        return Ok((ReasonCode::SUCCESS, P::default()));
    }
    let reason = ReasonCode(reader.u8()?);
    let properties = if reader.is_empty() {
        P::default()
    } else {
        property_sets::decode(reader, packet_type)?
    };
    reader.finish()?;
    Ok((reason, properties))
}

/// Body length of a reason code with properties: empty for success without properties, else the
/// reason code and the properties with their length.
fn tail_len(reason: ReasonCode, properties: &impl Properties) -> Result<usize, EncodeError> {
    let body = properties.body_len()?;
    Ok(match (reason, body) {
        (ReasonCode::SUCCESS, 0) => 0,
        _ => 1 + properties.wire_len()?,
    })
}

fn put_tail(
    reason: ReasonCode,
    properties: &impl Properties,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if tail_len(reason, properties)? > 0 {
        buf.put_u8(reason.0);
        properties.put(buf)?;
    }
    Ok(())
}

pub fn decode_disconnect(reader: &mut Reader, version: Version) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        reader.finish()?;
        return Ok(Disconnect::default());
    }
    let (reason, properties) =
        decode_tail::<DisconnectProperties>(reader, packet_type::DISCONNECT)?;
    Ok(Disconnect { reason, properties })
}

pub fn disconnect_len(disconnect: &Disconnect, version: Version) -> Result<usize, EncodeError> {
    if !version.is_v5() {
        return Ok(0);
    }
    tail_len(disconnect.reason, &disconnect.properties)
}

pub fn put_disconnect(
    disconnect: &Disconnect,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        put_tail(disconnect.reason, &disconnect.properties, buf)?;
    }
    Ok(())
}

/// AUTH exists only in 5.0; the caller refuses packet type 15 before that.
pub fn decode_auth(reader: &mut Reader) -> Result<Auth, DecodeError> {
    let (reason, properties) = decode_tail::<AuthProperties>(reader, packet_type::AUTH)?;
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(Auth { reason, properties })
}

pub fn auth_len(auth: &Auth, version: Version) -> Result<usize, EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::UnsupportedInVersion(version));
    }
    tail_len(auth.reason, &auth.properties)
}

pub fn put_auth(auth: &Auth, buf: &mut BytesMut) -> Result<(), EncodeError> {
    put_tail(auth.reason, &auth.properties, buf)
}
