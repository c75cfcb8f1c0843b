//! Goal: the `ringmq` binary under a service manager. systemd's notify protocol is checked
//! against a real datagram socket given as NOTIFY_SOCKET: READY=1 once the listeners accept
//! (a client connects the moment it arrives), WATCHDOG=1 at the interval, none while a shard is
//! blocked (the debug-build hook TEST_STALL_SHARD), STOPPING=1 on SIGTERM; then a 5.0
//! client gets DISCONNECT 0x8B and the process exits 0 within `runtime.shutdown_timeout_ms`.
//! Also `log.format = "json"` and `--version`.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawClient, expect_disconnect};
use ringmq::protocol::{ReasonCode, Version};

/// WATCHDOG_USEC given to the broker: it looks at the shards every half of it.
const WATCHDOG: Duration = Duration::from_secs(2);
/// When the hook blocks shard 2 (after its start) and for how long.
const STALL_AFTER: Duration = Duration::from_millis(3000);
const STALL: Duration = Duration::from_millis(4000);

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("ringmq-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The broker process; killed if the test fails before it exits.
struct Broker(Child);

impl Broker {
    /// SIGTERM, as `systemctl stop` sends it.
    fn terminate(&self) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONFIG: &str = "\
[runtime]
shards = 4
pin = false
shutdown_timeout_ms = 3000
[listeners.tcp.default]
bind = \"127.0.0.1:0\"
[admin]
enabled = false
[sys]
enabled = false
";

/// Starts the binary the way systemd would for Type=notify with WatchdogSec: WATCHDOG_PID must
/// be the broker's own pid, so a shell sets it and execs. Logs and errors come on stdout.
fn start_broker(scratch: &Scratch, notify_socket: &std::path::Path) -> Broker {
    let config = scratch.0.join("ringmq.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let stall = format!("2:{}:{}", STALL_AFTER.as_millis(), STALL.as_millis());
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_ringmq"))
        .arg(&config)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env("TEST_STALL_SHARD", stall)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the ringmq binary");
    Broker(child)
}

/// The next datagram within `timeout`, as text.
fn next_message(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(error) => panic!("notify socket: {error}"),
    }
}

/// The first listener address in a `STATUS=... listening on ADDR` line.
fn listening_on(message: &str) -> SocketAddr {
    let status = message
        .lines()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 comes with STATUS=: {message:?}"));
    let addr = status
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("STATUS= names the listeners: {status:?}"));
    addr.trim().parse().unwrap()
}

#[test]
fn notify_protocol_watchdog_and_graceful_stop_of_the_binary() {
    let scratch = Scratch::new("notify");
    let socket_path = scratch.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let started = Instant::now();
    let mut broker = start_broker(&scratch, &socket_path);
    // Read the log as it comes, so a full pipe never blocks the broker.
    let mut output = broker.0.stdout.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = output.read_to_string(&mut log);
        log
    });

    // READY=1 first, and the listener accepts a client at once.
    let Some(ready) = next_message(&socket, Duration::from_secs(30)) else {
        let _ = broker.0.kill();
        panic!("no READY=1 within 30 s; log:\n{}", log.join().unwrap());
    };
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    let addr = listening_on(&ready);
    let (mut client, _) = RawClient::connect(addr, Version::V5, "stayer", true);

    // WATCHDOG=1 at about half the interval, except while shard 2 is blocked.
    let mut watchdogs = Vec::new();
    let watch_until = started + STALL_AFTER + STALL + WATCHDOG * 2;
    while Instant::now() < watch_until {
        let left = watch_until.saturating_duration_since(Instant::now());
        let Some(message) = next_message(&socket, left.max(Duration::from_millis(1))) else {
            continue;
        };
        assert!(
            !message.contains("STOPPING=1"),
            "no STOPPING=1 before SIGTERM: {message:?}"
        );
        if message.lines().any(|line| line == "WATCHDOG=1") {
            watchdogs.push(started.elapsed());
        }
    }
    let gaps: Vec<Duration> = watchdogs.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        watchdogs.first().is_some_and(|first| *first < STALL_AFTER),
        "WATCHDOG=1 while every shard turns: {watchdogs:?}"
    );
    assert!(
        watchdogs
            .last()
            .is_some_and(|last| *last > STALL_AFTER + STALL),
        "WATCHDOG=1 again once the shard turns: {watchdogs:?}"
    );
    // The blocked shard withholds every notification for most of its stall; apart from it,
    // they come every WATCHDOG / 2 (a loaded machine may skip one).
    assert!(
        longest >= STALL - WATCHDOG / 2,
        "no WATCHDOG=1 while shard 2 is blocked for {STALL:?}: {watchdogs:?}"
    );
    let regular = gaps.iter().filter(|gap| **gap <= WATCHDOG).count();
    assert!(
        regular + 2 >= gaps.len(),
        "WATCHDOG=1 every {:?} otherwise: {watchdogs:?}",
        WATCHDOG / 2
    );

    // SIGTERM: STOPPING=1, the 5.0 client gets 0x8B, exit 0 within the shutdown timeout.
    let stop = Instant::now();
    broker.terminate();
    let stopping = loop {
        let message = next_message(&socket, Duration::from_secs(10)).expect("STOPPING=1");
        if message.lines().any(|line| line == "STOPPING=1") {
            break message;
        }
    };
    assert!(stopping.contains("STOPPING=1"));
    expect_disconnect(
        &mut client,
        ReasonCode::SERVER_SHUTTING_DOWN,
        "0x8B then close",
    );
    let status = loop {
        if let Some(status) = broker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(10),
            "the broker did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().unwrap();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{log}");
    assert!(
        stop.elapsed() < Duration::from_millis(3000 + 1000),
        "exited {:?} after SIGTERM, over shutdown_timeout_ms; log:\n{log}",
        stop.elapsed()
    );
    assert!(
        log.contains("watchdog notification withheld"),
        "the stalled shard is logged; log:\n{log}"
    );
}

