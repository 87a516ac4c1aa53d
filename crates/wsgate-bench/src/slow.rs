//! `slow-consumers` mode: the attacker's side of the slow-consumer
//! benchmark (issue 28). N "sloth" sockets with a 4 KiB receive buffer
//! never read what the gateway sends them:
//!
//! - `--backend hub`: each sloth subscribes to its own channel
//!   (`{prefix}{i}`, or all to `{prefix}0` with `--shared-channel`), then
//!   reads nothing; `--publishers` sockets publish `--size`-byte messages
//!   round-robin over those channels at `--rate` messages/s in total,
//!   reading their acks;
//! - `--backend echo`: each sloth sends `--size`-byte binary messages (its
//!   share of `--rate`) and reads nothing, so every echo waits on it.
//!
//! A sloth is dropped and replaced after `--hold`, as an attacker would
//! replace those the gateway closed, so about N are stalled at any time.
//! The gateway's memory is measured from outside (bench-slow.sh reads its
//! /proc status); this reports what was sent and opened.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    client_config, open_ws, row, Auth, Failure, OpenError, Stop, Target, Transport, Ws,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Hub,
    Echo,
}

#[derive(clap::Args, Debug)]
pub struct SlowArgs {
    /// Gateway WebSocket URL, e.g. ws://127.0.0.1:18580/ws (loopback only).
    #[arg(long)]
    pub url: String,
    /// File with one token per line; sockets rotate through them.
    #[arg(long)]
    pub token_file: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::Hub)]
    pub backend: Backend,
    /// Sloth sockets kept stalled.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 900_000)]
    pub size: usize,
    /// Messages per second, all publishers (hub) or all sloths (echo) together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Publishing sockets (hub).
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Every sloth subscribes to one channel instead of its own.
    #[arg(long)]
    pub shared_channel: bool,
    /// Channel name prefix (the gateway must grant subscribe and publish).
    #[arg(long, default_value = "slow:")]
    pub prefix: String,
    /// How long a sloth is kept before it is replaced.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub hold: Duration,
    /// Length of the attack.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Timeout for each handshake and subscribe.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

#[derive(Default)]
struct Counts {
    sloths_opened: Cell<u64>,
    open_failed: Cell<u64>,
    sent: Cell<u64>,
    acked: Cell<u64>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    backend: &'static str,
    connections: usize,
    size: usize,
    rate: f64,
    duration_s: f64,
    sloths_opened: u64,
    open_failed: u64,
    messages_sent: u64,
    publishes_acked: u64,
}

/// A socket with a 4 KiB receive buffer, upgraded.
async fn sloth(target: &Target, auth: &Auth, limit: Duration) -> Result<Ws, Failure> {
    let req = auth
        .request(&target.uri)?
        .ok_or_else(|| Failure::new("tokens exhausted", "no token left"))?;
    let sock = TcpSocket::new_v4().map_err(|e| Failure::from_io("socket", &e))?;
    sock.set_recv_buffer_size(4096)
        .map_err(|e| Failure::from_io("socket", &e))?;
    let tcp = timeout(limit, sock.connect(target.addr))
        .await
        .map_err(|_| Failure::timeout("connect"))?
        .map_err(|e| Failure::from_io("connect", &e))?;
    let (ws, _) = timeout(
        limit,
        tokio_tungstenite::client_async_with_config(
            req,
            crate::tls::Conn::Left(tcp),
            Some(client_config(4096)),
        ),
    )
    .await
    .map_err(|_| Failure::timeout("handshake"))?
    .map_err(|e| Failure::from_ws("handshake", &e))?;
    Ok(ws)
}

async fn subscribe(ws: &mut Ws, channel: &str, limit: Duration) -> Result<(), Failure> {
    let m = serde_json::json!({"type": "subscribe", "channel": channel, "id": 0}).to_string();
    ws.send(Message::text(m))
        .await
        .map_err(|e| Failure::from_ws("subscribe", &e))?;
    match timeout(limit, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.contains("\"ack\"") => Ok(()),
        other => Err(Failure::new("subscribe", format!("{other:?}"))),
    }
}

