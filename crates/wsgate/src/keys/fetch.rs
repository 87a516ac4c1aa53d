//! One JWKS download: HTTP/1.1 by hyper over rustls, verified against the
//! system roots or a configured CA bundle.
//!
//! Only the configured URL is ever fetched: nothing a token says (`jku`,
//! `x5u`, `iss`) is followed. Redirects are followed only within the same
//! scheme, host and port (a few hops); plain http only to loopback.

use crate::error::{Error, Kind, Result, Side};
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest JWKS document accepted (real ones are a few KiB).
const MAX_BODY: usize = 512 * 1024;
const MAX_REDIRECTS: usize = 3;

/// A fetched document and its `Cache-Control` header.
pub struct Fetched {
    pub body: Bytes,
    pub cache_control: Option<String>,
}

/// Fetches JWK sets for one source.
pub struct Fetcher {
    tls: TlsConnector,
    timeout: Duration,
}

impl Fetcher {
    /// `ca_file`: trust only these CAs; else the system's roots.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Fetcher> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(p) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
                    .map_err(|e| Error::config_because(p.display().to_string(), e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| Error::config_because(p.display().to_string(), e))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| Error::config_because(p.display().to_string(), e))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // Unparseable system certificates are skipped, as browsers do.
                    let _ = roots.add(c);
                }
            }
        }
        if roots.is_empty() {
            return Err(Error::config(
                "no trusted CA certificates (system store empty; set ca_file)",
            ));
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            tls: TlsConnector::from(Arc::new(cfg)),
            timeout,
        })
    }

    /// GETs `url` within the timeout, following same-origin redirects only.
    pub async fn get(&self, url: &str) -> Result<Fetched> {
        tokio::time::timeout(self.timeout, self.get_inner(url))
            .await
            .map_err(|_| {
                Error::explain(
                    Kind::Timeout,
                    Side::Upstream,
                    format!(
                        "timed out after {}",
                        humantime::format_duration(self.timeout)
                    ),
                )
            })?
    }

    async fn get_inner(&self, url: &str) -> Result<Fetched> {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| Error::config_because("bad URL", e))?;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.once(&uri).await?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| answer(format!("{status} without a Location")))?;
                let next = resolve(&uri, loc)?;
                if origin(&next) != origin(&uri) {
                    return Err(answer(format!(
                        "redirect to another origin refused ({status} to {})",
                        display_origin(&next)
                    )));
                }
                uri = next;
                continue;
            }
            if status != StatusCode::OK {
                return Err(answer(format!("HTTP {status}")));
            }
            let cache_control = resp
                .headers()
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Error::because(Kind::Protocol, Side::Upstream, "reading the body", e))?
                .to_bytes();
            return Ok(Fetched {
                body,
                cache_control: (!cache_control.is_empty()).then_some(cache_control),
            });
        }
        Err(answer(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn once(&self, uri: &Uri) -> Result<http::Response<hyper::body::Incoming>> {
        let (https, host, port) = origin(uri).ok_or_else(|| Error::config("URL without a host"))?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !https && !is_loopback(&bare) {
            return Err(Error::config(
                "plain http is only allowed to loopback hosts",
            ));
        }
        let tcp = TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| {
                Error::because(
                    Kind::Connect,
                    Side::Upstream,
                    format!("connect {host}:{port}"),
                    e,
                )
            })?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name =
                ServerName::try_from(bare).map_err(|e| Error::config_because("server name", e))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| Error::because(Kind::Tls, Side::Upstream, "TLS", e))?;
            request(tls, uri).await
        } else {
            request(tcp, uri).await
        }
    }
}

async fn request<S>(io: S, uri: &Uri) -> Result<http::Response<hyper::body::Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::because(Kind::Protocol, Side::Upstream, "HTTP", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .header(
            header::USER_AGENT,
            concat!("wsgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::because(Kind::Protocol, Side::Upstream, "request", e))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| Error::because(Kind::Protocol, Side::Upstream, "HTTP", e))
}

/// (https?, host, port) of an absolute http(s) URI.
fn origin(uri: &Uri) -> Option<(bool, String, u16)> {
    let https = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((https, host, port))
}

fn display_origin(uri: &Uri) -> String {
    match origin(uri) {
        Some((https, host, port)) => {
            format!("{}://{host}:{port}", if https { "https" } else { "http" })
        }
        None => "a non-http URL".into(),
    }
}

/// The identity provider's answer could not be used (its side, not ours).
fn answer(context: impl Into<Cow<'static, str>>) -> Error {
    Error::explain(Kind::Protocol, Side::Upstream, context)
}

/// A Location against the current URI: absolute URLs and absolute paths.
fn resolve(base: &Uri, loc: &str) -> Result<Uri> {
    if loc.starts_with('/') && !loc.starts_with("//") {
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(loc.parse().map_err(|_| answer("bad redirect Location"))?);
        return Uri::from_parts(parts).map_err(|_| answer("bad redirect Location"));
    }
    let u: Uri = loc.parse().map_err(|_| answer("bad redirect Location"))?;
    if u.scheme().is_none() {
        return Err(answer("relative redirect Location refused"));
    }
    Ok(u)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_and_compare_origins() {
        let base: Uri = "https://idp.example/.well-known/jwks.json"
            .parse()
            .expect("uri");
        let same = resolve(&base, "/keys?v=2").expect("path");
        assert_eq!(same.to_string(), "https://idp.example/keys?v=2");
        assert_eq!(origin(&same), origin(&base));
        let other = resolve(&base, "https://evil.example/jwks").expect("abs");
        assert_ne!(origin(&other), origin(&base));
        let port = resolve(&base, "https://idp.example:8443/jwks").expect("abs");
        assert_ne!(origin(&port), origin(&base));
        let down = resolve(&base, "http://idp.example/jwks").expect("abs");
        assert_ne!(origin(&down), origin(&base));
        assert!(resolve(&base, "//evil.example/x").is_err());
        assert!(resolve(&base, "keys.json").is_err());
        assert_eq!(
            origin(&"https://IDP.example:443/x".parse().expect("uri")),
            origin(&base)
        );
    }
}
