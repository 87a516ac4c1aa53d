//! `wsgate check`, `wsgate token` and dev mode, as a user runs them.

mod common;
use common::*;
use std::process::Command;

fn wsgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn check_prints_redacted_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wsgate.toml");
    std::fs::write(&p, base_config("")).expect("write");
    let out = wsgate()
        .args(["check", "--config"])
        .arg(&p)
        .env("TEST_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen"));
    assert!(!stdout.contains(SECRET), "secret printed: {stdout}");
}

#[test]
fn check_reports_each_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wsgate.toml");
    let bad = base_config("")
        .replace("[log]", "[tickets]\nttl = \"5m\"\n[log]")
        .replace("\"http://app.test\"", "\"not an origin\"");
    std::fs::write(&p, bad).expect("write");
    let out = wsgate()
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    // Secret env unset, ttl too long, bad origin: three problems, three lines.
    assert!(lines.len() >= 3, "{stderr}");
    assert!(stderr.contains("TEST_JWT_SECRET"));
    assert!(stderr.contains("ttl"));
    assert!(stderr.contains("not an origin"));
    // Unknown keys are errors that name the key.
    std::fs::write(
        &p,
        base_config("[server]\nlisten_typo = 1")
            .replace("[server]\nlisten =", "[serverx]\nlisten ="),
    )
    .expect("write");
    let out = wsgate()
        .args(["check", "--config"])
        .arg(&p)
        .env("TEST_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[test]
fn token_command_mints_verifiable_tokens() {
    let out = wsgate()
        .args([
            "token",
            "--sub",
            "alice",
            "--ttl",
            "10m",
            "--aud",
            "api",
            "--claim",
            r#"roles=["admin"]"#,
        ])
        .env("WSGATE_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).expect("utf8");
    let t = t.trim();
    assert_eq!(t.split('.').count(), 3);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&["api"]);
    let d = jsonwebtoken::decode::<serde_json::Value>(
        t,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .expect("verifies");
    assert_eq!(d.claims["sub"], "alice");
    assert_eq!(d.claims["roles"][0], "admin");
    let ttl = d.claims["exp"].as_i64().expect("exp") - d.claims["iat"].as_i64().expect("iat");
    assert_eq!(ttl, 600);
    // Private-key algorithms.
    for (alg, file) in [
        ("ES256", "ec256.pem"),
        ("RS256", "rsa.pem"),
        ("EdDSA", "ed25519.pem"),
    ] {
        let out = wsgate()
            .args(["token", "--sub", "s", "--alg", alg, "--key-file"])
            .arg(data(file))
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A missing secret is an error, not a token.
    let out = wsgate()
        .args(["token", "--sub", "s"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn dev_mode_banner_login_and_socket() {
    let (gw, _) = Gateway::start_dev(&[
        ("WSGATE_SERVER__LISTEN", "127.0.0.1:0"),
        ("WSGATE_ADMIN__LISTEN", "127.0.0.1:0"),
    ]);
    // The banner is one write of several lines, its admin line the last:
    // once the log reader has that line, it has the whole banner.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let logs = loop {
        let logs = gw.logs();
        if logs.iter().any(|l| l.contains("admin API:")) {
            break logs;
        }
        assert!(std::time::Instant::now() < deadline, "no banner: {logs:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The banner carries a ready token.
    let banner_token = logs
        .iter()
        .skip_while(|l| !l.contains("token (sub=dev-user"))
        .nth(1)
        .map(|l| l.trim_start_matches("stderr: ").trim().to_string())
        .expect("token line");
    assert!(logs.iter().any(|l| l.contains("DEV MODE")));
    // It also carries a random admin token for trying the admin API.
    let admin_line = logs
        .iter()
        .find(|l| l.contains("admin API:"))
        .expect("admin line");
    let admin_token = admin_line
        .rsplit("Bearer ")
        .next()
        .expect("token")
        .trim_end_matches(')')
        .to_string();
    let r = http(
        gw.admin,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &format!("Bearer {admin_token}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Dev mode runs the hub: subscribe and publish to oneself.
    let (mut ws, _) = bearer(&gw.url(), &banner_token).await.open();
    let ack = echo(
        &mut ws,
        r#"{"type":"subscribe","channel":"public:dev","id":1}"#,
    )
    .await;
    assert_eq!(ack, r#"{"id":1,"type":"ack"}"#);
    let ack = echo(
        &mut ws,
        r#"{"type":"publish","channel":"public:dev","data":"hi","id":2}"#,
    )
    .await;
    let msg = if ack.contains("\"ack\"") {
        next_text(&mut ws).await
    } else {
        ack
    };
    let v: serde_json::Value = serde_json::from_str(&msg).expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["from"], "dev-user");
    assert_eq!(v["data"], "hi");
    // /dev/login sets an HttpOnly SameSite=Strict cookie and returns a token.
    let origin = format!("http://127.0.0.1:{}", gw.addr.port());
    let body = r#"{"sub":"zoe","roles":["admin"]}"#;
    let req = format!(
        "POST /dev/login HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let cookie_line = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("set-cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    let cookie = cookie_line
        .split_once(':')
        .expect(":")
        .1
        .split(';')
        .next()
        .expect("pair")
        .trim()
        .to_string();
    // The cookie opens a socket from the dev origin only.
    upgrade(&gw.url(), &[("cookie", &cookie), ("origin", &origin)])
        .await
        .open();
    upgrade(
        &gw.url(),
        &[("cookie", &cookie), ("origin", "http://evil.test")],
    )
    .await
    .refused(403, "origin_not_allowed");
    // The page is served.
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).await.expect("read");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("wsgate"));
}

#[test]
fn dev_mode_refuses_public_listen() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = wsgate()
        .arg("serve")
        .current_dir(dir.path())
        .env("WSGATE_SERVER__LISTEN", "0.0.0.0:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
}

/// `log.format = "human"` into a pipe (journald, a file, a shipper): text
/// lines without ANSI colour codes.
#[test]
fn human_logs_carry_no_colour_codes_when_not_a_terminal() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wsgate.toml");
    let cfg = base_config("").replace(
        "[log]\nlevel = \"info\"",
        "[log]\nlevel = \"info\"\nformat = \"human\"",
    );
    assert!(cfg.contains("format = \"human\""));
    std::fs::write(&p, cfg).expect("write");
    let mut child = wsgate()
        .args(["serve", "--config"])
        .arg(&p)
        .env("TEST_JWT_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let _ = child.wait();
    assert!(out.contains("listening"), "{out}");
    assert!(!out.contains('\u{1b}'), "colour codes in {out:?}");
}
