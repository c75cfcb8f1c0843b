//! The part of MQTT 3.1.1 the relay examples speak (`mqtt_relay` on the shards runtime,
//! `epoll_relay` on plain epoll): CONNACK, SUBACK, UNSUBACK, PINGRESP, and a QoS 0 PUBLISH passed
//! on unchanged to the one connection subscribed to exactly its topic. Only what `ringmq-bench`
//! sends is handled.

use std::collections::HashMap;

/// `(header byte, body range, frame end)` of the first whole frame in `buf`.
fn frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let first = *buf.first()?;
    let (mut len, mut shift, mut at) = (0usize, 0u32, 1usize);
    loop {
        let byte = *buf.get(at)?;
        len |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return None;
        }
    }
    (buf.len() >= at + len).then_some((first, at..at + len, at + len))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(*bytes.get(at)?) << 8 | usize::from(*bytes.get(at + 1)?))
}

/// Handles the whole frames at the start of `buf` for the connection `me`: answers go to `reply`,
/// publishes to `forward` (one entry per subscriber, `same` telling two apart), subscriptions to
/// `topics`. Returns how many bytes it consumed, or `None` when the connection is to be closed.
pub fn handle<S: Clone>(
    buf: &[u8],
    me: &S,
    topics: &mut HashMap<Vec<u8>, S>,
    reply: &mut Vec<u8>,
    forward: &mut Vec<(S, Vec<u8>)>,
    same: impl Fn(&S, &S) -> bool,
) -> Option<usize> {
    let mut at = 0;
    while let Some((header, body, end)) = frame(&buf[at..]) {
        let whole = &buf[at..at + end];
        let body = &whole[body];
        match header >> 4 {
            1 => reply.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]),
            3 => {
                let len = u16_at(body, 0)?;
                let topic = body.get(2..2 + len)?;
                if let Some(sink) = topics.get(topic) {
                    match forward.iter_mut().find(|(to, _)| same(to, sink)) {
                        Some((_, bytes)) => bytes.extend_from_slice(whole),
                        None => forward.push((sink.clone(), whole.to_vec())),
                    }
                }
            }
            8 | 10 => {
                let id = body.get(0..2)?;
                let mut granted = 0u8;
                let mut pos = 2;
                while let Some(len) = u16_at(body, pos) {
                    let filter = body.get(pos + 2..pos + 2 + len)?;
                    if header >> 4 == 8 {
                        topics.insert(filter.to_vec(), me.clone());
                        pos += 1;
                    } else {
                        topics.remove(filter);
                    }
                    pos += 2 + len;
                    granted += 1;
                }
                if header >> 4 == 8 {
                    reply.extend_from_slice(&[0x90, 2 + granted, id[0], id[1]]);
                    reply.extend(std::iter::repeat_n(0u8, usize::from(granted)));
                } else {
                    reply.extend_from_slice(&[0xb0, 0x02, id[0], id[1]]);
                }
            }
            12 => reply.extend_from_slice(&[0xd0, 0x00]),
            14 => return None,
            _ => {}
        }
        at += end;
    }
    Some(at)
}
