//! TLS for both listeners (rustls, TLS 1.2 and 1.3 with rustls's default,
//! modern cipher suites on aws-lc-rs). The certificate and key are reloaded
//! without a restart: on SIGHUP and when either file changes on disk. A pair
//! that fails to load or whose key does not match the certificate is
//! refused at startup with a clear error, and ignored (old pair kept, error
//! logged) on reload.

use crate::config::TlsConfig;
use crate::error::{Error, Kind, Result, Side};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// A certificate that can be swapped while connections are being accepted.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Loads a certificate chain and its private key, checking they belong together.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey> {
    let bad = |context: String, e: rustls::pki_types::pem::Error| {
        Error::because(Kind::Config, Side::Internal, context, e)
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file.display().to_string(), e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(cert_file.display().to_string(), e))?;
    if certs.is_empty() {
        let context = format!("{}: no certificate found", cert_file.display());
        return Err(Error::explain(Kind::Config, Side::Internal, context));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad(format!("{}: no usable private key", key_file.display()), e))?;
    let tls_error =
        |context: String, e: rustls::Error| Error::because(Kind::Tls, Side::Internal, context, e);
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| {
        tls_error(
            format!("{}: unsupported private key", key_file.display()),
            e,
        )
    })?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| {
        let context = format!(
            "{} does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        );
        tls_error(context, e)
    })?;
    Ok(ck)
}

impl ReloadingCert {
    pub fn load(cfg: &TlsConfig) -> Result<Arc<Self>> {
        let ck = load_pair(&cfg.cert_file, &cfg.key_file)?;
        Ok(Arc::new(ReloadingCert {
            stamps: Mutex::new((modified(&cfg.cert_file), modified(&cfg.key_file))),
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reloads now; on failure the current pair stays in use.
    pub fn reload(&self) -> Result<()> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let ck = load_pair(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(())
    }

    /// Whether either file changed since the last (re)load.
    pub fn changed(&self) -> bool {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// The acceptor for a listener using this certificate.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(cfg))
    }
}

/// A listener's TLS: the reloadable certificate and the acceptor built once
/// over it (the acceptor asks the certificate on every handshake).
pub struct Tls {
    pub cert: Arc<ReloadingCert>,
    pub acceptor: TlsAcceptor,
}

impl Tls {
    pub fn load(cfg: &TlsConfig) -> Result<Self> {
        let cert = ReloadingCert::load(cfg)?;
        let acceptor = cert.acceptor();
        Ok(Tls { cert, acceptor })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
