//! The `upstream` backend (docs/reference.md): one WebSocket to `backend.upstream` per
//! accepted client, opened before the client's `101` so that a refusing or
//! silent upstream becomes `502`/`504` and never a half-open tunnel.
//!
//! The upstream learns who the client is from `X-Wsgate-*` headers (signed
//! with `backend.identity_secret` when set) and never sees the client's
//! credential: `Authorization`, the session cookie, the ticket/token query
//! parameters and the token subprotocol are removed, and any `X-Wsgate-*`
//! header the client sent is dropped so it cannot forge an identity. Nor
//! can it forge its address, scheme or host: the forwarding headers it
//! sent are dropped and the gateway's own written (forwarded.rs).
//!
//! The WebSocket is an HTTP/1.1 upgrade on its own TCP connection, or with
//! `backend.upstream_http2` an RFC 8441 stream on a shared HTTP/2
//! connection (multiplex.rs).

use super::forwarded::{self, Forwarding};
use super::{h2stream, multiplex};
use crate::config::{AuthConfig, BackendConfig};
use crate::error::{Error, Result};
use crate::head_io::{read_head_untimed, Head, Rewind};
use crate::http_head;
use crate::http_head::header_has_token;
use crate::metrics::Metrics;
use crate::readahead::{delegate_async_write, ReadAhead};
use crate::tasks::Tasks;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use wsgate_core::credential;
use wsgate_core::Reason;

/// Either a plain or a TLS stream to the upstream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open WebSocket to the upstream, with any bytes the upstream sent
/// right after its `101` kept in front, read as the client side is
/// (readahead.rs).
pub type UpstreamWs = WebSocketStream<ReadAhead<Tunnel<Pipe>>>;

/// The upstream byte stream: the upgraded HTTP/1.1 connection (plain or
/// TLS; any bytes read past the `101`'s head first) on the left, or a
/// stream of a shared HTTP/2 connection on the right.
pub type Pipe = Either<Rewind<Box<dyn Io>>, h2stream::Stream>;

