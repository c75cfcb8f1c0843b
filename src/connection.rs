//! One client connection: a reader task (read -> decode every complete frame -> `Shard::handle`
//! once per batch) and a writer task (writes the connection's buffer, one write per batch).
//! Neither holds a borrow of the shard across an `.await`.

use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use shards::sync::Notify;
use shards::{ReadHalf, TaskClass, TcpStream, WriteHalf};

use crate::packet_trace::{self, Direction};
use crate::protocol::{self, Packet, Version};
use crate::server::ShardShell;
use crate::shard::{ConnId, Event};

/// Bytes asked of the kernel per read when nothing bigger is known to be coming.
const READ_CHUNK: usize = 16 * 1024;
/// Frames decoded per batch before the shard is asked to handle them (bounds one wake-up).
const FRAMES_PER_BATCH: usize = 1024;
/// How long a connection being closed by the broker may take to write its last bytes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run(shell: Rc<ShardShell>, stream: TcpStream, peer: SocketAddr) {
    let conn = shell.next_conn_id();
    let (reader, writer) = stream.split();
    let notify = Rc::new(Notify::new());
    shell.writers.borrow_mut().insert(conn, Rc::clone(&notify));
    shell.handle(Event::Accepted { conn, peer });
    let writer_task = shell.ctx.spawn(
        TaskClass::Io,
        write_loop(Rc::clone(&shell), conn, writer, Rc::clone(&notify)),
    );
    read_loop(&shell, conn, reader).await;
    let closing = shell
        .shard
        .borrow()
        .conn(conn)
        .is_some_and(|c| c.is_closing());
    if closing {
        // The broker closed it (or answered a protocol error): let the writer send the answer.
        let _ = shards::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task).await;
        shell.handle(Event::Closed { conn });
    } else {
        shell.handle(Event::Closed { conn });
        notify.notify_one();
        let _ = shards::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task).await;
    }
    shell.writers.borrow_mut().remove(&conn);
}

async fn read_loop(shell: &ShardShell, conn: ConnId, mut reader: ReadHalf) {
    let packet_bytes_max = shell.shard.borrow().settings().packet_bytes_max;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut version = Version::V5;
    let mut events = Vec::new();
    loop {
        let mut failed = false;
        let mut cut = false;
        loop {
            if events.len() >= FRAMES_PER_BATCH {
                cut = true;
                break;
            }
            match protocol::decode(&mut buf, version, packet_bytes_max) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(connect) = &packet {
                        version = connect.version;
                    }
                    events.push(Event::Packet { conn, packet });
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(conn, %error, "malformed packet");
                    events.push(Event::Malformed { conn, error });
                    failed = true;
                    break;
                }
            }
        }
        if !events.is_empty() {
            if packet_trace::enabled() {
                trace_received(shell, conn, &events);
            }
            shell.handle_all(events.drain(..));
        }
        if failed || is_closing(shell, conn) {
            return;
        }
        if cut {
            // The batch stopped at FRAMES_PER_BATCH: decode the rest before reading more.
            continue;
        }
        wait_for_mail_backlog(shell).await;
        // A busy publisher's socket always has data, so the read below completes at once and this
        // loop would never give the shard back: writers, mail and timers wait for it otherwise.
        shards::yield_now().await;
        let wanted = match protocol::frame_len(&buf, packet_bytes_max) {
            Ok(Some(frame)) => frame.saturating_sub(buf.len()).max(READ_CHUNK),
            Ok(None) => READ_CHUNK,
            Err(error) => {
                shell.handle(Event::Malformed { conn, error });
                return;
            }
        };
        let start = buf.len();
        buf.resize(start + wanted, 0);
        let read = match buf.get_mut(start..) {
            Some(space) => reader.read(space).await,
            None => Ok(0),
        };
        match read {
            Ok(0) => {
                tracing::debug!(conn, "peer closed the connection");
                return;
            }
            Ok(n) => {
                buf.truncate(start + n);
                shell.shard.borrow_mut().metrics.bytes_received(n);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(error) => {
                tracing::debug!(conn, %error, "read failed");
                return;
            }
        }
    }
}

fn is_closing(shell: &ShardShell, conn: ConnId) -> bool {
    shell
        .shard
        .borrow()
        .conn(conn)
        .is_none_or(|c| c.is_closing())
}

/// Backpressure: while this shard's mail to some peer is backed up, stop reading from clients.
async fn wait_for_mail_backlog(shell: &ShardShell) {
    for _ in 0..10_000 {
        if !shell.shard.borrow().mail_backlogged() {
            return;
        }
        shards::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn write_loop(
    shell: Rc<ShardShell>,
    conn: ConnId,
    mut writer: WriteHalf,
    notify: Rc<Notify>,
) {
    loop {
        notify.notified().await;
        loop {
            // Take what is buffered; the shard keeps appending to the rest of the allocation while
            // this part is on the wire. The borrow ends before any await.
            let taken = shell
                .shard
                .borrow_mut()
                .conn_mut(conn)
                .map(|state| (state.out.split(), state.is_closing()));
            let Some((out, closing)) = taken else {
                tracing::debug!(conn, "writer: connection gone");
                let _ = writer.shutdown(Shutdown::Both).await;
                return;
            };
            if out.is_empty() {
                if closing {
                    let _ = writer.shutdown(Shutdown::Both).await;
                    return;
                }
                break;
            }
            if packet_trace::enabled() {
                trace_sent(&shell, conn, &out);
            }
            if writer.write_all(&out).await.is_err() {
                let _ = writer.shutdown(Shutdown::Both).await;
                return;
            }
            shell.shard.borrow_mut().metrics.bytes_sent(out.len());
            drop(out);
            // Room in the buffer again: queued deliveries may follow.
            shell.handle(Event::Drained { conn });
        }
    }
}

/// Packet trace of a batch just decoded (only called with the trace on).
fn trace_received(shell: &ShardShell, conn: ConnId, events: &[Event]) {
    let mut client_id = shell
        .shard
        .borrow()
        .conn(conn)
        .map(|c| c.client_id.clone())
        .unwrap_or_default();
    for event in events {
        if let Event::Packet { packet, .. } = event {
            if let Packet::Connect(connect) = packet {
                client_id = connect.client_id.clone();
            }
            packet_trace::packet(Direction::Received, conn, &client_id, packet);
        }
    }
}

/// Packet trace of bytes about to be written: whole packets, decoded again from a copy (only
/// called with the trace on).
fn trace_sent(shell: &ShardShell, conn: ConnId, out: &[u8]) {
    let Some((client_id, version)) = shell
        .shard
        .borrow()
        .conn(conn)
        .map(|c| (c.client_id.clone(), c.version))
    else {
        return;
    };
    let mut copy = BytesMut::from(out);
    while let Ok(Some(packet)) = protocol::decode(&mut copy, version, usize::MAX) {
        packet_trace::packet(Direction::Sent, conn, &client_id, &packet);
    }
}
