//! `wsgate serve | check | token` (docs/reference.md).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wsgate::app::App;
use wsgate::config::{Config, LogFormat};
use wsgate::error::Error;
use wsgate::mint;

// Measured (BENCHMARKS.md, "Allocator"): glibc malloc/free were ~15 % of the
// gateway's CPU per upgrade. mimalloc v2 rather than v3: same CPU, but v3
// keeps the pages freed after a large message until the thread allocates
// again (1.25 MB per idle socket after a 1 MiB message, v2 265 kB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wsgate", version, about = "Authenticating WebSocket gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (dev mode without --config and without ./wsgate.toml).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config, print the warnings `serve` would log (stderr)
    /// and the effective config with secrets redacted (stdout).
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit 1 when there is any warning.
        #[arg(long)]
        strict: bool,
    },
    /// Write a commented production config and fresh secret files (mode
    /// 0600) into DIR; existing files are kept.
    Init { dir: PathBuf },
    /// Mint a token for tests and scripts; prints it alone on stdout.
    Token {
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 30s, 15m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        aud: Vec<String>,
        #[arg(long)]
        iss: Option<String>,
        #[arg(long)]
        kid: Option<String>,
        /// Extra claim key=value (value parsed as JSON when it is JSON).
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Environment variable holding the HS secret (default WSGATE_JWT_SECRET).
        #[arg(long, conflicts_with = "key_file")]
        secret_env: Option<String>,
        /// Private key PEM for RS/PS/ES/EdDSA.
        #[arg(long, requires = "alg")]
        key_file: Option<PathBuf>,
        /// Algorithm (HS256 by default with a secret).
        #[arg(long)]
        alg: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config } => serve(config),
        Cmd::Check { config, strict } => check(config, strict),
        Cmd::Init { dir } => init(&dir),
        Cmd::Token {
            sub,
            ttl,
            aud,
            iss,
            kid,
            claims,
            secret_env,
            key_file,
            alg,
        } => match token(sub, &ttl, aud, iss, kid, claims, secret_env, key_file, alg) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsgate token: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// `--config`, else `./wsgate.toml` if present, else dev mode (serve only).
fn config_path(arg: Option<PathBuf>) -> Option<PathBuf> {
    arg.or_else(|| {
        let p = Path::new("wsgate.toml");
        p.exists().then(|| p.to_path_buf())
    })
}

