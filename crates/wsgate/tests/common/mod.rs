//! Test harness: starts the real `wsgate` binary on 127.0.0.1:0 and talks
//! to it with a real WebSocket client.
#![allow(dead_code)]

pub mod faults;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// The config most tests start from: every transport, a test origin.
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
handshake_timeout = "1s"
max_header_bytes = 16384
[admin]
listen = "127.0.0.1:0"
[auth]
transports = ["bearer", "subprotocol", "ticket", "cookie", "query"]
leeway = "1s"
expiry_warning = "1s"
[[auth.keys]]
alg = "HS256"
secret_env = "TEST_JWT_SECRET"
[origins]
allow = ["http://app.test", "https://*.example.test"]
allow_missing = true
[backend]
kind = "echo"
[log]
level = "info"
{extra}
"#
    )
}

impl Gateway {
    pub fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let gw = Self::start_unready(config, env);
        // A node admits no one until it knows the revocations (loaded from
        // the store) and has keys: most tests want the ready node. A test
        // that starts one with its store down sees it still unready after
        // this bounded wait and checks that itself.
        gw.wait_ready(Duration::from_secs(5));
        gw
    }

    /// Like `start_with_env`, returning as soon as the listeners are bound.
    pub fn start_unready(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wsgate.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        cmd.arg("serve").arg("--config").arg(&path);
        Self::spawn(cmd, dir, env)
    }

    /// Like `start`, with the process's open-file limit set to `nofile`.
    pub fn start_with_nofile(config: &str, nofile: u32) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wsgate.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_wsgate"))
            .arg(&path);
        Self::spawn(cmd, dir, &[])
    }

    /// CPU time (user + system) the process has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }

    /// Dev mode: no config, in an empty directory.
    pub fn start_dev(env: &[(&str, &str)]) -> (Gateway, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        cmd.arg("serve").current_dir(dir.path());
        let gw = Self::spawn(cmd, dir, env);
        (gw, String::new())
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Gateway {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TEST_JWT_SECRET", SECRET)
            // Tests make many upgrades from 127.0.0.1; the rate-limit test lowers these.
            .env("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "100000")
            .env("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "100000")
            // Every test run uses a fresh key prefix, which a node cannot
            // tell from a Redis that lost the revocations: it would wait
            // the default 5 s before trusting it. Tests about that wait set
            // their own value through `env`.
            .env("WSGATE_STORE__REVOCATION_WRITEBACK_WAIT", "500ms")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // `WSGATE_SERVER__WORKER_THREADS=1 cargo test` runs every gateway
        // of the suite on the current-thread scheduler.
        if let Ok(v) = std::env::var("WSGATE_SERVER__WORKER_THREADS") {
            cmd.env("WSGATE_SERVER__WORKER_THREADS", v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wsgate");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                l2.lock().expect("logs").push(line);
            }
        });
        let l3 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l3.lock().expect("logs").push(format!("stderr: {line}"));
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {:?}", logs.lock().expect("logs"));
            }
        };
        let v: Value = serde_json::from_str(&line).expect("listening line is JSON");
        let addr = v["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket addr");
        let admin = v["admin_addr"]
            .as_str()
            .expect("admin_addr")
            .parse()
            .expect("admin addr");
        Gateway {
            child,
            addr,
            admin,
            logs,
            _dir: dir,
        }
    }

    /// Waits until `/readyz` answers 200, at most `within`; true if it did.
    pub fn wait_ready(&self, within: Duration) -> bool {
        use std::io::{Read, Write};
        let deadline = Instant::now() + within;
        loop {
            let ok = std::net::TcpStream::connect(self.admin)
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ok {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// JSON log lines with `event` == `ev`, waiting briefly for them to appear.
    pub fn events(&self, ev: &str, at_least: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<Value> = self
                .logs()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["event"] == ev)
                .collect();
            if found.len() >= at_least || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Every test's gateway is also a log-leak test: no JWT (session
        // token or ticket) may appear in the log stream. The dev banner on
        // stderr carries one on purpose and is not a log.
        if !std::thread::panicking() {
            // Give the reader thread a moment to drain the pipe.
            std::thread::sleep(Duration::from_millis(20));
            for line in self.logs().iter().filter(|l| !l.starts_with("stderr: ")) {
                assert!(!contains_jwt(line), "token material in a log line: {line}");
            }
        }
    }
}

/// Whether `s` contains something shaped like a compact JWS (`eyJ...x.y`).
pub fn contains_jwt(s: &str) -> bool {
    let b = s.as_bytes();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut i = 0;
    while let Some(pos) = s[i..].find("eyJ") {
        let start = i + pos;
        let mut j = start;
        let mut dots = 0;
        let mut run = 0;
        while j < b.len() && (b64(b[j]) || b[j] == b'.') {
            if b[j] == b'.' {
                if run < 2 {
                    break;
                }
                dots += 1;
                run = 0;
            } else {
                run += 1;
            }
            j += 1;
        }
        if dots >= 2 || (dots == 1 && run >= 2) {
            return true;
        }
        i = start + 3;
    }
    false
}

#[test]
fn jwt_detector() {
    assert!(contains_jwt(&format!("x {} y", token("a"))));
    assert!(!contains_jwt("eyJ only a prefix"));
    assert!(!contains_jwt(r#"{"event":"handshake","sub":"eyJ"}"#));
}

pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).expect("sign")
}

pub fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

pub fn claims(sub: &str, ttl: i64) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + ttl, "jti": format!("j-{sub}-{ttl}")})
}

