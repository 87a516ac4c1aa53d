//! `echo` mode: open N authenticated sockets, then each sends a message of
//! `--size` bytes and waits for its echo before sending the next (closed
//! loop), or sends on a fixed schedule with `--rate-per-conn`. Measures
//! messages/s and per-message round-trip time.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::common::{
    client_config, close_ws, error_rows, new_histogram, open_ws, record, round2, round3, row,
    status_map, Auth, ErrorTally, Failure, LatencySummary, OpenFailures, Stop, Target, Transport,
    Ws,
};
use crate::tls::TlsArgs;
use crate::tokens::TokenArgs;

#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// Target, e.g. ws://127.0.0.1:8080/ws or wss://localhost:8443/ws
    /// (loopback only).
    #[arg(long)]
    pub url: String,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// How the token is sent.
    #[arg(long, value_enum, default_value_t = Transport::Bearer)]
    pub transport: Transport,
    /// Origin header to send.
    #[arg(long)]
    pub origin: Option<String>,
    /// Number of sockets.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Message payload size in bytes (binary frames).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Send this text message instead of `--size` binary bytes (what the
    /// gateway inspects: in-band control messages are text).
    #[arg(long)]
    pub text: Option<String>,
    /// Measurement length (after all sockets are open).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Messages per second per connection, sent on a fixed schedule (RTT is
    /// measured from the scheduled send time). Default: closed loop, each
    /// connection sends its next message as soon as the echo arrives.
    #[arg(long)]
    pub rate_per_conn: Option<f64>,
    /// Handshakes in flight at once while opening the sockets.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Timeout for each handshake, each echo, and each close.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

#[derive(Default)]
struct Tally {
    messages: u64,
    mismatched: u64,
    errors: ErrorTally,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    transport: Transport,
    connections_requested: usize,
    connections_open: usize,
    open_failed: u64,
    open_rejected: BTreeMap<String, u64>,
    open_errors: BTreeMap<String, u64>,
    size: usize,
    load: String,
    messages: u64,
    bytes_each_way: u64,
    mismatched: u64,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    elapsed_s: f64,
    messages_per_s: f64,
    rtt_us: LatencySummary,
    open_s: f64,
}

