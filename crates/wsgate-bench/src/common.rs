//! Pieces shared by every mode: target validation (loopback only), token
//! loading and rotation, the WebSocket handshake, stop signalling, error
//! classification and latency summaries.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::header::{HeaderValue, AUTHORIZATION, COOKIE, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use http::{StatusCode, Uri};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::tls::{Conn, TlsArgs, TlsClient};
use crate::tokens::{TokenArgs, TokenSource};

pub type Ws = WebSocketStream<Conn>;

/// Latencies are recorded in microseconds, 1 µs .. 60 s, 3 significant digits.
pub const HIST_MAX_US: u64 = 60_000_000;

/// How the token travels in the upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `Authorization: Bearer <token>`
    Bearer,
    /// `Sec-WebSocket-Protocol: jwt, <token>`
    Subprotocol,
    /// `Cookie: session=<token>`, with --origin (and `?csrf=` when the token
    /// has a `csrf` claim).
    Cookie,
    /// No credentials at all.
    None,
}

/// A validated benchmark target: a `ws://` (or, where the mode has TLS
/// flags, `wss://`) URL whose host resolves only to loopback addresses.
#[derive(Clone)]
pub struct Target {
    pub uri: Uri,
    pub addr: SocketAddr,
    /// Set for `wss://`.
    pub tls: Option<TlsClient>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl Target {
    /// Parses and validates `url`. Refuses anything that is not `ws://` or
    /// whose host resolves to any address outside 127.0.0.0/8 and ::1.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        Target::parse_with(url, None)
    }

    /// [`Target::parse`], and `wss://` too when the mode has TLS flags.
    pub fn parse_with(url: &str, tls: Option<&TlsArgs>) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        let secure = match (uri.scheme_str(), tls) {
            (Some("ws"), _) => false,
            (Some("wss"), Some(_)) => true,
            (Some("wss"), None) => {
                bail!("{url}: this mode speaks ws:// only (wss://: upgrade, echo and idle)")
            }
            (Some(other), _) => bail!("{url}: unsupported scheme {other:?}, expected ws://"),
            (None, _) => bail!("{url}: missing scheme, expected ws://HOST:PORT/PATH"),
        };
        let host = uri.host().with_context(|| format!("{url}: missing host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let addr = resolve_loopback(url, host, port)?;
        let tls = match tls {
            Some(args) if secure => Some(TlsClient::new(host, args)?),
            _ => None,
        };
        Ok(Target { uri, addr, tls })
    }
}

/// Resolves `host:port` (from `url`, for messages) and refuses it unless
/// every address is loopback (127.0.0.0/8, ::1). Prefers IPv4.
pub fn resolve_loopback(url: &str, host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve host {host:?}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{url}: host {host:?} resolved to no address");
    }
    let foreign: Vec<String> = addrs
        .iter()
        .filter(|a| !is_loopback(a.ip()))
        .map(|a| a.ip().to_string())
        .collect();
    if !foreign.is_empty() {
        bail!(
            "refusing to target {url}: host {host:?} resolves to non-loopback address(es) {}; \
             wsgate-bench only sends load to 127.0.0.0/8 or ::1",
            foreign.join(", ")
        );
    }
    // Prefer IPv4 (servers commonly bind 127.0.0.1 only; "localhost" may list ::1 first).
    Ok(addrs
        .iter()
        .copied()
        .find(SocketAddr::is_ipv4)
        .unwrap_or(addrs[0]))
}

/// A validated plain-HTTP target (an admin listener): `http://HOST:PORT`
/// whose host resolves only to loopback addresses.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    /// `host:port`, for the Host header.
    pub authority: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> anyhow::Result<HttpTarget> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("{url}: unsupported scheme {other:?}, expected http://"),
            None => bail!("{url}: missing scheme, expected http://HOST:PORT"),
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            bail!("{url}: give the base URL only (http://HOST:PORT), without a path");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url}: missing host"))?
            .as_str()
            .to_string();
        if authority.contains('@') {
            bail!("{url}: credentials in the URL are not supported");
        }
        let host = uri.host().with_context(|| format!("{url}: missing host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = resolve_loopback(url, host, port)?;
        Ok(HttpTarget { addr, authority })
    }
}