/// The upstream byte stream, holding its place on a shared HTTP/2
/// connection (if it is a stream of one) for as long as it lives.
pub struct Tunnel<S> {
    inner: S,
    _slot: Option<multiplex::Slot>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tunnel<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

delegate_async_write!(Tunnel);

/// Identity headers sent upstream.
pub const SUB: &str = "x-wsgate-sub";
pub const SESSION: &str = "x-wsgate-session";
pub const CLAIMS: &str = "x-wsgate-claims";
pub const TIMESTAMP: &str = "x-wsgate-timestamp";
pub const SIGNATURE: &str = "x-wsgate-signature";
// The same as header names, built at compile time (from_static validates at
// run time when called there).
const SUB_H: HeaderName = HeaderName::from_static(SUB);
const SESSION_H: HeaderName = HeaderName::from_static(SESSION);
const CLAIMS_H: HeaderName = HeaderName::from_static(CLAIMS);
const TIMESTAMP_H: HeaderName = HeaderName::from_static(TIMESTAMP);
const SIGNATURE_H: HeaderName = HeaderName::from_static(SIGNATURE);

/// Headers that describe this hop or this handshake, never the client:
/// rebuilt for the upstream connection rather than copied.
const HOP_BY_HOP: [&str; 16] = [
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-authorization",
    "proxy-connection",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "authorization",
];

/// How long a looked-up upstream address list is used before the name is
/// looked up again: one lookup per 30 s, not one per client (each lookup is
/// a blocking `getaddrinfo` on tokio's pool, often a DNS query), while
/// still following a moved service. IP literals are never looked up.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// Addresses kept from one lookup.
const MAX_ADDRS: usize = 16;

/// The last successful lookup of the upstream's host name.
struct Resolved {
    addrs: Vec<std::net::SocketAddr>,
    at: std::time::Instant,
}

/// Where and how to reach the upstream; built once at startup.
pub struct Upstream {
    host: String,
    port: u16,
    /// The address, when `host` is an IP literal (never looked up).
    literal: Option<std::net::SocketAddr>,
    /// Held across a lookup, so that concurrent clients wait for one
    /// lookup instead of each starting their own.
    resolved: tokio::sync::Mutex<Option<Resolved>>,
    authority: String,
    path: String,
    /// `scheme://authority/path` of the upstream request when no query
    /// is forwarded.
    uri: Uri,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The shared HTTP/2 connections (`backend.upstream_http2`).
    h2: Option<multiplex::Pool>,
    identity_key: Option<aws_lc_rs::hmac::Key>,
    /// `backend.forward_client_headers`: forwarding headers passed through
    /// as the client wrote them.
    pass_through: Vec<HeaderName>,
    timeout: Duration,
    schema: Option<jsonschema::Validator>,
    /// Where the client's credential travels, to keep it from the upstream.
    auth: AuthConfig,
    /// The upstream socket is read as client sockets are: tungstenite's
    /// own buffer small, socket reads of `read_chunk` through ReadAhead.
    ws_config: WebSocketConfig,
    read_chunk: usize,
    metrics: Arc<Metrics>,
}

/// Who the client is, as forwarded upstream.
pub struct Identity<'a> {
    pub sub: &'a str,
    pub session: u64,
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

impl Upstream {
    /// Reads the backend configuration; errors are startup errors.
    pub fn load(
        cfg: &BackendConfig,
        auth: &AuthConfig,
        ws_config: WebSocketConfig,
        read_chunk: usize,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self> {
        let url = cfg
            .upstream
            .as_deref()
            .ok_or_else(|| Error::config("backend.upstream is required"))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::config_because("backend.upstream", e))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(Error::config("backend.upstream: must be ws:// or wss://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| Error::config("backend.upstream: no host"))?
            .as_str()
            .to_owned();
        let bracketed = uri
            .host()
            .ok_or_else(|| Error::config("backend.upstream: no host"))?;
        let host = bracketed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let tls = if secure {
            let roots = roots(cfg.upstream_ca_file.as_deref())?;
            let mut config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            if cfg.upstream_http2 {
                config.alpn_protocols = vec![b"h2".to_vec()];
            }
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                Error::config_because(
                    format!("backend.upstream: {host:?} is not a valid TLS name"),
                    e,
                )
            })?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let identity_key = cfg
            .identity_secret
            .as_ref()
            .map(|s| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.expose()));
        let schema = match &cfg.message_schema_file {
            None => None,
            Some(p) => {
                let text = std::fs::read(p).map_err(|e| {
                    Error::config_because(
                        format!("backend.message_schema_file: {}", p.display()),
                        e,
                    )
                })?;
                let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                    Error::config_because(
                        format!("backend.message_schema_file: {}", p.display()),
                        e,
                    )
                })?;
                // Built without remote resolvers: a `$ref` to a URL is an
                // error here, never a fetch.
                let v = jsonschema::validator_for(&json).map_err(|e| {
                    let context = format!(
                        "backend.message_schema_file: {}: not a valid JSON Schema",
                        p.display()
                    );
                    // The validator's error borrows the schema: its text.
                    Error::config_because(context, e.to_string())
                })?;
                Some(v)
            }
        };
        let scheme = scheme(cfg.upstream_http2, tls.is_some());
        let uri: Uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| Error::config_because("backend.upstream", e))?;
        Ok(Upstream {
            uri,
            literal: host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, port)),
            host,
            port,
            resolved: tokio::sync::Mutex::new(None),
            authority,
            path,
            tls,
            h2: cfg.upstream_http2.then(|| {
                multiplex::Pool::new(
                    cfg.upstream_http2_streams,
                    cfg.connect_timeout / 2,
                    metrics.upstream_http2_connections.clone(),
                    tasks.clone(),
                )
            }),
            identity_key,
            pass_through: cfg.forward_client_headers.clone(),
            timeout: cfg.connect_timeout,
            schema,
            auth: auth.clone(),
            ws_config,
            read_chunk,
            metrics,
        })
    }

    /// Whether a client text message may be forwarded (`backend.message_schema_file`).
    pub fn message_allowed(&self, text: &str) -> bool {
        match &self.schema {
            None => true,
            Some(v) => serde_json::from_str::<serde_json::Value>(text)
                .map(|j| v.is_valid(&j))
                .unwrap_or(false),
        }
    }

    /// Opens the upstream WebSocket for one client. Returns the socket and
    /// the application subprotocol the upstream chose, if any.
    pub async fn connect(
        &self,
        client: &HeaderMap,
        query: Option<&str>,
        fwd: &Forwarding,
        who: &Identity<'_>,
    ) -> Result<(UpstreamWs, Option<String>), Reason> {
        let auth = &self.auth;
        let req = self.request(auth, client, query, fwd, who, crate::clock::now_ms())?;
        let attempt = async {
            // Over HTTP/2: a connection the upstream is closing (GOAWAY,
            // e.g. a rolling restart) fails a request without an answer;
            // one retry keeps that from reaching clients as 502s.
            let mut retried = false;
            let (upgraded, protocol, slot) = match &self.h2 {
                // Our own HTTP upgrade, not tungstenite's client
                // handshake: tungstenite's turns its 4 KiB handshake buffer
                // into the socket's input buffer for good (4,055 B per
                // proxied client, BENCHMARKS.md); from_raw_socket honours
                // read_buffer_size.
                None => {
                    let (upgraded, protocol) = handshake(self.dial().await?, req).await?;
                    (Either::Left(upgraded), protocol, None)
                }
                Some(pool) => {
                    let mut req = Some(req);
                    loop {
                        let (mut sender, slot) = pool.acquire(|| self.dial()).await?;
                        // A second try is on another connection: the
                        // failed one takes no new streams.
                        let this = match req.take() {
                            Some(r) => r,
                            None => {
                                self.request(auth, client, query, fwd, who, crate::clock::now_ms())?
                            }
                        };
                        match multiplex::open(&mut sender, &slot, this).await {
                            Ok((stream, protocol)) => {
                                break (Either::Right(stream), protocol, Some(slot))
                            }
                            Err(multiplex::Refused::Unanswered(_)) if !retried => retried = true,
                            Err(
                                multiplex::Refused::Unanswered(r) | multiplex::Refused::Answered(r),
                            ) => return Err(r),
                        }
                    }
                }
            };
            let tunnel = Tunnel {
                inner: upgraded,
                _slot: slot,
            };
            // Frames followed from the first byte after the 101, so that
            // the session can recycle this socket after a large message.
            let ws = WebSocketStream::from_raw_socket(
                ReadAhead::new(tunnel, self.read_chunk).frames(),
                tokio_tungstenite::tungstenite::protocol::Role::Client,
                Some(self.ws_config),
            )
            .await;
            Ok((ws, protocol))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(event = "upstream_error", stage = "timeout", upstream = %self.authority);
                Err(Reason::UpstreamTimeout)
            }
        }
    }

    /// A TCP connection (TLS over it for `wss://`, `h2` negotiated by ALPN
    /// with `backend.upstream_http2`) to the first address that accepts.
    async fn dial(&self) -> Result<Box<dyn Io>, Reason> {
        let addrs = self.addrs().await?;
        let tcp = TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| fail("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| fail("tls", &e))?;
        // Without ALPN `h2` the server would read the HTTP/2 preface as a
        // broken HTTP/1.1 request.
        if self.h2.is_some() && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(fail("tls", &"the upstream did not negotiate h2 (ALPN)"));
        }
        Ok(Box::new(tls))
    }

    /// The upstream's addresses: the IP literal, or the host name's
    /// addresses as last looked up (at most [`RESOLVE_EVERY`] ago). A failed
    /// lookup keeps using the previous answer.
    async fn addrs(&self) -> Result<Vec<std::net::SocketAddr>, Reason> {
        if let Some(addr) = self.literal {
            return Ok(vec![addr]);
        }
        let mut cached = self.resolved.lock().await;
        if let Some(r) = cached.as_ref().filter(|r| r.at.elapsed() < RESOLVE_EVERY) {
            return Ok(r.addrs.clone());
        }
        let looked_up = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map(|a| a.take(MAX_ADDRS).collect::<Vec<_>>());
        match looked_up {
            Ok(addrs) if !addrs.is_empty() => {
                tracing::info!(
                    event = "upstream_resolved",
                    upstream = %self.authority,
                    addresses = addrs.len()
                );
                *cached = Some(Resolved {
                    addrs: addrs.clone(),
                    at: std::time::Instant::now(),
                });
                Ok(addrs)
            }
            failed => {
                let error = match failed {
                    Err(e) => e.to_string(),
                    Ok(_) => "no addresses".to_owned(),
                };
                match cached.as_mut() {
                    Some(r) => {
                        tracing::warn!(
                            event = "upstream_error",
                            stage = "resolve",
                            error,
                            action = "previous addresses kept"
                        );
                        // Try again in RESOLVE_EVERY, not on every client.
                        r.at = std::time::Instant::now();
                        Ok(r.addrs.clone())
                    }
                    None => Err(fail("resolve", &error)),
                }
            }
        }
    }

    /// The upstream handshake request: the client's headers minus its
    /// credential, this hop's headers and the forwarding headers it sent,
    /// plus the gateway's own forwarding headers and the identity. An HTTP/1.1
    /// `GET` with `Upgrade: websocket`, or over HTTP/2 an extended
    /// `CONNECT` with `:protocol websocket` (no key, no `Upgrade`, no
    /// `Connection`: RFC 8441 5).
    fn request(
        &self,
        auth: &AuthConfig,
        client: &HeaderMap,
        query: Option<&str>,
        fwd: &Forwarding,
        who: &Identity<'_>,
        now_ms: i64,
    ) -> Result<Request<()>, Reason> {
        // Absolute: HTTP/1.1 sends only the path (see `handshake`), HTTP/2
        // the parts as :scheme, :authority and :path. Without a forwarded
        // query it is the one parsed at startup.
        let h2 = self.h2.is_some();
        let uri = match forwarded_query(auth, query) {
            None => self.uri.clone(),
            Some(q) => {
                let sep = if self.path.contains('?') { '&' } else { '?' };
                let url = format!(
                    "{}://{}{}{sep}{q}",
                    scheme(h2, self.tls.is_some()),
                    self.authority,
                    self.path
                );
                url.parse::<Uri>().map_err(|e| fail("request", &e))?
            }
        };
        let method = if h2 {
            http::Method::CONNECT
        } else {
            http::Method::GET
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .map_err(|e| fail("request", &e))?;
        if h2 {
            req.extensions_mut()
                .insert(h2::ext::Protocol::from_static("websocket"));
        }
        let h = req.headers_mut();
        // Sized once: grown step by step, the map rehashed every entry
        // at each doubling (~0.6k instructions per upgrade). The client's
        // fields are at most MAX_HEADERS, ours fewer than 16.
        let _ = h.try_reserve(client.len() + 16);
        for (name, value) in client {
            // The allow-list holds only forwarding headers, which
            // `forwardable` refuses: it is consulted for those alone.
            if forwardable(name) || self.pass_through.contains(name) {
                h.append(name.clone(), value.clone());
            }
        }
        if let Some(mut c) = strip_cookie(client, &auth.cookie_name) {
            c.set_sensitive(true);
            h.insert(header::COOKIE, c);
        }
        let ip = HeaderValue::from_str(&fwd.client.to_string()).map_err(|e| fail("request", &e))?;
        h.insert(forwarded::X_FORWARDED_FOR, ip);
        h.insert(forwarded::X_FORWARDED_PROTO, fwd.proto());
        if let Some(host) = &fwd.host {
            h.insert(forwarded::X_FORWARDED_HOST, host.clone());
        }
        let protocols = app_protocols(client, &auth.subprotocol);
        if !protocols.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&protocols.join(", ")) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        if !h2 {
            let upgrade = [
                (header::HOST, self.authority.clone()),
                (header::CONNECTION, "Upgrade".into()),
                (header::UPGRADE, "websocket".into()),
                (header::SEC_WEBSOCKET_KEY, generate_key()),
            ];
            for (name, value) in upgrade {
                let v = HeaderValue::from_str(&value).map_err(|e| fail("request", &e))?;
                h.insert(name, v);
            }
        }
        for (name, value) in self.identity_headers(who, now_ms) {
            let mut v = HeaderValue::from_str(&value).map_err(|e| fail("request", &e))?;
            // Over HTTP/2, HPACK "never indexed" (RFC 7541 §7.1.3): claims
            // and signatures stay out of both ends' compression tables
            // (they are unique per client, so indexing them only churned
            // the tables) and no intermediary may index them either. The
            // timestamp is the exception: it is no secret and every client
            // of the same second shares it, so indexed it costs one byte
            // on the wire and no Huffman coding at either end.
            v.set_sensitive(name != TIMESTAMP);
            h.insert(name, v);
        }
        Ok(req)
    }

    /// `X-Wsgate-Sub` (base64url when not plain visible ASCII, see
    /// docs/backends.md), `X-Wsgate-Session`, `X-Wsgate-Claims`, and with a
    /// secret `X-Wsgate-Timestamp` + `X-Wsgate-Signature`.
    fn identity_headers(&self, who: &Identity<'_>, now_ms: i64) -> Vec<(HeaderName, String)> {
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(who.claims).unwrap_or_default());
        let sub = header_safe_sub(who.sub);
        let session = who.session.to_string();
        let mut out = vec![(SUB_H, sub), (SESSION_H, session), (CLAIMS_H, claims)];
        if let Some(key) = &self.identity_key {
            let ts = (now_ms / 1000).to_string();
            let sig = sign(key, &out[0].1, &out[1].1, &out[2].1, &ts);
            out.push((TIMESTAMP_H, ts));
            out.push((SIGNATURE_H, sig));
        }
        out
    }
}

