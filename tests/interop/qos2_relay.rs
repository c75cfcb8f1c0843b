//! A relay between rumqttc and the broker for a persistent QoS 2 subscriber: rumqttc 0.25 forgets
//! its QoS 2 receive state when a connection ends and then drops every resumed connection on the
//! PUBREL the broker must resend (MQTT-4.4.0-1; rumqtt issue 664). The relay answers such a
//! PUBREL with PUBCOMP in the client's place and reports every PUBREL it sees, so the test can
//! keep the receiver's state (section 4.3.3 method B) across connections itself.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long the relay waits for its one client.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A relay for one connection to `target` that answers, in the client's place, a PUBREL whose
/// QoS 2 PUBLISH this connection never carried (see the module comment), and reports the packet
/// id of every PUBREL in `released`. Everything else passes through unchanged, whole frames at a
/// time.
pub async fn relay(target: SocketAddr, released: Arc<Mutex<Vec<u16>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok(Ok((client, _))) = timeout(ACCEPT_TIMEOUT, listener.accept()).await else {
            return;
        };
        let broker = TcpStream::connect(target).await.unwrap();
        client.set_nodelay(true).unwrap();
        broker.set_nodelay(true).unwrap();
        let (client_read, client_write) = client.into_split();
        let (broker_read, broker_write) = broker.into_split();
        let broker_write = Arc::new(tokio::sync::Mutex::new(broker_write));
        let upstream = tokio::spawn(forward_up(client_read, Arc::clone(&broker_write)));
        forward_down(broker_read, client_write, broker_write, released).await;
        upstream.abort();
    });
    addr
}

async fn forward_up(mut client: OwnedReadHalf, broker: Arc<tokio::sync::Mutex<OwnedWriteHalf>>) {
    let mut buffer = Vec::new();
    while read_more(&mut client, &mut buffer).await {
        let whole: usize = whole_frames(&buffer).iter().map(|frame| frame.len()).sum();
        let frames: Vec<u8> = buffer.drain(..whole).collect();
        if broker.lock().await.write_all(&frames).await.is_err() {
            return;
        }
    }
    let _ = broker.lock().await.shutdown().await;
}

async fn forward_down(
    mut broker: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    broker_write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    released: Arc<Mutex<Vec<u16>>>,
) {
    let mut carried = HashSet::new();
    let mut buffer = Vec::new();
    while read_more(&mut broker, &mut buffer).await {
        let mut to_client = Vec::new();
        let mut to_broker = Vec::new();
        let mut whole = 0;
        for frame in whole_frames(&buffer) {
            whole += frame.len();
            match relay_action(frame, &mut carried) {
                Action::Forward => to_client.extend_from_slice(frame),
                Action::Release(packet_id) => {
                    released.lock().unwrap().push(packet_id);
                    to_client.extend_from_slice(frame);
                }
                Action::Complete(packet_id) => {
                    released.lock().unwrap().push(packet_id);
                    let [high, low] = packet_id.to_be_bytes();
                    to_broker.extend_from_slice(&[0x70, 0x02, high, low]);
                }
            }
        }
        buffer.drain(..whole);
        if !to_broker.is_empty()
            && broker_write
                .lock()
                .await
                .write_all(&to_broker)
                .await
                .is_err()
        {
            return;
        }
        if client.write_all(&to_client).await.is_err() {
            return;
        }
    }
    let _ = client.shutdown().await;
}

enum Action {
    Forward,
    /// A PUBREL the client knows: forward it.
    Release(u16),
    /// A PUBREL the client forgot: answer it.
    Complete(u16),
}

/// Tracks QoS 2 PUBLISH packet ids carried to the client; a PUBREL for any other id is answered.
fn relay_action(frame: &[u8], carried: &mut HashSet<u16>) -> Action {
    let body = &frame[header_len(frame)..];
    match frame[0] >> 4 {
        3 if (frame[0] >> 1) & 0b11 == 2 => {
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            carried.insert(u16::from_be_bytes([
                body[2 + topic_len],
                body[3 + topic_len],
            ]));
            Action::Forward
        }
        6 => {
            let packet_id = u16::from_be_bytes([body[0], body[1]]);
            if carried.remove(&packet_id) {
                Action::Release(packet_id)
            } else {
                Action::Complete(packet_id)
            }
        }
        _ => Action::Forward,
    }
}

async fn read_more(stream: &mut OwnedReadHalf, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Fixed header length (type byte plus remaining length) and the remaining length, if complete.
fn fixed_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *bytes.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((2 + i, remaining));
        }
    }
    panic!("malformed remaining length from the broker: {bytes:?}");
}

fn header_len(frame: &[u8]) -> usize {
    fixed_header(frame).expect("a whole frame").0
}

/// The complete frames at the start of `bytes`.
fn whole_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some((header, remaining)) = fixed_header(rest) {
        if rest.len() < header + remaining {
            break;
        }
        let (frame, tail) = rest.split_at(header + remaining);
        frames.push(frame);
        rest = tail;
    }
    frames
}
