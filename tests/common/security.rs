//! Plumbing of the security tests: a password file written by Debian's `mosquitto_passwd`, an
//! ACL, a directory of files per test, and logins.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use ringmq::config::Config;
use ringmq::protocol::{ReasonCode, Version};

use super::{RawClient, TestBroker, connect_packet, test_config};

/// Written by Debian's `mosquitto_passwd` 2.0.11: alice/secret (`$7$`), bob/hunter2 (`$6$`).
pub const PASSWORDS: &str = "\
alice:$7$101$cMNEI8pkYUPm23cF$ERnKFwScwJvSjsp2TcyasIF/DHhx3b2Nkfzu6wvaypi0wioNU9+hD9l1jqlybHX3dx/6ESw3EqS3NMuKt7ha8A==
bob:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==
";

pub const ACL: &str = "\
topic read public/#

user alice
topic alice/#
topic read shared/#
topic deny shared/secret
topic write will/alice

user bob
topic write shared/#
topic read $SYS/#
topic read will/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

/// A directory of its own for one test's files, removed at the end.
pub struct Files(pub PathBuf);

impl Files {
    pub fn new(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("ringmq-security-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn secured(files: &Files, acl: Option<&str>) -> Config {
    let mut config = test_config(4);
    config.auth.password_file = Some(files.write("passwd", PASSWORDS));
    config.auth.acl_file = acl.map(|text| files.write("acl", text));
    config
}

pub fn login(
    addr: std::net::SocketAddr,
    version: Version,
    client_id: &str,
    credentials: Option<(&str, &[u8])>,
) -> (RawClient, ReasonCode) {
    let mut client = RawClient::connect_tcp(addr, version);
    let mut connect = connect_packet(version, client_id, true, None);
    if let Some((username, password)) = credentials {
        connect.username = Some(ByteString::from(username));
        connect.password = Some(Bytes::copy_from_slice(password));
    }
    let reason = client.handshake(connect).reason;
    (client, reason)
}

#[track_caller]
pub fn user(
    broker: &TestBroker,
    shard: usize,
    version: Version,
    id: &str,
    name: &str,
) -> RawClient {
    let password: &[u8] = if name == "alice" {
        b"secret"
    } else {
        b"hunter2"
    };
    let (client, reason) = login(broker.shard(shard), version, id, Some((name, password)));
    assert_eq!(reason, ReasonCode::SUCCESS, "{name} logs in");
    client
}

/// Nothing arrives within a short wait.
#[track_caller]
pub fn assert_silent(client: &mut RawClient) {
    if let Some(packet) = client.try_recv(Duration::from_millis(300)) {
        panic!("unexpected {packet:?}");
    }
}

/// Polls `check` until it holds, for at most four seconds (a reload reaches shards on their tick,
/// metrics reach the admin board about once a second).
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
