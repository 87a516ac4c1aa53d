//! Keys from identity providers (issue 9) against a real JWKS served by
//! the test over real HTTPS (rustls, an rcgen certificate) on 127.0.0.1:
//! selection by kid, rotation and the refetch rate limit counted at the
//! server, the last good set kept while the IdP is down, redirects, several
//! issuers, and SIGHUP reloads of a JWKS file and of an HS secret with a
//! previous-secret overlap.

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

// --- a tiny IdP ---------------------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    cache_control: Option<String>,
    location: Option<String>,
}

/// Serves one JWKS at any path over HTTPS (`/old` redirects to
/// `/jwks.json` on the same origin) and counts requests.
struct Idp {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Idp {
    async fn start(body: Value) -> Idp {
        let dir = tempfile::tempdir().expect("tmp");
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("rcgen");
        let ca_file = dir.path().join("idp-ca.pem");
        std::fs::write(&ca_file, ck.cert.pem()).expect("ca");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body: body.to_string(),
            cache_control: Some("public, max-age=3600".into()),
            location: None,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r2, h2) = (reply.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, reply, hits) = (acceptor.clone(), r2.clone(), h2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (reply, hits) = (reply.clone(), hits.clone());
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let r = reply.lock().expect("reply").clone();
                            let mut b = hyper::Response::builder();
                            if req.uri().path() == "/old" {
                                b = b.status(302).header("location", "/jwks.json");
                                return b.body(Full::new(Bytes::new()));
                            }
                            b = b
                                .status(r.status)
                                .header("content-type", "application/json");
                            if let Some(cc) = r.cache_control {
                                b = b.header("cache-control", cc);
                            }
                            if let Some(l) = r.location {
                                b = b.header("location", l);
                            }
                            b.body(Full::new(Bytes::from(r.body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Idp {
            addr,
            reply,
            hits,
            ca_file,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks.json", self.addr.port())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set(&self, f: impl FnOnce(&mut Reply)) {
        f(&mut self.reply.lock().expect("reply"));
    }
}

// --- keys and tokens ----------------------------------------------------------

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).expect("test key")
}

fn signer(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem("rsa.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec256.pem")),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&pem("ec384.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed25519.pem")),
        _ => unreachable!(),
    }
    .expect("key")
}

/// The public JWK of a test key under `kid`.
fn jwk(alg: Algorithm, kid: &str) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(&signer(alg), alg).expect("jwk"))
        .expect("json");
    v["kid"] = json!(kid);
    v
}

fn set(keys: &[(Algorithm, &str)]) -> Value {
    json!({"keys": keys.iter().map(|(a, k)| jwk(*a, k)).collect::<Vec<_>>()})
}

fn idp_token(alg: Algorithm, kid: &str, extra: Value) -> String {
    let mut c = claims("alice", 600);
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    sign(alg, &signer(alg), Some(kid), &c)
}

/// `base_config` with its HS key replaced by `keys` (TOML).
fn config_with_keys(keys: &str) -> String {
    base_config("").replace(
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"TEST_JWT_SECRET\"",
        keys,
    )
}

fn jwks_key(idp: &Idp, url: &str, extra: &str) -> String {
    format!(
        "[[auth.keys]]\njwks_url = \"{url}\"\nca_file = \"{}\"\n{extra}",
        idp.ca_file.display()
    )
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let r = http(gw.admin, "GET", "/readyz", &[], "").await;
    (r.status, r.json())
}

