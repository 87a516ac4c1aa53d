//! `idle` mode: ramp up N authenticated sockets, hold them open (reading and
//! discarding frames; tungstenite answers pings while the stream is polled),
//! then close them all. Used to measure the gateway's memory per idle socket.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    client_config, close_ws, new_histogram, open_ws_from, record, round3, row, status_map, stopped,
    Auth, Failure, LatencySummary, OpenError, OpenFailures, Stop, Target, Transport,
};
use crate::tls::TlsArgs;
use crate::tokens::TokenArgs;

#[derive(clap::Args, Debug)]
pub struct IdleArgs {
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
    /// Number of sockets to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// How long to hold them once the ramp is complete.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub hold: Duration,
    /// Loopback source addresses, rotated per socket: `127.1.0.1-127.1.3.255`,
    /// commas allowed. Thousands of sockets from one address reuse the
    /// 4-tuples of a previous run's TIME_WAIT sockets, and some SYNs then
    /// wait out a retransmission (1 s, 3 s, ...).
    #[arg(long)]
    pub sources: Option<String>,
    /// New connection attempts started per second.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_per_sec: f64,
    /// Timeout for each handshake and each close.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Before idling, each socket sends one binary message of this many
    /// bytes and waits for its echo (0: none): what a socket keeps after
    /// one large message.
    #[arg(long, default_value_t = 0)]
    pub send_bytes: usize,
    /// Write "open=N failed=M" to this file when the ramp is complete (so a
    /// script knows when to read the gateway's RSS).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    pending: Cell<usize>,
    open: Cell<usize>,
    opened: Cell<usize>,
    dropped: Cell<usize>,
    frames: Cell<u64>,
    close_failed: Cell<usize>,
    failures: RefCell<OpenFailures>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    transport: Transport,
    connections_requested: usize,
    opened: usize,
    open_failed: u64,
    open_rejected: BTreeMap<String, u64>,
    open_errors: BTreeMap<String, u64>,
    open_error_examples: BTreeMap<String, String>,
    open_at_ready: usize,
    min_open_during_hold: usize,
    open_at_end_of_hold: usize,
    dropped_by_server: usize,
    frames_received: u64,
    close_failed: usize,
    ramp_s: f64,
    hold_s: f64,
    close_s: f64,
    handshake_us: LatencySummary,
    nofile_limit: u64,
}

pub async fn run(args: IdleArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    let target = Target::parse_with(&args.url, Some(&args.tls))?;
    let auth = Rc::new(Auth::new(
        args.transport,
        &args.tokens,
        args.origin.as_deref(),
    )?);
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.ramp_per_sec.is_finite() && args.ramp_per_sec > 0.0) {
        bail!("--ramp-per-sec must be a positive number");
    }
    let needed = args.connections as u64 + 64;
    if nofile < needed {
        bail!(
            "--connections {} needs about {needed} file descriptors but RLIMIT_NOFILE is {nofile}; \
             raise the hard limit (ulimit -Hn) or open fewer sockets",
            args.connections
        );
    }
    let stop = Stop::new();
    stop.on_ctrl_c();
    let state = Rc::new(State::default());
    let hist = Rc::new(RefCell::new(new_histogram()?));
    let config = client_config(4096);
    let sources: Vec<std::net::IpAddr> = match &args.sources {
        Some(spec) => crate::common::parse_sources(spec)?,
        None => Vec::new(),
    };

    eprintln!(
        "idle: {} ({}) opening {} sockets at {}/s, then holding {}",
        args.url,
        target.addr,
        args.connections,
        args.ramp_per_sec,
        humantime::format_duration(args.hold)
    );

    // Ramp: start attempts at the requested rate; each task opens its socket
    // and then idles until the stop signal.
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    let mut last_report = start;
    while tasks.len() < args.connections && !stop.is_set() {
        let due = ((start.elapsed().as_secs_f64() * args.ramp_per_sec) as usize + 1)
            .min(args.connections);
        while tasks.len() < due {
            let source = (!sources.is_empty()).then(|| sources[tasks.len() % sources.len()]);
            let c = IdleConn {
                target: target.clone(),
                source,
                auth: auth.clone(),
                config,
                timeout: args.timeout,
                stop: stop.clone(),
                state: state.clone(),
                hist: hist.clone(),
                send_bytes: args.send_bytes,
            };
            state.pending.set(state.pending.get() + 1);
            tasks.push(tokio::task::spawn_local(c.run()));
        }
        progress(&state, start, &mut last_report, false);
        sleep(Duration::from_millis(5)).await;
    }
    // Let the last handshakes finish (each is bounded by --timeout).
    while state.pending.get() > 0 && !stop.is_set() {
        progress(&state, start, &mut last_report, false);
        sleep(Duration::from_millis(10)).await;
    }
    let ramp = start.elapsed();
    let open_at_ready = state.open.get();
    let failed_at_ready = state.failures.borrow().total();
    eprintln!(
        "READY open={open_at_ready} failed={failed_at_ready} ramp={:.2}s; holding {}",
        ramp.as_secs_f64(),
        humantime::format_duration(args.hold)
    );
    if let Some(path) = &args.ready_file {
        std::fs::write(
            path,
            format!("open={open_at_ready} failed={failed_at_ready}\n"),
        )
        .with_context(|| format!("cannot write --ready-file {}", path.display()))?;
    }

    // Hold.
    let hold_start = Instant::now();
    let hold_end = hold_start + args.hold;
    let mut min_open = open_at_ready;
    let mut stop_rx = stop.subscribe();
    while Instant::now() < hold_end {
        let step = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            _ = stopped(&mut stop_rx) => break,
            _ = tokio::time::sleep_until(step.min(hold_end)) => {}
        }
        min_open = min_open.min(state.open.get());
        progress(&state, start, &mut last_report, true);
    }
    min_open = min_open.min(state.open.get());
    let held = hold_start.elapsed();
    let open_at_end = state.open.get();

    // Close everything.
    eprintln!("closing {open_at_end} sockets…");
    let close_start = Instant::now();
    stop.fire();
    for t in tasks {
        t.await?;
    }
    let close_elapsed = close_start.elapsed();

    let failures = state.failures.borrow();
    let report = Report {
        mode: "idle",
        url: args.url.clone(),
        transport: args.transport,
        connections_requested: args.connections,
        opened: state.opened.get(),
        open_failed: failures.total(),
        open_rejected: status_map(&failures.rejected),
        open_errors: failures.errors.counts.clone(),
        open_error_examples: failures.errors.examples.clone(),
        open_at_ready,
        min_open_during_hold: min_open,
        open_at_end_of_hold: open_at_end,
        dropped_by_server: state.dropped.get(),
        frames_received: state.frames.get(),
        close_failed: state.close_failed.get(),
        ramp_s: round3(ramp.as_secs_f64()),
        hold_s: round3(held.as_secs_f64()),
        close_s: round3(close_elapsed.as_secs_f64()),
        handshake_us: LatencySummary::of(&hist.borrow()),
        nofile_limit: nofile,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("wsgate-bench idle  {}", report.url);
        row("requested", report.connections_requested);
        row("opened", report.opened);
        if report.open_failed > 0 {
            row(
                "open failed",
                format!("{}  ({})", report.open_failed, failures.describe()),
            );
            for (cat, ex) in &report.open_error_examples {
                row("", format!("e.g. [{cat}] {ex}"));
            }
        } else {
            row("open failed", 0);
        }
        row("open at ready", report.open_at_ready);
        row("min open during hold", report.min_open_during_hold);
        row("open at end of hold", report.open_at_end_of_hold);
        row("dropped by server", report.dropped_by_server);
        row("frames received", report.frames_received);
        row("close failed", report.close_failed);
        row("ramp", format!("{:.3} s", report.ramp_s));
        row("hold", format!("{:.3} s", report.hold_s));
        row("close", format!("{:.3} s", report.close_s));
        row("handshake latency", report.handshake_us.line());
        row("RLIMIT_NOFILE", report.nofile_limit);
    }
    // A memory-per-socket figure is only meaningful if every socket stayed open.
    if report.open_at_ready < args.connections || report.dropped_by_server > 0 {
        eprintln!(
            "incomplete: {} of {} sockets open at ready, {} dropped by the server during the hold",
            report.open_at_ready, args.connections, report.dropped_by_server
        );
        return Ok(2);
    }
    Ok(0)
}

