use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use bytestring::ByteString;

use super::*;
use crate::protocol::{Connect, ConnectProperties, PacketId, Publish, QoS, Version};

fn connect_with_password() -> Packet {
    Packet::Connect(Box::new(Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive_secs: 30,
        client_id: ByteString::from_static("c1"),
        will: None,
        username: Some(ByteString::from_static("alice")),
        password: Some(Bytes::from_static(b"hunter2")),
        properties: ConnectProperties::default(),
    }))
}

fn publish(payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: ByteString::from_static("a/b"),
        packet_id: PacketId::new(7),
        properties: Default::default(),
        payload: Bytes::from_static(payload),
    })
}

#[test]
fn payloads_are_text_or_hex_and_cut_at_256_characters() {
    let check = |payload: Vec<u8>, expected: String| {
        assert_eq!(payload_text(&Bytes::from(payload)), expected);
    };
    check(b"hello".to_vec(), String::from("hello"));
    check(Vec::new(), String::new());
    let accents = "é".repeat(300);
    check(
        accents.clone().into_bytes(),
        format!("{}…", "é".repeat(256)),
    );
    check("é".repeat(256).into_bytes(), "é".repeat(256));
    check(vec![0xff, 0x00, 0x10], String::from("ff0010"));
    check(vec![0xff; 200], format!("{}…", "ff".repeat(128)));
}

#[test]
fn a_publish_shows_id_topic_qos_flags_and_payload() {
    let summary = Summary::of(&publish(b"21.5"));
    assert_eq!(
        summary,
        Summary {
            kind: "publish",
            packet_id: Some(7),
            topic: Some(String::from("a/b")),
            qos: Some(1),
            detail: String::from("retain=true dup=false bytes=4"),
            payload: Some(String::from("21.5")),
        }
    );
}

#[test]
fn a_connect_shows_that_credentials_are_present_never_their_values() {
    let summary = Summary::of(&connect_with_password());
    assert_eq!(
        summary.detail,
        "version=V5 clean_start=true keep_alive=30 username=present password=present"
    );
    let shown = format!("{summary:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("alice"),
        "{shown}"
    );
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged_at(level: tracing::Level, emit: impl FnOnce() -> bool) -> (bool, String) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let enabled = tracing::subscriber::with_default(subscriber, emit);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (enabled, text)
}

#[test]
fn trace_events_carry_the_fields_and_never_the_password() {
    let (enabled, text) = logged_at(tracing::Level::TRACE, || {
        let enabled = enabled();
        packet(Direction::Received, 3, "c1", &connect_with_password());
        packet(Direction::Sent, 3, "c1", &publish(b"hi"));
        packet(Direction::Sent, 3, "c1", &publish(b"forged\nTRACE line"));
        enabled
    });
    assert!(enabled);
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(text.lines().count(), 3, "one line per packet: {text}");
    assert!(text.contains("payload=\"forged\\nTRACE line\""), "{text}");
    for expected in [
        "conn=3 client_id=\"c1\" direction=\"received\" type=\"connect\"",
        "password=present",
        "direction=\"sent\" type=\"publish\" packet_id=7 topic=\"a/b\" qos=1",
        "payload=\"hi\"",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}

#[test]
fn nothing_is_formatted_below_trace() {
    let (enabled, text) = logged_at(tracing::Level::DEBUG, enabled);
    assert!(!enabled);
    assert!(text.is_empty());
}
