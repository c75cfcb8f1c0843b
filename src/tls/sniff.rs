//! Which protocol the first bytes of a connection speak, so a listener can close a TLS
//! ClientHello on a plain port, or plain MQTT on a TLS port, at once and say why in the log,
//! instead of waiting for a handshake or CONNECT timeout.
//!
//! Both look only at the bytes given (a first read may be short) and answer from what is there:
//! true if nothing seen contradicts the protocol, false on an empty slice.

/// A TLS record header of a handshake message (RFC 8446 §5.1: content type 22, legacy version
/// 3.x) whose first message is a ClientHello (type 1).
pub fn looks_like_tls_client_hello(first_bytes: &[u8]) -> bool {
    const HANDSHAKE: u8 = 0x16;
    const CLIENT_HELLO: u8 = 0x01;
    match first_bytes {
        [] => false,
        [content_type, rest @ ..] => {
            *content_type == HANDSHAKE
                && rest.first().is_none_or(|major| *major == 0x03)
                && rest.get(1).is_none_or(|minor| *minor <= 0x04)
                && rest.get(4).is_none_or(|message| *message == CLIENT_HELLO)
        }
    }
}

/// An MQTT CONNECT (3.1, 3.1.1 or 5.0): fixed header 0x10, a remaining length of at most four
/// bytes, then the protocol name `MQTT` or `MQIsdp`.
pub fn looks_like_mqtt_connect(first_bytes: &[u8]) -> bool {
    let Some((&header, rest)) = first_bytes.split_first() else {
        return false;
    };
    if header != 0x10 {
        return false;
    }
    // Remaining length: 1 to 4 bytes, the last without the continuation bit.
    let mut length_bytes = 0;
    let mut ended = false;
    for byte in rest.iter().take(4) {
        length_bytes += 1;
        if byte & 0x80 == 0 {
            ended = true;
            break;
        }
    }
    if !ended {
        return rest.len() < 4;
    }
    let variable_header = rest.get(length_bytes..).unwrap_or_default();
    let names: [&[u8]; 2] = [b"\x00\x04MQTT", b"\x00\x06MQIsdp"];
    names.iter().any(|name| {
        let seen = variable_header.len().min(name.len());
        variable_header.get(..seen) == name.get(..seen)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello() {
        let check = |bytes: &[u8], expected: bool| {
            assert_eq!(looks_like_tls_client_hello(bytes), expected, "{bytes:02x?}");
        };
        check(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00], true);
        check(&[0x16, 0x03, 0x03], true);
        check(&[0x16], true);
        check(&[], false);
        check(&[0x15, 0x03, 0x01], false); // alert
        check(&[0x16, 0x02, 0x00], false); // SSL 2
        check(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x02], false); // ServerHello
        check(b"\x10\x10\x00\x04MQTT", false);
        check(b"GET / HTTP/1.1\r\n", false);
    }

    #[test]
    fn mqtt_connect() {
        let check = |bytes: &[u8], expected: bool| {
            assert_eq!(looks_like_mqtt_connect(bytes), expected, "{bytes:02x?}");
        };
        check(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test", true);
        check(b"\x10\x12\x00\x06MQIsdp\x03\x02", true);
        check(b"\x10\x80\x01\x00\x04MQTT\x05", true); // two-byte remaining length
        check(b"\x10\x10\x00\x04MQ", true); // short first read
        check(b"\x10", true);
        check(b"\x10\x80\x80", true);
        check(b"\x10\x80\x80\x80\x80\x00", false); // five-byte length
        check(b"\x10\x10\x00\x04MQXX", false);
        check(b"\x20\x02\x00\x00", false);
        check(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01], false);
        check(&[], false);
    }
}
