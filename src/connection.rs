//! One client connection, one task with two sides: the reading side (read -> decode every
//! complete frame -> `Shard::handle` once per batch) and the writing side (writes the
//! connection's buffer, one write per batch), polled together (`both`). Neither holds a borrow
//! of the shard across an `.await`. The task's future is what an idle connection costs beyond
//! the shard's tables, so rare awaits (waiting for room, the close) are boxed and the sizes are
//! asserted (`size_tests`).
//!
//! Before that, on a TLS listener: the first bytes are looked at (plain MQTT is closed at once),
//! then the handshake runs with its deadline; on a WebSocket listener the opening handshake
//! follows (`websocket`). First bytes that cannot start a CONNECT (a TLS ClientHello on a plain
//! listener, an HTTP request) close the connection at once. The first CONNECT is authenticated here (`authenticate`), off the
//! shard's synchronous core, when the configuration asks for it.

mod authenticate;
mod parked;
mod partial;
mod read_buffer;
mod websocket;
mod write_side;
mod writers;

pub(crate) use parked::{ParkedConnections, parker};
pub(crate) use partial::PartialBytes;
pub(crate) use writers::{Writers, woken};

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shards::TcpStream;

use crate::packet_trace::{self, Direction};
use crate::protocol::{self, Connect, Packet, Version};
use crate::server::{ListenerKind, ShardShell, TlsListenerKind};
use crate::shard::{ConnId, Event};
use crate::transport::{Reader, Writer};

/// Bytes asked of the kernel per read when nothing bigger is known to be coming.
const READ_CHUNK: usize = 16 * 1024;
/// Capacity a drained write buffer may keep while the connection waits for the next packet.
const OUT_IDLE_BYTES_MAX: usize = 1024;
/// Frames decoded per batch before the shard is asked to handle them (bounds one wake-up).
const FRAMES_PER_BATCH: usize = 1024;
/// Bytes of a TLS listener's first read, to tell a ClientHello from plain MQTT.
const SNIFF_BYTES: usize = 4096;
/// How long a connection being closed by the broker may take to write its last bytes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// After the broker's last packet (a DISCONNECT or CONNACK with a reason code) and its FIN, how
/// long input is read and discarded before the socket closes, and how much of it. Closing with
/// unread input makes the kernel reset the connection, and a client still writing then sees
/// EPIPE or ECONNRESET instead of the reason code; a client that reads it closes at once, which
/// ends the wait early.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const CLOSE_LINGER_BYTES_MAX: usize = 1024 * 1024;
/// How often a connection waiting for room in the shard's partial-packet allowance checks that
/// it is still open.
const ALLOWANCE_RECHECK: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    shell: Rc<ShardShell>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
) {
    let Some(kind) = shell.listeners.get(listener) else {
        return;
    };
    let Some(Opened {
        reader,
        writer,
        identity,
    }) = open(&shell, kind, stream, peer).await
    else {
        return;
    };
    shell
        .shard
        .borrow_mut()
        .metrics
        .connection_opened(kind.transport(), listener);
    let conn = shell.next_conn_id();
    shell.writers.borrow_mut().insert(conn);
    shell.handle(Event::Accepted { conn, peer });
    let client = Client {
        conn,
        listener: kind,
        identity: identity.map(String::into_boxed_str),
    };
    let state = ReadState {
        version: Version::V5,
        authenticate: client.identity.is_some() || shell.checks_connect(),
    };
    serve(
        &shell,
        &client,
        listener,
        reader,
        writer,
        (state, Start::Fresh),
    )
    .await;
}

/// A parked connection revived (`parked`): served again over a new stream of its socket, from
/// where its reading side left off (no partial packet, CONNECT handled).
async fn resume(
    shell: Rc<ShardShell>,
    conn: ConnId,
    listener: usize,
    reader: Reader,
    writer: Writer,
) {
    let known = shell
        .shard
        .borrow()
        .conn(conn)
        .map(|state| (state.version, state.last_seen));
    let (Some(kind), Some((version, last_seen))) = (shell.listeners.get(listener), known) else {
        // The shard forgets a connection only when its task says it closed: not parked ones.
        tracing::warn!(conn, "revived connection unknown to its shard: closed");
        shell.writers.borrow_mut().remove(conn);
        return;
    };
    let client = Client {
        conn,
        listener: kind,
        identity: None,
    };
    let state = ReadState {
        version,
        authenticate: false,
    };
    let start = Start::Resumed { last_seen };
    serve(&shell, &client, listener, reader, writer, (state, start)).await;
}

