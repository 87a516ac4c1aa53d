//! Issue 28, items 4 to 6: who the client is behind a proxy, guessing the
//! admin token, and key and issuer configurations that were accepted
//! silently. Each attack is replayed against the real gateway over real
//! sockets (the admin API over TLS, JWK sets over HTTPS).
// Test helpers: a failed setup step should panic on the spot.
#![allow(clippy::unwrap_used)]

use super::{bytes, good_head, raw};
use crate::common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

// ------------------------------------------- client identity (item 4)

/// An upstream that answers every WebSocket upgrade and reports the
/// `X-Forwarded-For` each one carried.
async fn xff_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut fields);
                req.parse(&buf).unwrap();
                let field = |name: &str| {
                    req.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let key = field("sec-websocket-key");
                let _ = tx.send(field("x-forwarded-for"));
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
                while matches!(s.read(&mut chunk).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, rx)
}

/// An upgrade head from the trusted proxy (this test, on 127.0.0.1) with
/// these extra raw header lines.
fn proxied(sub: &str, lines: &[&[u8]]) -> Vec<u8> {
    let mut head = bytes(&good_head(&token(sub)));
    head.truncate(head.len() - 2);
    for l in lines {
        head.extend_from_slice(l);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The `ip` of each handshake line with this reason (`"none"`: accepted),
/// once `lines` handshake lines are logged.
fn logged_ips(gw: &Gateway, lines: usize, reason: &str) -> Vec<String> {
    gw.events("handshake", lines)
        .iter()
        .filter(|e| e["reason"].as_str().unwrap_or("none") == reason)
        .map(|e| e["ip"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One obs-text byte in what the client sent, as nginx's
/// `$proxy_add_x_forwarded_for` forwards it, made the gateway fall back to
/// the proxy's address: the client vanished from the logs and the
/// upstream's `X-Forwarded-For`, got the proxy's rate-limit bucket instead
/// of its own, and starved the proxy's other clients.
#[tokio::test]
async fn obs_text_in_x_forwarded_for_does_not_hide_the_client() {
    let (up, mut seen) = xff_upstream().await;
    let cfg = base_config("[trusted_proxies]\ncidrs = [\"127.0.0.1\"]").replace(
        "kind = \"echo\"",
        &format!("kind = \"upstream\"\nupstream = \"ws://{up}/app\""),
    );
    // Two upgrades per address, then one a second.
    let gw = Gateway::start_with_env(
        &cfg,
        &[
            ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1"),
            ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "2"),
        ],
    );
    let forged: &[&[u8]] = &[b"X-Forwarded-For: \x80, 203.0.113.50"];
    for _ in 0..2 {
        let r = raw(gw.addr, &proxied("c50", forged)).await;
        assert_eq!(r.status, 101, "{}", r.head);
        // The upstream is told the client's address, not the proxy's.
        assert_eq!(seen.recv().await.unwrap(), "203.0.113.50");
    }
    // The client's own bucket is spent: refused, and logged under its address.
    raw(gw.addr, &proxied("c50", forged))
        .await
        .refused(429, "rate_limited");
    assert_eq!(logged_ips(&gw, 3, "rate_limited"), ["203.0.113.50"]);
    // Everyone else behind the proxy, and the proxy itself, still get in.
    for lines in [
        &[&b"X-Forwarded-For: \xff\xfe, 203.0.113.51"[..]][..],
        &[b"X-Forwarded-For: \x80", b"X-Forwarded-For: 203.0.113.52"],
        &[],
    ] {
        let r = raw(gw.addr, &proxied("other", lines)).await;
        assert_eq!(r.status, 101, "{lines:?}: {}", r.head);
        seen.recv().await.unwrap();
    }
    let mut ips = logged_ips(&gw, 6, "none");
    ips.sort();
    assert_eq!(
        ips,
        [
            "127.0.0.1",
            "203.0.113.50",
            "203.0.113.50",
            "203.0.113.51",
            "203.0.113.52",
        ]
    );

    // Proxies that write RFC 7239 Forwarded: quoted obs-text is legal there
    // and spoils nothing; a client's unreadable line leaves the proxy's own
    // line readable.
    let gw = Gateway::start_with_env(
        &cfg.replace(
            "cidrs = [\"127.0.0.1\"]",
            "cidrs = [\"127.0.0.1\"]\nheader = \"forwarded\"",
        ),
        &[],
    );
    for lines in [
        &[&b"Forwarded: for=6.6.6.6;host=\"\xe9\", for=203.0.113.60"[..]][..],
        &[b"Forwarded: for=\"\x80", b"Forwarded: for=203.0.113.61"],
    ] {
        let r = raw(gw.addr, &proxied("fwd", lines)).await;
        assert_eq!(r.status, 101, "{lines:?}: {}", r.head);
        seen.recv().await.unwrap();
    }
    let mut ips = logged_ips(&gw, 2, "none");
    ips.sort();
    assert_eq!(ips, ["203.0.113.60", "203.0.113.61"]);
}

// ------------------------------------------------ the admin API (item 5)

/// The admin token of these tests: 44 bytes.
const ADMIN: &str = "admin-0123456789abcdef-0123456789abcdef-0123";

/// An admin listener on every interface, speaking TLS.
struct TlsAdmin {
    gw: Gateway,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

impl TlsAdmin {
    fn start() -> TlsAdmin {
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = super::tls_files(dir.path());
        let cfg = base_config("").replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!(
                "[admin]\nlisten = \"0.0.0.0:0\"\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
                cert.display(),
                key.display()
            ),
        );
        let gw = Gateway::start_unready(&cfg, &[("WSGATE_ADMIN_TOKEN", ADMIN)]);
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsAdmin {
            port: gw.admin.port(),
            gw,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            _dir: dir,
        }
    }

    /// `GET path` over TLS from the local address `from`, with `token` as
    /// the bearer (none: no Authorization). Returns (status, head, body).
    async fn get(&self, from: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
        use tokio_rustls::rustls::pki_types::ServerName;
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let tcp = sock
            .connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .unwrap();
        let mut io = self
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        io.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = self.get("127.0.0.1", "/metrics", None).await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// 94 guesses found a 1-byte admin token in 0.02 s; 300 wrong guesses
/// drew no 429 and no log line. Now: ten failures per address, then one a
/// second, each logged without what was guessed; `429` before the token is
/// looked at, even the right one; other addresses unaffected.
#[tokio::test]
async fn admin_token_guessing_is_throttled_and_logged() {
    let admin = TlsAdmin::start();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..300 {
        let guess = format!("guess-{i:03}-{}", "x".repeat(32));
        let path = if i % 2 == 0 {
            "/admin/v1/sessions"
        } else {
            "/admin/v1/nope?x=eyJ"
        };
        let (status, head, body) = admin.get("127.0.0.1", path, Some(&guess)).await;
        if status == 429 {
            assert!(head.contains("\r\nretry-after: 1"), "{head}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "rate_limited", "{body}");
        } else {
            assert_eq!(status, 401, "{head}");
        }
        statuses.push(status);
    }
    let elapsed = started.elapsed().as_secs() + 1;
    let refused = statuses.iter().filter(|s| **s == 401).count();
    // The burst, then at most one a second.
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        refused as u64 <= 10 + elapsed,
        "{refused} guesses heard in {elapsed} s"
    );
    assert_eq!(statuses.len() - refused, 300 - refused);
    // Locked out: even the right token is not looked at.
    let (status, ..) = admin
        .get("127.0.0.1", "/admin/v1/sessions", Some(ADMIN))
        .await;
    assert_eq!(status, 429);
    // Another address is another bucket.
    let (status, _, body) = admin
        .get("127.0.0.2", "/admin/v1/sessions", Some(ADMIN))
        .await;
    assert_eq!(status, 200, "{body}");

    // One line per heard failure, none with what was sent.
    let lines = admin.gw.events("admin_auth_failed", refused);
    assert_eq!(lines.len(), refused, "{lines:?}");
    for l in &lines {
        assert_eq!(l["ip"], "127.0.0.1", "{l}");
        assert_eq!(l["reason"], "wrong_token", "{l}");
        assert!(
            ["/admin/v1/sessions", "other"].contains(&l["path"].as_str().unwrap()),
            "{l}"
        );
    }
    // The line of the failure that spent the burst says so.
    let first_locked = lines.iter().position(|l| l["locked_out"] == true);
    assert!(first_locked.is_some_and(|i| i >= 9), "{lines:?}");
    for l in admin.gw.logs() {
        assert!(!l.contains("guess-") && !l.contains("/nope"), "{l}");
    }
    let f = |r: &str| format!("wsgate_admin_auth_failures_total{{reason=\"{r}\"}}");
    assert_eq!(admin.metric(&f("unauthorized")).await, refused as f64);
    assert_eq!(
        admin.metric(&f("rate_limited")).await,
        (301 - refused) as f64
    );

    // A missing token is a failure too.
    let (status, ..) = admin.get("127.0.0.3", "/admin/v1/sessions", None).await;
    assert_eq!(status, 401);
    let last = admin.gw.events("admin_auth_failed", refused + 1);
    assert_eq!(last.last().unwrap()["reason"], "missing_token");
    assert_eq!(last.last().unwrap()["ip"], "127.0.0.3");

    // A second later the address may try again, and the right token works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = admin
        .get("127.0.0.1", "/admin/v1/sessions", Some(ADMIN))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Runs `wsgate check` on `config` with `env`: (success, stderr).
fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wsgate.toml");
    std::fs::write(&p, config).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_JWT_SECRET", SECRET)
        .args(["check", "--config"])
        .arg(&p);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A short admin token, or an admin listener other hosts can reach in
/// clear text, no longer start: each is one clear line. The plain-text
/// listener can be chosen explicitly, and is then warned about.
#[tokio::test]
async fn weak_admin_configurations_are_refused() {
    for len in [1, 16, 31] {
        // A letter that appears nowhere in the message.
        let tok = "Q".repeat(len);
        let tok = tok.as_str();
        let (ok, err) = check(&base_config(""), &[("WSGATE_ADMIN_TOKEN", tok)]);
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "admin.token: the admin token ($WSGATE_ADMIN_TOKEN) is {} bytes long; at least 32",
                tok.len()
            )),
            "{err}"
        );
        assert!(!err.contains(tok), "{err}");
    }
    let open = base_config("").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"0.0.0.0:0\"",
    );
    let (ok, err) = check(&open, &[("WSGATE_ADMIN_TOKEN", ADMIN)]);
    assert!(!ok);
    assert!(
        err.contains(
            "admin.listen: 0.0.0.0:0 is not a loopback address, so [admin.tls] is required"
        ),
        "{err}"
    );
    // The opt-out: it starts, says so, and serves plain HTTP.
    let plain = open.replace(
        "listen = \"0.0.0.0:0\"",
        "listen = \"0.0.0.0:0\"\nallow_plaintext = true",
    );
    let gw = Gateway::start_with_env(&plain, &[("WSGATE_ADMIN_TOKEN", ADMIN)]);
    let warned = gw.events("config_warning", 1);
    assert!(
        warned.iter().any(|w| w["msg"]
            .as_str()
            .is_some_and(|m| m.contains("admin.allow_plaintext = true"))),
        "{warned:?}"
    );
    let at = SocketAddr::from(([127, 0, 0, 1], gw.admin.port()));
    let auth = format!("Bearer {ADMIN}");
    let r = http(
        at,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Dev mode's own admin token is long enough.
    let (dev, _) = Gateway::start_dev(&[
        ("WSGATE_SERVER__LISTEN", "127.0.0.1:0"),
        ("WSGATE_ADMIN__LISTEN", "127.0.0.1:0"),
    ]);
    assert!(dev.wait_ready(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let admin_line = loop {
        if let Some(l) = dev.logs().into_iter().find(|l| l.contains("admin API:")) {
            break l;
        }
        assert!(Instant::now() < deadline, "no banner: {:?}", dev.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let token = admin_line
        .rsplit("Bearer ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert!(token.len() >= 32, "{token}");
    let auth = format!("Bearer {token}");
    let r = http(
        dev.admin,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ------------------------------------------ keys and issuers (item 6)

/// Serves `body` as a JWK set at any path over HTTPS on 127.0.0.1; returns
/// its URL and the CA file that verifies it.
async fn jwks_server(body: Value, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = dir.join("idp-ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}/jwks.json"), ca)
}

/// The public JWK of a test key (tests/data) under `kid`.
fn jwk(alg: jsonwebtoken::Algorithm, kid: &str) -> Value {
    use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey};
    let pem = |f: &str| std::fs::read(data(f)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec256.pem")),
        _ => EncodingKey::from_rsa_pem(&pem("rsa.pem")),
    }
    .unwrap();
    let mut v = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    v["kid"] = serde_json::json!(kid);
    v
}

/// `n` of tests/data/rsa1024.pub.pem, base64url.
const N_1024: &str = "1Ye2-Kq0yJRlpQBXig2oLwJkbbOJIUV1ybYxHTwRuXr_RNkIfUGHfNzTMS7Ysn-y82cnD3a8Iw0e__v0_sEe8VpXM_fxoKgsyr4-wuGCxL5K7tFYYheIPlLAWsC2114t60XvdgoY_i5xWIpm8BY1GpNd6bUbV-cZ4UizDcdBuTk";

/// A 1024-bit RSA key in an IdP's set was loaded without a word (every
/// token under it then failed `bad_signature`), and two keys sharing a
/// `kid` made the tokens of both valid. Now each is skipped with its
/// reason, the rest of the set is used, and a token naming the shared
/// `kid` is refused `unknown_key`, even one the IdP's real key signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_and_ambiguous_jwks_keys_are_skipped_with_a_reason() {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::json;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let dir = tempfile::tempdir().unwrap();
    // A second RSA key under "dup": the real one's modulus, one bit flipped.
    let real = jwk(Algorithm::RS256, "dup");
    let mut rival = real.clone();
    let mut n = b64.decode(real["n"].as_str().unwrap()).unwrap();
    n[40] ^= 0x10;
    rival["n"] = json!(b64.encode(n));
    let weak = json!({"kty": "RSA", "alg": "RS256", "kid": "weak", "n": N_1024, "e": "AQAB"});
    let doc = json!({"keys": [weak, real, rival, jwk(Algorithm::ES256, "es")]});
    let (url, ca) = jwks_server(doc, dir.path()).await;
    let keys = format!(
        "[[auth.keys]]\njwks_url = \"{url}\"\nca_file = \"{}\"",
        ca.display()
    );
    let cfg = base_config("").replace(
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"TEST_JWT_SECRET\"",
        &keys,
    );
    let gw = Gateway::start(&cfg);
    assert!(gw.wait_ready(Duration::from_secs(10)), "{:?}", gw.logs());
    let skipped: Vec<String> = gw
        .events("jwks_key_skipped", 3)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped[0].starts_with("key 0 (kid \"weak\"): RSA key of 1024 bits: 2048 to 8192"),
        "{skipped:?}"
    );
    for (i, s) in skipped[1..].iter().enumerate() {
        assert!(
            s.starts_with(&format!(
                "key {} (kid \"dup\"): kid \"dup\" also names 1 other",
                i + 1
            )),
            "{skipped:?}"
        );
    }
    let refreshed = gw.events("jwks_refreshed", 1);
    assert_eq!(refreshed[0]["kids"], "es", "{refreshed:?}");
    assert_eq!(
        metric(&gw, "wsgate_keys_loaded{source=\"auth.keys[0]\"}").await,
        1.0
    );
    // The rest of the set works.
    let ec = EncodingKey::from_ec_pem(&std::fs::read(data("ec256.pem")).unwrap()).unwrap();
    let es = sign(Algorithm::ES256, &ec, Some("es"), &claims("alice", 600));
    bearer(&gw.url(), &es).await.open();
    // The IdP's real key, under the kid it shares: not accepted.
    let rs = EncodingKey::from_rsa_pem(&std::fs::read(data("rsa.pem")).unwrap()).unwrap();
    let t = sign(Algorithm::RS256, &rs, Some("dup"), &claims("alice", 600));
    bearer(&gw.url(), &t).await.refused(401, "unknown_key");
}

/// Runs `wsgate check` on `base_config` with its keys replaced by `keys`.
fn check_keys(keys: &str) -> (bool, String) {
    let cfg = base_config("").replace(
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"TEST_JWT_SECRET\"",
        keys,
    );
    check(&cfg, &[])
}

/// An `[[auth.issuers]]` entry with an HS256 key.
fn issuer(iss: &str, prefix: &str) -> String {
    format!(
        "[[auth.issuers]]\nissuer = {iss}\nsub_prefix = \"{prefix}\"\n\
         [[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"TEST_JWT_SECRET\"\n"
    )
}

/// Two issuers with the same `sub_prefix` were accepted silently: a user
/// of one could be a user of the other (its `user:{sub}` channels, its
/// sessions, its revocations). Now a config error, as is a prefix that
/// begins another. One IdP with several `iss` spellings is one entry.
#[tokio::test]
async fn issuers_sharing_a_subject_namespace_are_refused() {
    for (keys, needle) in [
        (
            [
                issuer("\"https://a.test\"", "t|"),
                issuer("\"https://b.test\"", "t|"),
            ]
            .concat(),
            "auth.issuers[1].sub_prefix: \"t|\" is also the sub_prefix of auth.issuers[0]",
        ),
        (
            [
                issuer("\"https://a.test\"", ""),
                issuer("\"https://b.test\"", ""),
            ]
            .concat(),
            "auth.issuers[1].sub_prefix: \"\" is also the sub_prefix of auth.issuers[0]",
        ),
        (
            [
                issuer("\"https://a.test\"", "t"),
                issuer("\"https://b.test\"", "t|"),
            ]
            .concat(),
            "auth.issuers[1].sub_prefix: \"t|\" begins with the sub_prefix of auth.issuers[0]",
        ),
    ] {
        let (ok, err) = check_keys(&keys);
        assert!(!ok && err.contains(needle), "{err}");
    }
    // Both spellings of one IdP: one namespace, the same user either way.
    let keys = [
        issuer("[\"https://accounts.test\", \"accounts.test\"]", ""),
        issuer("\"https://partner.test\"", "partner|"),
    ]
    .concat();
    let cfg = base_config("").replace(
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"TEST_JWT_SECRET\"",
        &keys,
    );
    let gw = Gateway::start_with_env(&cfg, &[("WSGATE_ADMIN_TOKEN", ADMIN)]);
    let mut open = Vec::new();
    for iss in [
        "https://accounts.test",
        "accounts.test",
        "https://partner.test",
    ] {
        let mut c = claims("alice", 600);
        c["iss"] = serde_json::json!(iss);
        open.push(bearer(&gw.url(), &hs(&c)).await.open());
    }
    let mut c = claims("alice", 600);
    c["iss"] = serde_json::json!("https://other.test");
    bearer(&gw.url(), &hs(&c)).await.refused(401, "bad_issuer");
    let auth = format!("Bearer {ADMIN}");
    let list = http(
        gw.admin,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &auth)],
        "",
    )
    .await;
    let mut subs: Vec<String> = list.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sub"].as_str().unwrap().to_string())
        .collect();
    subs.sort();
    assert_eq!(subs, ["alice", "alice", "partner|alice"]);
}
