//! `tickets` mode: the browser ticket flow, end to end, in a loop from
//! `--concurrency` workers. One round trip:
//!
//! 1. mint: `POST /v1/tickets` on the gateway's host:port with
//!    `Authorization: Bearer <session token>` (tokens rotate), over a
//!    keep-alive HTTP/1.1 connection per worker (like a page's `fetch`), or a
//!    fresh connection per mint with `--mint-fresh-conn`; expects `201` and
//!    `{"ticket", "expires_in", "url"}`;
//! 2. redeem: a WebSocket upgrade at the returned `url` (which must point at
//!    the `--url` host:port), expecting `101`; then a close frame, and the
//!    server's close;
//! 3. replay check (after the first `--replay-check` successful round trips,
//!    100 by default):
//!    the same `url` again, expecting `401` with `ticket_replayed`. Any other
//!    answer is a violation; an accepted replay (`101`) makes the run exit 2.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use http::header::{HeaderValue, ORIGIN};
use http::Uri;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::common::{
    client_config, close_ws, error_rows, fmt_counts, handshake, new_histogram, record, round2,
    round3, row, run_length, status_map, ErrorTally, Failure, Handshake, LatencySummary, Stop,
    Target,
};
use crate::http1;
use crate::tokens::{TokenArgs, TokenSource};

/// The path tickets are minted on (docs/reference.md).
const MINT_PATH: &str = "/v1/tickets";

/// `--replay-check`: how many of the first round trips get a replay attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayCheck(u64);

fn parse_replay_check(s: &str) -> Result<ReplayCheck, String> {
    match s {
        "off" | "none" => Ok(ReplayCheck(0)),
        "all" => Ok(ReplayCheck(u64::MAX)),
        n => n
            .parse()
            .map(ReplayCheck)
            .map_err(|_| format!("expected a number, \"all\" or \"off\", got {n:?}")),
    }
}

