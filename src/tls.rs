//! TLS listeners: the rustls server config from [`TlsSettings`], the client identity of mTLS
//! connections, and first-bytes sniffing so a listener can close the wrong protocol quickly.
//!
//! Only the `ring` provider is used, passed explicitly; protocol versions, cipher suites, ALPN,
//! session tickets and the buffer limit are set here, not left to library defaults. The async
//! adapter over `shards::TcpStream` (accept, read and write halves for two tasks) is in
//! [`stream`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod prefixed;
mod sniff;
mod stream;

pub use sniff::{looks_like_mqtt_connect, looks_like_tls_client_hello};
pub use stream::{TlsConnection, TlsReadHalf, TlsWriteHalf, accept, accept_after};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, SupportedProtocolVersion};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// TLS 1.3 session tickets sent after each full handshake, for clients that reconnect (two, as
/// browsers and rustls clients use one per parallel connection attempt).
pub const TLS13_TICKETS: usize = 2;
/// Sessions remembered per listener for TLS 1.2 resumption by session id.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// The TLS part of one listener, as the config file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the server certificate first, then the intermediates.
    pub cert_chain_file: PathBuf,
    /// PEM: the private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    pub min_version: TlsVersion,
    /// Cipher suites as rustls spells them (`TLS13_AES_128_GCM_SHA256`); empty means all of
    /// rustls' suites for the enabled versions.
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered, in preference order (`["mqtt"]`). A client that offers ALPN must
    /// offer one of these; a client that offers none is accepted.
    pub alpn: Vec<String>,
    /// Refuse clients without a certificate signed by `ca_file` (mutual TLS).
    pub require_certificate: bool,
    /// PEM: the CAs that sign client certificates. Given without `require_certificate`, a
    /// certificate is optional but checked when sent.
    pub ca_file: Option<PathBuf>,
    /// The client certificate's subject CN (else its first DNS name) is the MQTT username; the
    /// CONNECT username and password are ignored.
    pub use_identity_as_username: bool,
}

impl TlsSettings {
    /// The settings of a configured TLS listener (its `min_version` was checked with the config).
    pub fn of(listener: &crate::config::TlsListener) -> TlsSettings {
        TlsSettings {
            cert_chain_file: listener.cert_chain_file.clone(),
            key_file: listener.key_file.clone(),
            min_version: TlsVersion::parse(&listener.min_version).unwrap_or_default(),
            cipher_suites: listener.cipher_suites.clone(),
            alpn: listener.alpn.clone(),
            require_certificate: listener.require_certificate,
            ca_file: listener.ca_file.clone(),
            use_identity_as_username: listener.use_identity_as_username,
        }
    }
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`, as written in the config file.
    pub fn parse(text: &str) -> Result<TlsVersion, TlsError> {
        match text {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => Err(TlsError::UnknownVersion {
                value: other.to_owned(),
            }),
        }
    }

    fn protocol_versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static FROM_1_2: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static FROM_1_3: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::V1_2 => &FROM_1_2,
            TlsVersion::V1_3 => &FROM_1_3,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: not valid PEM: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{path}: no certificate in it (expected `-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key in it (expected `-----BEGIN PRIVATE KEY-----` or similar)")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: unusable private key: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{key}: this key does not match the first certificate of {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: unusable CA certificate: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("min_version `{value}`: expected \"1.2\" or \"1.3\"")]
    UnknownVersion { value: String },
    #[error("cipher suite `{name}` is unknown; valid names: {valid}")]
    UnknownCipherSuite { name: String, valid: String },
    #[error("cipher suite `{name}` is for TLS 1.2, but min_version is 1.3")]
    SuiteBelowMinVersion { name: String },
    #[error(
        "cipher_suites has no TLS {version} suite, so no client could use that version; \
         add one or raise min_version"
    )]
    NoSuiteForVersion { version: &'static str },
    #[error("ALPN protocol `{protocol}` must be 1 to 255 bytes")]
    BadAlpn { protocol: String },
    #[error("require_certificate = true needs ca_file, the CAs that sign client certificates")]
    MissingCa,
    #[error(
        "use_identity_as_username = true needs require_certificate = true, or a client without \
         a certificate would have no username"
    )]
    IdentityWithoutCertificate,
    #[error("building the TLS config: {source}")]
    Config { source: rustls::Error },
    #[error("building the client certificate verifier: {source}")]
    ClientVerifier {
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS handshake failed: {source}")]
    Handshake { source: io::Error },
    #[error("TLS handshake not finished after {after:?}")]
    HandshakeTimeout { after: Duration },
}

