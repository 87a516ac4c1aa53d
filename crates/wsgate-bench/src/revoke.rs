//! `revoke` mode: how long a revocation takes to close the sockets it names.
//!
//! 1. Reads one token per subject from `--token-file` (each token's `sub`
//!    claim, decoded without verification, names its subject; subjects must
//!    be distinct) and opens `--per-subject` sockets with each at `--url`.
//!    Every socket is watched by its own task, which timestamps any close
//!    frame (or loss of the connection) the moment it is read.
//! 2. Revokes `--revocations` subjects (all by default, spread evenly over the
//!    file), **one at a time**: t0 → `POST /admin/v1/revoke {"sub": S}` at
//!    `--admin-url` (another node of the cluster, or the same one) → waits
//!    until every socket of S has received its close frame, bounded by
//!    `--timeout` from t0. Measured: the admin call's latency (t0 → end of
//!    the `200` answer), and the time from t0 to the subject's first and last
//!    close frame.
//! 3. After each revocation, `--echo-sample` sockets of subjects not revoked
//!    yet (a rotating sample) must echo a short message, and no socket of a
//!    subject not revoked may have been closed at all (every socket is
//!    watched, so this holds for all of them, not only the sample).
//!
//! With `--gateway-pid` (the node holding the sockets) and `--admin-pid`
//! (the node receiving the calls, when it is another process) the gateway's
//! CPU time per revocation is read from `/proc/PID/task/*/schedstat`
//! (nanoseconds, all threads), and the holding node's VmRSS before and after
//! the sockets were opened.
//!
//! Any socket that failed to open, a revoke answered other than `200`, a
//! revoked socket closed with another code than `--expect-code` (4403) or not
//! closed within `--timeout`, a socket of another subject closed, or a failed
//! echo makes the run exit with status 2: it measured the wrong thing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http::header::{HeaderValue, AUTHORIZATION, ORIGIN};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::{
    client_config, close_ws, fmt_counts, fmt_us, handshake, new_histogram, read_tokens, record,
    round3, row, status_map, ErrorTally, Failure, Handshake, HttpTarget, LatencySummary, OpenError,
    OpenFailures, Stop, Target, Ws,
};
use crate::http1;

const REVOKE_PATH: &str = "/admin/v1/revoke";

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// WebSocket URL of the node that holds the sockets, e.g.
    /// ws://127.0.0.1:18481/ws (loopback only).
    #[arg(long)]
    pub url: String,
    /// Admin listener of the node that receives the revocations, e.g.
    /// http://127.0.0.1:19491 (loopback only): another node of the cluster
    /// for the cross-node latency, or the same node.
    #[arg(long)]
    pub admin_url: String,
    /// Environment variable holding the admin token (sent as
    /// `Authorization: Bearer`).
    #[arg(long, default_value = "WSGATE_ADMIN_TOKEN")]
    pub admin_token_env: String,
    /// One token per subject, one per line; a token's `sub` claim names its
    /// subject. Subjects must be distinct.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Sockets opened with each token.
    #[arg(long, default_value_t = 1)]
    pub per_subject: usize,
    /// Subjects to revoke, one after the other, spread evenly over the token
    /// file (default: all of them, in file order).
    #[arg(long)]
    pub revocations: Option<usize>,
    /// After each revocation, this many sockets of subjects not revoked yet
    /// (rotating through them) must echo a short message. 0: no echo check.
    #[arg(long, default_value_t = 100)]
    pub echo_sample: usize,
    /// The close code a revoked socket must receive.
    #[arg(long, default_value_t = 4403)]
    pub expect_code: u16,
    /// Pause after each revocation (after its echo check).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub pause: Duration,
    /// Idle window, after all sockets are open and before the first
    /// revocation, over which the gateway's background CPU use is measured
    /// (with --gateway-pid), and after which its VmRSS is read.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub settle: Duration,
    /// With --gateway-pid/--admin-pid: a quiet pause before each revocation
    /// and after its last close frame, so that the gateways' threads are idle
    /// (their CPU counters are only brought up to date when a thread sleeps
    /// or is preempted) when the CPU time is read.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    pub cpu_quiet: Duration,
    /// Handshakes in flight at once while opening the sockets.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Timeout for each handshake, admin call, echo check and close, and for
    /// a revoked subject's close frames (counted from the revoke call).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Cap on the revocation phase: no revocation starts after it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub max_time: Duration,
    /// PID of the gateway that holds the sockets: its CPU time per
    /// revocation and its VmRSS are reported.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// PID of the gateway that receives the admin calls, when it is another
    /// process: its CPU time per revocation is reported too.
    #[arg(long)]
    pub admin_pid: Option<u32>,
    /// Origin header to send on the upgrades.
    #[arg(long)]
    pub origin: Option<String>,
}

/// A subject: its token and its sockets.
struct Subject {
    name: String,
    auth: HeaderValue,
    /// Set just before its revoke call is sent.
    revoked: Cell<bool>,
    sockets: RefCell<Vec<usize>>,
}

/// How a watched socket ended.
#[derive(Clone, Debug)]
struct End {
    at: Instant,
    /// The close frame's code; `None` when the connection ended without one.
    code: Option<u16>,
    detail: String,
    /// Whether its subject had been revoked when it ended.
    after_revoke: bool,
}

enum Cmd {
    /// Send this binary message; answer once it came back (or not).
    Echo(Bytes, oneshot::Sender<Result<(), Failure>>),
    /// Close from our side (end of the run).
    Close,
}

