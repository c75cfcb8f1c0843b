//! Listeners and connections. Listener sockets are built here with socket2 (SO_REUSEPORT, our own
//! backlog) on the thread that calls `start`, then handed to their shard, where the executor takes
//! them over. `TcpStream` wraps the executor's stream so that one task can wait in `read` while
//! another writes (`split`).

use crate::config::{ListenerSpec, PortPerShard};
use crate::error::StartError;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpListener as ExecutorListener;
use glommio::net::TcpStream as ExecutorStream;
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

thread_local! {
    static LIVE_CONNECTIONS: Cell<usize> = const { Cell::new(0) };
}

/// Registers the shard's receive buffer pool (`RuntimeConfig::recv_buffers`); a kernel that
/// refuses it leaves the shard reading on readiness, which works the same, one system call per
/// read dearer. Runs on the shard before any stream is made.
pub(crate) fn register_recv_pool(config: &crate::RuntimeConfig) {
    if config.recv_buffers == 0 {
        return;
    }
    if let Err(error) =
        glommio::net::register_recv_pool(config.recv_buffers, config.recv_buffer_bytes)
    {
        tracing::warn!(
            %error,
            "receive buffer pool not registered: reads wait for readiness instead"
        );
    }
}

/// The current shard's receive buffer pool: its size and what is in use. Must run on a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvPoolStats {
    /// Buffers in the pool; 0 when the shard has none (reads wait for readiness).
    pub buffers: usize,
    pub buffer_bytes: usize,
    /// Buffers holding received bytes that no read has taken yet.
    pub held: usize,
    /// Receives completed into a pool buffer.
    pub receives: u64,
    /// Receives that found the pool empty and read with `recv` instead.
    pub exhausted: u64,
}

/// The current shard's receive pool counters (all zero without a pool). Must run on a shard.
pub fn recv_pool_stats() -> RecvPoolStats {
    match glommio::net::recv_pool_stats() {
        Some(stats) => RecvPoolStats {
            buffers: stats.buffers,
            buffer_bytes: stats.buffer_bytes,
            held: stats.held,
            receives: stats.receives,
            exhausted: stats.exhausted,
        },
        None => RecvPoolStats::default(),
    }
}

/// Connections (accepted `TcpStream`s, whole or split) alive on the current shard.
pub fn live_connections() -> usize {
    LIVE_CONNECTIONS.with(Cell::get)
}

/// A listening socket bound before the shards start.
pub(crate) struct BoundSocket {
    pub(crate) spec_index: usize,
    pub(crate) per_shard: bool,
    pub(crate) socket: Socket,
}

/// Every listener socket of every shard, and the addresses they resolved to.
pub(crate) struct Bound {
    /// `sockets[shard]`: for each spec in order, the shared-port socket then the per-shard one.
    pub(crate) sockets: Vec<Vec<BoundSocket>>,
    /// `shared[listener]`.
    pub(crate) shared: Vec<SocketAddr>,
    /// `per_shard[listener][shard]`.
    pub(crate) per_shard: Vec<Vec<Option<SocketAddr>>>,
}

/// Binds everything or nothing: on error the sockets bound so far are dropped (closed).
pub(crate) fn bind_all(specs: &[ListenerSpec], shards: usize) -> Result<Bound, StartError> {
    let mut bound = Bound {
        sockets: (0..shards).map(|_| Vec::new()).collect(),
        shared: Vec::new(),
        per_shard: Vec::new(),
    };
    for (spec_index, spec) in specs.iter().enumerate() {
        let mut addr = spec.addr;
        let mut addrs = Vec::with_capacity(shards);
        for shard in 0..shards {
            // The first bind resolves port 0; the others join that port's reuseport group.
            let socket = listen(addr, spec.backlog, true)?;
            addr = local_addr(&socket, addr)?;
            bound.sockets[shard].push(BoundSocket {
                spec_index,
                per_shard: false,
                socket,
            });
            let own = match spec.port_per_shard {
                PortPerShard::Off => None,
                PortPerShard::Base(base) => {
                    let port = port_of(base, shard, spec.addr)?;
                    Some(listen(
                        SocketAddr::new(spec.addr.ip(), port),
                        spec.backlog,
                        false,
                    )?)
                }
                PortPerShard::Ephemeral => Some(listen(
                    SocketAddr::new(spec.addr.ip(), 0),
                    spec.backlog,
                    false,
                )?),
            };
            match own {
                Some(socket) => {
                    addrs.push(Some(local_addr(&socket, spec.addr)?));
                    bound.sockets[shard].push(BoundSocket {
                        spec_index,
                        per_shard: true,
                        socket,
                    });
                }
                None => addrs.push(None),
            }
        }
        bound.shared.push(addr);
        bound.per_shard.push(addrs);
    }
    Ok(bound)
}