fn progress(state: &State, start: Instant, last: &mut Instant, force: bool) {
    if !force && last.elapsed() < Duration::from_secs(1) {
        return;
    }
    *last = Instant::now();
    eprintln!(
        "[{:>7.1}s] open={} pending={} failed={} dropped={}",
        start.elapsed().as_secs_f64(),
        state.open.get(),
        state.pending.get(),
        state.failures.borrow().total(),
        state.dropped.get()
    );
}

struct IdleConn {
    target: Target,
    source: Option<std::net::IpAddr>,
    auth: Rc<Auth>,
    config: WebSocketConfig,
    timeout: Duration,
    stop: Stop,
    state: Rc<State>,
    hist: Rc<RefCell<Histogram<u64>>>,
    send_bytes: usize,
}

impl IdleConn {
    /// Sends one `send_bytes` binary message and waits for a message back.
    async fn echo_once<S>(&self, ws: &mut tokio_tungstenite::WebSocketStream<S>) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let msg = Message::Binary(vec![0x5a; self.send_bytes].into());
        let exchange = async {
            ws.send(msg).await.ok()?;
            loop {
                match ws.next().await? {
                    Ok(Message::Binary(b)) => return Some(b.len()),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        };
        timeout(self.timeout, exchange).await.ok().flatten() == Some(self.send_bytes)
    }

    async fn run(self) {
        let t0 = Instant::now();
        let opened = open_ws_from(
            &self.target,
            self.source,
            &self.auth,
            self.config,
            self.timeout,
        )
        .await;
        let st = &self.state;
        let mut ws = match opened {
            Ok(ws) => ws,
            Err(e) => {
                st.pending.set(st.pending.get() - 1);
                st.failures.borrow_mut().add(e);
                return;
            }
        };
        // Ready only once the echo is back, so the memory read sees it done.
        if self.send_bytes > 0 && !self.echo_once(&mut ws).await {
            st.pending.set(st.pending.get() - 1);
            st.failures.borrow_mut().add(OpenError::Failed(Failure::new(
                "echo",
                "no echo of the --send-bytes message",
            )));
            return;
        }
        st.pending.set(st.pending.get() - 1);
        record(&self.hist, t0.elapsed());
        st.open.set(st.open.get() + 1);
        st.opened.set(st.opened.get() + 1);

        let mut stop_rx = self.stop.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop_rx) => {
                    match timeout(self.timeout, close_ws(&mut ws)).await {
                        Ok(Ok(())) => {}
                        _ => st.close_failed.set(st.close_failed.get() + 1),
                    }
                    st.open.set(st.open.get() - 1);
                    return;
                }
                msg = ws.next() => match msg {
                    Some(Ok(_)) => st.frames.set(st.frames.get() + 1),
                    Some(Err(_)) | None => {
                        st.open.set(st.open.get() - 1);
                        st.dropped.set(st.dropped.get() + 1);
                        return;
                    }
                },
            }
        }
    }
}
