//! Parked connections: an idle plain-TCP connection ends its task and gives up its stream and
//! armed receive, and keeps only a `Parked` record (its socket and its listener) in the shard's
//! table; its MQTT version and the rest of its state are the shard's. The shard's state of the connection
//! (`Conn`, its session, its deadline entry) stays where it is: the shard does not know a
//! connection is parked. One task per shard (`parker`) revives a parked connection, with a new
//! task over the same socket, when
//! - its socket has input, an end or an error (the shard's `shards::Parking`), or
//! - the shard wakes its writer (`Writers::wake`: a delivery, a PINGRESP, a close at keepalive
//!   expiry, a takeover, the shutdown): the writers' table holds a waker for a parked
//!   connection that names it (`parked_waker`) instead of a task's.
//!
//! A connection parks once it has been quiet (`PARK_AFTER_QUIET` since its previous packet, or
//! right after its CONNECT) and has nothing to do: no partial packet, nothing to write, not
//! closing. A connection that keeps exchanging packets never parks, so the data path pays
//! nothing but a flag test per read and one per write (the writer going idle); a connection
//! revived by a delivery stays a task until its client's next packet after a quiet spell.
//!
//! A client that sends a packet every 1-60 s (telemetry) parks and is revived once per packet.
//! Each cycle costs 2 `epoll_ctl` calls (add at the park, delete at the revival), a share of
//! one `epoll_wait` (up to `REVIVE_BATCH` revivals per call), the ring's re-armed poll on the
//! epoll instance, a new task and stream, a single-shot receive, and at the next park the
//! multishot receive's cancel: a few system calls and ring requests beside the packet's own
//! receive and answer. That buys about 1.1 KB less per connection while it is quiet.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use crate::server::ShardShell;
use crate::shard::{ConnId, ConnMap};
use shards::{ReadHalf, WriteHalf};

use crate::transport::{Reader, Writer};

/// How long a client must have been silent before its connection parks (its CONNECT excepted):
/// a client that sends more often keeps its task, and parking costs it nothing.
pub(super) const PARK_AFTER_QUIET: Duration = Duration::from_secs(1);
/// Parked connections revived per turn of the parker before it yields.
const REVIVE_BATCH: usize = 256;

/// What a parked connection keeps (8 bytes beside its id in the table): its socket and its
/// listener. Its MQTT version and when its client was last heard from are the shard's.
pub(crate) struct Parked {
    socket: shards::ParkedSocket,
    listener: u32,
}

/// The shard's parked connections and the wait on their sockets.
pub(crate) struct ParkedConnections {
    /// `None` when the shard could not make its epoll instance: nothing parks then.
    parking: Option<shards::Parking>,
    table: ConnMap<Parked>,
}

