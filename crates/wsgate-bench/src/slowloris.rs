//! `slowloris` mode: keep N unfinished HTTP request heads pending at the
//! gateway, spread over many loopback source addresses. Each socket sends the
//! start of a `GET` head, then one more header byte every `--drip`; when the
//! gateway drops it (its `server.handshake_timeout` covers the whole head),
//! the socket is reopened, so about N are always pending. This is the
//! attacker's side of the "under attack" benchmark (issue 6).
//!
//! `--payload tls-hello` sends the first half of a TLS ClientHello record
//! instead (issue 28): the record header promises 512 bytes, 256 follow,
//! and each drip adds one more, so a TLS listener waits for the rest of a
//! record that never completes.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout, Instant};

use crate::common::{
    fmt_counts, new_histogram, parse_sources, record, round2, round3, row, stopped, ErrorTally,
    Failure, LatencySummary, Stop, Target,
};

#[derive(clap::Args, Debug)]
pub struct SlowlorisArgs {
    /// Target, e.g. ws://127.0.0.1:8080/ws (loopback only).
    #[arg(long)]
    pub url: String,
    /// Unfinished request heads to keep pending.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// How long to keep them pending once the ramp is complete.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub hold: Duration,
    /// Source addresses, loopback only: `A-B` (an IPv4 range), `A` or a
    /// comma-separated list of both. Sockets are spread round-robin.
    #[arg(long, default_value = "127.0.0.2-127.0.0.201")]
    pub sources: String,
    /// Most sockets per source address (the gateway caps unfinished heads per
    /// IP at limits.pending_handshakes_per_ip, 64 by default).
    #[arg(long, default_value_t = 50)]
    pub per_source: usize,
    /// One more header byte is sent on each socket this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub drip: Duration,
    /// New sockets started per second during the ramp.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_per_sec: f64,
    /// Timeout for each TCP connect and each write.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Write "open=N" to this file when the ramp is complete.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// What each socket sends: the start of an HTTP request head, or half
    /// a TLS ClientHello record (for a TLS listener).
    #[arg(long, value_enum, default_value_t = Payload::HttpHead)]
    pub payload: Payload,
    /// Wait this long before reopening a socket the gateway dropped (a
    /// gateway that refuses at once would otherwise see a reconnect loop).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub reopen_delay: Duration,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// `GET <path> HTTP/1.1`, `Host`, then an `X-Slow:` header never ended.
    HttpHead,
    /// Half a ClientHello record; drips stay inside the record.
    TlsHello,
}

/// The TLS record a `tls-hello` socket never finishes: a handshake record
/// of this many bytes, of which [`TLS_HELLO_SENT`] are sent at once.
const TLS_RECORD_LEN: usize = 512;
const TLS_HELLO_SENT: usize = TLS_RECORD_LEN / 2;

/// The record header and the first half of a ClientHello body: handshake
/// type 1 with its length, legacy version 3,3, a random, an empty session
/// id and the start of a cipher-suite list. A TLS server buffers a record
/// until it is complete before it parses any of it.
fn half_client_hello() -> Vec<u8> {
    let record = TLS_RECORD_LEN as u16;
    let body = (TLS_RECORD_LEN - 4) as u32;
    let mut h = vec![0x16, 0x03, 0x01];
    h.extend_from_slice(&record.to_be_bytes());
    h.push(0x01);
    h.extend_from_slice(&body.to_be_bytes()[1..]);
    h.extend_from_slice(&[0x03, 0x03]);
    h.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    h.push(0);
    h.extend_from_slice(&[0x00, 0x40]);
    // TLS_AES_128_GCM_SHA256, repeated: any bytes do, the record never ends.
    while h.len() < 5 + TLS_HELLO_SENT {
        h.extend_from_slice(&[0x13, 0x01]);
    }
    h.truncate(5 + TLS_HELLO_SENT);
    h
}

#[derive(Default)]
struct State {
    open: Cell<usize>,
    connects: Cell<u64>,
    reopens: Cell<u64>,
    /// Sockets the gateway ended: EOF, reset, or an HTTP answer.
    dropped_eof: Cell<u64>,
    dropped_reset: Cell<u64>,
    answered: Cell<u64>,
    bytes_dripped: Cell<u64>,
    errors: RefCell<ErrorTally>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    url: String,
    connections_requested: usize,
    payload: Payload,
    sources: usize,
    max_per_source: usize,
    drip_s: f64,
    open_at_ready: usize,
    mean_open_during_hold: f64,
    min_open_during_hold: usize,
    max_open_during_hold: usize,
    connects: u64,
    reopen_cycles: u64,
    reopen_cycles_during_hold: u64,
    dropped_eof: u64,
    dropped_reset: u64,
    answered_by_server: u64,
    /// First bytes of one answer, when the server answered instead of closing.
    answer_example: Option<String>,
    bytes_dripped: u64,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    /// How long the gateway kept a socket before dropping it.
    held_by_server_us: LatencySummary,
    ramp_s: f64,
    hold_s: f64,
    nofile_limit: u64,
    ok: bool,
}

