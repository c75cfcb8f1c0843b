//! The Mosquitto ACL parser on arbitrary text: it must never panic, and the rules it accepts must
//! answer checks for any client and topic without panicking. The input is the file, then a line
//! `\x00client/user/topic` after a NUL byte.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_fuzz::auth::{Access, Acl, ClientIdentity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, query) = text.split_once('\0').unwrap_or((text, "c/u/a/b"));
    let Ok(acl) = Acl::parse(file, "fuzz.acl") else {
        return;
    };
    let mut parts = query.splitn(3, '/');
    let client_id = parts.next().unwrap_or("c");
    let username = parts.next().filter(|user| !user.is_empty());
    let topic = parts.next().unwrap_or("a/b");
    let client = ClientIdentity {
        client_id,
        username,
    };
    for access in [Access::Read, Access::Write, Access::Subscribe] {
        let _ = acl.check(&client, topic, access);
    }
    // An empty ACL denies everything (CVE-2018-12550).
    if file.trim().is_empty() {
        assert!(!acl.check(&client, topic, Access::Write));
    }
});
