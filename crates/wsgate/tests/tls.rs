//! wss:// over real TLS (rustls on both sides): upgrade, certificate reload
//! without restart, and a clear startup error for a mismatched key.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A self-signed certificate for localhost; returns its DER.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).expect("write key");
    ck.cert.der().clone()
}

fn tls_config(dir: &Path) -> String {
    base_config("").replace(
        "max_header_bytes = 16384",
        &format!(
            "max_header_bytes = 16384\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )
}

fn connector(trust: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trust.clone()).expect("root");
    let cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// Opens wss://localhost:<port>/ws with a bearer token through `tls`.
async fn wss(
    gw: &Gateway,
    tls: &TlsConnector,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>, String>
{
    let tcp = TcpStream::connect(gw.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let mut req = format!("wss://localhost:{}/ws", gw.addr.port())
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "header".to_string())?,
    );
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

#[tokio::test]
async fn wss_upgrade_and_reload_without_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let first = write_cert(dir.path());
    let gw = Gateway::start(&tls_config(dir.path()));
    let mut ws = wss(&gw, &connector(&first), &token("tls"))
        .await
        .expect("wss");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "over tls".into(),
    ))
    .await
    .expect("send");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("in time");
    assert!(
        matches!(back, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) if t == "over tls")
    );
    // Plain HTTP on the TLS port gets no HTTP answer at all.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(!buf.starts_with(b"HTTP/"), "{buf:?}");
    }
    // Replace the certificate; SIGHUP reloads it without a restart.
    let second = write_cert(dir.path());
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    gw.events("tls_reloaded", 1);
    assert!(wss(&gw, &connector(&second), &token("tls")).await.is_ok());
    assert!(wss(&gw, &connector(&first), &token("tls")).await.is_err());
    // The socket opened before the reload is unaffected.
    assert!(ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "still".into()
        ))
        .await
        .is_ok());
}

#[test]
fn mismatched_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tmp");
    write_cert(dir.path());
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    std::fs::write(
        dir.path().join("key.pem"),
        other.signing_key.serialize_pem(),
    )
    .expect("write");
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(&cfg, tls_config(dir.path())).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("TEST_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls") && err.contains("does not match"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_listener_speaks_tls_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = write_cert(dir.path());
    let cfg = base_config("").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    );
    let gw = Gateway::start(&cfg);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(gw.admin).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector(&cert).connect(name, tcp).await.expect("tls");
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("wsgate_connections_active"),
        "{out}"
    );
}