#[derive(clap::Args, Debug)]
pub struct TicketsArgs {
    /// The gateway's WebSocket URL, e.g. ws://127.0.0.1:8080/ws (loopback
    /// only). Tickets are minted at /v1/tickets on the same host:port.
    #[arg(long)]
    pub url: String,
    /// The session tokens the mint is asked with (--token-file: one per
    /// line; --unique: each once; --mint-alg: a new one per round trip).
    #[command(flatten)]
    pub session: TokenArgs,
    /// Number of concurrent workers (each runs round trips back to back).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Run length. Defaults to 10s without --count; with --count it is an
    /// optional cap (10 min if not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many round trips in total.
    #[arg(long)]
    pub count: Option<u64>,
    /// Replay the ticket once more (expecting 401 ticket_replayed) after each
    /// of the first N successful round trips: a number, "all" or "off".
    #[arg(long, value_parser = parse_replay_check, default_value = "100")]
    pub replay_check: ReplayCheck,
    /// Open a new TCP connection for every mint (default: one keep-alive
    /// connection per worker, reopened when the server closes it).
    #[arg(long)]
    pub mint_fresh_conn: bool,
    /// Origin header to send on the mint, the upgrade and the replay.
    #[arg(long)]
    pub origin: Option<String>,
    /// Exit with status 2 on any error, non-201 mint, non-101 redeem or replay
    /// violation (an accepted replay always exits 2).
    #[arg(long)]
    pub strict: bool,
    /// Timeout for each phase: the mint, the upgrade, the close, the replay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Default)]
struct Tally {
    round_trips: u64,
    round_trips_ok: u64,
    mints_ok: u64,
    mint_status: BTreeMap<u16, u64>,
    mint_connects: u64,
    mint_retries: u64,
    redeems_ok: u64,
    redeem_status: BTreeMap<u16, u64>,
    close_errors: u64,
    replay_checked: u64,
    replay_refused: u64,
    replay_accepted: u64,
    replay_violations: u64,
    replay_status: BTreeMap<u16, u64>,
    replay_examples: BTreeMap<u16, String>,
    errors: ErrorTally,
}

#[derive(Serialize)]
struct Phase {
    ok: u64,
    status: BTreeMap<String, u64>,
    /// Successful answers only (201 for the mint, 101 for the redeem).
    latency_us: LatencySummary,
}

#[derive(Serialize)]
struct Replay {
    limit: Option<u64>,
    checked: u64,
    refused_ok: u64,
    violations: u64,
    accepted: u64,
    status: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    mint_url: String,
    tokens: usize,
    concurrency: usize,
    mint_connection: &'static str,
    round_trips: u64,
    round_trips_ok: u64,
    elapsed_s: f64,
    round_trips_per_s: f64,
    mint: Phase,
    mint_connects: u64,
    mint_retries: u64,
    redeem: Phase,
    close_errors: u64,
    round_trip_latency_us: LatencySummary,
    replay: Replay,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    strict: bool,
    ok: bool,
    stopped_by: &'static str,
}

/// The mint's answer (docs/reference.md).
#[derive(Deserialize)]
struct MintBody {
    ticket: String,
    expires_in: u64,
    url: String,
}

pub async fn run(args: TicketsArgs, json: bool) -> anyhow::Result<i32> {
    let target = Target::parse(&args.url)?;
    let authority = target
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .context("--url has no host:port")?;
    let tokens = TokenSource::from_args(&args.session)?;
    if !tokens.has_tokens() {
        bail!("--token-file or --mint-alg is required: the mint needs a session token");
    }
    let origin = match &args.origin {
        Some(o) => {
            HeaderValue::from_str(o).context("--origin is not a valid header value")?;
            if o.contains(['\r', '\n']) {
                bail!("--origin must be one line");
            }
            Some(o.clone())
        }
        None => None,
    };
    let run_for = run_length(args.concurrency, args.count, args.duration)?;

    let stop = Stop::new();
    stop.on_ctrl_c();
    let start = Instant::now();
    let shared = Rc::new(Shared {
        target,
        authority: authority.clone(),
        tokens,
        origin,
        stop: stop.clone(),
        tally: RefCell::new(Tally::default()),
        mint_hist: RefCell::new(new_histogram()?),
        redeem_hist: RefCell::new(new_histogram()?),
        rtt_hist: RefCell::new(new_histogram()?),
        issued: Cell::new(0),
        count: args.count,
        deadline: start + run_for,
        timeout: args.timeout,
        config: client_config(4096),
        replay_limit: args.replay_check.0,
        fresh_conn: args.mint_fresh_conn,
    });

    eprintln!(
        "tickets: mint http://{authority}{MINT_PATH}, redeem {} ({}) tokens={} concurrency={} mint-conn={} replay-check={} {}",
        args.url,
        shared.target.addr,
        shared.tokens.describe(),
        args.concurrency,
        if args.mint_fresh_conn { "fresh" } else { "keepalive" },
        match args.replay_check.0 {
            0 => "off".to_string(),
            u64::MAX => "all".to_string(),
            n => format!("first {n}"),
        },
        match args.count {
            Some(n) => format!("count={n} cap={}", humantime::format_duration(run_for)),
            None => format!("duration={}", humantime::format_duration(run_for)),
        }
    );

    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let w = Worker {
            shared: shared.clone(),
            conn: None,
        };
        workers.push(tokio::task::spawn_local(w.run()));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed();

    let tally = shared.tally.borrow();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let errors_total = tally.errors.total();
    let clean = errors_total == 0
        && tally.replay_violations == 0
        && tally.round_trips_ok == tally.round_trips
        && tally.round_trips_ok > 0;
    let ok = tally.replay_accepted == 0 && (!args.strict || clean);
    let stopped_by = if stop.is_set() {
        "interrupt"
    } else if args.count.is_some_and(|n| tally.round_trips >= n) {
        "count"
    } else if shared.tokens.exhausted() {
        "tokens"
    } else {
        "duration"
    };
    let report = Report {
        mode: "tickets",
        url: args.url.clone(),
        mint_url: format!("http://{authority}{MINT_PATH}"),
        tokens: shared.tokens.count(),
        concurrency: args.concurrency,
        mint_connection: if args.mint_fresh_conn {
            "fresh"
        } else {
            "keepalive"
        },
        round_trips: tally.round_trips,
        round_trips_ok: tally.round_trips_ok,
        elapsed_s: round3(secs),
        round_trips_per_s: round2(tally.round_trips_ok as f64 / secs),
        mint: Phase {
            ok: tally.mints_ok,
            status: status_map(&tally.mint_status),
            latency_us: LatencySummary::of(&shared.mint_hist.borrow()),
        },
        mint_connects: tally.mint_connects,
        mint_retries: tally.mint_retries,
        redeem: Phase {
            ok: tally.redeems_ok,
            status: status_map(&tally.redeem_status),
            latency_us: LatencySummary::of(&shared.redeem_hist.borrow()),
        },
        close_errors: tally.close_errors,
        round_trip_latency_us: LatencySummary::of(&shared.rtt_hist.borrow()),
        replay: Replay {
            limit: (args.replay_check.0 != u64::MAX).then_some(args.replay_check.0),
            checked: tally.replay_checked,
            refused_ok: tally.replay_refused,
            violations: tally.replay_violations,
            accepted: tally.replay_accepted,
            status: status_map(&tally.replay_status),
            examples: tally
                .replay_examples
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        },
        errors_total,
        errors: tally.errors.counts.clone(),
        error_examples: tally.errors.examples.clone(),
        strict: args.strict,
        ok,
        stopped_by,
    };

    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    if tally.replay_accepted > 0 {
        eprintln!(
            "FAILURE: {} replayed ticket(s) were ACCEPTED (101): tickets are not single-use",
            tally.replay_accepted
        );
        return Ok(2);
    }
    if !ok {
        eprintln!(
            "--strict: round trips {} of {} ok, errors {}, replay violations {}",
            tally.round_trips_ok, tally.round_trips, errors_total, tally.replay_violations
        );
        return Ok(2);
    }
    Ok(0)
}

fn print_human(r: &Report) {
    println!("wsgate-bench tickets  {}", r.url);
    row(
        "mint",
        format!("{} ({} connection)", r.mint_url, r.mint_connection),
    );
    row("tokens", r.tokens);
    row("concurrency", r.concurrency);
    row(
        "round trips",
        format!("{} ({} ok)", r.round_trips, r.round_trips_ok),
    );
    row(
        "elapsed",
        format!("{:.3} s (stopped by {})", r.elapsed_s, r.stopped_by),
    );
    row("rate", format!("{:.1} round trips/s", r.round_trips_per_s));
    row(
        "mint (POST → 201)",
        format!(
            "{} ok; status {}; {} connects, {} retries",
            r.mint.ok,
            if r.mint.status.is_empty() {
                "-".to_string()
            } else {
                fmt_counts(&r.mint.status)
            },
            r.mint_connects,
            r.mint_retries
        ),
    );
    row("mint latency", r.mint.latency_us.line());
    row(
        "redeem (→ 101)",
        format!(
            "{} ok; status {}; close errors {}",
            r.redeem.ok,
            if r.redeem.status.is_empty() {
                "-".to_string()
            } else {
                fmt_counts(&r.redeem.status)
            },
            r.close_errors
        ),
    );
    row("redeem latency", r.redeem.latency_us.line());
    row("round trip latency", r.round_trip_latency_us.line());
    row(
        "replay check",
        format!(
            "{} checked, {} refused with ticket_replayed, {} violations, {} ACCEPTED",
            r.replay.checked, r.replay.refused_ok, r.replay.violations, r.replay.accepted
        ),
    );
    for (status, ex) in &r.replay.examples {
        row("", format!("e.g. replay answered {status}: {ex}"));
    }
    error_rows(r.errors_total, &r.errors, &r.error_examples);
    if r.strict {
        row("strict", if r.ok { "ok" } else { "FAILED" });
    }
}

struct Shared {
    target: Target,
    /// `host:port` of `--url`: the mint's Host, and what a minted url must name.
    authority: String,
    tokens: TokenSource,
    origin: Option<String>,
    stop: Stop,
    tally: RefCell<Tally>,
    mint_hist: RefCell<Histogram<u64>>,
    redeem_hist: RefCell<Histogram<u64>>,
    rtt_hist: RefCell<Histogram<u64>>,
    issued: Cell<u64>,
    count: Option<u64>,
    deadline: Instant,
    timeout: Duration,
    config: WebSocketConfig,
    replay_limit: u64,
    fresh_conn: bool,
}

impl Shared {
    fn error(&self, f: Failure) {
        self.tally.borrow_mut().errors.add(f);
    }