fn port_of(base: u16, shard: usize, addr: SocketAddr) -> Result<u16, StartError> {
    u16::try_from(usize::from(base) + shard).map_err(|_| StartError::Bind {
        addr,
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "base port + shard index > 65535",
        ),
    })
}

fn listen(addr: SocketAddr, backlog: u32, reuse_port: bool) -> Result<Socket, StartError> {
    let fail = |source| StartError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    // Per-shard ports are not shared, and an OS-chosen port must not join someone's group.
    socket.set_reuse_port(reuse_port).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    // Linux copies TCP_NODELAY from the listening socket to each connection it accepts (when the
    // handshake completes, so it must be set before `listen`): connections start with it on and
    // need no `setsockopt` of their own. `TcpStream::set_nodelay(false)` turns it off.
    socket.set_tcp_nodelay(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(fail)?;
    Ok(socket)
}

fn local_addr(socket: &Socket, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let fail = |source| StartError::Bind { addr, source };
    let local = socket.local_addr().map_err(fail)?;
    local
        .as_socket()
        .ok_or_else(|| fail(io::Error::other("not an IP socket")))
}

/// One listening socket of this shard.
pub struct Listener {
    inner: ExecutorListener,
    spec_index: usize,
    per_shard: bool,
}

impl Listener {
    /// Takes a bound socket over into the current shard's executor. Must run on the shard.
    pub(crate) fn adopt(bound: BoundSocket) -> Listener {
        let fd = bound.socket.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own and hand over whole.
        let inner = unsafe { ExecutorListener::from_raw_fd(fd) };
        Listener {
            inner,
            spec_index: bound.spec_index,
            per_shard: bound.per_shard,
        }
    }

    /// Which `RuntimeConfig::listeners` entry this socket serves.
    pub fn spec_index(&self) -> usize {
        self.spec_index
    }

    /// True for the shard's own port (`PortPerShard`), false for the shared port.
    pub fn is_per_shard(&self) -> bool {
        self.per_shard
    }

    /// Waits for the next connection. An error concerns that one connection (for example the peer
    /// left before we asked its address); keep accepting.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let stream = self.inner.accept().await.map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((TcpStream::new(stream), peer))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(io::Error::from)
    }
}

/// The stream shared by a connection's halves; counted in `live_connections` while it lives.
struct Connection {
    stream: RefCell<ExecutorStream>,
}

impl Connection {
    /// Polls with the stream borrowed for this poll only, never across an await.
    fn poll<T>(&self, f: impl FnOnce(Pin<&mut ExecutorStream>) -> Poll<T>) -> Poll<T> {
        let mut stream = self.stream.borrow_mut();
        f(Pin::new(&mut *stream))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        LIVE_CONNECTIONS.with(|live| live.set(live.get().saturating_sub(1)));
    }
}

/// A TCP connection owned by one shard.
pub struct TcpStream {
    connection: Rc<Connection>,
}

impl TcpStream {
    pub(crate) fn new(stream: ExecutorStream) -> TcpStream {
        LIVE_CONNECTIONS.with(|live| live.set(live.get() + 1));
        TcpStream {
            connection: Rc::new(Connection {
                stream: RefCell::new(stream),
            }),
        }
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.connection
            .stream
            .borrow()
            .set_nodelay(nodelay)
            .map_err(io::Error::from)
    }