/// One sloth slot: open, (subscribe,) stall for `hold`, drop, again.
async fn sloth_slot(
    i: usize,
    args: Rc<SlowArgs>,
    target: Rc<Target>,
    auth: Rc<Auth>,
    c: Rc<Counts>,
    stop: Stop,
) {
    let per_sloth = args.rate / args.connections as f64;
    let channel = format!("{}{}", args.prefix, if args.shared_channel { 0 } else { i });
    let blob = vec![b's'; args.size];
    while !stop.is_set() {
        let mut ws = match sloth(&target, &auth, args.timeout).await {
            Ok(ws) => ws,
            Err(_) => {
                c.open_failed.set(c.open_failed.get() + 1);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if args.backend == Backend::Hub && subscribe(&mut ws, &channel, args.timeout).await.is_err()
        {
            c.open_failed.set(c.open_failed.get() + 1);
            continue;
        }
        c.sloths_opened.set(c.sloths_opened.get() + 1);
        let until = Instant::now() + args.hold;
        if args.backend == Backend::Echo && per_sloth > 0.0 {
            // Sends block once the gateway stops reading this socket.
            let every = Duration::from_secs_f64(1.0 / per_sloth);
            let _ = tokio::time::timeout_at(until, async {
                while !stop.is_set() {
                    if ws.send(Message::binary(blob.clone())).await.is_err() {
                        break;
                    }
                    c.sent.set(c.sent.get() + 1);
                    sleep(every).await;
                }
            })
            .await;
        } else {
            tokio::time::sleep_until(until).await;
        }
        // Dropped unread: a reset if the gateway still sends.
    }
}

async fn publisher(
    j: usize,
    args: Rc<SlowArgs>,
    target: Rc<Target>,
    auth: Rc<Auth>,
    c: Rc<Counts>,
    stop: Stop,
) -> anyhow::Result<()> {
    let ws = open_ws(&target, &auth, client_config(64 * 1024), args.timeout)
        .await
        .map_err(|e| match e {
            OpenError::Rejected(s) => anyhow::anyhow!("publisher refused: {s}"),
            OpenError::Failed(f) => anyhow::anyhow!("publisher: {}", f.detail),
        })?;
    let (mut tx, mut rx) = ws.split();
    let acks = {
        let c = c.clone();
        tokio::task::spawn_local(async move {
            while let Some(Ok(m)) = rx.next().await {
                if m.to_text().is_ok_and(|t| t.contains("\"ack\"")) {
                    c.acked.set(c.acked.get() + 1);
                }
            }
        })
    };
    let every = Duration::from_secs_f64(args.publishers as f64 / args.rate);
    let data = "p".repeat(args.size);
    let mut next = Instant::now();
    let mut k = j;
    while !stop.is_set() {
        let i = if args.shared_channel {
            0
        } else {
            k % args.connections
        };
        k += args.publishers;
        let m = serde_json::json!({"type": "publish", "channel": format!("{}{i}", args.prefix), "data": data, "id": k});
        tx.send(Message::text(m.to_string()))
            .await
            .context("publish")?;
        c.sent.set(c.sent.get() + 1);
        next += every;
        tokio::time::sleep_until(next).await;
    }
    let _ = tx.close().await;
    let _ = timeout(Duration::from_secs(2), acks).await;
    Ok(())
}

pub async fn run(args: SlowArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    if args.connections == 0 || args.rate <= 0.0 {
        bail!("--connections and --rate must be positive");
    }
    if (args.connections + args.publishers) as u64 * 2 + 64 > nofile {
        bail!(
            "{} sockets need more than RLIMIT_NOFILE = {nofile} files",
            args.connections
        );
    }
    let target = Rc::new(Target::parse(&args.url)?);
    let auth = Rc::new(Auth::load(Transport::Bearer, Some(&args.token_file), None)?);
    let args = Rc::new(args);
    let c = Rc::new(Counts::default());
    let stop = Stop::new();
    stop.on_ctrl_c();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        tasks.push(tokio::task::spawn_local(sloth_slot(
            i,
            args.clone(),
            target.clone(),
            auth.clone(),
            c.clone(),
            stop.clone(),
        )));
    }
    let mut pubs = Vec::new();
    if args.backend == Backend::Hub {
        // Publishing starts once every sloth is in place.
        while (c.sloths_opened.get() as usize) < args.connections && t0.elapsed() < args.timeout {
            sleep(Duration::from_millis(20)).await;
        }
        for j in 0..args.publishers {
            pubs.push(tokio::task::spawn_local(publisher(
                j,
                args.clone(),
                target.clone(),
                auth.clone(),
                c.clone(),
                stop.clone(),
            )));
        }
    }
    eprintln!(
        "{} sloths in place, attacking for {:?}",
        c.sloths_opened.get(),
        args.duration
    );
    sleep(args.duration).await;
    stop.fire();
    for p in pubs {
        p.await.context("publisher task")??;
    }
    for t in tasks {
        t.abort();
    }
    let report = Report {
        mode: "slow-consumers",
        backend: match args.backend {
            Backend::Hub => "hub",
            Backend::Echo => "echo",
        },
        connections: args.connections,
        size: args.size,
        rate: args.rate,
        duration_s: t0.elapsed().as_secs_f64(),
        sloths_opened: c.sloths_opened.get(),
        open_failed: c.open_failed.get(),
        messages_sent: c.sent.get(),
        publishes_acked: c.acked.get(),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        row("backend", report.backend);
        row("sloths (kept stalled)", report.connections);
        row(
            "sloths opened (replaced after --hold)",
            report.sloths_opened,
        );
        row("open failures", report.open_failed);
        row("messages sent", report.messages_sent);
        row("publishes acked", report.publishes_acked);
    }
    Ok(0)
}