struct Sock {
    subject: usize,
    cmd: mpsc::UnboundedSender<Cmd>,
    end: RefCell<Option<End>>,
}

struct Shared {
    subjects: Vec<Subject>,
    socks: RefCell<Vec<Sock>>,
    /// Bumped whenever a socket ends.
    ended: watch::Sender<u64>,
    /// Ends of sockets whose subject was not revoked (should never happen).
    collateral: RefCell<ErrorTally>,
    frames_other: Cell<u64>,
}

impl Shared {
    fn note_end(&self, i: usize, code: Option<u16>, detail: String) {
        let socks = self.socks.borrow();
        let Some(s) = socks.get(i) else { return };
        if s.end.borrow().is_some() {
            return;
        }
        let after_revoke = self.subjects[s.subject].revoked.get();
        if !after_revoke {
            let what = code.map_or_else(|| "no close frame".to_string(), |c| format!("code {c}"));
            self.collateral.borrow_mut().add(Failure::new(
                format!("closed before its revocation: {what}"),
                format!(
                    "socket {i} of {} ended before its subject was revoked: {detail}",
                    self.subjects[s.subject].name
                ),
            ));
        }
        *s.end.borrow_mut() = Some(End {
            at: Instant::now(),
            code,
            detail,
            after_revoke,
        });
        drop(socks);
        self.ended.send_modify(|n| *n += 1);
    }

    fn is_open(&self, i: usize) -> bool {
        self.socks
            .borrow()
            .get(i)
            .is_some_and(|s| s.end.borrow().is_none())
    }

    fn subject_done(&self, s: usize) -> bool {
        let socks = self.socks.borrow();
        self.subjects[s]
            .sockets
            .borrow()
            .iter()
            .all(|&i| socks.get(i).is_none_or(|k| k.end.borrow().is_some()))
    }
}

#[derive(Default)]
struct Tally {
    revocations: u64,
    admin_status: BTreeMap<u16, u64>,
    /// `{"closed": n}` answers, by n.
    admin_closed: BTreeMap<u64, u64>,
    admin_errors: ErrorTally,
    close_codes: BTreeMap<String, u64>,
    revoked_sockets: u64,
    closed_4403: u64,
    wrong_code: u64,
    not_closed: u64,
    wrong_examples: BTreeMap<String, String>,
    echo_checked: u64,
    echo_ok: u64,
    echo_errors: ErrorTally,
}

#[derive(Serialize, Default)]
struct CpuReport {
    pid: u32,
    /// Background use measured over `--settle` with every socket open.
    background_cpu_us_per_s: f64,
    /// Per revocation: from `--cpu-quiet` before the call to `--cpu-quiet`
    /// after the last close frame and the answer (background included).
    cpu_us_per_revocation: LatencySummary,
    cpu_us_total: f64,
    /// The same total less the background rate over the revocations' windows.
    cpu_us_total_net_of_background: f64,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    admin_url: String,
    subjects: usize,
    per_subject: usize,
    sockets_requested: usize,
    sockets_open: usize,
    open_failed: u64,
    open_rejected: BTreeMap<String, u64>,
    open_errors: BTreeMap<String, u64>,
    open_error_examples: BTreeMap<String, String>,
    open_s: f64,
    revocations_requested: usize,
    revocations: u64,
    stopped_by: &'static str,
    admin_status: BTreeMap<String, u64>,
    admin_closed: BTreeMap<String, u64>,
    admin_connects: u64,
    admin_errors: BTreeMap<String, u64>,
    admin_error_examples: BTreeMap<String, String>,
    /// t0 → end of the admin call's answer.
    admin_latency_us: LatencySummary,
    /// t0 → the subject's first close frame.
    first_close_us: LatencySummary,
    /// t0 → the subject's last close frame: the revocation's latency.
    all_closed_us: LatencySummary,
    revoked_sockets: u64,
    closed_with_expected_code: u64,
    expected_code: u16,
    close_codes: BTreeMap<String, u64>,
    wrong_code: u64,
    not_closed_in_time: u64,
    failure_examples: BTreeMap<String, String>,
    collateral_closes: u64,
    collateral_examples: BTreeMap<String, String>,
    other_sockets_expected_open: usize,
    other_sockets_open_at_end: usize,
    echo_checked: u64,
    echo_ok: u64,
    echo_failed: u64,
    echo_errors: BTreeMap<String, u64>,
    echo_rtt_us: LatencySummary,
    frames_other: u64,
    revoke_phase_s: f64,
    gateway_rss_kib_before_open: Option<u64>,
    gateway_rss_kib_all_open: Option<u64>,
    gateway_rss_bytes_per_socket: Option<f64>,
    gateway_cpu: Option<CpuReport>,
    admin_node_cpu: Option<CpuReport>,
    ok: bool,
}