/// What the upstream handshake needs from the client's request; kept
/// past `101` only for first-message auth, where the upstream is opened
/// after the client authenticates.
pub struct ClientRequest {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub forwarding: Forwarding,
}

/// Opens the upstream (when one is configured) for an authenticated
/// client, timing it.
pub async fn open(
    up: Option<&Upstream>,
    headers: &HeaderMap,
    query: Option<&str>,
    fwd: &Forwarding,
    verified: &wsgate_core::verify::Verified,
    id: u64,
) -> Result<(Box<UpstreamWs>, Option<String>), Reason> {
    let Some(up) = up else {
        return Err(Reason::UpstreamUnavailable);
    };
    let who = Identity {
        sub: &verified.sub,
        session: id,
        claims: &verified.claims,
    };
    let t0 = std::time::Instant::now();
    let r = up.connect(headers, query, fwd, &who).await;
    up.metrics
        .upstream_connect
        .observe(t0.elapsed().as_secs_f64());
    r.map(|(ws, p)| (Box::new(ws), p))
}

/// The upstream request's scheme: HTTP/1.1 upgrades are `ws(s)://`,
/// RFC 8441 streams carry `:scheme http(s)`.
fn scheme(h2: bool, tls: bool) -> &'static str {
    match (h2, tls) {
        (false, false) => "ws",
        (false, true) => "wss",
        (true, false) => "http",
        (true, true) => "https",
    }
}

