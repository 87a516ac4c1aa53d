//! `wsgate check` as an operator runs it (issue 27): the warnings `serve`
//! would log, `--strict`, the README's production example, human type
//! errors and did-you-mean, and a listener that cannot bind named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn wsgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn check(dir: &Path, text: &str, args: &[&str]) -> Output {
    let p = dir.join("wsgate.toml");
    std::fs::write(&p, text).expect("write config");
    wsgate()
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(&p)
        .env("JWT", SECRET)
        .output()
        .expect("run wsgate check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const KEY: &str = "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"JWT\"\n\
                   [origins]\nallow = [\"https://app.example\"]\n";

#[test]
fn check_prints_the_warnings_serve_logs_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = format!("{KEY}[auth]\ntransports = [\"bearer\", \"query\"]\n");
    let out = check(dir.path(), &cfg, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("[server]"), "{stdout}");
    for w in [
        "warning: auth.transports includes \"query\"",
        "warning: tickets.enabled = true but \"ticket\" is not in auth.transports",
        "warning: admin: no admin token (WSGATE_ADMIN_TOKEN is not set)",
        "warning: tickets: no ticket secret (WSGATE_TICKET_SECRET is not set)",
    ] {
        assert!(stderr.contains(w), "no {w:?} in:\n{stderr}");
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("warning:")),
        "warnings go to stderr: {stdout}"
    );

    let out = check(dir.path(), &cfg, &["--strict"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("warning: auth.transports includes \"query\""));
    let n = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .count();
    assert!(n >= 4, "{stderr}");
    assert!(
        stderr.contains(&format!("error: {n} warning(s), and --strict")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The first ```toml block of the README's "Production" section, with the
/// files it names, passes `check --strict` without a single warning.
#[test]
fn readme_production_example_is_warning_free() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let prod = &readme[readme.find("## Production").expect("Production section")..];
    let start = prod.find("```toml\n").expect("toml block") + "```toml\n".len();
    let example = &prod[start..start + prod[start..].find("```").expect("block end")];
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(data("rsa.pub.pem"), dir.path().join("idp.pub.pem")).expect("copy key");
    for f in ["admin.token", "ticket.key", "identity.key"] {
        // As `openssl rand -hex 32 > FILE` writes them; each one different.
        let secret = format!("{f:0>32}-{SECRET}\n");
        std::fs::write(dir.path().join(f), secret).expect("write secret");
    }
    let out = check(dir.path(), example, &["--strict"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "README example:\n{example}\n{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn type_errors_and_typos_are_explained() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = format!(
        "{KEY}[server]\nlisen = \"0.0.0.0:8080\"\n[limits]\nmax_connections = \"many\"\n\
         [backend]\nkind = \"upstrem\"\n"
    );
    let out = check(dir.path(), &cfg, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        "error: server.lisen: unknown key; did you mean \"listen\"?",
        "error: limits.max_connections: expected a whole number ≥ 0, got \"many\"",
        "error: backend.kind: unknown value \"upstrem\"; did you mean \"upstream\"?",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
}

#[test]
fn hs256_with_jwks_url_fails_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = "[[auth.keys]]\nalg = \"HS256\"\njwks_url = \"https://idp.example/jwks\"\n\
               [origins]\nallow = [\"https://app.example\"]\n";
    let out = check(dir.path(), cfg, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: auth.keys[0].alg: HS256 is a shared-secret algorithm"),
        "{stderr}"
    );
}

/// `cannot listen` names the listener and the address it could not bind.
#[test]
fn a_taken_address_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wsgate.toml");
    std::fs::write(
        &p,
        format!("{KEY}[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write");
    let mut child = wsgate()
        .args(["serve", "--config"])
        .arg(&p)
        .env("JWT", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on a taken address");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = text(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot listen: server.listen {addr}: ")),
        "{stderr}"
    );
}