    /// The mint's request with the next session token; `Ok(None)` once a
    /// unique pool is used up.
    fn mint_request(&self) -> Result<Option<Vec<u8>>, Failure> {
        let Some(minted) = self.tokens.next()? else {
            return Ok(None);
        };
        let token = &minted.token;
        let mut req = format!(
            "POST {MINT_PATH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Accept: application/json\r\nContent-Length: 0\r\n",
            self.authority
        );
        if let Some(o) = &self.origin {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        if self.fresh_conn {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        Ok(Some(req.into_bytes()))
    }

    /// Checks the mint's answer and returns the URL to redeem.
    fn redeem_uri(&self, body: &[u8]) -> Result<Uri, Failure> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let b: MintBody = serde_json::from_slice(body)
            .map_err(|e| Failure::new("mint: bad body", format!("mint: {e}: {}", snippet())))?;
        if b.expires_in == 0 {
            return Err(Failure::new(
                "mint: expires_in 0",
                format!("mint: the ticket is already expired: {}", snippet()),
            ));
        }
        if b.ticket.is_empty() || !b.url.contains(&b.ticket) {
            return Err(Failure::new(
                "mint: url without the ticket",
                format!("mint: url does not carry the ticket: {}", snippet()),
            ));
        }
        let uri: Uri = b
            .url
            .parse()
            .map_err(|e| Failure::new("mint: bad url", format!("mint: url {:?}: {e}", b.url)))?;
        // The redeem goes to the --url address only (loopback, checked):
        // refuse a url naming anything else rather than connect elsewhere.
        let same = uri.scheme_str() == Some("ws")
            && uri.authority().map(|a| a.as_str()) == Some(self.authority.as_str());
        if !same {
            return Err(Failure::new(
                "mint: url for another host",
                format!(
                    "mint: url {:?} is not ws://{}/...",
                    b.url.split('?').next().unwrap_or_default(),
                    self.authority
                ),
            ));
        }
        Ok(uri)
    }
}

/// A keep-alive connection for mints, with bytes read but not consumed.
struct MintConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Worker {
    shared: Rc<Shared>,
    conn: Option<MintConn>,
}

impl Worker {
    async fn run(mut self) {
        let s = self.shared.clone();
        loop {
            if s.stop.is_set() || Instant::now() >= s.deadline {
                return;
            }
            let n = s.issued.get();
            if s.count.is_some_and(|max| n >= max) {
                return;
            }
            s.issued.set(n + 1);
            let req = match s.mint_request() {
                Ok(Some(r)) => r,
                // A unique pool is used up: the run is over.
                Ok(None) => return,
                Err(f) => {
                    s.tally.borrow_mut().round_trips += 1;
                    s.error(f);
                    continue;
                }
            };
            s.tally.borrow_mut().round_trips += 1;
            let t0 = Instant::now();
            let Some(uri) = self.mint(&req).await else {
                continue;
            };
            if !redeem(&s, &uri).await {
                continue;
            }
            let nth_ok = {
                let mut t = s.tally.borrow_mut();
                t.round_trips_ok += 1;
                t.round_trips_ok
            };
            record(&s.rtt_hist, t0.elapsed());
            if nth_ok <= s.replay_limit {
                replay(&s, &uri).await;
            }
        }
    }

