//! SUBSCRIBE (§3.8), SUBACK (§3.9), UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).
//!
//! SUBSCRIBE and UNSUBSCRIBE carry at least one filter (MQTT-3.8.3-3, MQTT-3.10.3-2). Subscription
//! options (§3.8.3.1): QoS 3 and reserved bits are malformed (bits 2-7 before 5.0, bits 6-7 in 5.0);
//! Retain Handling 3 is a Protocol Error. Filters are only checked as UTF-8 strings here: an invalid
//! filter earns its own SUBACK code, so the broker checks it with `topic::parse_subscription`.
//!
//! SUBACK before 5.0 knows 0x00, 0x01, 0x02 and 0x80 only: encode writes any failure as 0x80.
//! UNSUBACK before 5.0 has no payload.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::{
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::property::Properties;
use super::property_sets;
use super::types::{QoS, ReasonCode, Version};
use super::wire::{Reader, field_len, packet_type, put_field};

const OPTION_NO_LOCAL: u8 = 0b0000_0100;
const OPTION_RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const OPTION_RETAIN_HANDLING_SHIFT: u8 = 4;

fn decode_options(byte: u8, version: Version) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if version.is_v5() {
        0b1100_0000
    } else {
        0b1111_1100
    };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved);
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain_handling = match (byte >> OPTION_RETAIN_HANDLING_SHIFT) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscription,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::RetainHandlingInvalid),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & OPTION_NO_LOCAL != 0,
        retain_as_published: byte & OPTION_RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn encode_options(options: &SubscriptionOptions, version: Version) -> u8 {
    let mut byte = options.qos.as_u8();
    if version.is_v5() {
        if options.no_local {
            byte |= OPTION_NO_LOCAL;
        }
        if options.retain_as_published {
            byte |= OPTION_RETAIN_AS_PUBLISHED;
        }
        byte |= (options.retain_handling as u8) << OPTION_RETAIN_HANDLING_SHIFT;
    }
    byte
}

pub fn decode_subscribe(reader: &mut Reader, version: Version) -> Result<Subscribe, DecodeError> {
    let packet_id = reader.packet_id()?;
    let properties = if version.is_v5() {
        property_sets::decode(reader, packet_type::SUBSCRIBE)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.string()?;
        let options = decode_options(reader.u8()?, version)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

pub fn subscribe_len(subscribe: &Subscribe, version: Version) -> Result<usize, EncodeError> {
    if subscribe.filters.is_empty() {
        return Err(EncodeError::NoTopicFilters);
    }
    let mut len = 2;
    if version.is_v5() {
        len += subscribe.properties.wire_len()?;
    }
    for filter in &subscribe.filters {
        len += field_len(filter.filter.as_bytes())? + 1;
    }
    Ok(len)
}

pub fn put_subscribe(
    subscribe: &Subscribe,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(subscribe.packet_id.get());
    if version.is_v5() {
        subscribe.properties.put(buf)?;
    }
    for filter in &subscribe.filters {
        put_field(buf, filter.filter.as_bytes());
        buf.put_u8(encode_options(&filter.options, version));
    }
    Ok(())
}

pub fn decode_unsubscribe(
    reader: &mut Reader,
    version: Version,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = reader.packet_id()?;
    let properties = if version.is_v5() {
        property_sets::decode(reader, packet_type::UNSUBSCRIBE)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

pub fn unsubscribe_len(unsubscribe: &Unsubscribe, version: Version) -> Result<usize, EncodeError> {
    if unsubscribe.filters.is_empty() {
        return Err(EncodeError::NoTopicFilters);
    }
    let mut len = 2;
    if version.is_v5() {
        len += unsubscribe.properties.wire_len()?;
    }
    for filter in &unsubscribe.filters {
        len += field_len(filter.as_bytes())?;
    }
    Ok(len)
}

pub fn put_unsubscribe(
    unsubscribe: &Unsubscribe,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(unsubscribe.packet_id.get());
    if version.is_v5() {
        unsubscribe.properties.put(buf)?;
    }
    for filter in &unsubscribe.filters {
        put_field(buf, filter.as_bytes());
    }
    Ok(())
}

/// A 3.1/3.1.1 SUBACK return code (0x80 is the one failure those versions know).
fn suback_code_v3(code: u8) -> Result<ReasonCode, DecodeError> {
    match code {
        0x00..=0x02 | 0x80 => Ok(ReasonCode(code)),
        other => Err(DecodeError::InvalidReturnCode(other)),
    }
}

pub fn decode_suback(reader: &mut Reader, version: Version) -> Result<SubAck, DecodeError> {
    let packet_id = reader.packet_id()?;
    let properties = if version.is_v5() {
        property_sets::decode(reader, packet_type::SUBACK)?
    } else {
        Default::default()
    };
    let codes = reader.rest();
    let reasons = if version.is_v5() {
        codes.iter().map(|&code| ReasonCode(code)).collect()
    } else {
        codes
            .iter()
            .map(|&code| suback_code_v3(code))
            .collect::<Result<_, _>>()?
    };
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub fn suback_len(suback: &SubAck, version: Version) -> Result<usize, EncodeError> {
    let properties = if version.is_v5() {
        suback.properties.wire_len()?
    } else {
        0
    };
    Ok(2 + properties + suback.reasons.len())
}

pub fn put_suback(
    suback: &SubAck,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(suback.packet_id.get());
    if version.is_v5() {
        suback.properties.put(buf)?;
        for reason in &suback.reasons {
            buf.put_u8(reason.0);
        }
    } else {
        for reason in &suback.reasons {
            buf.put_u8(if reason.is_error() {
                0x80
            } else {
                reason.0.min(2)
            });
        }
    }
    Ok(())
}

pub fn decode_unsuback(reader: &mut Reader, version: Version) -> Result<UnsubAck, DecodeError> {
    let packet_id = reader.packet_id()?;
    if !version.is_v5() {
        reader.finish()?;
        return Ok(UnsubAck {
            packet_id,
            properties: Default::default(),
            reasons: Vec::new(),
        });
    }
    let properties = property_sets::decode(reader, packet_type::UNSUBACK)?;
    let reasons = reader.rest().iter().map(|&code| ReasonCode(code)).collect();
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub fn unsuback_len(unsuback: &UnsubAck, version: Version) -> Result<usize, EncodeError> {
    if !version.is_v5() {
        return Ok(2);
    }
    Ok(2 + unsuback.properties.wire_len()? + unsuback.reasons.len())
}

pub fn put_unsuback(
    unsuback: &UnsubAck,
    version: Version,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(unsuback.packet_id.get());
    if version.is_v5() {
        unsuback.properties.put(buf)?;
        for reason in &unsuback.reasons {
            buf.put_u8(reason.0);
        }
    }
    Ok(())
}
