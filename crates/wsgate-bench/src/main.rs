//! wsgate-bench: single-threaded load generator for wsgate's benchmarks.
//!
//! Every mode runs on a current-thread tokio runtime (so it can be pinned to
//! one core with `taskset -c 1`), only targets loopback addresses, and stops
//! by itself after a bounded count or time.

mod common;
mod echo;
mod fanout;
mod http1;
mod idle;
mod revoke;
mod slow;
mod slowloris;
mod storm;
mod tickets;
mod tls;
mod tokens;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wsgate-bench",
    version,
    about = "Load generator for wsgate (loopback targets only)"
)]
struct Cli {
    /// Print the final report as one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Connect → upgrade → close, in a loop: upgrades/s and handshake latency.
    Upgrade(upgrade::UpgradeArgs),
    /// N sockets echoing fixed-size messages: messages/s and round-trip time.
    Echo(echo::EchoArgs),
    /// Open N sockets and hold them idle (for measuring gateway RSS per socket).
    Idle(idle::IdleArgs),
    /// Browser ticket flow in a loop: POST /v1/tickets → upgrade with the
    /// ticket → close (→ replay must be refused): round trips/s and latency.
    Tickets(tickets::TicketsArgs),
    /// Open sockets for many subjects, then revoke subjects one at a time
    /// (POST /admin/v1/revoke, possibly on another node) and time each
    /// subject's close frames (4403); the other sockets must stay open.
    Revoke(revoke::RevokeArgs),
    /// Keep N unfinished request heads pending (slowloris), spread over many
    /// loopback source addresses, reopening each one the gateway drops.
    Slowloris(slowloris::SlowlorisArgs),
    /// N sockets subscribed to one hub channel; the admin API publishes to
    /// it and each publish's time to first and last delivery is measured.
    Fanout(fanout::FanoutArgs),
    /// N sockets that never read what the gateway sends them (hub
    /// subscribers fed by publishers, or echo clients), replaced every
    /// `--hold`: the slow-consumer attack (measure the gateway's RSS).
    SlowConsumers(slow::SlowArgs),
    /// Expiry storm: N sockets whose tokens share one `exp`; when does each
    /// get its 4401, and are new upgrades served meanwhile?
    Storm(storm::StormArgs),
    /// Mint a pool of unique tokens (one per line) on every core, to use
    /// with `--token-file FILE --unique`: signing then costs nothing during
    /// a run (RSA signing is ~1 ms a token).
    Mint(tokens::MintCmd),
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit in effect.
fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::Resource::NOFILE
                .get()
                .map(|(soft, _hard)| soft)
                .unwrap_or(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Mode::Mint(cmd) = &cli.mode {
        return match tokens::run_mint(cmd) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let nofile = raise_nofile_limit();
    eprintln!("RLIMIT_NOFILE in effect: {nofile}");

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let json = cli.json;
    let result = local.block_on(&runtime, async move {
        match cli.mode {
            Mode::Upgrade(args) => upgrade::run(args, json).await,
            Mode::Echo(args) => echo::run(args, json).await,
            Mode::Idle(args) => idle::run(args, json, nofile).await,
            Mode::Tickets(args) => tickets::run(args, json).await,
            Mode::Revoke(args) => revoke::run(args, json, nofile).await,
            Mode::Slowloris(args) => slowloris::run(args, json, nofile).await,
            Mode::Fanout(args) => fanout::run(args, json, nofile).await,
            Mode::Storm(args) => storm::run(args, json, nofile).await,
            Mode::SlowConsumers(args) => slow::run(args, json, nofile).await,
            Mode::Mint(_) => Ok(0), // handled above, without a runtime
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