/// How a connection's reading side starts.
#[derive(Clone, Copy)]
enum Start {
    /// A new connection: its first bytes must start a CONNECT.
    Fresh,
    /// A revived connection, whose client was last heard from at `last_seen`.
    Resumed { last_seen: Instant },
}

/// Serves a connection until it closes or parks: both sides in this one task (one task
/// header, one allocation and no second `Rc` of the shell per connection, and the writer's
/// state sits next to the reader's). A connection that cannot park after all is served on.
async fn serve(
    shell: &Rc<ShardShell>,
    client: &Client<'_>,
    listener: usize,
    mut reader: Reader,
    mut writer: Writer,
    (mut state, mut start): (ReadState, Start),
) {
    let conn = client.conn;
    loop {
        let ends = Ends::new();
        let (parking_writer, parking) = {
            let from = (&mut state, start);
            let reading = pin!(read_side(shell, client, &mut reader, &ends, from));
            let mut writing = pin!(Some(write_side::WriteSide::new(shell, conn, writer, &ends)));
            both(reading, writing.as_mut(), &ends).await;
            let parking = ends.has(PARKING);
            let taken = writing
                .as_mut()
                .get_mut()
                .as_mut()
                .filter(|_| parking)
                .and_then(write_side::WriteSide::take_writer);
            // A writer still under way (given up after `CLOSE_FLUSH_TIMEOUT`) is cancelled here.
            writing.set(None);
            (taken, parking)
        };
        let Some(idle_writer) = parking_writer else {
            if parking {
                // The reading side stopped to park but the writer was not waiting after all:
                // the shard must still hear of the close.
                close_unparked(shell, conn, &mut reader).await;
            }
            break;
        };
        match park(shell, conn, listener, reader, idle_writer) {
            None => return,
            Some((kept_reader, kept_writer)) => {
                reader = kept_reader;
                writer = kept_writer;
                start = Start::Resumed {
                    last_seen: Instant::now(),
                };
            }
        }
    }
    shell.writers.borrow_mut().remove(conn);
    shell.shard.borrow_mut().metrics.connection_closed(listener);
}

/// The close of a connection whose reading side stopped to park while its writer had ended
/// (`poll_park` refuses that, so this is a safety net): the shard is told, as `read_side` does.
async fn close_unparked(shell: &ShardShell, conn: ConnId, reader: &mut Reader) {
    shell.handle(Event::Closed { conn });
    Box::pin(linger(reader)).await;
}

/// Parks the connection; `Some` gives its halves back when it cannot park.
fn park(
    shell: &ShardShell,
    conn: ConnId,
    listener: usize,
    reader: Reader,
    writer: Writer,
) -> Option<(Reader, Writer)> {
    match (reader, writer) {
        (Reader::Tcp(read_half), Writer::Tcp(write_half)) => {
            match parked::park(shell, conn, listener, (read_half, write_half)) {
                Ok(()) => None,
                Err((read_half, write_half)) => {
                    Some((Reader::Tcp(read_half), Writer::Tcp(write_half)))
                }
            }
        }
        halves => Some(halves),
    }
}

/// The reading side, then the close: the writer's end is awaited through `ends`.
async fn read_side(
    shell: &ShardShell,
    client: &Client<'_>,
    reader: &mut Reader,
    ends: &Ends,
    from: (&mut ReadState, Start),
) {
    let conn = client.conn;
    read_loop(shell, client, reader, ends, from).await;
    if ends.has(PARKING) {
        return;
    }
    ends.raise(READER_DONE);
    if is_closing(shell, conn) {
        // The broker closed it (or answered a protocol error): let the writer send the answer
        // and half-close, then give the client time to read it.
        Box::pin(writer_done(ends)).await;
        shell.handle(Event::Closed { conn });
        Box::pin(linger(reader)).await;
    } else {
        shell.handle(Event::Closed { conn });
        shell.writers.borrow_mut().wake(conn);
        Box::pin(writer_done(ends)).await;
    }
}

/// Waits until the writer is done, for at most `CLOSE_FLUSH_TIMEOUT`; past it the writer is
/// given up (`WRITER_ABANDONED`: dropped, its write cancelled).
async fn writer_done(ends: &Ends) {
    if !ends.raised(WRITER_DONE, CLOSE_FLUSH_TIMEOUT).await {
        ends.raise(WRITER_ABANDONED);
    }
}