/// `v1=<base64url HMAC-SHA256>` over the identity headers exactly as sent,
/// one per line, so an upstream can check them without re-encoding.
pub fn sign(
    key: &aws_lc_rs::hmac::Key,
    sub: &str,
    session: &str,
    claims: &str,
    ts: &str,
) -> String {
    // Fed piece by piece: the joined input was a formatted copy of the
    // claims per upgrade.
    let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
    ctx.update(b"v1");
    for part in [sub, session, claims, ts] {
        ctx.update(b"\n");
        ctx.update(part.as_bytes());
    }
    let tag = ctx.sign();
    let mut out = String::with_capacity(3 + 43);
    out.push_str("v1=");
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
    out
}

/// A `sub` is forwarded verbatim when it is visible ASCII; anything else
/// (spaces, UTF-8) as `b64:<base64url>` so the header stays unambiguous.
fn header_safe_sub(sub: &str) -> String {
    if !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_graphic()) && !sub.starts_with("b64:") {
        sub.to_owned()
    } else {
        format!("b64:{}", URL_SAFE_NO_PAD.encode(sub))
    }
}

/// Whether a client header is copied upstream as it is: not this hop's,
/// not the credential, not an identity or forwarding header.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(HOP_BY_HOP.contains(&n)
        || n == "cookie"
        || n.starts_with("x-wsgate-")
        || forwarded::has_underscore(n)
        || forwarded::in_family(n))
}