    /// Asks the kernel to stamp the bytes this connection receives (`SO_TIMESTAMPNS`), read
    /// back per read with `ReadHalf::last_receive_timestamp`. Set it before the first read: a
    /// receive already armed brings no stamp.
    pub fn set_receive_timestamps(&self) -> io::Result<()> {
        self.connection
            .stream
            .borrow_mut()
            .set_receive_timestamps()
            .map_err(io::Error::from)
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        self.connection
            .stream
            .borrow()
            .nodelay()
            .map_err(io::Error::from)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.connection
            .stream
            .borrow()
            .peer_addr()
            .map_err(io::Error::from)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.connection
            .stream
            .borrow()
            .local_addr()
            .map_err(io::Error::from)
    }

    /// Reads what is available, at least one byte; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(&self.connection, buf).await
    }

    /// As `ReadHalf::last_receive_timestamp`.
    pub fn last_receive_timestamp(&self) -> Option<std::time::SystemTime> {
        self.connection.stream.borrow().last_receive_timestamp()
    }

    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(&self.connection, buf).await
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        write_all(&self.connection, buf).await
    }

    /// Shuts the sending side down (FIN); the fd closes when the stream is dropped.
    pub async fn close(&mut self) -> io::Result<()> {
        shutdown(&self.connection, Shutdown::Write)
    }

    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        shutdown(&self.connection, how)
    }

    /// Two halves usable from two tasks at once: one may wait in `read` while the other writes.
    /// The socket closes when both halves are dropped.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        let read = ReadHalf {
            connection: Rc::clone(&self.connection),
        };
        (
            read,
            WriteHalf {
                connection: self.connection,
            },
        )
    }
}

impl TcpStream {
    /// Withdraws the stream's armed receive before it is parked (`into_parked`), so that no
    /// byte is lost with it: `Ready(true)` when every unread byte is in the socket,
    /// `Ready(false)` when bytes arrived first (the next read returns them) or the stream
    /// reads with receive timestamps. Pending while a multishot receive's cancellation
    /// completes.
    pub fn poll_disarm(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.connection.stream.borrow_mut().poll_disarm(cx)
    }

    /// The socket alone, to wait for input on a shard's `Parking` at the cost of a descriptor;
    /// the executor's stream and its sources are let go. `Err` gives the stream back while a
    /// half of it lives elsewhere. Call after `poll_disarm` said `true`, or a receive armed in
    /// the ring is cancelled with whatever it brought.
    pub fn into_parked(self) -> Result<crate::park::ParkedSocket, TcpStream> {
        let connection = match Rc::try_unwrap(self.connection) {
            Ok(connection) => connection,
            Err(connection) => return Err(TcpStream { connection }),
        };
        // Not through `Connection`'s drop: the stream is moved out and the count taken here.
        let connection = std::mem::ManuallyDrop::new(connection);
        // SAFETY: read once from a value that is neither dropped (ManuallyDrop) nor used again.
        let stream = unsafe { std::ptr::read(&connection.stream) }.into_inner();
        LIVE_CONNECTIONS.with(|live| live.set(live.get().saturating_sub(1)));
        Ok(crate::park::ParkedSocket::from_raw(stream.into_raw_fd()))
    }
}

/// Opens a TCP connection to `addr` from the current shard (load generators, bridges). The
/// stream counts in `live_connections` like an accepted one. Must run on a shard.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = ExecutorStream::connect(addr)
        .await
        .map_err(io::Error::from)?;
    Ok(TcpStream::new(stream))
}

/// The receiving half of a split `TcpStream`.
pub struct ReadHalf {
    connection: Rc<Connection>,
}

impl ReadHalf {
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(&self.connection, buf).await
    }

    /// As `TcpStream::poll_disarm`: withdraws the armed receive before the stream is parked.
    pub fn poll_disarm(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.connection.stream.borrow_mut().poll_disarm(cx)
    }

    /// The kernel's receive time (`CLOCK_REALTIME`) of the last byte the last read returned,
    /// when receive timestamps are on (`TcpStream::set_receive_timestamps`); bytes a receive
    /// brought and a later read returned keep that receive's stamp.
    pub fn last_receive_timestamp(&self) -> Option<std::time::SystemTime> {
        self.connection.stream.borrow().last_receive_timestamp()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.connection
            .stream
            .borrow()
            .peer_addr()
            .map_err(io::Error::from)
    }
}