/// Polls both sides of a connection until the reading side (which ends with the close or the
/// park) is done. Reading first, so that the answers a read produced are written in the same
/// poll. The sides tell each other of their end through `ends`' flags without a waker: a pass
/// that changed a flag is followed by another (flags go up, and the parking ones down only at a
/// read's completion, so this stops).
fn both<'a, R, W>(
    mut reading: Pin<&'a mut R>,
    mut writing: Pin<&'a mut Option<W>>,
    ends: &'a Ends,
) -> impl Future<Output = ()> + 'a
where
    R: Future<Output = ()>,
    W: Future<Output = ()>,
{
    poll_fn(move |cx| {
        loop {
            let seen = ends.flags.get();
            if reading.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if ends.has(WRITER_ABANDONED) {
                writing.set(None);
            }
            if let Some(writer) = writing.as_mut().as_pin_mut()
                && writer.poll(cx).is_ready()
            {
                writing.set(None);
                ends.raise(WRITER_DONE);
            }
            if ends.flags.get() == seen {
                return Poll::Pending;
            }
        }
    })
}

/// What the reading side knows about its client. Its address is not here but in the shard's
/// `Conn` (`peer`): the connection's future would keep it for its whole life.
struct Client<'a> {
    conn: ConnId,
    listener: &'a ListenerKind,
    /// The verified client certificate's identity, when the listener uses it as the username.
    identity: Option<Box<str>>,
}

impl Client<'_> {
    /// The client's address, for a log line (unspecified once the shard forgot the connection).
    fn peer(&self, shell: &ShardShell) -> SocketAddr {
        let shard = shell.shard.borrow();
        shard
            .conn(self.conn)
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |conn| conn.peer)
    }
}

/// A connection ready for MQTT: the TLS handshake done on a TLS listener.
struct Opened {
    reader: Reader,
    writer: Writer,
    identity: Option<String>,
}

async fn open(
    shell: &ShardShell,
    kind: &ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Opened> {
    // Boxed, like authentication below: a future is as large as its largest await, and the
    // handshake's state would otherwise stay in every connection's task for its lifetime.
    match kind {
        ListenerKind::Plain(_) => {
            let (reader, writer) = stream.split();
            Some(Opened {
                reader: Reader::Tcp(reader),
                writer: Writer::Tcp(writer),
                identity: None,
            })
        }
        ListenerKind::Tls(tls) => Box::pin(open_tls(shell, tls, stream, peer)).await,
        ListenerKind::WebSocket(ws) => Box::pin(websocket::open(shell, ws, stream, peer)).await,
    }
}

async fn open_tls(
    shell: &ShardShell,
    tls: &TlsListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Opened> {
    let _handshake = Handshake::start(shell, peer, &tls.name)?;
    let (connection, identity) = tls_handshake(shell, tls, stream, peer).await?;
    let (reader, writer) = connection.split();
    Some(Opened {
        reader: Reader::Tls(Box::new(reader)),
        writer: Writer::Tls(writer),
        identity,
    })
}

/// The TLS handshake within the listener's deadline: the connection and, when the listener uses
/// it as the username, the client certificate's identity.
async fn tls_handshake(
    shell: &ShardShell,
    tls: &TlsListenerKind,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(crate::tls::TlsConnection, Option<String>)> {
    // The first bytes tell a TLS client from a plain MQTT one, which is closed at once.
    let mut head = vec![0; SNIFF_BYTES];
    let read = shards::time::timeout(tls.handshake_timeout, stream.read(&mut head)).await;
    let n = match read {
        Ok(Ok(n)) if n > 0 => n,
        _ => return None,
    };
    head.truncate(n);
    if crate::tls::looks_like_mqtt_connect(&head) {
        tracing::warn!(%peer, listener = %tls.name,
            "plain MQTT on a TLS listener: closed; the client must connect with TLS, or to a plain port");
        return None;
    }
    let config = shell.tls_config(tls.index)?;
    match crate::tls::accept_after(config, head, stream, tls.handshake_timeout).await {
        Ok(connection) => {
            let identity = tls
                .use_identity_as_username
                .then(|| connection.client_identity())
                .flatten();
            if tls.use_identity_as_username && identity.is_none() {
                tracing::warn!(%peer, listener = %tls.name,
                    "client certificate has neither a CN nor a DNS name to use as username: closed");
                return None;
            }
            Some((connection, identity))
        }
        Err(error) => {
            tracing::info!(%peer, listener = %tls.name, %error, "TLS handshake failed: closed");
            None
        }
    }
}

/// Counts a TLS or WebSocket handshake under way for as long as it lives.
struct Handshake<'a>(&'a ShardShell);

impl Handshake<'_> {
    /// `None` when the shard has no room for one more connection.
    fn start<'a>(shell: &'a ShardShell, peer: SocketAddr, listener: &str) -> Option<Handshake<'a>> {
        let limit = shell.shard.borrow().settings().connections_per_shard_max;
        let pending = shell.handshakes.get() + shell.shard.borrow().connection_count();
        if pending >= limit {
            tracing::debug!(%peer, listener, "too many connections: closed before the handshake");
            return None;
        }
        shell.handshakes.set(shell.handshakes.get() + 1);
        Some(Handshake(shell))
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        self.0
            .handshakes
            .set(self.0.handshakes.get().saturating_sub(1));
    }
}