async fn wait_ready(gw: &Gateway, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(gw).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {body} {:?}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn accepted(gw: &Gateway, token: &str) -> bool {
    match bearer(&gw.url(), token).await {
        Upgrade::Open(..) => true,
        Upgrade::Refused { .. } => false,
    }
}

async fn metrics(gw: &Gateway) -> String {
    http(gw.admin, "GET", "/metrics", &[], "").await.body
}

/// Waits for a log event matching `pred`.
fn wait_event(gw: &Gateway, ev: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = gw.events(ev, 0).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "no {ev}: {:?}", gw.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(gw: &Gateway) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

// --- tests ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https_selects_keys_by_kid() {
    let idp = Idp::start(set(&[
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ]))
    .await;
    // Down at first: not ready until the keys are loaded.
    idp.set(|r| r.status = 503);
    let gw = Gateway::start(&config_with_keys(&jwks_key(
        &idp,
        &idp.url(),
        "cache_min = \"1s\"",
    )));
    let (status, body) = readyz(&gw).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("no_keys")));
    bearer(&gw.url(), &idp_token(Algorithm::ES256, "ec-1", json!({})))
        .await
        .refused(401, "unknown_key");
    idp.set(|r| r.status = 200);
    wait_ready(&gw, Duration::from_secs(10)).await;

    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        assert!(
            accepted(&gw, &idp_token(alg, kid, json!({}))).await,
            "{kid}"
        );
    }
    // The algorithm is the key's, never the token's: same RSA key, PS256.
    bearer(&gw.url(), &idp_token(Algorithm::PS256, "rsa-1", json!({})))
        .await
        .refused(401, "algorithm_not_allowed");
    // A kid pins the key: the EC key's token under the Ed25519 kid.
    let wrong = sign(
        Algorithm::EdDSA,
        &signer(Algorithm::EdDSA),
        Some("ec-1"),
        &claims("alice", 600),
    );
    bearer(&gw.url(), &wrong)
        .await
        .refused(401, "algorithm_not_allowed");

    // jku / x5u in a token are never followed: an attacker's JWKS (same
    // shape, its own certificate) gets no request.
    let evil = Idp::start(set(&[(Algorithm::ES384, "evil")])).await;
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("evil".into());
    h.jku = Some(evil.url());
    h.x5u = Some(evil.url());
    let forged =
        jsonwebtoken::encode(&h, &claims("mallory", 600), &signer(Algorithm::ES384)).expect("sign");
    bearer(&gw.url(), &forged).await.refused(401, "unknown_key");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(evil.hits(), 0);
    let m = metrics(&gw).await;
    assert!(
        m.contains("wsgate_keys_loaded{source=\"auth.keys[0]\"} 3"),
        "{m}"
    );
    assert!(gw.events("jwks_refreshed", 1)[0]["kids"] == "rsa-1,ec-1,ed-1");
    // Logs name kids and URLs, never key material.
    let modulus = jwk(Algorithm::RS256, "x")["n"].as_str().expect("n")[..40].to_string();
    let ec_x = jwk(Algorithm::ES256, "x")["x"].as_str().expect("x")[..20].to_string();
    for line in gw.logs() {
        assert!(!line.contains(&modulus) && !line.contains(&ec_x), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_unknown_kid_refetch_rate_limit() {
    let idp = Idp::start(set(&[(Algorithm::RS256, "k1")])).await;
    let gw = Gateway::start(&config_with_keys(&jwks_key(
        &idp,
        &idp.url(),
        "refetch_interval = \"3s\"",
    )));
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(idp.hits(), 1);
    assert!(accepted(&gw, &idp_token(Algorithm::RS256, "k1", json!({}))).await);
    // The startup fetch counts against the interval too.
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // The IdP rotates: a token with the new kid is accepted on first try,
    // after exactly one refetch.
    idp.set(|r| r.body = set(&[(Algorithm::RS256, "k1"), (Algorithm::ES256, "k2")]).to_string());
    assert!(accepted(&gw, &idp_token(Algorithm::ES256, "k2", json!({}))).await);
    assert_eq!(idp.hits(), 2);

    // Forged kids right after: no refetch storm, not even one more.
    for i in 0..20 {
        bearer(
            &gw.url(),
            &idp_token(Algorithm::ES256, &format!("forged-{i}"), json!({})),
        )
        .await
        .refused(401, "unknown_key");
    }
    assert_eq!(idp.hits(), 2);
    let m = metrics(&gw).await;
    assert!(m.contains("wsgate_key_refetches_limited_total 20"), "{m}");
    assert!(m.contains("wsgate_key_refreshes_total{source=\"auth.keys[0]\",trigger=\"unknown_kid\",result=\"ok\"} 1"), "{m}");
    // After the interval, one unknown kid buys exactly one refetch.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for i in 0..5 {
        bearer(
            &gw.url(),
            &idp_token(Algorithm::ES256, &format!("again-{i}"), json!({})),
        )
        .await
        .refused(401, "unknown_key");
    }
    assert_eq!(idp.hits(), 3);
    // A retired key is refused once the set no longer has it.
    idp.set(|r| r.body = set(&[(Algorithm::ES256, "k2")]).to_string());
    tokio::time::sleep(Duration::from_millis(3200)).await;
    bearer(
        &gw.url(),
        &idp_token(Algorithm::ES256, "k3-unknown", json!({})),
    )
    .await
    .refused(401, "unknown_key");
    assert_eq!(idp.hits(), 4);
    bearer(&gw.url(), &idp_token(Algorithm::RS256, "k1", json!({})))
        .await
        .refused(401, "unknown_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_keeps_the_last_good_set() {
    let idp = Idp::start(set(&[(Algorithm::ES256, "k1")])).await;
    // max-age=0 is bounded up to cache_min: a refresh about every second.
    idp.set(|r| r.cache_control = Some("max-age=0".into()));
    let gw = Gateway::start(&config_with_keys(&jwks_key(
        &idp,
        &idp.url(),
        "cache_min = \"1s\"\ncache_max = \"1s\"",
    )));
    wait_ready(&gw, Duration::from_secs(10)).await;
    let token = idp_token(Algorithm::ES256, "k1", json!({}));
    assert!(accepted(&gw, &token).await);
    // Down, then answering garbage, then an empty set: all kept out.
    for (status, body) in [
        (500, "oops".to_string()),
        (200, "not json".to_string()),
        (200, json!({"keys": []}).to_string()),
    ] {
        let before = idp.hits();
        idp.set(|r| {
            r.status = status;
            r.body = body;
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while idp.hits() < before + 2 {
            assert!(Instant::now() < deadline, "no refresh attempts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(accepted(&gw, &token).await);
        assert_eq!(readyz(&gw).await.0, 200);
    }
    let failed = gw.events("jwks_refresh_failed", 3);
    assert!(failed.len() >= 3);
    assert!(failed.iter().all(|e| e["keeping"] == 1), "{failed:?}");
    let m = metrics(&gw).await;
    assert!(m.contains("trigger=\"scheduled\",result=\"error\"}"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_only_within_the_same_origin() {
    let idp = Idp::start(set(&[(Algorithm::EdDSA, "k1")])).await;
    let other = Idp::start(set(&[(Algorithm::EdDSA, "k1")])).await;
    // A redirect to another host (here: another port) is refused, not followed.
    idp.set(|r| {
        r.status = 302;
        r.location = Some(other.url());
    });
    let ca_both = idp._dir.path().join("both.pem");
    std::fs::write(
        &ca_both,
        [
            std::fs::read_to_string(&idp.ca_file).expect("ca"),
            std::fs::read_to_string(&other.ca_file).expect("ca"),
        ]
        .concat(),
    )
    .expect("write");
    let keys = format!(
        "[[auth.keys]]\njwks_url = \"{}\"\nca_file = \"{}\"\ncache_min = \"1s\"",
        idp.url(),
        ca_both.display()
    );
    let gw = Gateway::start(&config_with_keys(&keys));
    let failed = gw.events("jwks_refresh_failed", 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect to another origin refused")),
        "{failed:?}"
    );
    assert_eq!(other.hits(), 0);
    assert_eq!(readyz(&gw).await.0, 503);
    drop(gw);

    // A same-origin redirect is followed.
    idp.set(|r| {
        r.status = 200;
        r.location = None;
    });
    let old = format!("https://127.0.0.1:{}/old", idp.addr.port());
    let gw = Gateway::start(&config_with_keys(&jwks_key(&idp, &old, "")));
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert!(accepted(&gw, &idp_token(Algorithm::EdDSA, "k1", json!({}))).await);

    // Certificates are verified: without the CA file, the system roots do
    // not know the test CA.
    let gw = Gateway::start(&config_with_keys(&format!(
        "[[auth.keys]]\njwks_url = \"{}\"",
        idp.url()
    )));
    let failed = gw.events("jwks_refresh_failed", 1);
    // (A machine without a system CA store reports that instead.)
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS") || e.contains("no trusted CA")),
        "{failed:?}"
    );
    assert_eq!(readyz(&gw).await.0, 503);
}

const ADMIN: &str = "admin-token-0123456789-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_issuers_each_with_its_own_keys_and_audience() {
    let idp = Idp::start(set(&[(Algorithm::RS256, "a1")])).await;
    let keys = format!(
        r#"[[auth.issuers]]
issuer = "https://a.idp.test/"
audience = "api-a"
[[auth.issuers.keys]]
jwks_url = "{}"
ca_file = "{}"
[[auth.issuers]]
issuer = "https://b.idp.test"
audience = ["api-b"]
sub_prefix = "b|"
[[auth.issuers.keys]]
alg = "HS256"
secret_env = "TEST_JWT_SECRET""#,
        idp.url(),
        idp.ca_file.display()
    );
    let gw = Gateway::start_with_env(&config_with_keys(&keys), &[("WSGATE_ADMIN_TOKEN", ADMIN)]);
    wait_ready(&gw, Duration::from_secs(10)).await;
    let a = json!({"iss": "https://a.idp.test/", "aud": "api-a"});
    assert!(accepted(&gw, &idp_token(Algorithm::RS256, "a1", a.clone())).await);
    let mut b = claims("alice", 600);
    b["iss"] = json!("https://b.idp.test");
    b["aud"] = json!("api-b");
    let (_ws, _) = bearer(&gw.url(), &hs(&b)).await.open();
    // B's subjects are namespaced: they cannot collide with A's.
    let list = http(
        gw.admin,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await
    .json();
    assert!(list.to_string().contains("\"sub\":\"b|alice\""), "{list}");
    // Each issuer's audience only.
    bearer(
        &gw.url(),
        &idp_token(
            Algorithm::RS256,
            "a1",
            json!({"iss": "https://a.idp.test/", "aud": "api-b"}),
        ),
    )
    .await
    .refused(401, "bad_audience");
    // B's iss with A's key: B has no such key.
    bearer(
        &gw.url(),
        &idp_token(
            Algorithm::RS256,
            "a1",
            json!({"iss": "https://b.idp.test", "aud": "api-b"}),
        ),
    )
    .await
    .refused(401, "algorithm_not_allowed");
    // A's iss with B's secret.
    let mut forged = b.clone();
    forged["iss"] = json!("https://a.idp.test/");
    forged["aud"] = json!("api-a");
    bearer(&gw.url(), &hs(&forged))
        .await
        .refused(401, "algorithm_not_allowed");
    // An iss nobody configured, or none at all.
    let mut c = b.clone();
    c["iss"] = json!("https://evil.test");
    bearer(&gw.url(), &hs(&c)).await.refused(401, "bad_issuer");
    c.as_object_mut().expect("obj").remove("iss");
    bearer(&gw.url(), &hs(&c))
        .await
        .refused(401, "missing_claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_jwks_file_and_an_hs_secret_with_overlap() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
    let s1 = "first-secret-0123456789abcdef-0123456789";
    let s2 = "second-secret-0123456789abcdef-012345678";
    write("keys.json", &set(&[(Algorithm::ES256, "f1")]).to_string());
    write("hs.txt", s1);
    let cfg = |hs_extra: &str| {
        config_with_keys(&format!(
            "[[auth.keys]]\njwks_file = \"{}\"\n[[auth.keys]]\nalg = \"HS256\"\nsecret_file = \"{}\"\n{hs_extra}",
            d.join("keys.json").display(),
            d.join("hs.txt").display(),
        ))
    };
    let gw = Gateway::start(&cfg(""));
    let config_path = {
        // The harness wrote the config into its own folder: edit the file
        // the process was started with (`serve --config PATH`).
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", gw.pid())).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        std::path::PathBuf::from(args.last().expect("config arg"))
    };
    wait_ready(&gw, Duration::from_secs(5)).await;
    let hs_with = |secret: &str| {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            None,
            &claims("bob", 600),
        )
    };
    let f1 = idp_token(Algorithm::ES256, "f1", json!({}));
    let f2 = idp_token(Algorithm::EdDSA, "f2", json!({}));
    assert!(accepted(&gw, &f1).await);
    assert!(!accepted(&gw, &f2).await);
    assert!(accepted(&gw, &hs_with(s1)).await);

    // Rotate both: a new key file, and the new secret with the old one
    // accepted for a few more seconds.
    write("keys.json", &set(&[(Algorithm::EdDSA, "f2")]).to_string());
    write("hs-old.txt", s1);
    write("hs.txt", s2);
    // Seconds precision: the overlap ends 5 to 6 s from now.
    let until = std::time::SystemTime::now() + Duration::from_secs(6);
    let until = humantime::format_rfc3339_seconds(until).to_string();
    std::fs::write(
        &config_path,
        cfg(&format!(
            "previous_secret_file = \"{}\"\nprevious_until = \"{until}\"",
            d.join("hs-old.txt").display()
        )),
    )
    .expect("config");
    hup(&gw);
    wait_event(&gw, "keys_reloaded", |e| e["trigger"] == "sighup");
    assert!(accepted(&gw, &f2).await);
    // f1 is gone; the only kid-less keys left are HS ones.
    bearer(&gw.url(), &f1)
        .await
        .refused(401, "algorithm_not_allowed");
    assert!(accepted(&gw, &hs_with(s2)).await);
    assert!(
        accepted(&gw, &hs_with(s1)).await,
        "previous secret in its overlap"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    bearer(&gw.url(), &hs_with(s1))
        .await
        .refused(401, "bad_signature");
    assert!(accepted(&gw, &hs_with(s2)).await);

    // An invalid new set is refused and the keys in use are kept.
    write("keys.json", &json!({"keys": []}).to_string());
    hup(&gw);
    let failed = wait_event(&gw, "keys_reload_failed", |_| true);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("keys.json")),
        "{failed}"
    );
    assert!(accepted(&gw, &f2).await);
    assert_eq!(readyz(&gw).await.0, 200);

    // A file change alone (no signal) is picked up too.
    write("keys.json", &set(&[(Algorithm::ES384, "f3")]).to_string());
    let deadline = Instant::now() + Duration::from_secs(12);
    let f3 = idp_token(Algorithm::ES384, "f3", json!({}));
    while !accepted(&gw, &f3).await {
        assert!(Instant::now() < deadline, "file change not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_event(&gw, "keys_reloaded", |e| e["trigger"] == "file_change");
    let m = metrics(&gw).await;
    assert!(
        m.contains("wsgate_key_reloads_total{result=\"error\"}"),
        "{m}"
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ask(ws: &mut Ws, v: Value) -> Value {
    serde_json::from_str(&echo(ws, &v.to_string()).await).expect("json reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_grants_from_claim_paths_and_scope_strings() {
    let cfg = base_config(
        r#"
[[hub.grants]]
claim = "realm_access.roles"
value = "admin"
subscribe = ["admin:*"]
publish = ["admin:*"]
[[hub.grants]]
claim = "scope"
value = "chat:write"
publish = ["chat:*"]
subscribe = ["chat:*"]
"#,
    )
    .replace("kind = \"echo\"", "kind = \"hub\"");
    let gw = Gateway::start(&cfg);
    let tok = |extra: Value| {
        let mut c = claims("carol", 600);
        if let Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        hs(&c)
    };
    let (mut admin, _) = bearer(
        &gw.url(),
        &tok(json!({"realm_access": {"roles": ["user", "admin"]}, "scope": "openid profile"})),
    )
    .await
    .open();
    let (mut writer, _) = bearer(
        &gw.url(),
        &tok(json!({"realm_access": {"roles": ["user"]}, "scope": "openid chat:write"})),
    )
    .await
    .open();
    let sub = |c: &str| json!({"type": "subscribe", "channel": c, "id": 1});
    assert_eq!(ask(&mut admin, sub("admin:ops")).await["type"], "ack");
    assert_eq!(
        ask(&mut admin, sub("chat:lobby")).await["reason"],
        "forbidden"
    );
    assert_eq!(
        ask(&mut writer, sub("admin:ops")).await["reason"],
        "forbidden"
    );
    assert_eq!(ask(&mut writer, sub("chat:lobby")).await["type"], "ack");
}

/// Sets and tokens shaped like two real IdPs' (see docs/identity-providers.md):
/// Entra ID publishes RSA keys without `alg` (plus x5t/x5c/issuer members)
/// and puts scopes in a space-separated `scp`; Keycloak mixes an encryption
/// key into its set and nests roles in `realm_access.roles`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_shaped_sets_and_claims() {
    let mut entra_key = jwk(Algorithm::RS256, "entra-kid");
    let o = entra_key.as_object_mut().expect("obj");
    o.remove("alg");
    o.insert("use".into(), json!("sig"));
    o.insert("x5t".into(), json!("bm90LWEtcmVhbC10aHVtYnByaW50"));
    o.insert("x5c".into(), json!(["MIIC-not-a-real-cert"]));
    o.insert(
        "issuer".into(),
        json!("https://login.microsoftonline.com/tid/v2.0"),
    );
    let entra = Idp::start(json!({"keys": [entra_key]})).await;
    let mut enc = jwk(Algorithm::RS256, "kc-enc");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut sig = jwk(Algorithm::ES256, "kc-sig");
    sig["use"] = json!("sig");
    let keycloak = Idp::start(json!({"keys": [enc, sig]})).await;
    let keys = format!(
        r#"[[auth.issuers]]
issuer = "https://login.microsoftonline.com/tid/v2.0"
audience = "11111111-2222-3333-4444-555555555555"
[[auth.issuers.keys]]
jwks_url = "{}"
ca_file = "{}"
alg = "RS256"
[[auth.issuers]]
issuer = "https://sso.test/realms/main"
audience = "wsgate"
sub_prefix = "kc|"
[[auth.issuers.keys]]
jwks_url = "{}"
ca_file = "{}""#,
        entra.url(),
        entra.ca_file.display(),
        keycloak.url(),
        keycloak.ca_file.display()
    );
    let cfg = config_with_keys(&keys).replace("kind = \"echo\"", "kind = \"hub\"")
        + r#"
[[hub.grants]]
claim = "scp"
value = "chat.write"
publish = ["chat:*"]
[[hub.grants]]
claim = "realm_access.roles"
value = "admin"
subscribe = ["*"]
"#;
    let gw = Gateway::start(&cfg);
    wait_ready(&gw, Duration::from_secs(10)).await;
    let skipped = gw.events("jwks_key_skipped", 1);
    assert!(
        skipped
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains("kc-enc"))),
        "{skipped:?}"
    );
    let entra_token = idp_token(
        Algorithm::RS256,
        "entra-kid",
        json!({"iss": "https://login.microsoftonline.com/tid/v2.0",
               "aud": "11111111-2222-3333-4444-555555555555",
               "scp": "User.Read chat.write", "roles": ["Chat.Reader"]}),
    );
    let kc_token = idp_token(
        Algorithm::ES256,
        "kc-sig",
        json!({"iss": "https://sso.test/realms/main", "aud": ["wsgate", "account"],
               "realm_access": {"roles": ["offline_access", "admin"]}}),
    );
    let (mut e, _) = bearer(&gw.url(), &entra_token).await.open();
    let (mut k, _) = bearer(&gw.url(), &kc_token).await.open();
    let publish = json!({"type": "publish", "channel": "chat:1", "data": "hi", "id": 1});
    let subscribe = json!({"type": "subscribe", "channel": "chat:1", "id": 2});
    assert_eq!(ask(&mut k, subscribe.clone()).await["type"], "ack");
    assert_eq!(ask(&mut e, subscribe).await["reason"], "forbidden");
    assert_eq!(ask(&mut e, publish.clone()).await["type"], "ack");
    let got: Value = serde_json::from_str(&next_text(&mut k).await).expect("json");
    assert_eq!(
        (got["type"].as_str(), got["data"].as_str()),
        (Some("message"), Some("hi"))
    );
    assert_eq!(ask(&mut k, publish).await["reason"], "forbidden");
}
