//! Wire primitives (§1.5): two- and four-byte integers, Variable Byte Integers, UTF-8 strings and
//! binary data. Reading is zero-copy: strings and binary fields are `Bytes` slices of the frame.
//!
//! UTF-8 rules (§1.5.3 / §1.5.4): ill-formed UTF-8 and surrogates (which `std::str::from_utf8`
//! rejects) and U+0000 are malformed; a BOM is kept; control characters are allowed (SHOULD NOT).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::types::PacketId;

/// The largest value a Variable Byte Integer holds (§1.5.5).
pub const VAR_INT_MAX: u32 = 268_435_455;

/// The largest string or binary field (§1.5.4, §1.5.6).
pub const FIELD_BYTES_MAX: usize = 65_535;

/// Control packet types: the high nibble of the first byte (§2.1.2).
pub mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// A cursor over the body of one frame.
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// The next byte, without reading it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.buf.first().ok_or(DecodeError::Truncated)?;
        self.buf.advance(1);
        Ok(byte)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u32())
    }

    /// A non-zero packet identifier (MQTT-2.3.1-1).
    pub fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::PacketIdZero)
    }

    pub fn var_int(&mut self) -> Result<u32, DecodeError> {
        match read_var_int(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    /// The next `len` bytes as a zero-copy slice.
    pub fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < len {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.split_to(len))
    }

    /// Everything left (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a two-byte length and that many bytes (§1.5.6).
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String (§1.5.4).
    pub fn string(&mut self) -> Result<ByteString, DecodeError> {
        let bytes = self.binary()?;
        checked_string(bytes)
    }
}

/// Validates UTF-8 (surrogates included, which `from_utf8` rejects) and the absence of U+0000.
pub fn checked_string(bytes: Bytes) -> Result<ByteString, DecodeError> {
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reads a Variable Byte Integer from the start of `buf`: `Ok(None)` when `buf` ends inside it,
/// else the value and its length in bytes. At most 4 bytes, minimally encoded (MQTT-1.5.5-1): a
/// multi-byte integer whose last byte is 0 could have been written shorter.
pub fn read_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

/// The number of bytes `value` takes as a Variable Byte Integer (`value` <= [`VAR_INT_MAX`]).
pub const fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (<= [`VAR_INT_MAX`], checked by the caller's size pass) as a Variable Byte Integer.
pub fn put_var_int(buf: &mut BytesMut, value: usize) {
    let mut value = value;
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Size of a string or binary field with its length prefix; fails over 65,535 bytes.
pub fn field_len(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > FIELD_BYTES_MAX {
        return Err(EncodeError::FieldTooLong(data.len()));
    }
    Ok(2 + data.len())
}

/// Writes a length-prefixed field whose length [`field_len`] already checked.
pub fn put_field(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: Result<Option<(u32, usize)>, DecodeError>) {
        assert_eq!(read_var_int(input), expected, "input {input:02x?}");
    }

    #[test]
    fn var_int_table() {
        check(&[], Ok(None));
        check(&[0x00], Ok(Some((0, 1))));
        check(&[0x7F], Ok(Some((127, 1))));
        check(&[0x80, 0x01], Ok(Some((128, 2))));
        check(&[0xFF, 0x7F], Ok(Some((16_383, 2))));
        check(&[0x80, 0x80, 0x01], Ok(Some((16_384, 3))));
        check(&[0xFF, 0xFF, 0x7F], Ok(Some((2_097_151, 3))));
        check(&[0x80, 0x80, 0x80, 0x01], Ok(Some((2_097_152, 4))));
        check(&[0xFF, 0xFF, 0xFF, 0x7F], Ok(Some((VAR_INT_MAX, 4))));
        check(&[0xFF, 0xFF, 0xFF], Ok(None));
        check(&[0xFF, 0xFF, 0xFF, 0xFF], Err(DecodeError::VarIntTooLong));
        check(
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Err(DecodeError::VarIntTooLong),
        );
        check(&[0x80, 0x00], Err(DecodeError::VarIntNotMinimal));
        check(&[0x81, 0x80, 0x00], Err(DecodeError::VarIntNotMinimal));
    }

    #[test]
    fn var_int_write_matches_len() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            VAR_INT_MAX as usize,
        ] {
            let mut buf = BytesMut::new();
            put_var_int(&mut buf, value);
            assert_eq!(buf.len(), var_int_len(value));
            assert_eq!(read_var_int(&buf), Ok(Some((value as u32, buf.len()))));
        }
    }
}