/// Why decoding a batch stopped.
enum Batch {
    /// The buffer holds no whole frame more.
    Drained,
    /// FRAMES_PER_BATCH frames were decoded; more may be buffered.
    Cut,
    /// Malformed input; its event was the last.
    Failed,
    /// The first CONNECT, held back for authentication.
    Connect(Box<Connect>),
}

/// The whole frames in a read's bytes, decoded one at a time as the shard handles them: each
/// event goes from the decoder straight to `Shard::handle`, through no batch of events in
/// memory. (Writing a read's events into a vector and reading them back took 2.5% of the
/// broker's samples at fan-in saturation, docs/BENCHMARKS.md.) Ends after FRAMES_PER_BATCH
/// frames, after malformed input (its event the last one), or at the first CONNECT when it
/// needs authenticating; `end` then says which.
struct Frames<'a> {
    buf: &'a mut BytesMut,
    state: &'a mut ReadState,
    conn: ConnId,
    packet_bytes_max: usize,
    decoded: usize,
    end: Option<Batch>,
}

impl Iterator for Frames<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.end.is_some() {
            return None;
        }
        if self.decoded >= FRAMES_PER_BATCH {
            self.end = Some(Batch::Cut);
            return None;
        }
        let conn = self.conn;
        match protocol::decode(self.buf, self.state.version, self.packet_bytes_max) {
            Ok(Some(Packet::Connect(connect))) if self.state.authenticate => {
                self.state.version = connect.version;
                self.state.authenticate = false;
                self.end = Some(Batch::Connect(connect));
                None
            }
            Ok(Some(packet)) => {
                if let Packet::Connect(connect) = &packet {
                    self.state.version = connect.version;
                }
                self.decoded += 1;
                Some(Event::Packet { conn, packet })
            }
            Ok(None) => {
                self.end = Some(Batch::Drained);
                None
            }
            Err(error) => {
                tracing::debug!(conn, %error, "malformed packet");
                self.end = Some(Batch::Failed);
                Some(Event::Malformed { conn, error })
            }
        }
    }
}

struct ReadState {
    version: Version,
    /// The first CONNECT has yet to be authenticated by the connection (not the shard).
    authenticate: bool,
}

/// Decodes the whole frames in `buf` and hands them to the shard, and keeps the packet deadline
/// of what is left (`partial_since`). A function of its own, not part of `read_loop`: its
/// locals then take no room in the connection's future.
fn decode_and_handle(
    shell: &ShardShell,
    conn: ConnId,
    buf: &mut BytesMut,
    state: &mut ReadState,
    partial_since: &mut Option<Instant>,
    read_at: Instant,
    packet_bytes_max: usize,
) -> Batch {
    let buffered = buf.len();
    let mut frames = Frames {
        buf,
        state,
        conn,
        packet_bytes_max,
        decoded: 0,
        end: None,
    };
    if let Some(first) = frames.next() {
        let events = std::iter::once(first).chain(&mut frames);
        if packet_trace::enabled() {
            // The trace looks at the shard before it handles them: this batch is collected.
            let events: Vec<Event> = events.collect();
            trace_received(shell, conn, &events);
            shell.handle_read(events, read_at);
        } else {
            shell.handle_read(events, read_at);
        }
    }
    let batch = frames.end.unwrap_or(Batch::Drained);
    let since = match *partial_since {
        _ if buf.is_empty() => None,
        Some(since) if buf.len() == buffered => Some(since),
        // A packet completed and the next began in the same read.
        _ => Some(read_at),
    };
    if since != *partial_since {
        // The shard's tick closes a connection whose packet is overdue
        // (`limits.packet_timeout_ms`): no timer per read.
        *partial_since = since;
        shell.shard.borrow_mut().set_partial_since(conn, since);
    }
    batch
}

