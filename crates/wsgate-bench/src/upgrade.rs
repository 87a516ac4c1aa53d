//! `upgrade` mode: connect → HTTP upgrade → (on 101) close, in a loop, from
//! `--concurrency` workers. Measures upgrade throughput and the latency from
//! starting the TCP connect to receiving the 101 or the rejection.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{timeout, Instant};

use crate::common::{
    client_config, close_ws, error_rows, fmt_counts, new_histogram, record, round2, round3, row,
    run_length, status_map, Auth, ErrorTally, Handshake, LatencySummary, Stop, Target, Transport,
};
use crate::tls::TlsArgs;
use crate::tokens::TokenArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Every attempt must get 101 Switching Protocols.
    Accepted,
    /// Every attempt must get a non-101 HTTP response.
    Rejected,
    /// No attempt may get 101; refusals, timeouts and connection errors
    /// all count (an attacker's view when the target drops it in the
    /// kernel, `limits.block_after_refusals`).
    Refused,
}

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
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
    /// Number of concurrent workers (each runs attempts back to back).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Run length. Defaults to 10s without --count; with --count it is an
    /// optional cap (10 min if not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many attempts in total.
    #[arg(long)]
    pub count: Option<u64>,
    /// Origin header to send.
    #[arg(long)]
    pub origin: Option<String>,
    /// Exit with status 2 if any attempt had another outcome (or failed).
    #[arg(long, value_enum)]
    pub expect: Option<Expect>,
    /// Per-attempt timeout for connect + upgrade, and separately for the close.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Loopback source addresses, rotated per attempt: `127.1.0.1-127.1.3.255`,
    /// commas allowed (many clients, as the per-IP limits see them).
    #[arg(long)]
    pub sources: Option<String>,
    /// Cap on attempts per second across all workers (open loop up to the
    /// cap; default: as fast as the workers go).
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    accepted: u64,
    rejected: BTreeMap<u16, u64>,
    errors: ErrorTally,
    close_errors: ErrorTally,
    tls: TlsTally,
}

/// How the TLS handshakes of accepted attempts went (`wss://` only).
#[derive(Default, Serialize, Clone, Copy)]
struct TlsTally {
    full: u64,
    resumed: u64,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    transport: Transport,
    tokens: usize,
    concurrency: usize,
    attempts: u64,
    accepted: u64,
    rejected_total: u64,
    rejected: BTreeMap<String, u64>,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    close_errors: u64,
    elapsed_s: f64,
    rate_per_s: f64,
    accepted_per_s: f64,
    latency_us: LatencySummary,
    expect: Option<Expect>,
    expect_ok: bool,
    stopped_by: &'static str,
    /// `wss://` only.
    tls: Option<TlsTally>,
}

pub async fn run(args: UpgradeArgs, json: bool) -> anyhow::Result<i32> {
    let target = Target::parse_with(&args.url, Some(&args.tls))?;
    let auth = Rc::new(Auth::new(
        args.transport,
        &args.tokens,
        args.origin.as_deref(),
    )?);
    let run_for = run_length(args.concurrency, args.count, args.duration)?;

    let stop = Stop::new();
    stop.on_ctrl_c();
    let tally = Rc::new(RefCell::new(Tally::default()));
    let hist = Rc::new(RefCell::new(new_histogram()?));
    let issued = Rc::new(Cell::new(0u64));
    let config = client_config(4096);
    let sources: Rc<Vec<std::net::IpAddr>> = Rc::new(match &args.sources {
        Some(spec) => crate::common::parse_sources(spec)?,
        None => Vec::new(),
    });
    let period = match args.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 && r <= 1e7 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => anyhow::bail!("--rate must be in (0, 1e7], got {r}"),
    };

    eprintln!(
        "upgrade: {} ({}) transport={:?} tokens={} concurrency={} {}",
        args.url,
        target.addr,
        args.transport,
        auth.describe(),
        args.concurrency,
        match args.count {
            Some(n) => format!("count={n} cap={}", humantime::format_duration(run_for)),
            None => format!("duration={}", humantime::format_duration(run_for)),
        }
    );

    let start = Instant::now();
    let deadline = start + run_for;
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let w = Worker {
            target: target.clone(),
            auth: auth.clone(),
            stop: stop.clone(),
            tally: tally.clone(),
            hist: hist.clone(),
            issued: issued.clone(),
            count: args.count,
            deadline,
            timeout: args.timeout,
            config,
            sources: sources.clone(),
            start,
            period,
        };
        workers.push(tokio::task::spawn_local(w.run()));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed();

    let tally = tally.borrow();
    let hist = hist.borrow();
    let rejected_total: u64 = tally.rejected.values().sum();
    let errors_total = tally.errors.total();
    let expect_ok = match args.expect {
        None => true,
        Some(Expect::Accepted) => rejected_total == 0 && errors_total == 0,
        Some(Expect::Rejected) => tally.accepted == 0 && errors_total == 0,
        Some(Expect::Refused) => tally.accepted == 0,
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let stopped_by = if stop.is_set() {
        "interrupt"
    } else if args.count.is_some_and(|n| tally.attempts >= n) {
        "count"
    } else if auth.exhausted() {
        "tokens"
    } else {
        "duration"
    };
    let report = Report {
        mode: "upgrade",
        url: args.url.clone(),
        transport: args.transport,
        tokens: auth.token_count(),
        concurrency: args.concurrency,
        attempts: tally.attempts,
        accepted: tally.accepted,
        rejected_total,
        rejected: status_map(&tally.rejected),
        errors_total,
        errors: tally.errors.counts.clone(),
        error_examples: tally.errors.examples.clone(),
        close_errors: tally.close_errors.total(),
        elapsed_s: round3(secs),
        rate_per_s: round2(tally.attempts as f64 / secs),
        accepted_per_s: round2(tally.accepted as f64 / secs),
        latency_us: LatencySummary::of(&hist),
        expect: args.expect,
        expect_ok,
        stopped_by,
        tls: target.tls.is_some().then_some(tally.tls),
    };

    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report, &tally);
    }
    if !expect_ok {
        let expected = match args.expect {
            Some(Expect::Rejected) => "rejected",
            Some(Expect::Refused) => "refused",
            _ => "accepted",
        };
        eprintln!(
            "expectation failed: --expect {expected}, but saw accepted={} rejected={} errors={}",
            report.accepted, rejected_total, errors_total
        );
        return Ok(2);
    }
    Ok(0)
}