/// The binary started on `CONFIG` with JSON logs: its scratch directory (removed on drop), the
/// process, and its log lines as they come (the reader ends with the process's stdout).
fn json_logging_broker(name: &str) -> (Scratch, Broker, std::sync::mpsc::Receiver<String>) {
    let scratch = Scratch::new(name);
    let config = scratch.0.join("ringmq.toml");
    std::fs::write(&config, format!("{CONFIG}[log]\nformat = \"json\"\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = child.stdout.take().unwrap();
    let broker = Broker(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (scratch, broker, lines)
}

#[test]
fn json_logs_are_one_object_per_line_and_version_names_the_build() {
    let version = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert!(
        version.starts_with(&format!("ringmq {}", env!("CARGO_PKG_VERSION"))),
        "{version:?}"
    );

    let (_scratch, mut broker, lines) = json_logging_broker("json");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|line: &String| line.contains("\"message\":\"listening\""))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no \"listening\" line within 30 s: {seen:#?}"),
        }
    }
    broker.terminate();
    assert_eq!(broker.0.wait().unwrap().code(), Some(0));
    // The reader ends at the pipe's end, after the last line.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    for line in &seen {
        assert!(
            line.starts_with("{\"timestamp\":\"") && line.ends_with('}'),
            "not a JSON object: {line}"
        );
        for field in ["\"level\":\"", "\"message\":\"", "\"target\":\""] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
    }
    assert!(
        seen.iter()
            .any(|line| line.contains("\"message\":\"stopped\"")),
        "{seen:#?}"
    );
}

/// A SIGTERM that comes while the broker starts (its first log line is written once SIGTERM is
/// caught) stops it gracefully once it serves: status 0 after "stopped", not the signal's
/// default end of the process half-way through the start.
#[test]
fn a_sigterm_during_the_start_stops_the_broker_gracefully() {
    let (_scratch, mut broker, lines) = json_logging_broker("early-term");
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a first log line within 30 s");
    assert!(first.contains("configuration loaded"), "{first}");
    broker.terminate();
    // Start and graceful stop (shutdown_timeout_ms = 3000) take well under 30 s; the reader
    // ends at the pipe's end, when the process does.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.push(line);
    }
    assert_eq!(broker.0.wait().unwrap().code(), Some(0), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|line| line.contains("\"message\":\"stopped\"")),
        "{seen:#?}"
    );
}
