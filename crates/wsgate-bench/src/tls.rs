//! `wss://` for the load generator: a rustls client (the workspace's rustls,
//! aws-lc-rs) that trusts only the `--ca-file` it is given (a throwaway
//! certificate for a loopback target), offers X25519 then P-256 and ALPN
//! `http/1.1`, and either makes every handshake a full one or resumes
//! sessions from the tickets the server sent (`--tls-resume`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

/// The TLS flags of the modes that can target `wss://`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate(s) to trust for a wss:// target (e.g. the server's
    /// self-signed certificate). Required for wss://: no system roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Resume TLS sessions with the tickets the server sent (TLS 1.3), so
    /// that after the first handshakes most are resumed ones. Without it,
    /// every handshake is a full one.
    #[arg(long)]
    pub tls_resume: bool,
}

/// What a `wss://` target needs per connection: the connector (its config
/// holds the session cache) and the name the certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client for `host` (the URL's host: a DNS name or an IP address).
    pub fn new(host: &str, args: &TlsArgs) -> anyhow::Result<TlsClient> {
        let Some(ca_file) = &args.ca_file else {
            bail!("a wss:// target needs --ca-file (the certificate to trust)");
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("--ca-file {}", ca_file.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("--ca-file {}: no usable certificate", ca_file.display());
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // The classic groups only, X25519 first: what the figures compare
        // (HAProxy's `curves X25519:P-256`), not a post-quantum hybrid.
        provider.kx_groups = vec![
            rustls::crypto::aws_lc_rs::kx_group::X25519,
            rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        ];
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !args.tls_resume {
            config.resumption = Resumption::disabled();
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host:?} is not a TLS server name"))?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<Conn> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        Ok(Either::Right(Box::new(tls)))
    }
}

/// A connection to the target: plain TCP, or TLS over it.
pub type Conn = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Whether `conn`'s TLS handshake resumed a session (`None` without TLS).
pub fn resumed(conn: &Conn) -> Option<bool> {
    match conn {
        Either::Left(_) => None,
        Either::Right(s) => Some(s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed)),
    }
}