pub async fn run(args: RevokeArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    let target = Target::parse(&args.url)?;
    let admin = HttpTarget::parse(&args.admin_url)?;
    let admin_token = std::env::var(&args.admin_token_env)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!(
                "the admin token variable {} is unset or empty",
                args.admin_token_env
            )
        })?;
    if HeaderValue::from_str(&admin_token).is_err() {
        bail!("the admin token is not a valid header value");
    }
    if args.per_subject == 0 || args.open_concurrency == 0 {
        bail!("--per-subject and --open-concurrency must be at least 1");
    }
    let origin = args
        .origin
        .as_deref()
        .map(|o| HeaderValue::from_str(o).context("--origin is not a valid header value"))
        .transpose()?;
    let subjects = load_subjects(&args)?;
    let n_subjects = subjects.len();
    let n_revoke = args.revocations.unwrap_or(n_subjects);
    if n_revoke == 0 || n_revoke > n_subjects {
        bail!("--revocations must be between 1 and the number of subjects ({n_subjects})");
    }
    let n_sockets = n_subjects
        .checked_mul(args.per_subject)
        .context("too many sockets")?;
    let needed = n_sockets as u64 + 64;
    if nofile < needed {
        bail!(
            "{n_sockets} sockets need about {needed} file descriptors but RLIMIT_NOFILE is {nofile}; \
             raise the hard limit (ulimit -Hn) or open fewer sockets"
        );
    }
    for pid in [args.gateway_pid, args.admin_pid].into_iter().flatten() {
        if cpu_ns(pid).is_none() {
            bail!("cannot read /proc/{pid}/task/*/schedstat (is the gateway's pid right?)");
        }
    }
    let stop = Stop::new();
    stop.on_ctrl_c();

    let mut client = AdminClient::new(admin.clone(), admin_token);
    // Pre-flight: a wrong admin token or address fails here, before any
    // socket is opened.
    match timeout(
        args.timeout,
        client.call("GET", "/admin/v1/sessions?sub=-", None),
    )
    .await
    {
        Ok(Ok(r)) if r.status == 200 => {}
        Ok(Ok(r)) => bail!(
            "admin pre-flight GET /admin/v1/sessions at {} answered {}: {}",
            args.admin_url,
            r.status,
            r.body_snippet()
        ),
        Ok(Err(f)) => bail!("admin pre-flight at {}: {}", args.admin_url, f.detail),
        Err(_) => bail!("admin pre-flight at {} timed out", args.admin_url),
    }

    let rss_before = args.gateway_pid.and_then(rss_kib);
    let config = client_config(4096);
    eprintln!(
        "revoke: opening {n_sockets} sockets ({n_subjects} subjects × {}) at {} ({}), \
         then revoking {n_revoke} subjects one at a time at {}",
        args.per_subject, args.url, target.addr, args.admin_url
    );

    // Open: socket k belongs to subject k % n_subjects.
    let open_start = Instant::now();
    let mut last_progress = open_start;
    let mut opened: Vec<(usize, Box<Ws>)> = Vec::with_capacity(n_sockets);
    let mut failures = OpenFailures::default();
    {
        let subjects = &subjects;
        let target = &target;
        let origin = origin.as_ref();
        let limit = args.timeout;
        let mut results = futures_util::stream::iter(0..n_sockets)
            .map(|k| {
                let s = k % n_subjects;
                async move {
                    let r = open_one(target, &subjects[s].auth, origin, config, limit).await;
                    (s, r)
                }
            })
            .buffer_unordered(args.open_concurrency);
        while let Some((s, r)) = results.next().await {
            match r {
                Ok(ws) => opened.push((s, ws)),
                Err(e) => failures.add(e),
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                eprintln!(
                    "[{:>6.1}s] open={} failed={}",
                    open_start.elapsed().as_secs_f64(),
                    opened.len(),
                    failures.total()
                );
            }
            if stop.is_set() {
                break;
            }
        }
    }
    let open_s = open_start.elapsed().as_secs_f64();
    eprintln!(
        "revoke: {} open, {} failed in {open_s:.2}s{}",
        opened.len(),
        failures.total(),
        if failures.total() > 0 {
            format!(" ({})", failures.describe())
        } else {
            String::new()
        }
    );

    // Watch every socket.
    let (ended_tx, _) = watch::channel(0u64);
    let shared = Rc::new(Shared {
        subjects,
        socks: RefCell::new(Vec::with_capacity(opened.len())),
        ended: ended_tx,
        collateral: RefCell::new(ErrorTally::default()),
        frames_other: Cell::new(0),
    });
    let mut tasks = Vec::with_capacity(opened.len());
    for (s, ws) in opened {
        let (tx, rx) = mpsc::unbounded_channel();
        let i = {
            let mut socks = shared.socks.borrow_mut();
            socks.push(Sock {
                subject: s,
                cmd: tx,
                end: RefCell::new(None),
            });
            socks.len() - 1
        };
        shared.subjects[s].sockets.borrow_mut().push(i);
        tasks.push(tokio::task::spawn_local(watch_socket(
            shared.clone(),
            i,
            ws,
            rx,
            args.timeout,
        )));
    }
    let n_open = tasks.len();

    let mut tally = Tally::default();
    let mut admin_hist = new_histogram()?;
    let mut first_hist = new_histogram()?;
    let mut all_hist = new_histogram()?;
    let echo_hist = Rc::new(RefCell::new(new_histogram()?));
    let mut gw_cpu = args.gateway_pid.map(CpuMeter::new).transpose()?;
    let mut admin_cpu = args
        .admin_pid
        .filter(|p| Some(*p) != args.gateway_pid)
        .map(CpuMeter::new)
        .transpose()?;
    let mut rss_open = None;
    let mut stopped_by = "done";
    let phase_start = Instant::now();

    if failures.total() > 0 || n_open < n_sockets {
        stopped_by = "open failures";
    } else {
        // Settle, measuring the background CPU use of the idle sockets.
        let b0: Vec<Option<u64>> = [&gw_cpu, &admin_cpu]
            .iter()
            .map(|m| m.as_ref().and_then(|m| cpu_ns(m.pid)))
            .collect();
        let w0 = Instant::now();
        sleep(args.settle).await;
        let window = w0.elapsed();
        for (m, b) in [&mut gw_cpu, &mut admin_cpu].into_iter().zip(b0) {
            if let (Some(m), Some(b)) = (m.as_mut(), b) {
                m.set_background(b, window);
            }
        }
        rss_open = args.gateway_pid.and_then(rss_kib);
        if let (Some(a), Some(b)) = (rss_before, rss_open) {
            eprintln!(
                "revoke: gateway VmRSS {:.1} MiB before opening, {:.1} MiB with {n_open} sockets",
                a as f64 / 1024.0,
                b as f64 / 1024.0
            );
        }

        let order: Vec<usize> = (0..n_revoke).map(|k| k * n_subjects / n_revoke).collect();
        let cap = Instant::now() + args.max_time;
        let mut echo_cursor = 0usize;
        let mut last = Instant::now();
        for (k, &s) in order.iter().enumerate() {
            if stop.is_set() {
                stopped_by = "interrupted";
                break;
            }
            if Instant::now() >= cap {
                stopped_by = "max-time";
                break;
            }
            let sub = &shared.subjects[s];
            let measure_cpu = gw_cpu.is_some() || admin_cpu.is_some();
            if measure_cpu {
                sleep(args.cpu_quiet).await;
            }
            let w0 = Instant::now();
            let c0: Vec<Option<u64>> = [&gw_cpu, &admin_cpu]
                .iter()
                .map(|m| m.as_ref().and_then(|m| cpu_ns(m.pid)))
                .collect();
            sub.revoked.set(true);
            tally.revocations += 1;
            let body = serde_json::json!({ "sub": sub.name }).to_string();
            let mut t0 = Instant::now();
            let answer = timeout(args.timeout, client.revoke(&body, &mut t0)).await;
            let answered = Instant::now();
            match answer {
                Err(_) => {
                    client.conn = None;
                    tally.admin_errors.add(Failure::timeout("revoke"));
                }
                Ok(Err(f)) => tally.admin_errors.add(f),
                Ok(Ok(resp)) => {
                    *tally.admin_status.entry(resp.status).or_insert(0) += 1;
                    if resp.status != 200 {
                        tally.admin_errors.add(Failure::new(
                            format!("revoke: http {}", resp.status),
                            format!(
                                "revoke {}: {}: {}",
                                sub.name,
                                resp.status,
                                resp.body_snippet()
                            ),
                        ));
                    } else {
                        match closed_count(&resp.body) {
                            Some(n) => {
                                *tally.admin_closed.entry(n).or_insert(0) += 1;
                                admin_hist.saturating_record(micros(
                                    answered.saturating_duration_since(t0),
                                ));
                            }
                            None => tally.admin_errors.add(Failure::new(
                                "revoke: bad body",
                                format!("revoke: no \"closed\" count in {}", resp.body_snippet()),
                            )),
                        }
                    }
                }
            }
            // Every socket of the subject must get its close frame.
            let mut rx = shared.ended.subscribe();
            let _ = timeout_at(t0 + args.timeout, rx.wait_for(|_| shared.subject_done(s))).await;
            let (mut first, mut lastc) = (None::<Duration>, None::<Duration>);
            {
                let socks = shared.socks.borrow();
                for &i in sub.sockets.borrow().iter() {
                    tally.revoked_sockets += 1;
                    let end = socks.get(i).and_then(|k| k.end.borrow().clone());
                    let Some(end) = end else {
                        tally.not_closed += 1;
                        tally
                            .wrong_examples
                            .entry("not closed".into())
                            .or_insert_with(|| {
                                format!(
                                    "{}: a socket got no close frame within {}",
                                    sub.name,
                                    humantime::format_duration(args.timeout)
                                )
                            });
                        continue;
                    };
                    let label = end
                        .code
                        .map_or_else(|| "none".to_string(), |c| c.to_string());
                    *tally.close_codes.entry(label.clone()).or_insert(0) += 1;
                    if end.code != Some(args.expect_code) || !end.after_revoke {
                        tally.wrong_code += 1;
                        tally
                            .wrong_examples
                            .entry(format!("close {label}"))
                            .or_insert_with(|| format!("{}: {}", sub.name, end.detail));
                        continue;
                    }
                    tally.closed_4403 += 1;
                    let d = end.at.saturating_duration_since(t0);
                    first = Some(first.map_or(d, |f| f.min(d)));
                    lastc = Some(lastc.map_or(d, |l| l.max(d)));
                }
            }
            let all_ok = shared.subject_done(s)
                && sub.sockets.borrow().iter().all(|&i| {
                    shared.socks.borrow().get(i).is_some_and(|k| {
                        k.end
                            .borrow()
                            .as_ref()
                            .is_some_and(|e| e.code == Some(args.expect_code))
                    })
                });
            if let Some(f) = first {
                first_hist.saturating_record(micros(f));
            }
            if let (true, Some(l)) = (all_ok, lastc) {
                all_hist.saturating_record(micros(l));
            }
            if measure_cpu {
                sleep(args.cpu_quiet).await;
            }
            let window = w0.elapsed();
            for (m, c) in [&mut gw_cpu, &mut admin_cpu].into_iter().zip(c0) {
                if let (Some(m), Some(c)) = (m.as_mut(), c) {
                    m.add_revocation(c, window);
                }
            }

            if args.echo_sample > 0 {
                echo_check(
                    &shared,
                    &mut echo_cursor,
                    args.echo_sample,
                    k,
                    args.timeout,
                    &mut tally,
                    &echo_hist,
                )
                .await;
            }
            if last.elapsed() >= Duration::from_secs(1) || k + 1 == order.len() {
                last = Instant::now();
                eprintln!(
                    "[{:>6.1}s] revoked {}/{n_revoke}  last: admin {}  all closed {}  \
                     (errors: admin {}, not closed {}, wrong code {}, collateral {}, echo {})",
                    phase_start.elapsed().as_secs_f64(),
                    k + 1,
                    fmt_us(micros(answered.saturating_duration_since(t0))),
                    lastc.map_or_else(|| "-".to_string(), |l| fmt_us(micros(l))),
                    tally.admin_errors.total(),
                    tally.not_closed,
                    tally.wrong_code,
                    shared.collateral.borrow().total(),
                    tally.echo_errors.total()
                );
            }
            if !args.pause.is_zero() {
                sleep(args.pause).await;
            }
        }
    }
    let revoke_phase_s = phase_start.elapsed().as_secs_f64();

    // Sockets of subjects never revoked must all still be open.
    let (others_expected, others_open) = {
        let socks = shared.socks.borrow();
        let others: Vec<&Sock> = socks
            .iter()
            .filter(|k| !shared.subjects[k.subject].revoked.get())
            .collect();
        let open = others.iter().filter(|k| k.end.borrow().is_none()).count();
        (others.len(), open)
    };

    // Close everything still open, all at once, each bounded.
    eprintln!("revoke: closing {others_open} sockets…");
    for k in shared.socks.borrow().iter() {
        let _ = k.cmd.send(Cmd::Close);
    }
    for t in tasks {
        t.await?;
    }

    let collateral = shared.collateral.borrow();
    let sockets_open_total = n_open;
    let rss_per_socket = match (rss_before, rss_open) {
        (Some(a), Some(b)) if sockets_open_total > 0 => {
            Some(((b as f64 - a as f64) * 1024.0 / sockets_open_total as f64 * 10.0).round() / 10.0)
        }
        _ => None,
    };
    let echo_failed = tally.echo_errors.total();
    let admin_failed = tally.admin_errors.total();
    let complete = tally.revocations == n_revoke as u64;
    let ok = failures.total() == 0
        && n_open == n_sockets
        && complete
        && admin_failed == 0
        && tally.not_closed == 0
        && tally.wrong_code == 0
        && collateral.total() == 0
        && others_open == others_expected
        && echo_failed == 0;
    let mut failure_examples = tally.wrong_examples.clone();
    for (k, v) in &tally.admin_errors.examples {
        failure_examples.insert(format!("admin: {k}"), v.clone());
    }
    for (k, v) in &tally.echo_errors.examples {
        failure_examples.insert(format!("echo: {k}"), v.clone());
    }
    let report = Report {
        mode: "revoke",
        url: args.url.clone(),
        admin_url: args.admin_url.clone(),
        subjects: n_subjects,
        per_subject: args.per_subject,
        sockets_requested: n_sockets,
        sockets_open: n_open,
        open_failed: failures.total(),
        open_rejected: status_map(&failures.rejected),
        open_errors: failures.errors.counts.clone(),
        open_error_examples: failures.errors.examples.clone(),
        open_s: round3(open_s),
        revocations_requested: n_revoke,
        revocations: tally.revocations,
        stopped_by,
        admin_status: status_map(&tally.admin_status),
        admin_closed: tally
            .admin_closed
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        admin_connects: client.connects,
        admin_errors: tally.admin_errors.counts.clone(),
        admin_error_examples: tally.admin_errors.examples.clone(),
        admin_latency_us: LatencySummary::of(&admin_hist),
        first_close_us: LatencySummary::of(&first_hist),
        all_closed_us: LatencySummary::of(&all_hist),
        revoked_sockets: tally.revoked_sockets,
        closed_with_expected_code: tally.closed_4403,
        expected_code: args.expect_code,
        close_codes: tally.close_codes.clone(),
        wrong_code: tally.wrong_code,
        not_closed_in_time: tally.not_closed,
        failure_examples,
        collateral_closes: collateral.total(),
        collateral_examples: collateral.examples.clone(),
        other_sockets_expected_open: others_expected,
        other_sockets_open_at_end: others_open,
        echo_checked: tally.echo_checked,
        echo_ok: tally.echo_ok,
        echo_failed,
        echo_errors: tally.echo_errors.counts.clone(),
        echo_rtt_us: LatencySummary::of(&echo_hist.borrow()),
        frames_other: shared.frames_other.get(),
        revoke_phase_s: round3(revoke_phase_s),
        gateway_rss_kib_before_open: rss_before,
        gateway_rss_kib_all_open: rss_open,
        gateway_rss_bytes_per_socket: rss_per_socket,
        gateway_cpu: gw_cpu.map(CpuMeter::report),
        admin_node_cpu: admin_cpu.map(CpuMeter::report),
        ok,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report, &failures);
    }
    if !ok {
        eprintln!(
            "FAILED: open failures {}, revocations {}/{}, admin errors {}, not closed {}, \
             wrong code {}, collateral closes {}, other sockets open {}/{}, echo failures {}",
            report.open_failed,
            report.revocations,
            n_revoke,
            admin_failed,
            report.not_closed_in_time,
            report.wrong_code,
            report.collateral_closes,
            others_open,
            others_expected,
            echo_failed
        );
        return Ok(2);
    }
    Ok(0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Reads the token file and each token's subject; subjects must be distinct.
fn load_subjects(args: &RevokeArgs) -> anyhow::Result<Vec<Subject>> {
    let path = &args.token_file;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (lineno, token) in read_tokens(path)? {
        let where_ = || format!("{}:{lineno}", path.display());
        let sub = jwt_sub(&token)
            .with_context(|| format!("{}: cannot read a \"sub\" claim from the token", where_()))?;
        if !seen.insert(sub.clone()) {
            bail!(
                "{}: subject {sub:?} appears twice; revoking it would close both lines' sockets",
                where_()
            );
        }
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .with_context(|| format!("{}: token is not a valid header value", where_()))?;
        out.push(Subject {
            name: sub,
            auth,
            revoked: Cell::new(false),
            sockets: RefCell::new(Vec::new()),
        });
    }
    Ok(out)
}

/// The `sub` claim of a JWT, read without verifying anything (the tokens
/// are ours; the gateway verifies them).
fn jwt_sub(token: &str) -> Option<String> {
    let v = crate::common::jwt_payload(token)?;
    let sub = v.get("sub")?.as_str()?;
    (!sub.is_empty()).then(|| sub.to_string())
}

/// `{"closed": n}` from the revoke answer.
fn closed_count(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("closed")?.as_u64()
}

async fn open_one(
    target: &Target,
    auth: &HeaderValue,
    origin: Option<&HeaderValue>,
    config: WebSocketConfig,
    limit: Duration,
) -> Result<Box<Ws>, OpenError> {
    let mut req = target
        .uri
        .clone()
        .into_client_request()
        .map_err(|e| OpenError::Failed(Failure::from_ws("request", &e)))?;
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    if let Some(o) = origin {
        req.headers_mut().insert(ORIGIN, o.clone());
    }
    match timeout(limit, handshake(target, req, config)).await {
        Err(_) => Err(OpenError::Failed(Failure::timeout("handshake"))),
        Ok(Err(f)) => Err(OpenError::Failed(f)),
        Ok(Ok(Handshake::Rejected(status))) => Err(OpenError::Rejected(status)),
        Ok(Ok(Handshake::Accepted(ws))) => Ok(ws),
    }
}

/// One socket's watcher: timestamps how it ends, answers echo checks, and
/// closes it on request.
async fn watch_socket(
    shared: Rc<Shared>,
    i: usize,
    mut ws: Box<Ws>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    limit: Duration,
) {
    let mut pending: Option<(Bytes, oneshot::Sender<Result<(), Failure>>)> = None;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => {
                    let (code, detail) = match frame {
                        Some(f) => (u16::from(f.code), format!("close {}: {}", u16::from(f.code), f.reason)),
                        None => (1005, "close frame without a code".to_string()),
                    };
                    shared.note_end(i, Some(code), detail);
                    if let Some((_, reply)) = pending.take() {
                        let _ = reply.send(Err(Failure::new("closed", "closed while echoing")));
                    }
                    // Let tungstenite answer the close and see the EOF.
                    let _ = timeout(limit, async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
                Some(Ok(Message::Binary(b))) => match pending.take() {
                    Some((want, reply)) => {
                        let r = if b == want {
                            Ok(())
                        } else {
                            Err(Failure::new("mismatch", "the echo differs from the message sent"))
                        };
                        let _ = reply.send(r);
                    }
                    None => shared.frames_other.set(shared.frames_other.get() + 1),
                },
                Some(Ok(Message::Text(_))) => shared.frames_other.set(shared.frames_other.get() + 1),
                Some(Ok(_)) => {} // ping / pong
                Some(Err(e)) => {
                    let f = Failure::from_ws("recv", &e);
                    shared.note_end(i, None, f.detail);
                    if let Some((_, reply)) = pending.take() {
                        let _ = reply.send(Err(Failure::new("closed", "connection lost while echoing")));
                    }
                    return;
                }
                None => {
                    shared.note_end(i, None, "connection closed without a close frame".into());
                    return;
                }
            },
            cmd = rx.recv() => match cmd {
                Some(Cmd::Echo(payload, reply)) => {
                    match timeout(limit, ws.send(Message::Binary(payload.clone()))).await {
                        Ok(Ok(())) => pending = Some((payload, reply)),
                        Ok(Err(e)) => {
                            let _ = reply.send(Err(Failure::from_ws("echo: send", &e)));
                        }
                        Err(_) => {
                            let _ = reply.send(Err(Failure::timeout("echo: send")));
                        }
                    }
                }
                Some(Cmd::Close) | None => {
                    // Ours: not a server close, so not noted as an end.
                    let _ = timeout(limit, close_ws(&mut ws)).await;
                    return;
                }
            },
        }
    }
}