pub async fn run(args: SlowlorisArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    let target = Target::parse(&args.url)?;
    if !target.addr.is_ipv4() {
        bail!("slowloris needs an IPv4 target (its sources are 127.x.y.z)");
    }
    let sources = parse_sources(&args.sources)?;
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.per_source == 0 {
        bail!("--per-source must be at least 1");
    }
    let per_source = args.connections.div_ceil(sources.len());
    if per_source > args.per_source {
        bail!(
            "--connections {} over {} source addresses is {per_source} per source, more than \
             --per-source {}; give more --sources",
            args.connections,
            sources.len(),
            args.per_source
        );
    }
    if !(args.ramp_per_sec.is_finite() && args.ramp_per_sec > 0.0) {
        bail!("--ramp-per-sec must be a positive number");
    }
    if args.drip.is_zero() {
        bail!("--drip must be greater than 0");
    }
    let needed = args.connections as u64 + 64;
    if nofile < needed {
        bail!(
            "--connections {} needs about {needed} file descriptors but RLIMIT_NOFILE is {nofile}; \
             raise the hard limit (ulimit -Hn) or open fewer sockets",
            args.connections
        );
    }
    let path = target
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = target
        .uri
        .authority()
        .map_or_else(|| target.addr.to_string(), |a| a.as_str().to_string());
    // The head never ends: the last header line is left open, and each drip
    // adds one byte to its value.
    let prefix: Rc<[u8]> = match args.payload {
        Payload::HttpHead => format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nX-Slow: ")
            .into_bytes()
            .into(),
        Payload::TlsHello => half_client_hello().into(),
    };
    // A drip must not complete the ClientHello record.
    let max_drips = match args.payload {
        Payload::HttpHead => u64::MAX,
        Payload::TlsHello => (TLS_RECORD_LEN - TLS_HELLO_SENT - 1) as u64,
    };

    let stop = Stop::new();
    stop.on_ctrl_c();
    let state = Rc::new(State::default());
    let hist = Rc::new(RefCell::new(new_histogram()?));
    let answer_example: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));

    eprintln!(
        "slowloris: {} ({}) keeping {} {} pending from {} sources \
         (≤ {per_source} each), one byte every {}, ramp {}/s, then holding {}",
        args.url,
        target.addr,
        args.connections,
        match args.payload {
            Payload::HttpHead => "request heads",
            Payload::TlsHello => "TLS ClientHellos",
        },
        sources.len(),
        humantime::format_duration(args.drip),
        args.ramp_per_sec,
        humantime::format_duration(args.hold)
    );

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    while tasks.len() < args.connections && !stop.is_set() {
        let due = ((start.elapsed().as_secs_f64() * args.ramp_per_sec) as usize + 1)
            .min(args.connections);
        while tasks.len() < due {
            let slot = Slot {
                target: target.addr,
                source: sources[tasks.len() % sources.len()],
                prefix: prefix.clone(),
                drip: args.drip,
                max_drips,
                reopen_delay: args.reopen_delay,
                timeout: args.timeout,
                stop: stop.clone(),
                state: state.clone(),
                hist: hist.clone(),
                answer_example: answer_example.clone(),
            };
            tasks.push(tokio::task::spawn_local(slot.run()));
        }
        sleep(Duration::from_millis(5)).await;
    }
    // Give the last connects a moment.
    let settle = Instant::now();
    while state.open.get() < args.connections
        && settle.elapsed() < Duration::from_secs(2)
        && !stop.is_set()
    {
        sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = start.elapsed().as_secs_f64();
    let open_at_ready = state.open.get();
    let reopens_at_ready = state.reopens.get();
    eprintln!("READY open={open_at_ready}");
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("open={open_at_ready}\n"))
            .with_context(|| format!("cannot write {}", f.display()))?;
    }

    // Hold, sampling the open count every 100 ms.
    let hold_start = Instant::now();
    let mut samples = 0u64;
    let mut sum = 0u64;
    let (mut min_open, mut max_open) = (usize::MAX, 0usize);
    let mut last_print = hold_start;
    let mut rx = stop.subscribe();
    while hold_start.elapsed() < args.hold && !stop.is_set() {
        tokio::select! {
            _ = sleep(Duration::from_millis(100)) => {}
            _ = stopped(&mut rx) => break,
        }
        let open = state.open.get();
        samples += 1;
        sum += open as u64;
        min_open = min_open.min(open);
        max_open = max_open.max(open);
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "  {:>5.1}s open {open}  reopen cycles {}",
                hold_start.elapsed().as_secs_f64(),
                state.reopens.get()
            );
        }
    }
    let hold_s = hold_start.elapsed().as_secs_f64();
    let reopens_during_hold = state.reopens.get() - reopens_at_ready;
    stop.fire();
    for t in tasks {
        let _ = t.await;
    }

    let mean_open = if samples == 0 {
        0.0
    } else {
        sum as f64 / samples as f64
    };
    if samples == 0 {
        min_open = 0;
    }
    // Measured the wrong thing if fewer than 90% were pending on average.
    let ok = mean_open >= 0.9 * args.connections as f64;
    let errors = state.errors.take();
    let report = Report {
        mode: "slowloris",
        url: args.url.clone(),
        connections_requested: args.connections,
        payload: args.payload,
        sources: sources.len(),
        max_per_source: per_source,
        drip_s: args.drip.as_secs_f64(),
        open_at_ready,
        mean_open_during_hold: round2(mean_open),
        min_open_during_hold: min_open,
        max_open_during_hold: max_open,
        connects: state.connects.get(),
        reopen_cycles: state.reopens.get(),
        reopen_cycles_during_hold: reopens_during_hold,
        dropped_eof: state.dropped_eof.get(),
        dropped_reset: state.dropped_reset.get(),
        answered_by_server: state.answered.get(),
        answer_example: answer_example.take(),
        bytes_dripped: state.bytes_dripped.get(),
        errors_total: errors.total(),
        errors: errors.counts.clone(),
        error_examples: errors.examples.clone(),
        held_by_server_us: LatencySummary::of(&hist.borrow()),
        ramp_s: round3(ramp_s),
        hold_s: round3(hold_s),
        nofile_limit: nofile,
        ok,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    if !ok {
        eprintln!(
            "slowloris: only {:.0} of {} sockets were pending on average during the hold",
            mean_open, args.connections
        );
        return Ok(2);
    }
    Ok(0)
}

