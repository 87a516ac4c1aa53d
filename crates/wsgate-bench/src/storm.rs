//! `storm` mode: N sockets whose tokens share one `exp` (an expiry storm).
//! Measures when each socket receives its close (code and time after the
//! deadline), and meanwhile keeps upgrading a probe socket with a
//! long-lived token to see whether new clients are served during the storm.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    client_config, close_ws, jwt_payload, new_histogram, open_ws, record, row, Auth,
    LatencySummary, OpenFailures, Target, Transport,
};
use crate::tokens::TokenArgs;

#[derive(clap::Args, Debug)]
pub struct StormArgs {
    /// Gateway WebSocket URL, e.g. ws://127.0.0.1:18080/ws (loopback only).
    #[arg(long)]
    pub url: String,
    /// Tokens that all carry the same `exp` (e.g. `wsgate-bench mint
    /// --mint-exp`); rotated, or each used once with --unique.
    #[arg(long)]
    pub token_file: PathBuf,
    /// One token per socket: --token-file must hold --connections tokens.
    #[arg(long)]
    pub unique: bool,
    /// A long-lived token for the probe upgrades.
    #[arg(long)]
    pub probe_token_file: PathBuf,
    /// Sockets in the storm.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// The gateway's `auth.leeway`: the deadline is `exp` + leeway.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub leeway: Duration,
    /// Pause between probe upgrades.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    pub probe_interval: Duration,
    #[arg(long, default_value_t = 256)]
    pub open_concurrency: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

#[derive(Default)]
struct Closes {
    expired: Vec<Duration>,
    early: u64,
    other: u64,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    connections_open: usize,
    open_failed: u64,
    closed_4401: usize,
    closed_other: u64,
    closed_before_deadline: u64,
    not_closed: usize,
    close_after_deadline: LatencySummary,
    probes_during_storm: LatencySummary,
    probes_failed: u64,
}

pub async fn run(args: StormArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    if (args.connections as u64) + 64 > nofile {
        bail!(
            "{} sockets need more than RLIMIT_NOFILE = {nofile}",
            args.connections
        );
    }
    let target = Target::parse(&args.url)?;
    let storm_tokens = TokenArgs {
        token_file: Some(args.token_file.clone()),
        unique: args.unique,
        ..TokenArgs::default()
    };
    let auth = Auth::new(Transport::Bearer, &storm_tokens, None)?;
    let exp = auth
        .first_token()
        .and_then(jwt_payload)
        .and_then(|p| p.get("exp").and_then(|e| e.as_i64()))
        .context("cannot read exp from the first storm token")?;
    if args.unique && auth.token_count() < args.connections {
        bail!(
            "--unique: {} tokens for {} sockets",
            auth.token_count(),
            args.connections
        );
    }
    let probe = Auth::load(Transport::Bearer, Some(&args.probe_token_file), None)?;
    // The deadline as an Instant on this machine's clock.
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let deadline_unix = Duration::from_secs(u64::try_from(exp)?) + args.leeway;
    let Some(until) = deadline_unix.checked_sub(now_unix) else {
        bail!("the storm tokens' exp is already past");
    };
    let deadline = Instant::now() + until;

    let closes = Rc::new(RefCell::new(Closes::default()));
    let mut failures = OpenFailures::default();
    let mut open = 0usize;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut started = 0usize;
    while started < args.connections || !pending.is_empty() {
        while started < args.connections && pending.len() < args.open_concurrency {
            started += 1;
            pending.push(open_ws(&target, &auth, client_config(4096), args.timeout));
        }
        match pending.next().await {
            Some(Ok(mut ws)) => {
                open += 1;
                let closes = closes.clone();
                tokio::task::spawn_local(async move {
                    let code = loop {
                        match ws.next().await {
                            Some(Ok(Message::Close(f))) => {
                                break f.map(|f| u16::from(f.code)).unwrap_or(1005)
                            }
                            Some(Ok(_)) => continue,
                            _ => break 1006,
                        }
                    };
                    let at = Instant::now();
                    let mut c = closes.borrow_mut();
                    if at < deadline {
                        c.early += 1;
                    } else if code == 4401 {
                        c.expired.push(at - deadline);
                    } else {
                        c.other += 1;
                    }
                });
            }
            Some(Err(e)) => failures.add(e),
            None => break,
        }
    }
    drop(pending);
    if Instant::now() + Duration::from_secs(1) > deadline {
        bail!("opening took past the deadline: mint tokens with a longer ttl");
    }
    eprintln!(
        "{open} sockets open; deadline in {:?}",
        deadline - Instant::now()
    );

    // Probe from 1 s before the deadline until every socket closed (+1 s).
    tokio::time::sleep_until(deadline - Duration::from_secs(1)).await;
    let probes = RefCell::new(new_histogram()?);
    let mut probes_failed = 0u64;
    let give_up = deadline + args.timeout;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let done = {
            let c = closes.borrow();
            c.expired.len() as u64 + c.early + c.other >= open as u64
        };
        let now = Instant::now();
        if done {
            let q = *quiet_since.get_or_insert(now);
            if now - q >= Duration::from_secs(1) {
                break;
            }
        }
        if now >= give_up {
            break;
        }
        let t0 = Instant::now();
        match open_ws(&target, &probe, client_config(4096), args.timeout).await {
            Ok(mut ws) => {
                record(&probes, t0.elapsed());
                let _ = timeout(args.timeout, close_ws(&mut ws)).await;
            }
            Err(_) => probes_failed += 1,
        }
        tokio::time::sleep(args.probe_interval).await;
    }
    let c = closes.borrow();
    let hist = RefCell::new(new_histogram()?);
    for d in &c.expired {
        record(&hist, *d);
    }
    let closed = c.expired.len() as u64 + c.early + c.other;
    let report = Report {
        mode: "storm",
        connections_open: open,
        open_failed: failures.total(),
        closed_4401: c.expired.len(),
        closed_other: c.other,
        closed_before_deadline: c.early,
        not_closed: open.saturating_sub(closed as usize),
        close_after_deadline: LatencySummary::of(&hist.borrow()),
        probes_during_storm: LatencySummary::of(&probes.borrow()),
        probes_failed,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        row("sockets open", open);
        row("open failures", failures.describe());
        row("closed 4401 after the deadline", report.closed_4401);
        row(
            "closed otherwise / early / never",
            format!("{} / {} / {}", c.other, c.early, report.not_closed),
        );
        row(
            "close time after deadline",
            report.close_after_deadline.line(),
        );
        row(
            "probe upgrades during the storm",
            report.probes_during_storm.line(),
        );
        row("probe failures", probes_failed);
    }
    let ok = report.closed_4401 == open && failures.total() == 0 && probes_failed == 0;
    Ok(if ok { 0 } else { 1 })
}