/// Reads and hands frames to the shard until the connection closes or parks; `from` is the
/// decoder's state and how this task began.
async fn read_loop(
    shell: &ShardShell,
    client: &Client<'_>,
    reader: &mut Reader,
    ends: &Ends,
    (state, start): (&mut ReadState, Start),
) {
    let conn = client.conn;
    let packet_bytes_max = shell.shard.borrow().settings().packet_bytes_max;
    let may_park = may_park(shell, client, reader);
    let mut buf = BytesMut::new();
    let mut reservation = partial::Reservation::new(&shell.partial);
    // When the partial packet at the front of `buf` (if any) began: the packet deadline.
    let mut partial_since: Option<Instant> = None;
    let mut first_read = matches!(start, Start::Fresh);
    // The completion of the read that brought the bytes being decoded: it dates every message
    // decoded from them (the start of the delivery latency). One clock reading per read.
    let mut read_at = Instant::now();
    // The read before it (or when a revived client was last heard from), and whether the
    // bytes being decoded came from a read of this task: the quiet spell that parks it.
    let mut previous_read_at = match start {
        Start::Fresh => read_at,
        Start::Resumed { last_seen } => last_seen,
    };
    let mut connect_batch = false;
    let mut from_read = false;
    loop {
        let batch = decode_and_handle(
            shell,
            conn,
            &mut buf,
            state,
            &mut partial_since,
            read_at,
            packet_bytes_max,
        );
        match batch {
            Batch::Drained => {}
            Batch::Failed => return,
            Batch::Cut => continue,
            // A packet before it already closed the connection: nothing to authenticate.
            Batch::Connect(_) if is_closing(shell, conn) => return,
            Batch::Connect(connect) => {
                let authentication = Box::pin(authenticate::connect(
                    shell, client, connect, reader, &mut buf,
                ));
                match authentication.await {
                    Ok(events) => shell.handle_all(events),
                    Err(refusal) => return shell.handle(refusal),
                }
                // Authentication may have read more: what follows the CONNECT is dated from
                // here (an understatement by the authentication's duration at most).
                read_at = Instant::now();
                continue;
            }
        }
        if is_closing(shell, conn) {
            return;
        }
        if may_park
            && from_read
            && (connect_batch
                || read_at.saturating_duration_since(previous_read_at) >= parked::PARK_AFTER_QUIET)
        {
            ends.raise(PARK_WANTED);
        }
        // Both waits are rare, and boxed: a future is as large as its largest await.
        if shell.shard.borrow().mail_backlogged() {
            Box::pin(wait_for_mail_backlog(shell)).await;
        }
        if write_room_full(shell, conn) {
            Box::pin(wait_for_write_room(shell, conn)).await;
        }
        // A busy publisher's socket always has data, so the read below completes at once and this
        // loop would never give the shard back: writers, mail and timers wait for it otherwise.
        // (Yielding only after a read that did not wait saved a task run per message at a
        // moderate load, but with it tests/latency.rs `a_busy_shard_shows_in_the_delivery_latency`
        // failed 3 runs in 4 on a quiet machine: a probe's delivery waited well outside the
        // broker's measured span behind a flood on its shard. It passed 3 of 3 without.)
        shards::yield_now().await;
        previous_read_at = read_at;
        match read_more(shell, conn, reader, ends, &mut buf, &mut reservation).await {
            Some(completed_at) => read_at = completed_at,
            None => return,
        }
        from_read = true;
        connect_batch = std::mem::take(&mut first_read);
        if connect_batch && !first_bytes_may_be_connect(shell, client, &buf) {
            return;
        }
    }
}

/// The first byte of a connection's first packet must be CONNECT's (0x10: type 1, flags 0;
/// 3.1.1 §3.1, 5.0 §3.1, and a first packet other than CONNECT is a protocol violation,
/// [MQTT-3.1.0-1]). Anything else (an HTTP request, a TLS ClientHello, a stray protocol) closes
/// the connection at once instead of waiting for the length its first byte seems to announce
/// and then the CONNECT deadline; it is counted as a `bad_protocol` rejection.
fn first_bytes_may_be_connect(shell: &ShardShell, client: &Client<'_>, buf: &[u8]) -> bool {
    const CONNECT_FIRST_BYTE: u8 = 0x10;
    if buf.first().is_none_or(|first| *first == CONNECT_FIRST_BYTE) {
        return true;
    }
    if matches!(client.listener, ListenerKind::Plain(_))
        && crate::tls::looks_like_tls_client_hello(buf)
    {
        tracing::warn!(peer = %client.peer(shell),
            "TLS ClientHello on a plain MQTT listener: closed; the client must use the TLS port (8883)");
    } else {
        tracing::debug!(peer = %client.peer(shell), first_byte = buf.first().copied().unwrap_or(0),
            "first packet is not CONNECT: closed");
    }
    shell
        .shard
        .borrow_mut()
        .metrics
        .connection_rejected(crate::metrics::ConnectRejection::BadProtocol);
    false
}

/// Where the next read goes. With nothing buffered the read goes to the shard's buffer
/// (`read_buffer`) and the connection's reservation of the shard's partial-packet allowance is
/// given back; a partial frame is completed in a buffer of the connection's own, sized for what
/// that frame still needs (at least a chunk), whose capacity (`bytes` in all) is first reserved
/// (`partial`), waiting without reading while there is no room.
enum ReadTarget {
    Shared,
    Own { wanted: usize, bytes: usize },
}

