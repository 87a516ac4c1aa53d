//! `wsgate init DIR` as a user runs it: the written config passes `check`
//! and serves, a token signed with the generated key opens a socket, the
//! generated admin token opens the admin API, and a second run keeps
//! every file.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn wsgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn run(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    wsgate().args(args).arg(dir).output().expect("run wsgate")
}

#[tokio::test]
async fn init_writes_a_config_that_checks_and_serves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("etc");
    let out = run(&["init"], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches("created ").count(), 4, "{said}");

    for name in ["jwt.key", "ticket.key", "admin.token"] {
        let meta = std::fs::metadata(dir.join(name)).expect("secret file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    let secret = std::fs::read_to_string(dir.join("jwt.key")).expect("jwt.key");
    let admin_token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
    assert_ne!(secret, admin_token);
    let config = dir.join("wsgate.toml");

    // `check` passes, prints no warning, and never prints a generated secret.
    let out = wsgate()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("check");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    for s in [secret.trim(), admin_token.trim()] {
        assert!(!stdout.contains(s) && !stderr.contains(s), "secret printed");
    }

    // The same file serves (listeners moved to free ports, secret paths
    // made absolute since the harness writes the config elsewhere).
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9091\"", "\"127.0.0.1:0\"");
    let text = ["jwt.key", "ticket.key", "admin.token"]
        .iter()
        .fold(text, |t, f| {
            t.replace(&format!("\"{f}\""), &format!("{:?}", dir.join(f)))
        });
    let gw = Gateway::start(&text);
    let key = EncodingKey::from_secret(secret.trim_end_matches('\n').as_bytes());
    let mut c = claims("alice", 300);
    c["iss"] = "https://auth.example".into();
    c["aud"] = "api".into();
    let token = sign(Algorithm::HS256, &key, None, &c);
    let url = format!("ws://{}/ws", gw.addr);
    let origin = ("origin", "https://app.example");
    let (mut ws, _) = upgrade(
        &url,
        &[("authorization", &format!("Bearer {token}")), origin],
    )
    .await
    .open();
    let sub = r#"{"type":"subscribe","channel":"user:alice","id":1}"#;
    let reply = echo(&mut ws, sub).await;
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("json");
    assert_eq!(reply, serde_json::json!({"type": "ack", "id": 1}));
    // A token signed with another key is refused before the 101.
    let wrong = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&[7u8; 32]),
        None,
        &c,
    );
    upgrade(
        &url,
        &[("authorization", &format!("Bearer {wrong}")), origin],
    )
    .await
    .refused(401, "bad_signature");
    // The generated admin token opens the admin API; another does not.
    let body = serde_json::json!({"sub": "alice"});
    let ok = admin_post(&gw, admin_token.trim(), "/admin/v1/revoke", &body).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let no = admin_post(
        &gw,
        "not-the-token-not-the-token-0000",
        "/admin/v1/revoke",
        &body,
    )
    .await;
    assert_eq!(no.status, 401, "{}", no.body);

    // Running it again keeps every file, secrets included.
    let out = run(&["init"], &dir);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("kept existing ")
            .count(),
        4
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("jwt.key")).expect("jwt.key"),
        secret
    );
}