    /// Step 1: POST /v1/tickets. Returns the URL to redeem, or `None` after
    /// counting what went wrong.
    async fn mint(&mut self, req: &[u8]) -> Option<Uri> {
        let s = self.shared.clone();
        let t0 = Instant::now();
        let answer = match timeout(s.timeout, self.exchange(req)).await {
            Ok(a) => a,
            Err(_) => {
                self.conn = None;
                Err(Failure::timeout("mint"))
            }
        };
        let latency = t0.elapsed();
        let resp = match answer {
            Ok(r) => r,
            Err(f) => {
                s.error(f);
                return None;
            }
        };
        *s.tally
            .borrow_mut()
            .mint_status
            .entry(resp.status)
            .or_insert(0) += 1;
        if resp.status != 201 {
            s.error(Failure::new(
                format!("mint: http {}", resp.status),
                format!("mint: {}: {}", resp.status, resp.body_snippet()),
            ));
            return None;
        }
        match s.redeem_uri(&resp.body) {
            Ok(uri) => {
                record(&s.mint_hist, latency);
                s.tally.borrow_mut().mints_ok += 1;
                Some(uri)
            }
            Err(f) => {
                s.error(f);
                None
            }
        }
    }

    /// Sends one request on the worker's connection (opening one if needed)
    /// and reads the response. A reused connection that turns out to be
    /// closed (the server may drop idle keep-alive connections) is replaced
    /// once.
    async fn exchange(&mut self, req: &[u8]) -> Result<http1::Response, Failure> {
        let s = self.shared.clone();
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => {
                    let stream = TcpStream::connect(s.target.addr)
                        .await
                        .map_err(|e| Failure::from_io("mint: connect", &e))?;
                    let _ = stream.set_nodelay(true);
                    s.tally.borrow_mut().mint_connects += 1;
                    MintConn {
                        stream,
                        buf: Vec::with_capacity(4096),
                    }
                }
            };
            let stale = |e: &http1::Error| {
                reused
                    && attempt == 0
                    && matches!(e, http1::Error::ClosedBeforeResponse | http1::Error::Io(_))
            };
            if let Err(e) = conn.stream.write_all(req).await {
                let e = http1::Error::Io(e);
                if stale(&e) {
                    s.tally.borrow_mut().mint_retries += 1;
                    continue;
                }
                return Err(http_failure("mint", &e));
            }
            match http1::read_response(&mut conn.stream, &mut conn.buf).await {
                Ok(resp) => {
                    if resp.keep_alive && !s.fresh_conn && conn.buf.is_empty() {
                        self.conn = Some(conn);
                    }
                    return Ok(resp);
                }
                Err(e) if stale(&e) => {
                    s.tally.borrow_mut().mint_retries += 1;
                    continue;
                }
                Err(e) => return Err(http_failure("mint", &e)),
            }
        }
        Err(Failure::new(
            "mint: connection closed twice",
            "mint: the server closed the connection before answering, twice",
        ))
    }
}

