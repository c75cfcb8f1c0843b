//! Codec tests: spec byte vectors (`vectors`), malformed input with its reason code (`malformed`),
//! streams split and joined (`stream`), and property tests (`roundtrip`).

mod malformed;
mod malformed_fields;
mod roundtrip;
mod stream;
mod vectors;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::*;

pub fn s(text: &str) -> ByteString {
    ByteString::from(text.to_owned())
}

pub fn b(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

/// Decodes one whole frame; the buffer must be left empty.
pub fn decode_all(bytes: &[u8], version: Version) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, usize::MAX)?.expect("a whole frame");
    assert!(buf.is_empty(), "bytes left after one frame: {buf:02x?}");
    Ok(packet)
}

pub fn encode_to_vec(packet: &Packet, version: Version) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let written = encode(packet, version, &mut buf, usize::MAX).unwrap();
    assert_eq!(written, buf.len());
    buf.to_vec()
}
