//! The header at the start of every payload the generator sends (little-endian):
//! `seq: u64` (per publisher, from 0), `publisher: u32`, `sent_ns: u64` (CLOCK_MONOTONIC; in rate
//! mode the *scheduled* send time). The rest of the payload is filler. Receivers read it back to
//! measure end-to-end latency and to account loss, duplicates and reordering per publisher.

/// Bytes of the header, and so the smallest payload (`-s`).
pub const HEADER_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub publisher: u32,
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header over the first `HEADER_BYTES` of `payload`; a shorter payload is our bug.
    pub fn write(&self, payload: &mut [u8]) {
        assert!(
            payload.len() >= HEADER_BYTES,
            "payload shorter than its header"
        );
        payload[0..8].copy_from_slice(&self.seq.to_le_bytes());
        payload[8..12].copy_from_slice(&self.publisher.to_le_bytes());
        payload[12..20].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a header; `None` for a payload too short to carry one (another client's message).
    pub fn read(payload: &[u8]) -> Option<Header> {
        let seq = payload.get(0..8)?.try_into().ok()?;
        let publisher = payload.get(8..12)?.try_into().ok()?;
        let sent_ns = payload.get(12..20)?.try_into().ok()?;
        Some(Header {
            seq: u64::from_le_bytes(seq),
            publisher: u32::from_le_bytes(publisher),
            sent_ns: u64::from_le_bytes(sent_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Header, size: usize) {
        let mut payload = vec![0xAB; size];
        header.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(header));
        assert!(
            payload[HEADER_BYTES..].iter().all(|&b| b == 0xAB),
            "filler kept"
        );
    }

    #[test]
    fn header_round_trips() {
        check(
            Header {
                seq: 0,
                publisher: 0,
                sent_ns: 0,
            },
            HEADER_BYTES,
        );
        check(
            Header {
                seq: u64::MAX,
                publisher: u32::MAX,
                sent_ns: u64::MAX,
            },
            4096,
        );
        check(
            Header {
                seq: 42,
                publisher: 7,
                sent_ns: 1_234_567_890_123,
            },
            256,
        );
    }

    #[test]
    fn header_layout_is_little_endian() {
        let mut payload = [0u8; HEADER_BYTES];
        Header {
            seq: 1,
            publisher: 2,
            sent_ns: 3,
        }
        .write(&mut payload);
        assert_eq!(payload[0], 1);
        assert_eq!(payload[8], 2);
        assert_eq!(payload[12], 3);
    }

    #[test]
    fn short_payloads_have_no_header() {
        for size in [0, 1, 8, 12, 19] {
            assert_eq!(Header::read(&vec![0; size]), None, "size {size}");
        }
    }
}