impl ReadHalf {
    /// The two halves of one stream made whole again (for parking, `park`); `Err` gives back
    /// halves of two different streams.
    pub fn reunite(self, write: WriteHalf) -> Result<TcpStream, (ReadHalf, WriteHalf)> {
        if !Rc::ptr_eq(&self.connection, &write.connection) {
            return Err((self, write));
        }
        drop(write);
        Ok(TcpStream {
            connection: self.connection,
        })
    }
}

/// The sending half of a split `TcpStream`.
pub struct WriteHalf {
    connection: Rc<Connection>,
}

impl WriteHalf {
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(&self.connection, buf).await
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        write_all(&self.connection, buf).await
    }

    /// Shuts the sending side down (FIN); the reading half keeps working.
    pub async fn close(&mut self) -> io::Result<()> {
        shutdown(&self.connection, Shutdown::Write)
    }

    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        shutdown(&self.connection, how)
    }
}

async fn read(connection: &Connection, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| connection.poll(|stream| stream.poll_read(cx, buf))).await
}

async fn write(connection: &Connection, buf: &[u8]) -> io::Result<usize> {
    poll_fn(|cx| connection.poll(|stream| stream.poll_write(cx, buf))).await
}

async fn write_all(connection: &Connection, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let written = write(connection, buf).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = buf.get(written..).unwrap_or_default();
    }
    Ok(())
}

fn shutdown(connection: &Connection, how: Shutdown) -> io::Result<()> {
    let stream = connection.stream.borrow();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*stream);
    // SAFETY: `fd` is the open socket `stream` owns; ManuallyDrop keeps this borrow from closing it.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    socket.shutdown(how)
}

macro_rules! async_io {
    ($($half:ty),*) => {$(
        impl AsyncRead for $half {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8])
                -> Poll<io::Result<usize>> {
                self.connection.poll(|stream| stream.poll_read(cx, buf))
            }
        }
    )*};
}

macro_rules! async_write {
    ($($half:ty),*) => {$(
        impl AsyncWrite for $half {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8])
                -> Poll<io::Result<usize>> {
                self.connection.poll(|stream| stream.poll_write(cx, buf))
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.connection.poll(|stream| stream.poll_flush(cx))
            }
            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.connection.poll(|stream| stream.poll_close(cx))
            }
        }
    )*};
}

async_io!(TcpStream, ReadHalf);
async_write!(TcpStream, WriteHalf);

#[cfg(test)]
mod tests {
    use crate::{CpuSet, RuntimeConfig, ShardContext, ShardCount, Topology};
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    #[test]
    fn connect_reaches_a_listener_from_a_shard() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut stream, _) = server.accept().unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).unwrap();
            stream.write_all(&buf).unwrap();
        });
        let config = RuntimeConfig {
            topology: Topology {
                shards: ShardCount::Count(1),
                cpus: CpuSet::All,
                pin: false,
            },
            name: String::from("connect"),
            ..RuntimeConfig::default()
        };
        let report = Arc::new(Mutex::new(None));
        let record = report.clone();
        let runtime = crate::start(config, move |context: ShardContext<()>| {
            let record = record.clone();
            async move {
                let stream = super::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                assert_eq!(stream.peer_addr().unwrap(), addr);
                assert_eq!(context.live_connections(), 1);
                let (mut read_half, mut write_half) = stream.split();
                write_half.write_all(b"ping").await.unwrap();
                let mut buf = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    let n = read_half.read(&mut buf[got..]).await.unwrap();
                    assert_ne!(n, 0, "the echo closed early");
                    got += n;
                }
                *record.lock().unwrap() = Some(buf);
                drop((read_half, write_half));
                assert_eq!(context.live_connections(), 0);
                let refused = super::connect(SocketAddr::from(([127, 0, 0, 1], 1))).await;
                assert!(refused.is_err(), "nothing listens on port 1");
            }
        })
        .unwrap();
        runtime.join().unwrap();
        echo.join().unwrap();
        assert_eq!(report.lock().unwrap().as_ref(), Some(b"ping"));
    }
}
