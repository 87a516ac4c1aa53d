//! `fanout` mode: N sockets subscribe to one hub channel, then the admin
//! API publishes to it K times; for each publish, the time from the
//! request to the first and to the last of the N deliveries.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    client_config, new_histogram, open_ws, row, Auth, HttpTarget, LatencySummary, OpenFailures,
    Target, Transport, Ws,
};
use crate::revoke::AdminClient;

#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// Gateway WebSocket URL, e.g. ws://127.0.0.1:18080/ws (loopback only).
    #[arg(long)]
    pub url: String,
    /// File with one token per line; sockets rotate through them.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Transport::Bearer)]
    pub transport: Transport,
    /// Number of subscribed sockets.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Hub channel every socket subscribes to.
    #[arg(long, default_value = "public:fanout")]
    pub channel: String,
    /// Admin listener, e.g. http://127.0.0.1:19091.
    #[arg(long)]
    pub admin_url: String,
    /// Environment variable holding the admin token.
    #[arg(long, default_value = "WSGATE_ADMIN_TOKEN")]
    pub admin_token_env: String,
    /// Number of publishes measured.
    #[arg(long, default_value_t = 20)]
    pub publishes: u32,
    /// Pause between publishes (each waits for its last delivery first).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub interval: Duration,
    /// Extra payload bytes in each published message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Timeout for each handshake, subscribe and publish round.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

/// Deliveries of one publish.
#[derive(Clone, Default)]
struct Round {
    received: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    connections_open: usize,
    open_failed: u64,
    publishes: u32,
    complete_rounds: u32,
    missing_deliveries: u64,
    first_delivery: LatencySummary,
    last_delivery: LatencySummary,
}

/// The `seq` of a `{"type":"message",...,"data":{"seq":N,...}}` delivery.
fn seq_of(text: &str) -> Option<usize> {
    let i = text.find("\"seq\":")? + 6;
    let digits: String = text[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

async fn subscribe(ws: &mut Ws, channel: &str, limit: Duration) -> anyhow::Result<()> {
    let msg = serde_json::json!({"type": "subscribe", "channel": channel, "id": 1}).to_string();
    ws.send(Message::Text(msg.into())).await?;
    loop {
        match timeout(limit, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"ack\"") => return Ok(()),
            Ok(Some(Ok(Message::Text(t)))) => bail!("subscribe refused: {t}"),
            Ok(Some(Ok(_))) => continue,
            other => bail!("subscribe: no answer ({other:?})"),
        }
    }
}

pub async fn run(args: FanoutArgs, json: bool, nofile: u64) -> anyhow::Result<i32> {
    if (args.connections as u64) + 64 > nofile {
        bail!(
            "{} sockets need more than RLIMIT_NOFILE = {nofile} files",
            args.connections
        );
    }
    let target = Target::parse(&args.url)?;
    let auth = Auth::load(args.transport, args.token_file.as_deref(), None)?;
    let admin_token = std::env::var(&args.admin_token_env)
        .with_context(|| format!("${} is not set", args.admin_token_env))?;
    let mut admin = AdminClient::new(HttpTarget::parse(&args.admin_url)?, admin_token);
    let rounds: Rc<RefCell<Vec<Round>>> = Rc::new(RefCell::new(vec![
        Round::default();
        args.publishes as usize
    ]));

    // Open and subscribe, `open_concurrency` at a time.
    let mut failures = OpenFailures::default();
    let mut open = 0usize;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut started = 0usize;
    while open + (failures.total() as usize) < args.connections {
        while started < args.connections && pending.len() < args.open_concurrency {
            started += 1;
            let (target, auth, channel, limit) = (&target, &auth, &args.channel, args.timeout);
            pending.push(async move {
                let mut ws = open_ws(target, auth, client_config(4096), limit).await?;
                subscribe(&mut ws, channel, limit).await.map_err(|e| {
                    crate::common::OpenError::Failed(crate::common::Failure::new(
                        "subscribe",
                        e.to_string(),
                    ))
                })?;
                Ok::<_, crate::common::OpenError>(ws)
            });
        }
        match pending.next().await {
            Some(Ok(ws)) => {
                open += 1;
                let rounds = rounds.clone();
                tokio::task::spawn_local(async move {
                    let mut ws = ws;
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Text(t) = m {
                            if let Some(seq) = seq_of(t.as_str()) {
                                let now = Instant::now();
                                let mut r = rounds.borrow_mut();
                                if let Some(round) = r.get_mut(seq) {
                                    round.received += 1;
                                    round.first.get_or_insert(now);
                                    round.last = Some(now);
                                }
                            }
                        }
                    }
                });
            }
            Some(Err(e)) => failures.add(e),
            None => break,
        }
    }
    drop(pending);
    eprintln!("{open} sockets subscribed to {}", args.channel);
    if open == 0 {
        bail!("no socket could subscribe: {}", failures.describe());
    }

    let first = RefCell::new(new_histogram()?);
    let last = RefCell::new(new_histogram()?);
    let pad = "x".repeat(args.size);
    let mut complete = 0u32;
    let mut missing = 0u64;
    for seq in 0..args.publishes as usize {
        let body = serde_json::json!({"channel": args.channel, "data": {"seq": seq, "pad": pad}})
            .to_string();
        let t0 = Instant::now();
        let resp = timeout(
            args.timeout,
            admin.call("POST", "/admin/v1/publish", Some(&body)),
        )
        .await;
        match resp {
            Ok(Ok(r)) if r.status == 200 => {}
            Ok(Ok(r)) => bail!("publish answered {}: {}", r.status, r.body_snippet()),
            Ok(Err(f)) => bail!("publish failed: {}", f.detail),
            Err(_) => bail!("publish: no answer within {:?}", args.timeout),
        }
        let deadline = t0 + args.timeout;
        loop {
            let done = rounds.borrow()[seq].received >= open;
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let r = rounds.borrow()[seq].clone();
        missing += (open - r.received.min(open)) as u64;
        if r.received >= open {
            complete += 1;
        }
        if let (Some(f), Some(l)) = (r.first, r.last) {
            crate::common::record(&first, f - t0);
            crate::common::record(&last, l - t0);
        }
        tokio::time::sleep(args.interval).await;
    }
    let report = Report {
        mode: "fanout",
        connections_open: open,
        open_failed: failures.total(),
        publishes: args.publishes,
        complete_rounds: complete,
        missing_deliveries: missing,
        first_delivery: LatencySummary::of(&first.borrow()),
        last_delivery: LatencySummary::of(&last.borrow()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        row("sockets subscribed", report.connections_open);
        row("open failures", failures.describe());
        row(
            "publishes (all delivered)",
            format!("{} ({complete})", args.publishes),
        );
        row("missing deliveries", missing);
        row("first delivery", report.first_delivery.line());
        row("last delivery", report.last_delivery.line());
    }
    Ok(if complete == args.publishes && failures.total() == 0 {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn seq_is_found() {
        let m = r#"{"type":"message","channel":"c","data":{"pad":"x","seq":42},"from":null}"#;
        assert_eq!(super::seq_of(m), Some(42));
        assert_eq!(super::seq_of(r#"{"type":"ack","id":1}"#), None);
    }
}