fn http_failure(phase: &str, e: &http1::Error) -> Failure {
    Failure::new(
        format!("{phase}: {}", e.category()),
        format!("{phase}: {e}"),
    )
}

fn add_origin(
    req: &mut tokio_tungstenite::tungstenite::handshake::client::Request,
    origin: Option<&str>,
) {
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        req.headers_mut().insert(ORIGIN, v);
    }
}

/// Step 2: upgrade at the ticket URL, then close. Returns whether the
/// socket was opened (close problems are counted, not fatal).
async fn redeem(s: &Shared, uri: &Uri) -> bool {
    let mut req = match uri.clone().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            s.error(Failure::from_ws("redeem: request", &e));
            return false;
        }
    };
    add_origin(&mut req, s.origin.as_deref());
    let t0 = Instant::now();
    let outcome = timeout(s.timeout, handshake(&s.target, req, s.config)).await;
    let latency = t0.elapsed();
    let mut ws = match outcome {
        Err(_) => {
            s.error(Failure::timeout("redeem"));
            return false;
        }
        Ok(Err(f)) => {
            s.error(f.prefixed("redeem"));
            return false;
        }
        Ok(Ok(Handshake::Rejected(status))) => {
            *s.tally
                .borrow_mut()
                .redeem_status
                .entry(status.as_u16())
                .or_insert(0) += 1;
            s.error(Failure::new(
                format!("redeem: http {}", status.as_u16()),
                format!("redeem: the ticket upgrade was answered {status}"),
            ));
            return false;
        }
        Ok(Ok(Handshake::Accepted(ws))) => ws,
    };
    record(&s.redeem_hist, latency);
    {
        let mut t = s.tally.borrow_mut();
        t.redeems_ok += 1;
        *t.redeem_status.entry(101).or_insert(0) += 1;
    }
    let failure = match timeout(s.timeout, close_ws(&mut ws)).await {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f.prefixed("redeem")),
        Err(_) => Some(Failure::timeout("redeem: close")),
    };
    if let Some(f) = failure {
        s.tally.borrow_mut().close_errors += 1;
        s.error(f);
    }
    true
}