/// Reads a token file: one token per line, blank lines and `#` comments
/// skipped. Returns `(line number, token)` pairs; fails if there are none.
pub fn read_tokens(path: &Path) -> anyhow::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let tokens: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, t)| !t.is_empty() && !t.starts_with('#'))
        .map(|(i, t)| (i, t.to_string()))
        .collect();
    if tokens.is_empty() {
        bail!("token file {} contains no token", path.display());
    }
    Ok(tokens)
}

/// Credentials and extra headers added to every upgrade request, with each
/// attempt's token from a [`TokenSource`].
pub struct Auth {
    transport: Transport,
    source: TokenSource,
    origin: Option<HeaderValue>,
    cookie_name: String,
}

impl Auth {
    /// Tokens from `token_file`, rotated (no minting).
    pub fn load(
        transport: Transport,
        token_file: Option<&Path>,
        origin: Option<&str>,
    ) -> anyhow::Result<Auth> {
        let tokens = TokenArgs {
            token_file: token_file.map(Path::to_path_buf),
            ..TokenArgs::default()
        };
        Auth::new(transport, &tokens, origin)
    }

    /// Minted tokens, a unique pool or a rotated file, as the flags say.
    pub fn new(
        transport: Transport,
        tokens: &TokenArgs,
        origin: Option<&str>,
    ) -> anyhow::Result<Auth> {
        let source = if transport == Transport::None {
            TokenSource::None
        } else {
            let s = TokenSource::from_args(tokens)?;
            if !s.has_tokens() {
                bail!("--token-file or --mint-alg is required unless --transport none");
            }
            s
        };
        if transport == Transport::Cookie && origin.is_none() {
            bail!(
                "--transport cookie needs --origin (the gateway checks it against its allow-list)"
            );
        }
        let origin = origin
            .map(|o| HeaderValue::from_str(o).context("--origin is not a valid header value"))
            .transpose()?;
        Ok(Auth {
            transport,
            source,
            origin,
            cookie_name: "session".into(),
        })
    }

    /// Distinct tokens, for the reports (0: minted per attempt, or none).
    pub fn token_count(&self) -> usize {
        self.source.count()
    }

    /// For the logs: where the tokens come from.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The first token of the file, if tokens come from one.
    pub fn first_token(&self) -> Option<&str> {
        self.source.first()
    }

    /// Whether a unique pool has run out (the run is over).
    pub fn exhausted(&self) -> bool {
        self.source.exhausted()
    }

    /// A fresh upgrade request (new Sec-WebSocket-Key) with the next token;
    /// `None` once a unique pool is used up.
    pub fn request(&self, uri: &Uri) -> Result<Option<Request>, Failure> {
        let minted = match self.source.next()? {
            Some(m) => Some(m),
            None if self.source.has_tokens() => return Ok(None),
            None => None,
        };
        let mut uri = uri.clone();
        if let (Transport::Cookie, Some(csrf)) = (
            self.transport,
            minted.as_ref().and_then(|m| m.csrf.as_deref()),
        ) {
            // docs/tickets.md: a cookie upgrade under `cookie_csrf` names the claim in the query.
            let pq = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let sep = if pq.contains('?') { '&' } else { '?' };
            let mut parts = uri.into_parts();
            parts.path_and_query = Some(
                format!("{pq}{sep}csrf={csrf}")
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| Failure::new("request", e.to_string()))?,
            );
            uri = Uri::from_parts(parts).map_err(|e| Failure::new("request", e.to_string()))?;
        }
        let mut req = uri
            .into_client_request()
            .map_err(|e| Failure::from_ws("request", &e))?;
        let headers = req.headers_mut();
        if let Some(m) = minted {
            let (name, value) = match self.transport {
                Transport::Bearer => (AUTHORIZATION, format!("Bearer {}", m.token)),
                Transport::Subprotocol => (SEC_WEBSOCKET_PROTOCOL, format!("jwt, {}", m.token)),
                Transport::Cookie => (COOKIE, format!("{}={}", self.cookie_name, m.token)),
                Transport::None => {
                    return Err(Failure::new("request", "a token without a transport"))
                }
            };
            let value =
                HeaderValue::from_str(&value).map_err(|e| Failure::new("token", e.to_string()))?;
            headers.insert(name, value);
        }
        if let Some(origin) = &self.origin {
            headers.insert(ORIGIN, origin.clone());
        }
        Ok(Some(req))
    }
}

/// A failed attempt: a short category used for counting, and one detail
/// message kept as an example.
#[derive(Debug)]
pub struct Failure {
    pub category: String,
    pub detail: String,
}