fn print_human(r: &Report) {
    println!("wsgate-bench slowloris  {}", r.url);
    row(
        "requested",
        format!(
            "{} sockets from {} sources (≤ {} each), drip every {} s, payload {:?}",
            r.connections_requested, r.sources, r.max_per_source, r.drip_s, r.payload
        ),
    );
    row("open at ready", r.open_at_ready);
    row(
        "open during hold",
        format!(
            "mean {:.1}  min {}  max {}  ({:.1} s)",
            r.mean_open_during_hold, r.min_open_during_hold, r.max_open_during_hold, r.hold_s
        ),
    );
    row(
        "reopen cycles",
        format!(
            "{} ({} during the hold); connects {}",
            r.reopen_cycles, r.reopen_cycles_during_hold, r.connects
        ),
    );
    row(
        "dropped by server",
        format!(
            "EOF {}  reset {}  answered {}",
            r.dropped_eof, r.dropped_reset, r.answered_by_server
        ),
    );
    if let Some(a) = &r.answer_example {
        row("answer example", a);
    }
    row("held by server", r.held_by_server_us.line());
    row("bytes dripped", r.bytes_dripped);
    if r.errors_total > 0 {
        row("errors", fmt_counts(&r.errors));
        for (k, v) in &r.error_examples {
            row("", format!("{k}: {v}"));
        }
    }
    row("ramp", format!("{:.3} s", r.ramp_s));
}

/// One of the N pending sockets: connect, send the start of a head, drip,
/// and reopen whenever the server drops it.
struct Slot {
    target: SocketAddr,
    source: IpAddr,
    prefix: Rc<[u8]>,
    drip: Duration,
    /// Drips per socket at most (the TLS record must stay unfinished).
    max_drips: u64,
    reopen_delay: Duration,
    timeout: Duration,
    stop: Stop,
    state: Rc<State>,
    hist: Rc<RefCell<Histogram>>,
    answer_example: Rc<RefCell<Option<String>>>,
}

type Histogram = hdrhistogram::Histogram<u64>;

enum End {
    Stopped,
    Dropped,
}