/// Echoes a short message on `n` open sockets of subjects not revoked yet,
/// rotating through them from `cursor`; all at once, bounded by `limit`.
async fn echo_check(
    shared: &Shared,
    cursor: &mut usize,
    n: usize,
    round: usize,
    limit: Duration,
    tally: &mut Tally,
    hist: &RefCell<Histogram<u64>>,
) {
    let mut waits = Vec::with_capacity(n);
    {
        let socks = shared.socks.borrow();
        let total = socks.len();
        let mut looked = 0;
        while waits.len() < n && looked < total {
            let i = *cursor % total;
            *cursor = (*cursor + 1) % total;
            looked += 1;
            let k = &socks[i];
            if shared.subjects[k.subject].revoked.get() || !shared.is_open(i) {
                continue;
            }
            let payload = Bytes::from(format!("revoke-echo {round} {i}"));
            let (tx, rx) = oneshot::channel();
            if k.cmd.send(Cmd::Echo(payload, tx)).is_ok() {
                waits.push(rx);
            }
        }
    }
    if waits.is_empty() {
        return;
    }
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let results = futures_util::future::join_all(waits.into_iter().map(|rx| async move {
        match timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r.map(|()| Instant::now()),
            Ok(Err(_)) => Err(Failure::new("socket gone", "the socket's task ended")),
            Err(_) => Err(Failure::timeout("echo")),
        }
    }))
    .await;
    for r in results {
        tally.echo_checked += 1;
        match r {
            Ok(at) => {
                tally.echo_ok += 1;
                record(hist, at.saturating_duration_since(t0));
            }
            Err(f) => tally.echo_errors.add(f),
        }
    }
}