/// Reads more bytes into `buf` and returns when the read completed; `None` when the connection
/// is done (closed by the peer, failed, or announcing a frame over the limit). The planning and
/// the accounting are plain functions and the read one poll function, so that the connection's
/// future keeps only the read's few words while it waits.
async fn read_more(
    shell: &ShardShell,
    conn: ConnId,
    reader: &mut Reader,
    ends: &Ends,
    buf: &mut BytesMut,
    reservation: &mut partial::Reservation<'_>,
) -> Option<Instant> {
    let read = match plan_read(shell, conn, buf, reservation)? {
        ReadTarget::Shared => {
            let read = poll_fn(|cx| {
                if ends.has(PARK_WANTED) {
                    match poll_park(shell, conn, reader, ends, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(true) => return Poll::Ready(None),
                        Poll::Ready(false) => {}
                    }
                }
                read_buffer::poll_read(cx, reader, READ_CHUNK)
                    .map_ok(|bytes| {
                        let n = bytes.len();
                        *buf = bytes;
                        n
                    })
                    .map(Some)
            })
            .await;
            ends.lower(PARK_WANTED | WRITER_IDLE);
            let Some(read) = read else {
                ends.raise(PARKING);
                return None;
            };
            read
        }
        ReadTarget::Own { wanted, bytes } => {
            // Waiting for room is rare, and boxed: a future is as large as its largest await.
            if !reservation.grow_to(bytes)
                && !Box::pin(reserve(shell, conn, buf, reservation, bytes)).await
            {
                return None;
            }
            let start = own_space(buf, wanted);
            let read = poll_fn(|cx| match buf.get_mut(start..) {
                Some(space) => reader.poll_read(cx, space),
                None => Poll::Ready(Ok(0)),
            })
            .await;
            buf.truncate(start + read.as_ref().map_or(0, |n| *n));
            read
        }
    };
    read_done(shell, conn, reader, read)
}

/// Where the next read goes; `None` when the buffered bytes announce a frame over the limit
/// (its event is handled).
fn plan_read(
    shell: &ShardShell,
    conn: ConnId,
    buf: &mut BytesMut,
    reservation: &mut partial::Reservation<'_>,
) -> Option<ReadTarget> {
    if buf.is_empty() {
        // Even empty, `buf` may hold its allocation (or a share of the shard's): not while idle.
        *buf = BytesMut::new();
        reservation.release();
        return Some(ReadTarget::Shared);
    }
    let packet_bytes_max = shell.shard.borrow().settings().packet_bytes_max;
    // A read ahead of a chunk past the frame, but within what is reserved once something
    // is: a connection holding a reservation for its frame never needs more to finish it.
    let reserved_room = reservation.bytes().saturating_sub(buf.len());
    let read_ahead = if reservation.bytes() == 0 {
        READ_CHUNK
    } else {
        READ_CHUNK.min(reserved_room)
    };
    let wanted = match protocol::frame_len(buf, packet_bytes_max) {
        Ok(Some(frame)) => frame.saturating_sub(buf.len()).max(read_ahead),
        Ok(None) => READ_CHUNK,
        Err(error) => {
            shell.handle(Event::Malformed { conn, error });
            return None;
        }
    };
    Some(ReadTarget::Own {
        wanted,
        bytes: buf.len() + wanted,
    })
}

