//! TLS to the broker (`-S`): the rustls client config, built once from `--cacertfile`,
//! `--certfile`/`--keyfile` (mutual TLS) or `--insecure`, the handshake, and a read and a write
//! half over one rustls stream.
//!
//! Both halves share the stream through an `Rc<RefCell<..>>`, borrowed for one poll at a time and
//! never across an await. Unlike the broker's connections, the two halves of a bench client are
//! always polled by one task (`shard::serve` zips its reader and writer, the handshake replies are
//! read in line), so the task's waker serves both directions: a wake-up meant for one half also
//! polls the other, and no per-half waker bookkeeping is needed.

use anyhow::{Context, bail};
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// Plaintext rustls buffers per connection in each direction (rustls' own default, passed
/// explicitly): a publisher's default `--batch-bytes` write fits in one go.
const PLAINTEXT_BUFFER_BYTES: usize = 64 * 1024;

/// The TLS flags, as given.
#[derive(Debug, Clone, Default)]
pub struct TlsFlags {
    pub ssl: bool,
    pub cacertfile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub insecure: bool,
}

/// What every TLS connection of a run uses.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// The server name (SNI, and what the certificate must name) of each `-h` entry, in order.
    pub server_names: Vec<ServerName<'static>>,
}

impl Tls {
    /// `None` without `-S`; host names are the `-h` entries without their ports.
    pub fn from_flags(flags: &TlsFlags, host_names: &[String]) -> anyhow::Result<Option<Tls>> {
        if !flags.ssl {
            if let Some(flag) = tls_only_flag(flags) {
                bail!("{flag} without -S/--ssl: add -S to connect over TLS, or leave {flag} out");
            }
            return Ok(None);
        }
        let server_names = host_names
            .iter()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .with_context(|| format!("-h {name}: not a TLS server name (DNS name or IP)"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Tls {
            config: Arc::new(client_config(flags)?),
            server_names,
        }))
    }
}

fn tls_only_flag(flags: &TlsFlags) -> Option<&'static str> {
    [
        (flags.cacertfile.is_some(), "--cacertfile"),
        (flags.certfile.is_some(), "--certfile"),
        (flags.keyfile.is_some(), "--keyfile"),
        (flags.insecure, "--insecure"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

fn client_config(flags: &TlsFlags) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3 with the ring provider")?;
    let builder = match (&flags.cacertfile, flags.insecure) {
        (Some(_), true) => {
            bail!("--cacertfile and --insecure: give one (verify against the CA, or do not verify)")
        }
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates("--cacertfile", path)? {
                roots.add(certificate).with_context(|| {
                    format!(
                        "--cacertfile {}: not a usable CA certificate",
                        path.display()
                    )
                })?;
            }
            builder.with_root_certificates(roots)
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        (None, false) => bail!(
            "-S: give --cacertfile <PEM file of the CA that signed the broker's certificate>, or \
             --insecure to skip verifying it (emqtt-bench's default)"
        ),
    };
    let mut config = match (&flags.certfile, &flags.keyfile) {
        (None, None) => builder.with_no_client_auth(),
        (Some(certfile), Some(keyfile)) => {
            let chain = certificates("--certfile", certfile)?;
            let key = PrivateKeyDer::from_pem_file(keyfile)
                .with_context(|| format!("--keyfile {}: no PEM private key", keyfile.display()))?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!(
                    "--certfile {} and --keyfile {}: the key does not fit the certificate",
                    certfile.display(),
                    keyfile.display()
                )
            })?
        }
        (Some(_), None) => bail!("--certfile without --keyfile: give the client key too"),
        (None, Some(_)) => bail!("--keyfile without --certfile: give the client certificate too"),
    };
    // Every connection pays a full handshake, as a fleet of distinct devices would.
    config.resumption = Resumption::disabled();
    config.enable_sni = true;
    Ok(config)
}

fn certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("{flag} {}: cannot read PEM certificates", path.display()))?;
    if certificates.is_empty() {
        bail!("{flag} {}: no PEM certificate in it", path.display());
    }
    Ok(certificates)
}

/// `--insecure`: any certificate is accepted, but the handshake signatures are still checked (the
/// broker must hold the key of the certificate it sent).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS handshake over a connected socket (the caller bounds how long it may take), for a
/// read and a write half.
pub async fn connect(
    tls: &Tls,
    server_name: ServerName<'static>,
    addr: SocketAddr,
    stream: shards::TcpStream,
) -> anyhow::Result<(TlsReadHalf, TlsWriteHalf)> {
    let stream = handshake(tls, server_name, addr, stream).await?;
    let stream = Rc::new(RefCell::new(stream));
    Ok((
        TlsReadHalf {
            stream: stream.clone(),
        },
        TlsWriteHalf { stream },
    ))
}