pub async fn run(args: EchoArgs, json: bool) -> anyhow::Result<i32> {
    let target = Target::parse_with(&args.url, Some(&args.tls))?;
    let auth = Auth::new(args.transport, &args.tokens, args.origin.as_deref())?;
    if args.connections == 0 || args.open_concurrency == 0 {
        bail!("--connections and --open-concurrency must be at least 1");
    }
    let period = match args.rate_per_conn {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => bail!("--rate-per-conn must be in (0, 1e6], got {r}"),
    };
    let stop = Stop::new();
    stop.on_ctrl_c();
    let config = client_config((args.size + 16).clamp(4096, 128 * 1024));

    eprintln!(
        "echo: {} ({}) opening {} sockets…",
        args.url, target.addr, args.connections
    );
    let open_start = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(0..args.connections)
        .map(|_| open_ws(&target, &auth, config, args.timeout))
        .buffer_unordered(args.open_concurrency)
        .collect()
        .await;
    let open_elapsed = open_start.elapsed();
    let mut sockets = Vec::with_capacity(args.connections);
    let mut failures = OpenFailures::default();
    for r in results {
        match r {
            Ok(ws) => sockets.push(ws),
            Err(e) => failures.add(e),
        }
    }
    eprintln!(
        "echo: {} open, {} failed{} in {:.2}s; measuring for {}",
        sockets.len(),
        failures.total(),
        if failures.total() > 0 {
            format!(" ({})", failures.describe())
        } else {
            String::new()
        },
        open_elapsed.as_secs_f64(),
        humantime::format_duration(args.duration)
    );
    if sockets.is_empty() {
        bail!("no socket could be opened ({})", failures.describe());
    }

    let payload = match &args.text {
        Some(t) => Bytes::from(t.clone()),
        None => Bytes::from((0..args.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    };
    let message = match &args.text {
        Some(t) => Message::Text(t.clone().into()),
        None => Message::Binary(payload.clone()),
    };
    let tally = Rc::new(RefCell::new(Tally::default()));
    let hist = Rc::new(RefCell::new(new_histogram()?));
    let n_open = sockets.len();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::with_capacity(n_open);
    for (i, ws) in sockets.into_iter().enumerate() {
        // Spread scheduled connections evenly over one period.
        let first = match period {
            Some(p) => start + p.mul_f64(i as f64 / n_open as f64),
            None => start,
        };
        let conn = Conn {
            ws,
            payload: payload.clone(),
            message: message.clone(),
            stop: stop.clone(),
            tally: tally.clone(),
            hist: hist.clone(),
            deadline,
            period,
            first,
            timeout: args.timeout,
        };
        tasks.push(tokio::task::spawn_local(conn.run()));
    }
    let mut still_open = Vec::with_capacity(n_open);
    for t in tasks {
        if let Some(ws) = t.await? {
            still_open.push(ws);
        }
    }
    let elapsed = start.elapsed();

    // Orderly close, all at once, each bounded.
    let closes = still_open
        .iter_mut()
        .map(|ws| timeout(args.timeout, close_ws(ws)));
    futures_util::future::join_all(closes).await;

    let tally = tally.borrow();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let report = Report {
        mode: "echo",
        url: args.url.clone(),
        transport: args.transport,
        connections_requested: args.connections,
        connections_open: n_open,
        open_failed: failures.total(),
        open_rejected: status_map(&failures.rejected),
        open_errors: failures.errors.counts.clone(),
        size: payload.len(),
        load: match args.rate_per_conn {
            Some(r) => format!("{r} msg/s per connection"),
            None => "closed loop".to_string(),
        },
        messages: tally.messages,
        bytes_each_way: tally.messages * payload.len() as u64,
        mismatched: tally.mismatched,
        errors_total: tally.errors.total(),
        errors: tally.errors.counts.clone(),
        error_examples: tally.errors.examples.clone(),
        elapsed_s: round3(secs),
        messages_per_s: round2(tally.messages as f64 / secs),
        rtt_us: LatencySummary::of(&hist.borrow()),
        open_s: round3(open_elapsed.as_secs_f64()),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report, &failures);
    }
    if report.mismatched > 0 || report.errors_total > 0 || report.open_failed > 0 {
        eprintln!(
            "incomplete: {} open failures, {} errors, {} mismatched echoes",
            report.open_failed, report.errors_total, report.mismatched
        );
        return Ok(2);
    }
    Ok(0)
}

fn print_human(r: &Report, failures: &OpenFailures) {
    println!("wsgate-bench echo  {}", r.url);
    row(
        "connections",
        format!(
            "{} open of {} requested{}",
            r.connections_open,
            r.connections_requested,
            if r.open_failed > 0 {
                format!(" ({} failed: {})", r.open_failed, failures.describe())
            } else {
                String::new()
            }
        ),
    );
    row("message size", format!("{} bytes", r.size));
    row("load", &r.load);
    row("messages echoed", r.messages);
    if r.mismatched > 0 {
        row("MISMATCHED echoes", r.mismatched);
    }
    error_rows(r.errors_total, &r.errors, &r.error_examples);
    row("elapsed", format!("{:.3} s", r.elapsed_s));
    row("rate", format!("{:.1} messages/s", r.messages_per_s));
    row("rtt", r.rtt_us.line());
}

struct Conn {
    ws: Box<Ws>,
    /// What the echo must equal.
    payload: Bytes,
    /// The payload as sent: binary, or text with `--text`.
    message: Message,
    stop: Stop,
    tally: Rc<RefCell<Tally>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    deadline: Instant,
    period: Option<Duration>,
    first: Instant,
    timeout: Duration,
}

impl Conn {
    /// Runs the send/echo loop until the deadline; returns the socket if it is
    /// still usable (so it can be closed cleanly).
    async fn run(mut self) -> Option<Box<Ws>> {
        let mut next = self.first;
        loop {
            if self.stop.is_set() || Instant::now() >= self.deadline {
                return Some(self.ws);
            }
            let sent_at = match self.period {
                Some(p) => {
                    if next >= self.deadline {
                        return Some(self.ws);
                    }
                    let scheduled = next;
                    next += p;
                    if Instant::now() < scheduled {
                        // On time: measure from the actual send, so the
                        // timer's ~1 ms granularity is not counted as RTT.
                        sleep_until(scheduled).await;
                        Instant::now()
                    } else {
                        // Behind schedule because the previous echo was
                        // slow: measure from the intended send time so the
                        // queueing delay is not hidden (coordinated omission).
                        scheduled
                    }
                }
                None => Instant::now(),
            };
            match timeout(self.timeout, self.round_trip()).await {
                Ok(Ok(echo)) => {
                    record(&self.hist, sent_at.elapsed());
                    let mut t = self.tally.borrow_mut();
                    t.messages += 1;
                    if echo != self.payload {
                        t.mismatched += 1;
                    }
                }
                Ok(Err(f)) => {
                    self.tally.borrow_mut().errors.add(f);
                    return None;
                }
                Err(_) => {
                    self.tally.borrow_mut().errors.add(Failure::timeout("echo"));
                    return None;
                }
            }
        }
    }

    async fn round_trip(&mut self) -> Result<Bytes, Failure> {
        self.ws
            .send(self.message.clone())
            .await
            .map_err(|e| Failure::from_ws("send", &e))?;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(data))) => return Ok(data),
                Some(Ok(Message::Text(text))) => return Ok(Bytes::from(text)),
                Some(Ok(Message::Close(_))) | None | Some(Err(WsError::ConnectionClosed)) => {
                    return Err(Failure::new(
                        "recv: closed by server",
                        "server closed the socket mid-run",
                    ))
                }
                Some(Ok(_)) => continue, // ping / pong / raw frame
                Some(Err(e)) => return Err(Failure::from_ws("recv", &e)),
            }
        }
    }
}