/// A read completed: when (`None` if it ended the connection).
fn read_done(
    shell: &ShardShell,
    conn: ConnId,
    reader: &Reader,
    read: std::io::Result<usize>,
) -> Option<Instant> {
    match read {
        Ok(0) => {
            tracing::debug!(conn, "peer closed the connection");
            None
        }
        Ok(n) => {
            // The read's completion: the one clock reading per read (two with the kernel's
            // receive timestamp, which dates the bytes earlier by their wait in the socket).
            let completed_at = Instant::now();
            let mut shard = shell.shard.borrow_mut();
            shard.metrics.bytes_received(n);
            Some(match reader.last_receive_timestamp() {
                Some(stamp) => shard.metrics.record_socket_wait(completed_at, stamp),
                None => completed_at,
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => Some(Instant::now()),
        Err(error) => {
            tracing::debug!(conn, %error, "read failed");
            None
        }
    }
}

/// Grows the connection's reservation to `bytes`, waiting while the shard's allowance has no
/// room; `false` when the connection was closed meanwhile (the packet deadline, checked by the
/// shard's tick, bounds the wait). A waiting connection first moves its partial packet to an
/// allocation of its exact size, so that it pins no shared read chunk, and keeps only that much
/// of its reservation: waiting connections cannot hold room the others need to finish.
async fn reserve(
    shell: &ShardShell,
    conn: ConnId,
    buf: &mut BytesMut,
    reservation: &mut partial::Reservation<'_>,
    bytes: usize,
) -> bool {
    if reservation.grow_to(bytes) {
        return true;
    }
    tracing::debug!(
        bytes,
        held = shell.partial.held(),
        "partial-packet allowance spent: reading paused"
    );
    shell
        .shard
        .borrow_mut()
        .metrics
        .limit_reached(crate::metrics::LimitReached::PartialBytes);
    // While it waits the connection holds only its partial packet, in an allocation of its own.
    *buf = BytesMut::from(&buf[..]);
    reservation.shrink_to(buf.len());
    while !reservation.grow_to(bytes) {
        // Woken when room is given back, and at least once a second to see whether the shard
        // closed the connection (its socket is not being read, so nothing else would tell).
        let released = shell.partial.released();
        let _ = shards::time::timeout(ALLOWANCE_RECHECK, released).await;
        if is_closing(shell, conn) {
            return false;
        }
    }
    true
}

/// Makes room for `wanted` more bytes at the end of `buf`, which becomes the connection's own
/// allocation, and returns where they start: the space of frames already handled is reclaimed
/// when nothing refers to it any more, else (a slice of the shard's buffer, or frames still
/// queued) the partial frame moves to a new one. The caller truncates to what it read.
fn own_space(buf: &mut BytesMut, wanted: usize) -> usize {
    let start = buf.len();
    if !buf.try_reclaim(wanted) {
        let mut own = BytesMut::with_capacity(start + wanted);
        own.extend_from_slice(buf);
        *buf = own;
    }
    buf.resize(start + wanted, 0);
    start
}

/// Whether this connection may ever park: plain TCP without receive timestamps (a parked
/// socket is read again without them), not authenticated by a certificate identity, on a
/// shard that can wait on parked sockets.
fn may_park(shell: &ShardShell, client: &Client<'_>, reader: &Reader) -> bool {
    matches!(reader, Reader::Tcp(_))
        && matches!(client.listener, ListenerKind::Plain(_))
        && !client.listener.kernel_timestamps()
        && client.identity.is_none()
        && shell.parked.borrow().enabled()
}

/// With `PARK_WANTED` up: `Ready(true)` when the connection parks now (its CONNACK is out,
/// nothing is buffered or being written, it is not closing, and its armed receive was
/// withdrawn with nothing in it); `Ready(false)` to read on; `Pending` while the receive's
/// withdrawal completes.
fn poll_park(
    shell: &ShardShell,
    conn: ConnId,
    reader: &Reader,
    ends: &Ends,
    cx: &mut std::task::Context<'_>,
) -> Poll<bool> {
    let Reader::Tcp(half) = reader else {
        return Poll::Ready(false);
    };
    // A writer that ended (its write failed, say, on a client's reset) is not waiting either:
    // the connection must then close through the read, never park without its writer.
    if ends.writing.get()
        || ends.has(WRITER_DONE | WRITER_ABANDONED)
        || !idle_for_parking(shell, conn)
    {
        // The writer raises `WRITER_IDLE` when it is done, and a CONNACK wakes it.
        return Poll::Ready(false);
    }
    match half.poll_disarm(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(true) => Poll::Ready(true),
        Poll::Ready(false) => {
            // Bytes came first: read them; the next quiet spell parks it.
            ends.lower(PARK_WANTED | WRITER_IDLE);
            Poll::Ready(false)
        }
    }
}

/// The shard's side of parking: CONNACK sent, nothing to write, not closing.
fn idle_for_parking(shell: &ShardShell, conn: ConnId) -> bool {
    shell.shard.borrow().conn(conn).is_some_and(|state| {
        matches!(state.phase, crate::shard::Phase::Active { .. })
            && state.out.is_empty()
            && !state.is_closing()
    })
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

/// Backpressure on a client that does not read what the broker writes: while its write buffer
/// holds `WRITE_BUFFER_BYTES` or more of answers to its own requests (acks and other answers are
/// not capped as deliveries are, see `shard::writes`), its input is not read either, so its
/// requests cannot pile up answers.
/// Checked at a falling rate (1 ms, doubling to 64 ms) until there is room or it closes.
async fn wait_for_write_room(shell: &ShardShell, conn: ConnId) {
    if !write_room_full(shell, conn) {
        return;
    }
    shell
        .shard
        .borrow_mut()
        .metrics
        .limit_reached(crate::metrics::LimitReached::WriteBytes);
    let mut pause = Duration::from_millis(1);
    while write_room_full(shell, conn) {
        shards::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// Whether the client's write buffer holds `WRITE_BUFFER_BYTES` or more of answers to its own
/// requests. Only what its own requests made counts (acks, SUBACKs, PINGRESPs): deliveries in
/// the buffer are bounded by the write cap and wait in the outbox when it is full, and pausing
/// on them would stall a client that publishes to its own subscription before it reads.
fn write_room_full(shell: &ShardShell, conn: ConnId) -> bool {
    shell.shard.borrow().conn(conn).is_some_and(|state| {
        !state.is_closing()
            && (state.out.len() as u64).saturating_sub(u64::from(state.out_counted))
                >= crate::config::budget::WRITE_BUFFER_BYTES
    })
}

/// Reads and discards input after the broker half-closed, until the client closes, for at most
/// `CLOSE_LINGER` and `CLOSE_LINGER_BYTES_MAX` (with the shard's read buffer: no allocation).
async fn linger(reader: &mut Reader) {
    let deadline = std::time::Instant::now() + CLOSE_LINGER;
    let mut discarded = 0;
    while discarded < CLOSE_LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let read = shards::time::timeout(left, read_buffer::read(reader, READ_CHUNK)).await;
        match read {
            Ok(Ok(bytes)) if !bytes.is_empty() => discarded += bytes.len(),
            _ => return,
        }
    }
}

/// How far each of a connection's two sides is.
struct Ends {
    flags: Cell<u8>,
    /// The writer has a write under way.
    writing: Cell<bool>,
}

/// The reading side is done (the writer's half-close need not wait for it).
const READER_DONE: u8 = 1;
/// The writing side returned.
const WRITER_DONE: u8 = 2;
/// The reading side gave up waiting for the writer, which is to be dropped.
const WRITER_ABANDONED: u8 = 4;
/// The connection has been quiet: the reading side parks it once the writer is idle. Lowered
/// by the next read.
const PARK_WANTED: u8 = 8;
/// The writer went idle while `PARK_WANTED` was up: the change makes `both` poll the reading
/// side again, which parks.
const WRITER_IDLE: u8 = 16;
/// The reading side ended to park the connection, not to close it.
const PARKING: u8 = 32;

impl Ends {
    fn new() -> Ends {
        Ends {
            flags: Cell::new(0),
            writing: Cell::new(false),
        }
    }

    /// Lowers `flags`: only the parking flags go down, and only the reading side lowers them,
    /// at a read's completion, so `both`'s loop still ends.
    fn lower(&self, flags: u8) {
        self.flags.set(self.flags.get() & !flags);
    }

    /// The writer starts a write (`true`) or waits for the next (`false`).
    fn set_writing(&self, writing: bool) {
        self.writing.set(writing);
        if !writing && self.has(PARK_WANTED) {
            self.raise(WRITER_IDLE);
        }
    }
    fn raise(&self, flag: u8) {
        self.flags.set(self.flags.get() | flag);
    }

    fn has(&self, flag: u8) -> bool {
        self.flags.get() & flag != 0
    }

    /// Whether `flag` is raised within `wait`. No waker is registered: the other side raises
    /// flags inside the same task, and `both` polls again after a pass that raised one.
    async fn raised(&self, flag: u8, wait: Duration) -> bool {
        let raised = poll_fn(|_| {
            if self.has(flag) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        shards::time::timeout(wait, raised).await.is_ok()
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

#[cfg(test)]
mod size_tests {
    use std::future::Future;

    /// The size of the future an async fn of four arguments returns, without calling it.
    fn future_bytes<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// The same for an async fn of five arguments.
    fn future_bytes_5<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// What every connection keeps in its task while it waits (docs/BENCHMARKS.md on idle
    /// connections): the whole connection future, the largest state of either side included.
    /// An await added to either side is paid by every idle connection; a rare one is boxed.
    #[test]
    fn connection_future_stays_small() {
        let sizes = [
            // Parking (`parked`) grew the task of a connection that does not park (TLS,
            // WebSocket, busy) from 664 to 896 bytes: the loop that serves again after a park
            // that could not happen, the reading side's quiet-spell clock and its start.
            // A parked connection has no task at all.
            ("run", future_bytes(super::run), 896),
            ("read_side", future_bytes_5(super::read_side), 472),
            ("resume", future_bytes_5(super::resume), 848),
            ("write_side", size_of::<super::write_side::WriteSide>(), 104),
        ];
        for (name, size, max) in sizes {
            assert!(size <= max, "{name} is {size} bytes, over {max}");
        }
    }
}