pub fn token(sub: &str) -> String {
    hs(&claims(sub, 3600))
}

/// Outcome of an upgrade attempt.
#[allow(clippy::large_enum_variant)] // test-only, short-lived
pub enum Upgrade {
    Open(WebSocketStream<MaybeTlsStream<TcpStream>>, HeaderMap),
    Refused {
        status: u16,
        headers: HeaderMap,
        body: Value,
    },
}

impl Upgrade {
    pub fn open(self) -> (WebSocketStream<MaybeTlsStream<TcpStream>>, HeaderMap) {
        match self {
            Upgrade::Open(ws, h) => (ws, h),
            Upgrade::Refused { status, body, .. } => panic!("refused {status}: {body}"),
        }
    }

    /// Asserts a refusal with `status` and reason `code`; returns headers.
    pub fn refused(self, status: u16, code: &str) -> HeaderMap {
        match self {
            Upgrade::Open(..) => panic!("expected {status} {code}, got 101"),
            Upgrade::Refused {
                status: s,
                headers,
                body,
            } => {
                assert_eq!(
                    (s, body["error"].as_str()),
                    (status, Some(code)),
                    "body: {body}"
                );
                assert!(body["message"].is_string());
                assert_eq!(
                    headers.get("connection").map(|v| v.to_str().unwrap_or("")),
                    Some("close")
                );
                headers
            }
        }
    }
}

/// Opens `url` with extra headers.
pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Upgrade {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => Upgrade::Open(ws, resp.headers().clone()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Upgrade::Refused {
                status,
                headers,
                body,
            }
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

pub async fn bearer(url: &str, token: &str) -> Upgrade {
    upgrade(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Sends a text message and returns the next text message.
pub async fn echo(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>, text: &str) -> String {
    ws.send(Message::Text(text.into())).await.expect("send");
    next_text(ws).await
}

pub async fn next_text(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Waits for a close frame; returns (code, reason).
pub async fn close_code(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    within: Duration,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    }
}

/// A plain HTTP/1.1 response, parsed.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the answer.
/// One sample from the admin listener's `/metrics`, by its full name
/// (labels included); panics if it is not there.
pub async fn metric(gw: &Gateway, name: &str) -> f64 {
    let body = http(gw.admin, "GET", "/metrics", &[], "").await.body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut map = std::collections::HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            map.entry(k.trim().to_ascii_lowercase())
                .and_modify(|e: &mut String| {
                    e.push_str(", ");
                    e.push_str(v.trim())
                })
                .or_insert_with(|| v.trim().to_string());
        }
    }
    HttpResponse {
        status,
        headers: map,
        body: body.to_string(),
    }
}

/// `POST` of a JSON body to the admin API with `admin_token`.
pub async fn admin_post(gw: &Gateway, admin_token: &str, path: &str, body: &Value) -> HttpResponse {
    http(
        gw.admin,
        "POST",
        path,
        &[
            ("authorization", &format!("Bearer {admin_token}")),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
}

/// `POST /v1/tickets` with `Authorization: Bearer <session>`.
pub async fn mint(gw: &Gateway, session: &str) -> HttpResponse {
    http(
        gw.addr,
        "POST",
        "/v1/tickets",
        &[("authorization", &format!("Bearer {session}"))],
        "",
    )
    .await
}

/// A `redis-server` of the test's own on a free port, killed on drop.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut r = OwnRedis { child: None, port };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key prefix unique to this test run, for tests sharing one Redis.
pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("test:{}:{name}:{nanos}:", std::process::id())
}