/// The rustls server config of a listener; build once per listener (and again on reload).
pub fn build_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    if settings.use_identity_as_username && !settings.require_certificate {
        return Err(TlsError::IdentityWithoutCertificate);
    }
    let provider = Arc::new(provider(settings)?);
    let chain = load_certificates(&settings.cert_chain_file)?;
    let key = load_private_key(&settings.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(settings.min_version.protocol_versions())
        .map_err(|source| TlsError::Config { source })?;
    let builder = match &settings.ca_file {
        None if settings.require_certificate => return Err(TlsError::MissingCa),
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = load_roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if settings.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier { source })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: settings.cert_chain_file.clone(),
                key: settings.key_file.clone(),
            },
            source => TlsError::BadKey {
                path: settings.key_file.clone(),
                source,
            },
        })?;
    config.alpn_protocols = alpn_protocols(&settings.alpn)?;
    config.send_tls13_tickets = TLS13_TICKETS;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    // The client's preference picks the suite: a client without AES instructions prefers
    // ChaCha20, and every suite offered is one we accept.
    config.ignore_client_order = false;
    // No 0-RTT data: it can be replayed, and a replayed PUBLISH is a duplicate message.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The ring provider restricted to the configured cipher suites.
fn provider(settings: &TlsSettings) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let usable = |suite: &rustls::SupportedCipherSuite| {
        settings.min_version == TlsVersion::V1_2 || suite.version() == &rustls::version::TLS13
    };
    if settings.cipher_suites.is_empty() {
        provider.cipher_suites.retain(usable);
        return Ok(provider);
    }
    let mut chosen = Vec::with_capacity(settings.cipher_suites.len());
    for name in &settings.cipher_suites {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|suite| suite_name(suite) == name.as_str())
            .ok_or_else(|| TlsError::UnknownCipherSuite {
                name: name.clone(),
                valid: provider
                    .cipher_suites
                    .iter()
                    .map(suite_name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !usable(suite) {
            return Err(TlsError::SuiteBelowMinVersion { name: name.clone() });
        }
        chosen.push(*suite);
    }
    let has = |version| chosen.iter().any(|suite| suite.version() == version);
    if !has(&rustls::version::TLS13) {
        return Err(TlsError::NoSuiteForVersion { version: "1.3" });
    }
    if settings.min_version == TlsVersion::V1_2 && !has(&rustls::version::TLS12) {
        return Err(TlsError::NoSuiteForVersion { version: "1.2" });
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// The IANA name of a suite, as rustls spells it (`TLS13_AES_128_GCM_SHA256`).
pub fn suite_name(suite: &rustls::SupportedCipherSuite) -> &'static str {
    suite.suite().as_str().unwrap_or("unnamed")
}

fn alpn_protocols(names: &[String]) -> Result<Vec<Vec<u8>>, TlsError> {
    names
        .iter()
        .map(|name| match name.len() {
            1..=255 => Ok(name.as_bytes().to_vec()),
            _ => Err(TlsError::BadAlpn {
                protocol: name.clone(),
            }),
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |error| TlsError::Pem {
        path: path.to_owned(),
        what: error.to_string(),
    }
}

fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        error => pem_error(path)(error),
    })
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots.add(certificate).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The identity of the client's certificate: its subject CN, else its first DNS name. `None`
/// without a verified client certificate or if it has neither.
pub fn client_identity(connection: &ServerConnection) -> Option<String> {
    let certificate = connection.peer_certificates()?.first()?;
    identity_of(certificate)
}

fn identity_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|name| name.as_str().ok())
        .filter(|name| !name.is_empty());
    if let Some(name) = common_name {
        return Some(name.to_owned());
    }
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) if !dns.is_empty() => {
                Some((*dns).to_owned())
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests;

/// The rustls client config of a bridge to a remote broker: the remote's certificate verified
/// against `ca_file`; with `cert_key`, the bridge's own certificate for mutual TLS.
pub fn build_client_config(
    ca_file: &Path,
    cert_key: Option<(&Path, &Path)>,
    alpn: &[String],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TlsVersion::V1_2.protocol_versions())
        .map_err(|source| TlsError::Config { source })?
        .with_root_certificates(roots);
    let mut config = match cert_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certificates(cert)?;
            let private_key = load_private_key(key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|source| TlsError::BadKey {
                    path: key.to_path_buf(),
                    source,
                })?
        }
    };
    config.alpn_protocols = alpn_protocols(alpn)?;
    Ok(Arc::new(config))
}
