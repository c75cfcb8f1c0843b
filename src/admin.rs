//! The admin HTTP listener: `GET /metrics` (Prometheus text format 0.0.4), `GET /health` and
//! `GET /ready` for probes.
//!
//! Plain blocking HTTP/1.1 on one std thread, one connection at a time, `Connection: close`: a
//! scrape every few seconds and a probe or two do not need a framework or an async runtime, and
//! keeping this off the shards means a slow or hostile HTTP client can never stall a shard. It
//! reads snapshots the shards published (see `metrics::SnapshotBoard`), so it takes no lock a
//! shard waits on during message handling.
//!
//! Limits: a request's line and headers must fit in `REQUEST_BYTES_MAX` (431 otherwise) and
//! arrive within `REQUEST_DEADLINE` (the connection is dropped otherwise); bodies are not read.
//! Bind it to loopback unless the network in front of it is trusted: it has no authentication.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::{SnapshotBoard, render_prometheus};

/// The largest request line plus headers accepted.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time allowed for the whole request to arrive; also bounds each write of the answer.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// After refusing a request, how long unread input is drained so the answer is not lost to a
/// reset (closing with unread data makes the kernel send RST).
const DRAIN_DEADLINE: Duration = Duration::from_millis(100);
/// How long `shutdown` waits to wake the accept loop.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// A running admin listener. Stops on `shutdown` or drop.
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` (port 0 picks one) and serves on a new thread. `readiness` answers `/ready`:
    /// true while every shard serves and no shutdown has begun (see `readiness`).
    pub fn start<R>(addr: SocketAddr, board: Arc<SnapshotBoard>, readiness: R) -> io::Result<Admin>
    where
        R: Fn() -> bool + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(String::from("ringmq-admin"))
                .spawn(move || serve(&listener, &board, &readiness, &stop))?
        };
        tracing::info!(%addr, "admin listener started");
        Ok(Admin {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the chosen port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread (at most one request in flight, bounded by
    /// `REQUEST_DEADLINE`).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // The thread is blocked in `accept`; a connection of our own wakes it to see the flag.
        let wake = SocketAddr::new(reachable(self.addr.ip()), self.addr.port());
        match TcpStream::connect_timeout(&wake, WAKE_TIMEOUT) {
            Ok(_) => {
                if thread.join().is_err() {
                    tracing::warn!("admin thread panicked");
                }
            }
            // Not joined: the thread stays parked in `accept`, and ends with the process.
            Err(error) => tracing::warn!(%error, "admin listener not woken for shutdown"),
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// An address that reaches a listener bound to `ip` (loopback for the unspecified address).
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn serve(
    listener: &TcpListener,
    board: &SnapshotBoard,
    readiness: &dyn Fn() -> bool,
    stop: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                if let Err(error) = handle(stream, board, readiness) {
                    tracing::debug!(%error, "admin request failed");
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "admin accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    tracing::info!("admin listener stopped");
}

/// What the listener answers.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: CONTENT_TYPE_TEXT,
            body: format!("{body}\n"),
        }
    }
}

fn handle(
    mut stream: TcpStream,
    board: &SnapshotBoard,
    readiness: &dyn Fn() -> bool,
) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let mut buffer = [0u8; REQUEST_BYTES_MAX];
    let response = match read_head(&mut stream, &mut buffer)? {
        Head::Complete(length) => {
            let head = buffer.get(..length).unwrap_or_default();
            route(parse_request_line(head), board, readiness)
        }
        Head::TooLarge => Response::text(431, "request header fields too large"),
        // The client went quiet or away: nothing worth answering.
        Head::Incomplete => return Ok(()),
    };
    write_response(&mut stream, &response)?;
    if response.status >= 400 {
        drain(&mut stream);
    }
    Ok(())
}

enum Head {
    /// Bytes up to and including the blank line that ends the headers.
    Complete(usize),
    TooLarge,
    /// Closed, or out of time, before the end of the headers.
    Incomplete,
}

/// Reads until the blank line that ends the headers, within the size limit and the deadline.
fn read_head(stream: &mut TcpStream, buffer: &mut [u8]) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut filled = 0;
    loop {
        if let Some(end) = find_head_end(buffer.get(..filled).unwrap_or_default()) {
            return Ok(Head::Complete(end));
        }
        let Some(free) = buffer.get_mut(filled..).filter(|free| !free.is_empty()) else {
            return Ok(Head::TooLarge);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Incomplete);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(free) {
            Ok(0) => return Ok(Head::Incomplete),
            Ok(read) => filled += read,
            Err(error) if is_timeout(&error) => return Ok(Head::Incomplete),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|start| start + 4)
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A request line's method and path (query string removed), or why it is not one.
#[derive(Debug, PartialEq, Eq)]
enum RequestLine<'a> {
    Valid { method: &'a str, path: &'a str },
    Malformed,
}

/// Parses `METHOD SP target SP HTTP/1.x` from the head of a request.
fn parse_request_line(head: &[u8]) -> RequestLine<'_> {
    let Ok(text) = std::str::from_utf8(head) else {
        return RequestLine::Malformed;
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return RequestLine::Malformed;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return RequestLine::Malformed;
    }
    let path = target.split('?').next().unwrap_or_default();
    RequestLine::Valid { method, path }
}

fn route(
    request: RequestLine<'_>,
    board: &SnapshotBoard,
    readiness: &dyn Fn() -> bool,
) -> Response {
    let RequestLine::Valid { method, path } = request else {
        return Response::text(400, "bad request");
    };
    let known = matches!(path, "/metrics" | "/health" | "/ready");
    if !known {
        return Response::text(404, "not found");
    }
    if method != "GET" {
        return Response::text(405, "method not allowed");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: CONTENT_TYPE_METRICS,
            body: {
                let mut body = render_prometheus(
                    &board.latest(),
                    board.listeners(),
                    board.uptime(),
                    env!("CARGO_PKG_VERSION"),
                );
                body.push_str(&crate::metrics::bridge::render(&board.bridges()));
                if let Some(cluster) = board.cluster() {
                    body.push_str(&crate::metrics::render_cluster(cluster));
                }
                body
            },
        },
        // A node cut off from NATS still serves its own clients, so it stays ready (a probe
        // failing on every node during a NATS outage would take all of them out of the load
        // balancer); the body says so for whoever looks.
        "/ready" if readiness() => match board.cluster() {
            Some(cluster) if !cluster.connected.load(std::sync::atomic::Ordering::Relaxed) => {
                Response::text(200, "ready (cluster link down: serving local clients only)")
            }
            _ => Response::text(200, "ready"),
        },
        "/ready" => Response::text(503, "not ready"),
        _ => Response::text(200, "ok"),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let allow = if response.status == 405 {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

/// Half-closes, then reads and discards what the client still sends, briefly and boundedly, so
/// that the close does not reset the connection before the client reads the answer.
fn drain(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;

    struct Answer {
        status: u16,
        headers: String,
        body: String,
    }

    fn request(addr: SocketAddr, raw: &[u8]) -> Answer {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Answer {
            status,
            headers: head.to_string(),
            body: body.to_string(),
        }
    }

    fn get(addr: SocketAddr, path: &str) -> Answer {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
    }

    fn start(ready: Arc<AtomicBool>) -> (Admin, Arc<SnapshotBoard>) {
        let board = Arc::new(SnapshotBoard::new(2));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let admin = Admin::start(loopback, Arc::clone(&board), move || {
            ready.load(Ordering::SeqCst)
        })
        .unwrap();
        (admin, board)
    }

    #[test]
    fn ready_says_when_the_cluster_link_is_down() {
        let ready = Arc::new(AtomicBool::new(true));
        let (admin, board) = start(ready);
        let stats = Arc::new(crate::cluster::ClusterStats::default());
        board.set_cluster(Arc::clone(&stats));
        let answer = get(admin.local_addr(), "/ready");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (
                200,
                "ready (cluster link down: serving local clients only)\n"
            )
        );
        stats.connected.store(true, Ordering::SeqCst);
        let answer = get(admin.local_addr(), "/ready");
        assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));
    }

    #[test]
    fn health_ready_and_metrics() {
        let ready = Arc::new(AtomicBool::new(false));
        let (admin, board) = start(Arc::clone(&ready));
        let addr = admin.local_addr();
        assert_ne!(addr.port(), 0);

        let health = get(addr, "/health");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(get(addr, "/ready").status, 503);
        ready.store(true, Ordering::SeqCst);
        let answer = get(addr, "/ready");
        assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));

        let mut metrics = ShardMetrics::new();
        metrics.counts.connections = 5;
        board.publish(1, metrics.snapshot());
        let scrape = get(addr, "/metrics?ignored=1");
        assert_eq!(scrape.status, 200);
        assert!(
            scrape
                .headers
                .contains("Content-Type: text/plain; version=0.0.4")
        );
        let length = format!("Content-Length: {}", scrape.body.len());
        assert!(scrape.headers.contains(&length));
        assert!(scrape.body.contains("ringmq_connections{shard=\"1\"} 5\n"));
        assert!(
            scrape
                .body
                .contains("ringmq_connections{shard=\"all\"} 5\n")
        );
        assert!(scrape.body.contains("ringmq_shards 1\n"));
        admin.shutdown();
    }

    #[test]
    fn errors() {
        let (admin, _board) = start(Arc::new(AtomicBool::new(true)));
        let addr = admin.local_addr();
        assert_eq!(get(addr, "/nope").status, 404);
        let post = request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(post.status, 405);
        assert!(post.headers.contains("Allow: GET"));
        assert_eq!(request(addr, b"GET\r\n\r\n").status, 400);
        assert_eq!(request(addr, b"GET /health SPDY/3\r\n\r\n").status, 400);
        assert_eq!(request(addr, b"GET health HTTP/1.1\r\n\r\n").status, 400);
        assert_eq!(request(addr, b"\xff\xfe /x HTTP/1.1\r\n\r\n").status, 400);
        let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        oversized.resize(REQUEST_BYTES_MAX + 1024, b'a');
        oversized.extend_from_slice(b"\r\n\r\n");
        assert_eq!(request(addr, &oversized).status, 431);
        // Still serving after all that.
        assert_eq!(get(addr, "/health").status, 200);
        admin.shutdown();
    }

    #[test]
    fn a_silent_client_is_dropped_and_the_next_one_served() {
        let (admin, _board) = start(Arc::new(AtomicBool::new(true)));
        let addr = admin.local_addr();
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        assert_eq!(get(addr, "/health").status, 200);
        assert!(started.elapsed() >= REQUEST_DEADLINE - Duration::from_millis(100));
        let mut rest = Vec::new();
        silent.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "no answer to an unfinished request");
        admin.shutdown();
    }

    #[test]
    fn shutdown_closes_the_port() {
        let (admin, _board) = start(Arc::new(AtomicBool::new(true)));
        let addr = admin.local_addr();
        drop(admin);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn request_lines() {
        let check = |head: &[u8], expected: RequestLine<'_>| {
            assert_eq!(
                parse_request_line(head),
                expected,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        };
        let valid = |method, path| RequestLine::Valid { method, path };
        check(b"GET /metrics HTTP/1.1\r\n\r\n", valid("GET", "/metrics"));
        check(
            b"GET /metrics?a=b HTTP/1.0\r\n\r\n",
            valid("GET", "/metrics"),
        );
        check(b"DELETE /ready HTTP/1.1\r\n\r\n", valid("DELETE", "/ready"));
        check(b"GET  /metrics HTTP/1.1\r\n\r\n", RequestLine::Malformed);
        check(b"get /metrics HTTP/1.1\r\n\r\n", RequestLine::Malformed);
        check(b"GET /metrics HTTP/2\r\n\r\n", RequestLine::Malformed);
        check(b"GET /metrics\r\n\r\n", RequestLine::Malformed);
        check(b"\r\n\r\n", RequestLine::Malformed);
        check(b"", RequestLine::Malformed);
    }
}