impl ParkedConnections {
    pub(crate) fn new() -> ParkedConnections {
        let parking = match shards::Parking::new(REVIVE_BATCH) {
            Ok(parking) => Some(parking),
            Err(error) => {
                tracing::warn!(%error, "no epoll instance: idle connections keep their tasks");
                None
            }
        };
        ParkedConnections {
            parking,
            table: ConnMap::default(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.parking.is_some()
    }

    /// Parked connections on this shard.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

thread_local! {
    /// Connections whose parked waker was woken, for the shard's parker to revive.
    static WOKEN: RefCell<Vec<ConnId>> = const { RefCell::new(Vec::new()) };
    /// The parker's waker while it waits.
    static PARKER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// The waker a parked connection leaves in the writers' table: waking it queues the connection
/// for revival on this thread. It carries the connection id itself, so it allocates nothing.
/// Wakers of the writers' table are woken only on the shard's own thread.
pub(super) fn parked_waker(conn: ConnId) -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);
    fn clone(data: *const ()) -> RawWaker {
        RawWaker::new(data, &VTABLE)
    }
    fn wake(data: *const ()) {
        WOKEN.with(|woken| woken.borrow_mut().push(data as usize as ConnId));
        if let Some(parker) = PARKER.take() {
            parker.wake();
        }
    }
    fn drop_waker(_: *const ()) {}
    // The id travels as the pointer's value; it is never dereferenced.
    let data = usize::try_from(conn).unwrap_or(usize::MAX) as *const ();
    // SAFETY: the vtable's functions never dereference `data` and are sound for any value.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

/// Parks `conn` with the two halves of its plain TCP stream; `Err` gives them back when it
/// cannot (the caller keeps serving it). The receive of the stream must be disarmed
/// (`ReadHalf::poll_disarm` said `true`) and the writer idle.
pub(super) fn park(
    shell: &ShardShell,
    conn: ConnId,
    listener: usize,
    halves: (ReadHalf, WriteHalf),
) -> Result<(), (ReadHalf, WriteHalf)> {
    let mut parked = shell.parked.borrow_mut();
    let Some(parking) = &parked.parking else {
        return Err(halves);
    };
    let stream = halves.0.reunite(halves.1)?;
    let socket = stream.into_parked().map_err(shards::TcpStream::split)?;
    if let Err(error) = parking.park(&socket, conn) {
        tracing::debug!(conn, %error, "connection not parked");
        return Err(parking.unpark(socket).split());
    }
    let listener = u32::try_from(listener).unwrap_or(u32::MAX);
    parked.table.insert(conn, Parked { socket, listener });
    drop(parked);
    shell.writers.borrow_mut().park(conn, parked_waker(conn));
    Ok(())
}

/// The shard's parker: revives parked connections whose socket has input or whose writer was
/// woken, at most `REVIVE_BATCH` per turn.
pub(crate) async fn parker(shell: Rc<ShardShell>) {
    if !shell.parked.borrow().enabled() {
        return;
    }
    let mut ready: Vec<ConnId> = Vec::with_capacity(REVIVE_BATCH);
    loop {
        let waited = std::future::poll_fn(|cx| {
            WOKEN.with(|woken| {
                let mut woken = woken.borrow_mut();
                let take = woken.len().min(REVIVE_BATCH);
                ready.extend(woken.drain(..take));
            });
            let parked = shell.parked.borrow();
            let Some(parking) = &parked.parking else {
                return Poll::Ready(Err(std::io::Error::other("no epoll instance")));
            };
            let polled = parking.poll_ready(cx, &mut ready);
            if !ready.is_empty() {
                return Poll::Ready(Ok(()));
            }
            PARKER.set(Some(cx.waker().clone()));
            polled
        })
        .await;
        if let Err(error) = waited {
            tracing::warn!(%error, "waiting on parked connections failed: none parks any more");
            revive_all(&shell);
            return;
        }
        for conn in ready.drain(..) {
            revive(&shell, conn);
        }
        shards::yield_now().await;
    }
}

/// Gives every parked connection its task back (the parker could not wait any more).
fn revive_all(shell: &Rc<ShardShell>) {
    let conns: Vec<ConnId> = shell.parked.borrow().table.keys().copied().collect();
    for conn in conns {
        revive(shell, conn);
    }
    shell.parked.borrow_mut().parking = None;
}

/// Gives `conn` a task again, over its socket (nothing when it is not parked: a second report).
fn revive(shell: &Rc<ShardShell>, conn: ConnId) {
    let (stream, listener) = {
        let mut parked = shell.parked.borrow_mut();
        let Some(record) = parked.table.remove(&conn) else {
            return;
        };
        let Some(parking) = &parked.parking else {
            return;
        };
        (parking.unpark(record.socket), record.listener)
    };
    let (read_half, write_half) = stream.split();
    let task = super::resume(
        Rc::clone(shell),
        conn,
        usize::try_from(listener).unwrap_or(usize::MAX),
        Reader::Tcp(read_half),
        Writer::Tcp(write_half),
    );
    shell.ctx.spawn(shards::TaskClass::Io, task).detach();
}