/// A keep-alive HTTP/1.1 connection to the admin listener.
pub(crate) struct AdminClient {
    target: HttpTarget,
    token: String,
    conn: Option<(TcpStream, Vec<u8>)>,
    connects: u64,
}

impl AdminClient {
    /// A keep-alive client for the admin listener at `target`.
    pub(crate) fn new(target: HttpTarget, token: String) -> AdminClient {
        AdminClient {
            target,
            token,
            conn: None,
            connects: 0,
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\n",
            self.target.authority, self.token
        );
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => req.push_str("\r\n"),
        }
        req.into_bytes()
    }

    /// `POST /admin/v1/revoke`; sets `t0` just before the request is
    /// written (after connecting, when a connection had to be opened).
    async fn revoke(&mut self, body: &str, t0: &mut Instant) -> Result<http1::Response, Failure> {
        let req = self.request("POST", REVOKE_PATH, Some(body));
        self.exchange(&req, Some(t0)).await
    }

    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<http1::Response, Failure> {
        let req = self.request(method, path, body);
        self.exchange(&req, None).await
    }

    /// Sends one request and reads the answer; a reused connection found
    /// closed before any answer is replaced once.
    async fn exchange(
        &mut self,
        req: &[u8],
        mut t0: Option<&mut Instant>,
    ) -> Result<http1::Response, Failure> {
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let (mut stream, mut buf) = match self.conn.take() {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect(self.target.addr)
                        .await
                        .map_err(|e| Failure::from_io("admin: connect", &e))?;
                    let _ = s.set_nodelay(true);
                    self.connects += 1;
                    (s, Vec::with_capacity(4096))
                }
            };
            let stale = |e: &http1::Error| {
                reused
                    && attempt == 0
                    && matches!(e, http1::Error::ClosedBeforeResponse | http1::Error::Io(_))
            };
            if let Some(t) = t0.as_deref_mut() {
                *t = Instant::now();
            }
            if let Err(e) = stream.write_all(req).await {
                let e = http1::Error::Io(e);
                if stale(&e) {
                    continue;
                }
                return Err(admin_failure(&e));
            }
            match http1::read_response(&mut stream, &mut buf).await {
                Ok(resp) => {
                    if resp.keep_alive && buf.is_empty() {
                        self.conn = Some((stream, buf));
                    }
                    return Ok(resp);
                }
                Err(e) if stale(&e) => continue,
                Err(e) => return Err(admin_failure(&e)),
            }
        }
        Err(Failure::new(
            "admin: connection closed twice",
            "admin: the server closed the connection before answering, twice",
        ))
    }
}