/// The client's application subprotocols: the sentinel and the token that
/// follows it are the credential and stay here.
fn app_protocols(client: &HeaderMap, sentinel: &str) -> Vec<String> {
    let Ok(offered) = credential::offered_protocols(client) else {
        return Vec::new();
    };
    credential::split_offered(&offered, sentinel)
        .application
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

/// The client's `Cookie` header(s) without the session cookie; `None`
/// when nothing is left.
fn strip_cookie(client: &HeaderMap, session_cookie: &str) -> Option<HeaderValue> {
    let mut kept: Vec<&str> = Vec::new();
    for v in client.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            let pair = pair.trim();
            let name = pair.split('=').next().unwrap_or("").trim();
            if !pair.is_empty() && name != session_cookie {
                kept.push(pair);
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The client's query string without the credential parameters (ticket,
/// query token, CSRF value); `None` when nothing is left.
fn forwarded_query(auth: &AuthConfig, query: Option<&str>) -> Option<String> {
    let q = query?;
    let secret = |k: &str| k == auth.ticket_param || k == auth.query_param || k == "csrf";
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| {
            let raw = kv.split('=').next().unwrap_or("");
            let name = form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            !kv.is_empty() && !secret(&name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Response heads above this (or with more than 100 fields) are refused.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// RFC 6455 4.1 from the client's side: writes `req` (its URI absolute, as
/// built by `request`; the head carries the path) in one write, reads the
/// answer's head (crate::http_head), and accepts only a `101` whose `Upgrade`,
/// `Connection` and `Sec-WebSocket-Accept` match and whose subprotocol, if
/// any, was offered. Bytes the upstream sent after its head are read
/// first. Not hyper's client: its connection task, dispatch channel and
/// upgrade hand-over cost a task and three channel hops per proxied client
/// for a single request whose connection is then ours (BENCHMARKS.md,
/// eighth issue-10 session). The caller's timeout bounds the wait.
async fn handshake(
    mut io: Box<dyn Io>,
    req: Request<()>,
) -> Result<(Rewind<Box<dyn Io>>, Option<String>), Reason> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| fail("request", &"no key"))?;
    let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    io.write_all(&request_head(&req))
        .await
        .map_err(|e| fail("handshake", &e))?;
    io.flush().await.map_err(|e| fail("handshake", &e))?;
    let buf = match read_head_untimed(&mut io, MAX_RESPONSE_HEAD).await {
        Head::Complete(buf) => buf,
        Head::TooLarge => return Err(fail("handshake", &"response head too large")),
        Head::Closed | Head::TimedOut => {
            return Err(fail("handshake", &"connection closed before a response"))
        }
    };
    let resp = http_head::parse_response(&buf).map_err(|e| fail("handshake", &e))?;
    if resp.status != 101 {
        return Err(fail("handshake", &format!("status {}", resp.status)));
    }
    let protocol = check_upgrade(&resp.headers, &key, offered.as_ref())?;
    // Usually nothing follows the head; copied out so that the head's
    // buffer is not kept for the socket's life.
    let rest = match buf.get(resp.len..) {
        Some(rest) if !rest.is_empty() => bytes::Bytes::copy_from_slice(rest),
        _ => bytes::Bytes::new(),
    };
    Ok((Rewind::new(rest, io), protocol))
}

/// The request's HTTP/1.1 head: `GET <path> HTTP/1.1` and its headers
/// (`Host` among them). Names and values are `http`'s types, which hold no
/// CR, LF or NUL, so nothing can be injected.
fn request_head(req: &Request<()>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(target.len() + fields + 32);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The `101`'s headers: `Upgrade: websocket`, `Connection: upgrade`, the
/// accept key for `key`, and a subprotocol only if it was `offered`.
/// Returns the chosen subprotocol.
fn check_upgrade(
    h: &HeaderMap,
    key: &HeaderValue,
    offered: Option<&HeaderValue>,
) -> Result<Option<String>, Reason> {
    let accept = derive_accept_key(key.as_bytes());
    if !header_has_token(h, header::UPGRADE, "websocket")
        || !header_has_token(h, header::CONNECTION, "upgrade")
        || h.get(header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(accept.as_bytes())
    {
        return Err(fail("handshake", &"not a WebSocket upgrade"));
    }
    chosen_protocol(h, offered)
}

/// The subprotocol of an upstream's answer, if any: refused unless the
/// gateway offered it.
pub(super) fn chosen_protocol(
    h: &HeaderMap,
    offered: Option<&HeaderValue>,
) -> Result<Option<String>, Reason> {
    let Some(chosen) = h.get(header::SEC_WEBSOCKET_PROTOCOL) else {
        return Ok(None);
    };
    let chosen = chosen.to_str().map_err(|e| fail("handshake", &e))?;
    let was_offered = offered
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.split(',').any(|p| p.trim() == chosen));
    if !was_offered {
        return Err(fail("handshake", &"subprotocol not offered"));
    }
    Ok(Some(chosen.to_owned()))
}

/// Logs an upstream failure (never the request, which may carry claims).
pub(super) fn fail(stage: &'static str, e: &dyn std::fmt::Display) -> Reason {
    tracing::warn!(event = "upstream_error", stage, error = %e);
    Reason::UpstreamUnavailable
}

/// The trust anchors for `wss://`: the configured CA file, else the
/// system's roots.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect())
                .map_err(|e| {
                    Error::config_because(format!("backend.upstream_ca_file: {}", p.display()), e)
                })?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    Error::config_because(format!("backend.upstream_ca_file: {}", p.display()), e)
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::config("backend.upstream: no trusted root certificates for wss:// (set backend.upstream_ca_file)"));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthConfig {
        crate::config::Config::dev(&[]).unwrap().auth
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_request_head_is_the_path_and_the_headers() {
        let mut req = Request::builder()
            .uri("ws://up.example:8080/app?x=1")
            .body(())
            .expect("request");
        let h = req.headers_mut();
        h.insert(header::HOST, HeaderValue::from_static("up.example:8080"));
        h.append("x-two", HeaderValue::from_static("a"));
        h.append("x-two", HeaderValue::from_static("b"));
        assert_eq!(
            String::from_utf8(request_head(&req)).expect("ascii"),
            "GET /app?x=1 HTTP/1.1\r\nhost: up.example:8080\r\nx-two: a\r\nx-two: b\r\n\r\n"
        );
    }

    #[test]
    fn query_loses_credentials_only() {
        let a = auth();
        let q = format!(
            "room=1&{}=abc&{}=def&csrf=x&b=2",
            a.ticket_param, a.query_param
        );
        assert_eq!(forwarded_query(&a, Some(&q)).as_deref(), Some("room=1&b=2"));
        assert_eq!(
            forwarded_query(&a, Some(&format!("{}=t", a.ticket_param))),
            None
        );
        // An encoded parameter name is still recognised.
        assert_eq!(
            forwarded_query(&a, Some("%74icket=t&x=1")).as_deref(),
            Some("x=1")
        );
    }

    #[test]
    fn session_cookie_is_removed_others_kept() {
        let h = headers(&[
            ("cookie", "a=1; session=SECRET; b=2"),
            ("cookie", "session=X"),
        ]);
        let v = strip_cookie(&h, "session").unwrap();
        assert_eq!(v.to_str().unwrap(), "a=1; b=2");
        assert!(strip_cookie(&headers(&[("cookie", "session=S")]), "session").is_none());
    }

    #[test]
    fn credential_and_hop_headers_are_not_forwarded() {
        for n in [
            "authorization",
            "cookie",
            "x-wsgate-sub",
            "x-wsgate-signature",
            "sec-websocket-protocol",
            "host",
            "connection",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "x-forwarded-client-cert",
            // Underscore spellings, which CGI-style servers read as the
            // dashed ones.
            "x_forwarded_for",
            "x-forwarded_for",
            "x_real_ip",
            "x_wsgate_sub",
            "x-wsgate_sub",
            "client_ip",
        ] {
            assert!(!forwardable(&HeaderName::from_static(n)), "{n}");
        }
        for n in ["origin", "user-agent", "x-request-id", "accept-language"] {
            assert!(forwardable(&HeaderName::from_static(n)), "{n}");
        }
    }

    #[test]
    fn token_subprotocol_stays_here() {
        let h = headers(&[("sec-websocket-protocol", "jwt, eyJ.a.b, chat.v2")]);
        assert_eq!(app_protocols(&h, "jwt"), vec!["chat.v2".to_owned()]);
    }

    #[test]
    fn odd_subjects_are_encoded() {
        assert_eq!(header_safe_sub("user-1"), "user-1");
        assert_eq!(
            header_safe_sub("a b"),
            format!("b64:{}", URL_SAFE_NO_PAD.encode("a b"))
        );
        assert!(header_safe_sub("b64:x").starts_with("b64:"));
        assert!(header_safe_sub("é").starts_with("b64:"));
    }

    /// The upstream of `cfg` with default socket settings.
    fn load(cfg: &crate::config::Config) -> Upstream {
        Upstream::load(
            &cfg.backend,
            &cfg.auth,
            WebSocketConfig::default(),
            4096,
            Default::default(),
            &Tasks::new(),
        )
        .unwrap()
    }

    #[test]
    fn identity_headers_and_the_cookie_are_never_indexed() {
        let mut cfg = crate::config::Config::dev(&[]).unwrap();
        cfg.backend.upstream = Some("ws://127.0.0.1:9/ws".into());
        cfg.backend.upstream_http2 = true;
        cfg.backend.identity_secret = Some(crate::config::Secret::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ));
        let up = load(&cfg);
        let claims = serde_json::Map::new();
        let who = Identity {
            sub: "u",
            session: 7,
            claims: &claims,
        };
        let client = headers(&[("cookie", "session=tok; theme=dark"), ("user-agent", "t")]);
        let fwd = Forwarding {
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            https: false,
            host: None,
        };
        let req = up
            .request(&cfg.auth, &client, None, &fwd, &who, 1_000)
            .unwrap();
        let h = req.headers();
        for name in [SUB, SESSION, CLAIMS, SIGNATURE, "cookie"] {
            assert!(h[name].is_sensitive(), "{name} may be indexed");
        }
        assert!(!h[TIMESTAMP].is_sensitive(), "shared by a second's clients");
        assert_eq!(h["cookie"], "theme=dark");
        assert!(!h["user-agent"].is_sensitive());
    }

    #[test]
    fn forwarding_headers_are_the_gateways_unless_allowed() {
        let mut cfg = crate::config::Config::dev(&[]).unwrap();
        cfg.backend.upstream = Some("ws://127.0.0.1:9/ws".into());
        cfg.backend.forward_client_headers = vec![HeaderName::from_static("x-real-ip")];
        let claims = serde_json::Map::new();
        let who = Identity {
            sub: "u",
            session: 7,
            claims: &claims,
        };
        let client = headers(&[
            ("x-real-ip", "6.6.6.6"),
            ("x-real-ip", "7.7.7.7"),
            ("true-client-ip", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-request-id", "r1"),
        ]);
        let fwd = Forwarding {
            client: std::net::IpAddr::from([203, 0, 113, 7]),
            https: false,
            host: Some(HeaderValue::from_static("gw.example:8080")),
        };
        for h2 in [false, true] {
            cfg.backend.upstream_http2 = h2;
            let up = load(&cfg);
            let req = up
                .request(&cfg.auth, &client, None, &fwd, &who, 1_000)
                .unwrap();
            let h = req.headers();
            let all = |n: &str| -> Vec<&str> {
                h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect()
            };
            assert_eq!(all("x-forwarded-for"), ["203.0.113.7"]);
            assert_eq!(all("x-forwarded-proto"), ["http"]);
            assert_eq!(all("x-forwarded-host"), ["gw.example:8080"]);
            assert_eq!(all("x-real-ip"), ["6.6.6.6", "7.7.7.7"], "allowed");
            for gone in ["true-client-ip", "x-forwarded-port", "forwarded"] {
                assert!(all(gone).is_empty(), "{gone}");
            }
            assert_eq!(all("x-request-id"), ["r1"]);
        }
    }

    #[test]
    fn signature_covers_every_identity_header() {
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            b"0123456789abcdef0123456789abcdef",
        );
        let s = sign(&key, "u", "1", "e30", "100");
        assert!(s.starts_with("v1="));
        assert_ne!(s, sign(&key, "v", "1", "e30", "100"));
        assert_ne!(s, sign(&key, "u", "2", "e30", "100"));
        assert_ne!(s, sign(&key, "u", "1", "e31", "100"));
        assert_ne!(s, sign(&key, "u", "1", "e30", "101"));
        // The documented input, joined (docs/backends.md).
        let tag = aws_lc_rs::hmac::sign(&key, b"v1\nu\n1\ne30\n100");
        assert_eq!(s, format!("v1={}", URL_SAFE_NO_PAD.encode(tag.as_ref())));
    }
}