impl Failure {
    pub fn new(category: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            category: category.into(),
            detail: detail.into(),
        }
    }

    /// The same failure with `prefix: ` in front of its category and detail
    /// (e.g. `redeem: connect: ConnectionRefused`).
    pub fn prefixed(self, prefix: &str) -> Failure {
        Failure {
            category: format!("{prefix}: {}", self.category),
            detail: format!("{prefix}: {}", self.detail),
        }
    }

    pub fn timeout(phase: &str) -> Failure {
        Failure::new(format!("{phase}: timeout"), format!("{phase} timed out"))
    }

    pub fn from_io(phase: &str, e: &std::io::Error) -> Failure {
        Failure::new(format!("{phase}: {:?}", e.kind()), format!("{phase}: {e}"))
    }

    pub fn from_ws(phase: &str, e: &WsError) -> Failure {
        let kind = match e {
            WsError::Io(io) => return Failure::from_io(phase, io),
            WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
            WsError::Protocol(p) => format!("protocol: {p}"),
            WsError::Capacity(_) => "capacity".to_string(),
            WsError::Http(resp) => format!("http {}", resp.status().as_u16()),
            WsError::HttpFormat(_) => "http format".to_string(),
            WsError::Url(_) => "url".to_string(),
            WsError::Utf8(_) => "utf8".to_string(),
            WsError::WriteBufferFull(_) => "write buffer full".to_string(),
            WsError::AttackAttempt => "attack attempt".to_string(),
            _ => "other".to_string(),
        };
        Failure::new(format!("{phase}: {kind}"), format!("{phase}: {e}"))
    }
}

/// Counts of failures by category, with one example message per category.
#[derive(Default, Debug)]
pub struct ErrorTally {
    pub counts: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, String>,
}

impl ErrorTally {
    pub fn add(&mut self, f: Failure) {
        *self.counts.entry(f.category.clone()).or_insert(0) += 1;
        self.examples.entry(f.category).or_insert(f.detail);
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Outcome of one upgrade attempt that got an HTTP response.
pub enum Handshake {
    Accepted(Box<Ws>),
    Rejected(StatusCode),
}

/// TCP connect (+ TLS for `wss://`) + HTTP upgrade. Returns
/// `Rejected(status)` for any non-101 response; everything else that goes
/// wrong is a `Failure`.
pub async fn handshake(
    target: &Target,
    req: Request,
    config: WebSocketConfig,
) -> Result<Handshake, Failure> {
    handshake_from(target, None, req, config).await
}

/// Like [`handshake`], from a chosen local (loopback) source address.
pub async fn handshake_from(
    target: &Target,
    source: Option<IpAddr>,
    req: Request,
    config: WebSocketConfig,
) -> Result<Handshake, Failure> {
    let addr = target.addr;
    let tcp = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(|e| Failure::from_io("socket", &e))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| Failure::from_io("bind", &e))?;
            socket.connect(addr).await
        }
    }
    .map_err(|e| Failure::from_io("connect", &e))?;
    // Latency-sensitive small writes: don't let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let conn = match &target.tls {
        None => Conn::Left(tcp),
        Some(tls) => tls
            .connect(tcp)
            .await
            .map_err(|e| Failure::from_io("tls", &e))?,
    };
    match client_async_with_config(req, conn, Some(config)).await {
        Ok((ws, _response)) => Ok(Handshake::Accepted(Box::new(ws))),
        Err(WsError::Http(response)) => Ok(Handshake::Rejected(response.status())),
        Err(e) => Err(Failure::from_ws("handshake", &e)),
    }
}

/// Why a socket could not be opened: the server answered with a non-101
/// status, or the attempt failed (connect error, timeout, protocol error).
pub enum OpenError {
    Rejected(StatusCode),
    Failed(Failure),
}

/// Opens one authenticated socket within `limit`.
pub async fn open_ws(
    target: &Target,
    auth: &Auth,
    config: WebSocketConfig,
    limit: Duration,
) -> Result<Box<Ws>, OpenError> {
    open_ws_from(target, None, auth, config, limit).await
}