/// Step 3: the same ticket URL again; it must be refused with
/// `401 ticket_replayed`. Uses a raw request so the whole refusal body is
/// read.
async fn replay(s: &Shared, uri: &Uri) {
    s.tally.borrow_mut().replay_checked += 1;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n",
        s.authority,
        generate_key()
    );
    if let Some(o) = &s.origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    let attempt = async {
        let mut stream = TcpStream::connect(s.target.addr)
            .await
            .map_err(|e| Failure::from_io("replay: connect", &e))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| Failure::from_io("replay: write", &e))?;
        let mut buf = Vec::new();
        http1::read_response(&mut stream, &mut buf)
            .await
            .map_err(|e| http_failure("replay", &e))
        // Dropping the stream closes it, whatever the answer (also a 101).
    };
    let resp = match timeout(s.timeout, attempt).await {
        Err(_) => {
            s.error(Failure::timeout("replay"));
            return;
        }
        Ok(Err(f)) => {
            s.error(f);
            return;
        }
        Ok(Ok(r)) => r,
    };
    let mut t = s.tally.borrow_mut();
    *t.replay_status.entry(resp.status).or_insert(0) += 1;
    let replayed = resp.status == 401
        && std::str::from_utf8(&resp.body).is_ok_and(|b| b.contains("ticket_replayed"));
    if replayed {
        t.replay_refused += 1;
        return;
    }
    t.replay_violations += 1;
    if resp.status == 101 {
        t.replay_accepted += 1;
        eprintln!("replay ACCEPTED: a spent ticket opened a second socket");
    }
    t.replay_examples.entry(resp.status).or_insert_with(|| {
        if resp.status == 101 {
            "upgraded: the spent ticket opened a second socket".to_string()
        } else {
            resp.body_snippet()
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_check_values() {
        assert_eq!(parse_replay_check("100"), Ok(ReplayCheck(100)));
        assert_eq!(parse_replay_check("0"), Ok(ReplayCheck(0)));
        assert_eq!(parse_replay_check("off"), Ok(ReplayCheck(0)));
        assert_eq!(parse_replay_check("all"), Ok(ReplayCheck(u64::MAX)));
        assert!(parse_replay_check("-1").is_err());
        assert!(parse_replay_check("lots").is_err());
    }
}