fn admin_failure(e: &http1::Error) -> Failure {
    Failure::new(format!("admin: {}", e.category()), format!("admin: {e}"))
}

/// CPU time of all of a process's threads, in ns (`/proc/PID/task/*/schedstat`,
/// first field). Threads that exited are not counted.
fn cpu_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(ns);
            any = true;
        }
    }
    any.then_some(total)
}

/// VmRSS in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

struct CpuMeter {
    pid: u32,
    background_ns_per_s: f64,
    hist: Histogram<u64>,
    total_ns: u64,
    windows: Duration,
}

impl CpuMeter {
    fn new(pid: u32) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            background_ns_per_s: 0.0,
            hist: new_histogram()?,
            total_ns: 0,
            windows: Duration::ZERO,
        })
    }

    fn set_background(&mut self, before_ns: u64, window: Duration) {
        if let Some(after) = cpu_ns(self.pid) {
            let secs = window.as_secs_f64().max(1e-6);
            self.background_ns_per_s = after.saturating_sub(before_ns) as f64 / secs;
        }
    }

    fn add_revocation(&mut self, before_ns: u64, window: Duration) {
        if let Some(after) = cpu_ns(self.pid) {
            let d = after.saturating_sub(before_ns);
            self.total_ns = self.total_ns.saturating_add(d);
            self.windows += window;
            self.hist.saturating_record((d / 1000).max(1));
        }
    }

    fn report(self) -> CpuReport {
        let total_us = self.total_ns as f64 / 1e3;
        let background_us = self.background_ns_per_s * self.windows.as_secs_f64() / 1e3;
        CpuReport {
            pid: self.pid,
            background_cpu_us_per_s: (self.background_ns_per_s / 1e3).round(),
            cpu_us_per_revocation: LatencySummary::of(&self.hist),
            cpu_us_total: total_us.round(),
            cpu_us_total_net_of_background: (total_us - background_us).max(0.0).round(),
        }
    }
}