/// The TLS handshake over a connected socket: the stream, whole (WebSocket over TLS splits it
/// itself).
pub async fn handshake(
    tls: &Tls,
    server_name: ServerName<'static>,
    addr: SocketAddr,
    stream: shards::TcpStream,
) -> anyhow::Result<Stream> {
    let connector = futures_rustls::TlsConnector::from(tls.config.clone());
    connector
        .connect_with(server_name, stream, |connection| {
            connection.set_buffer_limit(Some(PLAINTEXT_BUFFER_BYTES));
        })
        .await
        .map_err(explain)
        .with_context(|| format!("TLS handshake with {addr}"))
}

/// A refused certificate says which flag to look at.
fn explain(error: io::Error) -> anyhow::Error {
    let certificate = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
    let error = anyhow::Error::new(error);
    if certificate {
        error.context(
            "the broker's certificate is not signed by --cacertfile's CA or does not name the -h \
             host (--insecure skips the check)",
        )
    } else {
        error
    }
}

pub type Stream = TlsStream<shards::TcpStream>;

/// The receiving half of a TLS connection.
pub struct TlsReadHalf {
    stream: Rc<RefCell<Stream>>,
}

impl TlsReadHalf {
    /// Reads decrypted bytes, at least one; `Ok(0)` after the broker's close_notify.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf)).await
    }
}

/// The sending half of a TLS connection.
pub struct TlsWriteHalf {
    stream: Rc<RefCell<Stream>>,
}

impl TlsWriteHalf {
    /// Encrypts and sends all of `buf`, then flushes: when this returns, the bytes are with the
    /// kernel.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let written =
                poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(written..).unwrap_or_default();
        }
        poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use crate::plan::Plan;
    use clap::Parser;
    use rustls::pki_types::ServerName;

    fn plan(flags: &[&str]) -> anyhow::Result<Plan> {
        let mut args = vec![
            "ringmq-bench",
            "pubsub",
            "-h",
            "localhost:1883,127.0.0.1:1884",
        ];
        args.extend_from_slice(flags);
        Plan::from_command(&Cli::try_parse_from(args)?.command)
    }

    /// `check(flags, Ok(tls on?))` or `check(flags, Err(words the refusal contains))`.
    fn check(flags: &[&str], expected: Result<bool, &str>) {
        match (plan(flags), expected) {
            (Ok(plan), Ok(tls)) => assert_eq!(plan.tls.is_some(), tls, "{flags:?}"),
            (Err(error), Err(words)) => {
                let error = format!("{error:#}");
                assert!(error.contains(words), "{flags:?}: {error}");
            }
            (outcome, expected) => panic!("{flags:?}: {:?}, expected {expected:?}", outcome.err()),
        }
    }

    #[test]
    fn tls_flags_parse_and_refuse_what_cannot_work() {
        check(&[], Ok(false));
        check(&["-S", "--insecure"], Ok(true));
        check(&["--ssl", "--insecure"], Ok(true));
        check(&["-S"], Err("-S: give --cacertfile"));
        check(&["--cacertfile", "ca.pem"], Err("--cacertfile without -S"));
        check(&["--certfile", "c.pem"], Err("--certfile without -S"));
        check(&["--keyfile", "k.pem"], Err("--keyfile without -S"));
        check(&["--insecure"], Err("--insecure without -S"));
        check(
            &["-S", "--insecure", "--cacertfile", "ca.pem"],
            Err("--cacertfile and --insecure"),
        );
        check(
            &["-S", "--cacertfile", "/nonexistent/ca.pem"],
            Err("--cacertfile /nonexistent/ca.pem: cannot read"),
        );
        check(
            &["-S", "--insecure", "--certfile", "c.pem"],
            Err("--certfile without --keyfile"),
        );
        check(
            &["-S", "--insecure", "--keyfile", "k.pem"],
            Err("--keyfile without --certfile"),
        );
        check(
            &[
                "-S",
                "--insecure",
                "--certfile",
                "/nonexistent/c.pem",
                "--keyfile",
                "k.pem",
            ],
            Err("--certfile /nonexistent/c.pem: cannot read"),
        );
    }

    #[test]
    fn server_names_are_the_hosts_as_given() {
        let plan = plan(&["-S", "--insecure"]).unwrap();
        let tls = plan.tls.unwrap();
        assert_eq!(
            tls.server_names,
            [
                ServerName::try_from("localhost").unwrap(),
                ServerName::try_from("127.0.0.1").unwrap(),
            ]
        );
        assert!(matches!(tls.server_names[1], ServerName::IpAddress(_)));
    }
}