/// Like [`open_ws`], from a chosen local (loopback) source address.
pub async fn open_ws_from(
    target: &Target,
    source: Option<IpAddr>,
    auth: &Auth,
    config: WebSocketConfig,
    limit: Duration,
) -> Result<Box<Ws>, OpenError> {
    let req = auth
        .request(&target.uri)
        .map_err(OpenError::Failed)?
        .ok_or_else(|| {
            OpenError::Failed(Failure::new(
                "tokens exhausted",
                "the --unique token pool is used up",
            ))
        })?;
    match tokio::time::timeout(limit, handshake_from(target, source, req, config)).await {
        Err(_) => Err(OpenError::Failed(Failure::timeout("handshake"))),
        Ok(Err(f)) => Err(OpenError::Failed(f)),
        Ok(Ok(Handshake::Rejected(status))) => Err(OpenError::Rejected(status)),
        Ok(Ok(Handshake::Accepted(ws))) => Ok(ws),
    }
}

/// Tally of failed socket opens (echo and idle modes).
#[derive(Default)]
pub struct OpenFailures {
    pub rejected: BTreeMap<u16, u64>,
    pub errors: ErrorTally,
}

impl OpenFailures {
    pub fn add(&mut self, e: OpenError) {
        match e {
            OpenError::Rejected(s) => *self.rejected.entry(s.as_u16()).or_insert(0) += 1,
            OpenError::Failed(f) => self.errors.add(f),
        }
    }

    pub fn total(&self) -> u64 {
        self.rejected.values().sum::<u64>() + self.errors.total()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.rejected.is_empty() {
            parts.push(format!("rejected: {}", fmt_counts(&self.rejected)));
        }
        if !self.errors.counts.is_empty() {
            parts.push(format!("errors: {}", fmt_counts(&self.errors.counts)));
        }
        parts.join("; ")
    }
}

/// Sends a close frame and reads until the server's close and EOF.
pub async fn close_ws(ws: &mut Ws) -> Result<(), Failure> {
    match ws.close(None).await {
        Ok(()) | Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {}
        Err(e) => return Err(Failure::from_ws("close", &e)),
    }
    loop {
        match ws.next().await {
            None | Some(Err(WsError::ConnectionClosed)) | Some(Err(WsError::AlreadyClosed)) => {
                return Ok(())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Failure::from_ws("close", &e)),
        }
    }
}

/// Client-side WebSocket settings. The tungstenite default eagerly allocates a
/// 128 KiB read buffer per socket; a load generator holding thousands of
/// sockets wants much less.
pub fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
}

/// A stop signal fired by a deadline or by Ctrl-C.
#[derive(Clone)]
pub struct Stop {
    tx: Rc<watch::Sender<bool>>,
}

impl Stop {
    pub fn new() -> Stop {
        let (tx, _rx) = watch::channel(false);
        Stop { tx: Rc::new(tx) }
    }

    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// First Ctrl-C fires the stop signal (orderly shutdown and report);
    /// a second one exits immediately.
    pub fn on_ctrl_c(&self) {
        let stop = self.clone();
        tokio::task::spawn_local(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping (press Ctrl-C again to abort)");
                stop.fire();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
}

/// Waits until the receiver observes `true`.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = rx.wait_for(|v| *v).await;
}

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).context("cannot create histogram")
}

pub fn record(hist: &RefCell<Histogram<u64>>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    hist.borrow_mut().saturating_record(us);
}

#[derive(Serialize, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    pub fn line(&self) -> String {
        if self.count == 0 {
            return "(no samples)".to_string();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us),
            self.count
        )
    }
}

pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.3} s", us as f64 / 1e6)
    }
}