fn print_human(r: &Report, failures: &OpenFailures) {
    println!(
        "wsgate-bench revoke  sockets at {}, revocations at {}",
        r.url, r.admin_url
    );
    row(
        "sockets",
        format!(
            "{} open of {} ({} subjects × {}) in {:.3} s{}",
            r.sockets_open,
            r.sockets_requested,
            r.subjects,
            r.per_subject,
            r.open_s,
            if r.open_failed > 0 {
                format!("; {} failed: {}", r.open_failed, failures.describe())
            } else {
                String::new()
            }
        ),
    );
    for (cat, ex) in &r.open_error_examples {
        row("", format!("e.g. [{cat}] {ex}"));
    }
    row(
        "revocations",
        format!(
            "{} of {} (stopped by {}) in {:.3} s",
            r.revocations, r.revocations_requested, r.stopped_by, r.revoke_phase_s
        ),
    );
    row(
        "admin answers",
        format!(
            "status {}; closed on that node: {}; {} connects",
            if r.admin_status.is_empty() {
                "-".to_string()
            } else {
                fmt_counts(&r.admin_status)
            },
            if r.admin_closed.is_empty() {
                "-".to_string()
            } else {
                fmt_counts(&r.admin_closed)
            },
            r.admin_connects
        ),
    );
    row("admin call latency", r.admin_latency_us.line());
    row("t0 → first close", r.first_close_us.line());
    row("t0 → all closed", r.all_closed_us.line());
    row(
        "revoked sockets",
        format!(
            "{}: {} closed {}, {} other code, {} not closed in time; codes {}",
            r.revoked_sockets,
            r.closed_with_expected_code,
            r.expected_code,
            r.wrong_code,
            r.not_closed_in_time,
            if r.close_codes.is_empty() {
                "-".to_string()
            } else {
                fmt_counts(&r.close_codes)
            }
        ),
    );
    row(
        "other sockets",
        format!(
            "{} of {} still open at the end; {} closed before their revocation",
            r.other_sockets_open_at_end, r.other_sockets_expected_open, r.collateral_closes
        ),
    );
    for (cat, ex) in r.collateral_examples.iter().chain(&r.failure_examples) {
        row("", format!("e.g. [{cat}] {ex}"));
    }
    row(
        "echo checks",
        format!(
            "{} checked, {} ok, {} failed{}",
            r.echo_checked,
            r.echo_ok,
            r.echo_failed,
            if r.echo_errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", fmt_counts(&r.echo_errors))
            }
        ),
    );
    row("echo check latency", r.echo_rtt_us.line());
    if let (Some(a), Some(b)) = (r.gateway_rss_kib_before_open, r.gateway_rss_kib_all_open) {
        row(
            "gateway VmRSS",
            format!(
                "{:.1} MiB before, {:.1} MiB with {} sockets ({} bytes/socket)",
                a as f64 / 1024.0,
                b as f64 / 1024.0,
                r.sockets_open,
                r.gateway_rss_bytes_per_socket
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
            ),
        );
    }
    for (label, c) in [
        ("gateway CPU/revoke", &r.gateway_cpu),
        ("admin node CPU/revoke", &r.admin_node_cpu),
    ] {
        if let Some(c) = c {
            row(
                label,
                format!(
                    "pid {}: p50 {} p99 {} max {}; total {} ({} net of background {} µs/s)",
                    c.pid,
                    fmt_us(c.cpu_us_per_revocation.p50_us),
                    fmt_us(c.cpu_us_per_revocation.p99_us),
                    fmt_us(c.cpu_us_per_revocation.max_us),
                    fmt_us(c.cpu_us_total as u64),
                    fmt_us(c.cpu_us_total_net_of_background as u64),
                    c.background_cpu_us_per_s
                ),
            );
        }
    }
    row("result", if r.ok { "ok" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_from_token() {
        // {"sub":"bench-7","exp":1}
        let payload = "eyJzdWIiOiJiZW5jaC03IiwiZXhwIjoxfQ";
        assert_eq!(
            jwt_sub(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")).as_deref(),
            Some("bench-7")
        );
        assert_eq!(jwt_sub("not-a-jwt"), None);
        assert_eq!(jwt_sub("a.!!!.c"), None);
        // {"exp":1}: no sub
        assert_eq!(jwt_sub("a.eyJleHAiOjF9.c"), None);
    }

    #[test]
    fn closed_answer() {
        assert_eq!(closed_count(br#"{"closed":10}"#), Some(10));
        assert_eq!(closed_count(br#"{"closed":-1}"#), None);
        assert_eq!(closed_count(b"nope"), None);
    }

    #[test]
    fn admin_url_is_loopback_http_only() {
        assert!(HttpTarget::parse("http://127.0.0.1:19491").is_ok());
        assert!(HttpTarget::parse("http://127.0.0.1:19491/").is_ok());
        assert!(HttpTarget::parse("http://10.0.0.1:19491").is_err());
        assert!(HttpTarget::parse("https://127.0.0.1:19491").is_err());
        assert!(HttpTarget::parse("http://127.0.0.1:19491/admin").is_err());
        assert!(HttpTarget::parse("http://u:p@127.0.0.1:19491").is_err());
    }
}