impl Slot {
    async fn run(self) {
        let mut rx = self.stop.subscribe();
        let mut first = true;
        while !self.stop.is_set() {
            if !first {
                self.state.reopens.set(self.state.reopens.get() + 1);
            }
            first = false;
            let stream = tokio::select! {
                r = timeout(self.timeout, self.connect()) => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(f)) => { self.fail(f, &mut rx).await; continue; }
                    Err(_) => { self.fail(Failure::timeout("connect"), &mut rx).await; continue; }
                },
                _ = stopped(&mut rx) => return,
            };
            self.state.connects.set(self.state.connects.get() + 1);
            match self.hold(stream, &mut rx).await {
                Ok(End::Stopped) => return,
                Ok(End::Dropped) if !self.reopen_delay.is_zero() => {
                    tokio::select! {
                        _ = sleep(self.reopen_delay) => {}
                        _ = stopped(&mut rx) => return,
                    }
                }
                Ok(End::Dropped) => {}
                Err(f) => self.fail(f, &mut rx).await,
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        let socket = TcpSocket::new_v4().map_err(|e| Failure::from_io("socket", &e))?;
        socket
            .bind(SocketAddr::new(self.source, 0))
            .map_err(|e| Failure::from_io("bind", &e))?;
        let stream = socket
            .connect(self.target)
            .await
            .map_err(|e| Failure::from_io("connect", &e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Counts a failure and backs off a little, so a refusing server does not
    /// turn the loop into a busy one.
    async fn fail(&self, f: Failure, rx: &mut tokio::sync::watch::Receiver<bool>) {
        self.state.errors.borrow_mut().add(f);
        tokio::select! {
            _ = sleep(Duration::from_millis(200)) => {}
            _ = stopped(rx) => {}
        }
    }

    async fn hold(
        &self,
        mut stream: TcpStream,
        rx: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<End, Failure> {
        match timeout(self.timeout, stream.write_all(&self.prefix)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::from_io("write", &e)),
            Err(_) => return Err(Failure::timeout("write")),
        }
        let opened = Instant::now();
        self.state.open.set(self.state.open.get() + 1);
        let end = self.drip_until_dropped(&mut stream, rx).await;
        self.state.open.set(self.state.open.get() - 1);
        if matches!(end, End::Dropped) {
            record(&self.hist, opened.elapsed());
        }
        Ok(end)
    }

    async fn drip_until_dropped(
        &self,
        stream: &mut TcpStream,
        rx: &mut tokio::sync::watch::Receiver<bool>,
    ) -> End {
        let mut buf = [0u8; 256];
        let mut next = Instant::now() + self.drip;
        let mut drips = 0u64;
        loop {
            tokio::select! {
                _ = stopped(rx) => return End::Stopped,
                r = stream.read(&mut buf) => {
                    match r {
                        Ok(0) => self.state.dropped_eof.set(self.state.dropped_eof.get() + 1),
                        Ok(n) => {
                            self.state.answered.set(self.state.answered.get() + 1);
                            let mut ex = self.answer_example.borrow_mut();
                            if ex.is_none() {
                                let line = String::from_utf8_lossy(&buf[..n.min(64)]);
                                *ex = Some(line.lines().next().unwrap_or_default().to_string());
                            }
                        }
                        Err(_) => self.state.dropped_reset.set(self.state.dropped_reset.get() + 1),
                    }
                    return End::Dropped;
                }
                _ = tokio::time::sleep_until(next), if drips < self.max_drips => {
                    next += self.drip;
                    drips += 1;
                    // A write to a socket the server closed may still succeed
                    // (the reset comes later); the read above sees the end.
                    match timeout(self.timeout, stream.write_all(b"a")).await {
                        Ok(Ok(())) => self.state.bytes_dripped.set(self.state.bytes_dripped.get() + 1),
                        Ok(Err(_)) | Err(_) => {
                            self.state.dropped_reset.set(self.state.dropped_reset.get() + 1);
                            return End::Dropped;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_ranges() {
        let s = parse_sources("127.0.0.2-127.0.0.4, 127.1.0.1").unwrap_or_default();
        assert_eq!(
            s,
            ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.1.0.1"]
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            parse_sources("127.0.0.255-127.0.1.1").map(|v| v.len()).ok(),
            Some(3)
        );
    }

    #[test]
    fn half_client_hello_is_an_unfinished_record() {
        let h = half_client_hello();
        assert_eq!(h.len(), 5 + TLS_HELLO_SENT);
        // Handshake record, TLS 1.0 record version, the promised length.
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(
            usize::from(u16::from_be_bytes([h[3], h[4]])),
            TLS_RECORD_LEN
        );
        // A ClientHello whose length fills the record.
        assert_eq!(h[5], 0x01);
        assert_eq!(
            u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize,
            TLS_RECORD_LEN - 4
        );
    }

    #[test]
    fn refuses_non_loopback_sources() {
        for spec in [
            "10.0.0.1",
            "127.255.255.255-128.0.0.1",
            "127.0.0.9-127.0.0.1",
            "",
            "x",
        ] {
            assert!(parse_sources(spec).is_err(), "{spec} should be refused");
        }
    }
}