fn print_problems(problems: &[String]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

fn init(dir: &Path) -> ExitCode {
    match wsgate::init::init(dir) {
        Ok(written) => {
            for w in written {
                match w {
                    wsgate::init::Written::Created(p) => println!("created {}", p.display()),
                    wsgate::init::Written::Kept(p) => println!("kept existing {}", p.display()),
                }
            }
            let config = dir.join("wsgate.toml");
            println!(
                "next: edit issuer, audience and origins, then `wsgate check --strict --config {}`",
                config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wsgate init: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(config: Option<PathBuf>, strict: bool) -> ExitCode {
    let Some(path) = config_path(config) else {
        eprintln!("error: no --config given and no wsgate.toml in the working directory");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(&path, &env_vars()) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    let redacted = cfg.redacted();
    // Exactly what `serve` logs as `config_warning`.
    let warnings = cfg.warnings();
    if let Err(problems) = App::new(cfg) {
        print_problems(&problems);
        return ExitCode::from(1);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if strict && !warnings.is_empty() {
        eprintln!(
            "error: {} warning(s), and --strict treats warnings as errors",
            warnings.len()
        );
        return ExitCode::from(1);
    }
    print!("{redacted}");
    ExitCode::SUCCESS
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let env = env_vars();
    let loaded = match config_path(config) {
        Some(path) => Config::load(&path, &env),
        None => Config::dev(&env),
    };
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    wsgate::log::init(
        &cfg.log.level,
        match cfg.log.format {
            LogFormat::Json => wsgate::log::Format::Json,
            LogFormat::Human => wsgate::log::Format::Human,
        },
    );
    raise_nofile_limit(u64::from(cfg.limits.max_connections));
    if cfg.dev_mode && cfg.admin.token.is_none() {
        // Dev mode: a random admin token (printed in the banner) so the
        // admin API can be tried; the admin listener is loopback-only here.
        cfg.admin.token = Some(wsgate::config::Secret::new(
            wsgate::mint::random_id(32).into_bytes(),
        ));
    }
    for w in cfg.warnings() {
        tracing::warn!(event = "config_warning", msg = w.as_str());
    }
    let rt = match runtime_builder(&cfg.server).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let bound = match wsgate::server::bind(cfg.server.listen, cfg.admin.listen).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot listen: {e}");
                return ExitCode::from(1);
            }
        };
        if cfg.dev_mode {
            // Allow the page's own origin on the port actually bound.
            if let Ok(addr) = bound.main_addr() {
                for o in Config::dev_origins(addr) {
                    if !cfg.origins.allow.contains(&o) {
                        cfg.origins.allow.push(o);
                    }
                }
            }
        }
        let app = match App::new(cfg) {
            Ok(a) => a,
            Err(problems) => {
                print_problems(&problems);
                return ExitCode::from(1);
            }
        };
        let running = match wsgate::server::serve(app.clone(), bound) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot listen: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(
            event = "listening",
            addr = %running.addr,
            admin_addr = %running.admin_addr,
            path = app.config.server.path.as_str(),
            dev_mode = app.config.dev_mode,
            workers = app.config.server.workers(),
            scheduler = if app.config.server.current_thread() {
                "current_thread"
            } else {
                "multi_thread"
            },
        );
        if app.config.dev_mode {
            banner(&app, running.addr, running.admin_addr);
        }
        wsgate::server::wait_for_shutdown(running).await;
        ExitCode::SUCCESS
    })
}

/// Dev mode banner on stderr (stdout carries the JSON logs).
fn banner(app: &App, addr: std::net::SocketAddr, admin_addr: std::net::SocketAddr) {
    let token =
        wsgate::server::dev::dev_token(app, "dev-user", &["user".to_string()]).unwrap_or_default();
    let admin = app
        .config
        .admin
        .token
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.expose()).into_owned())
        .unwrap_or_default();
    eprintln!(
        "\n  wsgate DEV MODE: not for production (random secret, loopback only)\n\n  \
         demo page:  http://{addr}/\n  websocket:  ws://{addr}{path}\n  \
         token (sub=dev-user, 1h):\n    {token}\n\n  try:  websocat -H 'Authorization: Bearer {token}' ws://{addr}{path}\n\n  \
         admin API:  http://{admin_addr}/admin/v1/sessions  (Authorization: Bearer {admin})\n",
        path = app.config.server.path,
    );
}

#[allow(clippy::too_many_arguments)]
fn token(
    sub: String,
    ttl: &str,
    aud: Vec<String>,
    iss: Option<String>,
    kid: Option<String>,
    claims: Vec<String>,
    secret_env: Option<String>,
    key_file: Option<PathBuf>,
    alg: Option<String>,
) -> Result<String, Error> {
    let ttl = humantime::parse_duration(ttl).map_err(|e| Error::config_because("--ttl", e))?;
    let (alg, key) = match key_file {
        Some(path) => {
            let alg = mint::alg(alg.as_deref().unwrap_or("RS256"))?;
            let pem = std::fs::read(&path)
                .map_err(|e| Error::config_because(path.display().to_string(), e))?;
            (alg, mint::encoding_key_from_pem(alg, &pem)?)
        }
        None => {
            let alg = mint::alg(alg.as_deref().unwrap_or("HS256"))?;
            if !matches!(
                alg,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            ) {
                return Err(Error::config(format!("{alg:?} needs --key-file")));
            }
            let var = secret_env.unwrap_or_else(|| "WSGATE_JWT_SECRET".into());
            let secret = std::env::var(&var)
                .map_err(|_| Error::config(format!("environment variable {var} is not set")))?;
            if secret.len() < mint::min_secret_len(alg) {
                return Err(Error::config(format!(
                    "the secret in {var} is shorter than {} bytes",
                    mint::min_secret_len(alg)
                )));
            }
            (
                alg,
                jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
        }
    };
    let now = wsgate::clock::now_ms() / 1000;
    let mut map = Map::new();
    for c in &claims {
        let (k, v) = mint::claim_arg(c)?;
        map.insert(k, v);
    }
    map.insert("sub".into(), Value::from(sub));
    map.insert("iat".into(), Value::from(now));
    map.insert("exp".into(), Value::from(now + ttl.as_secs() as i64));
    map.entry("jti")
        .or_insert_with(|| Value::from(mint::random_id(16)));
    match aud.len() {
        0 => {}
        1 => {
            map.insert("aud".into(), Value::from(aud[0].clone()));
        }
        _ => {
            map.insert("aud".into(), Value::from(aud));
        }
    }
    if let Some(iss) = iss {
        map.insert("iss".into(), Value::from(iss));
    }
    mint::sign(alg, kid.as_deref(), &map, &key)
}

/// Every socket is a file (two in upstream mode): raise the soft limit to
/// the hard one, and say what is in effect and whether it can hold
/// `limits.max_connections`.
fn raise_nofile_limit(max_connections: u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            let hard = rlimit::Resource::NOFILE.get().map(|(_, h)| h).unwrap_or(n);
            tracing::info!(event = "nofile_limit", soft = n, hard);
            if n < max_connections {
                tracing::warn!(
                    event = "nofile_limit",
                    soft = n,
                    max_connections,
                    "the open-file limit is below limits.max_connections: the node will refuse \
                     sockets (EMFILE) before its cap; raise `ulimit -n` / LimitNOFILE"
                );
            }
        }
        Err(e) => {
            tracing::warn!(event = "nofile_limit", error = %e, "cannot raise the open-file limit")
        }
    }
}

/// The tokio runtime: multi-threaded unless `server.worker_threads = 1`
/// asks for the current-thread scheduler. That one costs a few percent
/// less CPU per proxied upgrade on one core, but its run queue is strictly
/// first in, first out: when 15,000 sessions expire at once, a new upgrade
/// waits behind all of them (280 ms measured, against 9 ms on a lone
/// worker of the multi-threaded one, whose bounded local queue lets new
/// connections in early; BENCHMARKS.md). So it is never picked on its own.
fn runtime_builder(server: &wsgate::config::ServerConfig) -> tokio::runtime::Builder {
    if server.current_thread() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(server.workers());
        b
    }
}
