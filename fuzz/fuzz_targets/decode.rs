//! Decode of arbitrary streams in every version. The first byte picks the version (0: 3.1, 1: 3.1.1,
//! 2: 5.0, modulo 3), the rest is a stream of frames. Decode must never panic, and every packet it
//! returns must encode, and decode again to the same packet (the round-trip property of the codec).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_fuzz::protocol::{Version, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => Version::V3_1,
        1 => Version::V3_1_1,
        _ => Version::V5,
    };
    let mut buf = BytesMut::from(stream);
    while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
        let mut encoded = BytesMut::new();
        let written = encode(&packet, version, &mut encoded, usize::MAX)
            .unwrap_or_else(|error| panic!("decoded {packet:?} but encode failed: {error}"));
        assert_eq!(written, encoded.len());
        let again = decode(&mut encoded, version, usize::MAX);
        assert_eq!(again, Ok(Some(packet)), "round trip differs");
        assert!(encoded.is_empty(), "encode wrote more than one frame");
    }
});