fn print_human(r: &Report, tally: &Tally) {
    println!("wsgate-bench upgrade  {}", r.url);
    row(
        "transport / tokens",
        format!("{:?} / {}", r.transport, r.tokens),
    );
    row("concurrency", r.concurrency);
    row("attempts", r.attempts);
    row("accepted (101)", r.accepted);
    if r.rejected_total > 0 {
        row(
            "rejected",
            format!("{}  ({})", r.rejected_total, fmt_counts(&tally.rejected)),
        );
    } else {
        row("rejected", 0);
    }
    error_rows(r.errors_total, &r.errors, &r.error_examples);
    if r.close_errors > 0 {
        row(
            "close errors",
            format!(
                "{}  ({})",
                r.close_errors,
                fmt_counts(&tally.close_errors.counts)
            ),
        );
    }
    row(
        "elapsed",
        format!("{:.3} s (stopped by {})", r.elapsed_s, r.stopped_by),
    );
    row("rate", format!("{:.1} attempts/s", r.rate_per_s));
    row(
        "accepted rate",
        format!("{:.1} upgrades/s", r.accepted_per_s),
    );
    row("latency (→101/reject)", r.latency_us.line());
    if let Some(t) = r.tls {
        row(
            "TLS handshakes",
            format!("{} full, {} resumed", t.full, t.resumed),
        );
    }
    if let Some(e) = r.expect {
        row(
            "expect",
            format!("{:?}: {}", e, if r.expect_ok { "ok" } else { "FAILED" }),
        );
    }
}

struct Worker {
    target: Target,
    auth: Rc<Auth>,
    stop: Stop,
    tally: Rc<RefCell<Tally>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    issued: Rc<Cell<u64>>,
    count: Option<u64>,
    deadline: Instant,
    timeout: Duration,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    sources: Rc<Vec<std::net::IpAddr>>,
    start: Instant,
    period: Option<Duration>,
}

impl Worker {
    async fn run(self) {
        loop {
            if self.stop.is_set() || Instant::now() >= self.deadline {
                return;
            }
            if let Some(max) = self.count {
                if self.issued.get() >= max {
                    return;
                }
            }
            let n = self.issued.get();
            self.issued.set(n + 1);
            if let Some(p) = self.period {
                // Open loop: attempt n is due at start + n * period.
                let due = self.start + p.mul_f64(n as f64);
                if due >= self.deadline {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
            let req = match self.auth.request(&self.target.uri) {
                Ok(Some(r)) => r,
                // A unique pool is used up: the run is over.
                Ok(None) => return,
                Err(f) => {
                    self.tally.borrow_mut().attempts += 1;
                    self.tally.borrow_mut().errors.add(f);
                    continue;
                }
            };
            self.tally.borrow_mut().attempts += 1;
            let source =
                (!self.sources.is_empty()).then(|| self.sources[(n as usize) % self.sources.len()]);

            let t0 = Instant::now();
            let outcome = timeout(
                self.timeout,
                crate::common::handshake_from(&self.target, source, req, self.config),
            )
            .await;
            let latency = t0.elapsed();
            match outcome {
                Err(_) => self
                    .tally
                    .borrow_mut()
                    .errors
                    .add(crate::common::Failure::timeout("handshake")),
                Ok(Err(f)) => self.tally.borrow_mut().errors.add(f),
                Ok(Ok(Handshake::Rejected(status))) => {
                    record(&self.hist, latency);
                    *self
                        .tally
                        .borrow_mut()
                        .rejected
                        .entry(status.as_u16())
                        .or_insert(0) += 1;
                }
                Ok(Ok(Handshake::Accepted(mut ws))) => {
                    record(&self.hist, latency);
                    {
                        let mut tally = self.tally.borrow_mut();
                        tally.accepted += 1;
                        match crate::tls::resumed(ws.get_ref()) {
                            Some(true) => tally.tls.resumed += 1,
                            Some(false) => tally.tls.full += 1,
                            None => {}
                        }
                    }
                    let closed = timeout(self.timeout, close_ws(&mut ws)).await;
                    match closed {
                        Ok(Ok(())) => {}
                        Ok(Err(f)) => self.tally.borrow_mut().close_errors.add(f),
                        Err(_) => self
                            .tally
                            .borrow_mut()
                            .close_errors
                            .add(crate::common::Failure::timeout("close")),
                    }
                }
            }
        }
    }
}