/// `{"401": 12, "403": 3}` style map.
pub fn status_map(m: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `"401: 12, 403: 3"` for the human table.
pub fn fmt_counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints a labelled line of the human-readable report.
/// Upper bound of a run bounded only by `--count`.
pub const COUNT_RUN_CAP: Duration = Duration::from_secs(600);

/// How long a loop mode runs: `--duration`, else up to [`COUNT_RUN_CAP`]
/// when only `--count` bounds it, else 10 s; checks the counts first.
pub fn run_length(
    concurrency: usize,
    count: Option<u64>,
    duration: Option<Duration>,
) -> anyhow::Result<Duration> {
    if concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if count == Some(0) {
        anyhow::bail!("--count must be at least 1");
    }
    Ok(match (duration, count) {
        (Some(d), _) => d,
        (None, Some(_)) => COUNT_RUN_CAP,
        (None, None) => Duration::from_secs(10),
    })
}

/// The "errors" rows of a human report: the total by category, then one
/// example per category.
pub fn error_rows(total: u64, counts: &BTreeMap<String, u64>, examples: &BTreeMap<String, String>) {
    if total == 0 {
        row("errors", 0);
        return;
    }
    row("errors", format!("{total}  ({})", fmt_counts(counts)));
    for (cat, ex) in examples {
        row("", format!("e.g. [{cat}] {ex}"));
    }
}

pub fn row(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<22} {value}");
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Parses `--sources`: loopback IPv4 ranges `A-B`, single addresses, commas.
pub fn parse_sources(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: Ipv4Addr = a
            .parse()
            .with_context(|| format!("--sources: {a:?} is not an IPv4 address"))?;
        let b: Ipv4Addr = b
            .parse()
            .with_context(|| format!("--sources: {b:?} is not an IPv4 address"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if a > b {
            bail!("--sources: range {part:?} is reversed");
        }
        for ip in a..=b {
            let ip = Ipv4Addr::from(ip);
            if !ip.is_loopback() {
                bail!("--sources: {ip} is not a loopback address (127.0.0.0/8 only)");
            }
            out.push(IpAddr::V4(ip));
            if out.len() > 1_000_000 {
                bail!("--sources: too many addresses");
            }
        }
    }
    if out.is_empty() {
        bail!("--sources names no address");
    }
    Ok(out)
}

/// A JWT's payload, decoded without verifying anything (the tokens are
/// ours; the gateway verifies them).
pub fn jwt_payload(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_targets() {
        for url in [
            "ws://127.0.0.1:9001/ws",
            "ws://127.1.2.3:80/",
            "ws://[::1]:9001/ws",
            "ws://localhost:9001/ws",
        ] {
            let t = Target::parse(url);
            assert!(t.is_ok(), "{url}: {t:?}");
        }
    }

    #[test]
    fn refuses_non_loopback_and_other_schemes() {
        for url in [
            "ws://10.0.0.1:9001/ws",
            "ws://192.168.1.1/",
            "ws://[2001:db8::1]:80/",
            "ws://0.0.0.0:9001/",
            "wss://127.0.0.1:9001/ws",
            "http://127.0.0.1:9001/ws",
            "127.0.0.1:9001",
        ] {
            assert!(Target::parse(url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn wss_needs_tls_flags_a_ca_file_and_loopback() {
        let none = TlsArgs::default();
        let err = |url: &str, tls: Option<&TlsArgs>| match Target::parse_with(url, tls) {
            Ok(_) => panic!("{url} should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err("wss://127.0.0.1:9001/ws", None).contains("ws:// only"));
        assert!(err("wss://127.0.0.1:9001/ws", Some(&none)).contains("--ca-file"));
        assert!(err("wss://10.0.0.1:9001/ws", Some(&none)).contains("non-loopback"));
        let empty = std::env::temp_dir().join(format!("wsgate-bench-ca-{}", std::process::id()));
        std::fs::write(&empty, "").ok();
        let args = TlsArgs {
            ca_file: Some(empty.clone()),
            tls_resume: false,
        };
        assert!(err("wss://localhost:9001/ws", Some(&args)).contains("no usable certificate"));
        std::fs::remove_file(&empty).ok();
        // Plain targets need no TLS flags, with or without them.
        let t = Target::parse_with("ws://127.0.0.1:9001/ws", Some(&none));
        assert!(t.is_ok_and(|t| t.tls.is_none()));
    }

    #[test]
    fn rotates_tokens_and_sets_headers() {
        let dir = std::env::temp_dir().join(format!("wsgate-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let file = dir.join("tokens");
        std::fs::write(&file, "a.b.c\n\n# comment\nd.e.f\n").ok();
        let auth = Auth::load(Transport::Subprotocol, Some(&file), Some("http://x")).ok();
        let auth = auth.as_ref();
        assert_eq!(auth.map(Auth::token_count), Some(2));
        let uri: Uri = "ws://127.0.0.1:1/ws".parse().unwrap_or_default();
        let protos: Vec<String> = (0..3)
            .filter_map(|_| auth?.request(&uri).ok().flatten())
            .map(|r| {
                assert_eq!(
                    r.headers().get(ORIGIN).and_then(|v| v.to_str().ok()),
                    Some("http://x")
                );
                r.headers()
                    .get(SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(protos, ["jwt, a.b.c", "jwt, d.e.f", "jwt, a.b.c"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
