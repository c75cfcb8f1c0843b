//! What each listener is (plain TCP or TLS) and what its connections need to know, by the
//! listener's index in the runtime's list: the TCP listeners, then the TLS ones.

use std::rc::Rc;
use std::time::Duration;

use crate::config::Config;

/// What a listener is: plain TCP or TLS, with what each connection needs to know.
#[derive(Debug, Clone)]
pub(crate) enum ListenerKind {
    Plain(PlainListener),
    Tls(Rc<TlsListenerKind>),
}

#[derive(Debug, Clone)]
pub(crate) struct PlainListener {
    pub nodelay: bool,
}

#[derive(Debug)]
pub(crate) struct TlsListenerKind {
    pub name: String,
    /// Index among the TLS listeners (into `Snapshot::tls`).
    pub index: usize,
    pub nodelay: bool,
    pub handshake_timeout: Duration,
    pub use_identity_as_username: bool,
}

impl ListenerKind {
    pub(super) fn nodelay(&self) -> bool {
        match self {
            ListenerKind::Plain(plain) => plain.nodelay,
            ListenerKind::Tls(tls) => tls.nodelay,
        }
    }
}

pub(crate) fn listener_kinds(config: &Config) -> Vec<ListenerKind> {
    let tcp = config
        .listeners
        .tcp
        .values()
        .map(|l| ListenerKind::Plain(PlainListener { nodelay: l.nodelay }));
    let tls = config
        .listeners
        .tls
        .iter()
        .enumerate()
        .map(|(index, (name, l))| {
            ListenerKind::Tls(Rc::new(TlsListenerKind {
                name: name.clone(),
                index,
                nodelay: l.nodelay,
                handshake_timeout: Duration::from_millis(u64::from(l.handshake_timeout_ms)),
                use_identity_as_username: l.use_identity_as_username,
            }))
        });
    tcp.chain(tls).collect()
}
