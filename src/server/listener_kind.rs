//! What each listener is (plain TCP, TLS or WebSocket) and what its connections need to know, by
//! the listener's index in the runtime's list: the TCP listeners, the TLS ones, the WebSocket
//! ones, then the secure WebSocket ones.

use std::rc::Rc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::{ListenerLabel, Transport};
use crate::ws::WsSettings;

/// What a listener is: plain TCP, TLS or WebSocket, with what each connection needs to know.
#[derive(Debug, Clone)]
pub(crate) enum ListenerKind {
    Plain(PlainListener),
    Tls(Rc<TlsListenerKind>),
    WebSocket(Rc<WsListenerKind>),
}

#[derive(Debug, Clone)]
pub(crate) struct PlainListener {
    /// `tcp.NAME`, the `listener` label of its connections.
    pub label: Rc<str>,
    pub nodelay: bool,
    /// `observability.kernel_timestamps`: ask the kernel to stamp what its connections send.
    pub kernel_timestamps: bool,
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

/// A WebSocket listener; a secure one has its TLS part too.
#[derive(Debug)]
pub(crate) struct WsListenerKind {
    pub name: String,
    pub nodelay: bool,
    pub settings: WsSettings,
    pub tls: Option<TlsListenerKind>,
}

impl ListenerKind {
    /// The `transport` label of this listener's connections in the metrics.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            ListenerKind::Plain(_) => Transport::Tcp,
            ListenerKind::Tls(_) => Transport::Tls,
            ListenerKind::WebSocket(ws) if ws.tls.is_some() => Transport::SecureWebSocket,
            ListenerKind::WebSocket(_) => Transport::WebSocket,
        }
    }

    /// The `listener` label of this listener's connections in the metrics: its table in the
    /// config, `tcp.NAME`, `tls.NAME`, `ws.NAME` or `wss.NAME`.
    pub(crate) fn label(&self) -> String {
        match self {
            ListenerKind::Plain(plain) => plain.label.to_string(),
            ListenerKind::Tls(tls) => format!("tls.{}", tls.name),
            ListenerKind::WebSocket(ws) => ws.name.clone(),
        }
    }

    /// Whether its connections' bytes are dated by the kernel's receive timestamp: plain TCP
    /// only (TLS and WebSocket read through layers that do not pass a stamp on).
    pub(crate) fn kernel_timestamps(&self) -> bool {
        matches!(self, ListenerKind::Plain(plain) if plain.kernel_timestamps)
    }

    pub(super) fn nodelay(&self) -> bool {
        match self {
            ListenerKind::Plain(plain) => plain.nodelay,
            ListenerKind::Tls(tls) => tls.nodelay,
            ListenerKind::WebSocket(ws) => ws.nodelay,
        }
    }
}

pub(crate) fn listener_kinds(config: &Config) -> Vec<ListenerKind> {
    let listeners = &config.listeners;
    let tcp = listeners.tcp.iter().map(|(name, l)| {
        ListenerKind::Plain(PlainListener {
            label: Rc::from(format!("tcp.{name}")),
            nodelay: l.nodelay,
            kernel_timestamps: config.observability.kernel_timestamps,
        })
    });
    let tls = listeners
        .tls
        .iter()
        .enumerate()
        .map(|(index, (name, l))| ListenerKind::Tls(Rc::new(tls_kind(name, index, l))));
    let ws = listeners.ws.iter().map(|(name, l)| {
        ListenerKind::WebSocket(Rc::new(WsListenerKind {
            name: format!("ws.{name}"),
            nodelay: l.nodelay,
            settings: WsSettings::of(l),
            tls: None,
        }))
    });
    // The rustls configs of secure WebSocket listeners follow the TLS listeners' (`Snapshot::tls`).
    let wss = listeners.wss.iter().enumerate().map(|(index, (name, l))| {
        let tls = tls_kind(name, listeners.tls.len() + index, &l.tls());
        ListenerKind::WebSocket(Rc::new(WsListenerKind {
            name: format!("wss.{name}"),
            nodelay: l.nodelay,
            settings: WsSettings::of(&l.websocket()),
            tls: Some(tls),
        }))
    });
    tcp.chain(tls).chain(ws).chain(wss).collect()
}

fn tls_kind(name: &str, index: usize, l: &crate::config::TlsListener) -> TlsListenerKind {
    TlsListenerKind {
        name: name.to_owned(),
        index,
        nodelay: l.nodelay,
        handshake_timeout: Duration::from_millis(u64::from(l.handshake_timeout_ms)),
        use_identity_as_username: l.use_identity_as_username,
    }
}

/// The metrics labels of every listener, by its index in the runtime's list (the order of
/// `listener_kinds`).
pub(crate) fn listener_labels(config: &Config) -> Vec<ListenerLabel> {
    listener_kinds(config)
        .iter()
        .map(|kind| ListenerLabel {
            name: kind.label(),
            transport: kind.transport(),
        })
        .collect()
}
