//! Ticket minting and every path that turns a credential into rights:
//! revoked sessions, per-IP rate limits (`POST /v1/tickets`).

use super::*;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const ADMIN: &str = "admin-token-0123456789-0123456789";
const TICKET_SECRET: &str = "ticket-secret-0123456789abcdef-0123456789";

/// The admin token, the ticket secret, and rate limits out of the way of
/// the many upgrades these tests make from one address.
fn env() -> [(&'static str, &'static str); 4] {
    [
        ("WSGATE_ADMIN_TOKEN", ADMIN),
        ("TEST_TICKET_SECRET", TICKET_SECRET),
        ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1000"),
        ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "1000"),
    ]
}

/// A string no other call returns (ids of tokens and tickets).
fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(store: &str) -> String {
    base_config(&format!(
        "{store}[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n"
    ))
}

async fn revoke(gw: &Gateway, target: Value) {
    let r = admin_post(gw, ADMIN, "/admin/v1/revoke", &target).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn ticket_url(gw: &Gateway, t: &str) -> String {
    format!("{}?ticket={t}", gw.url())
}

async fn mint_refused(gw: &Gateway, session: &str, code: &str) {
    let r = mint(gw, session).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some(code)),
        "{r:?}"
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="wsgate", error="invalid_token""#)
    );
}

async fn minted(gw: &Gateway, session: &str) -> String {
    let r = mint(gw, session).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["ticket"].as_str().expect("ticket").to_owned()
}

/// A ticket as a node that has not heard of a revocation yet would mint it
/// for `session` now: a fresh `iat`, and the session token's own issue
/// time in `session_iat` (absent when `session_iat` is `None`).
fn late_ticket(session: &Value, session_iat: Option<i64>) -> String {
    let mut c = json!({
        "sub": session["sub"],
        "aud": "wsgate-ticket",
        // To the millisecond, as the gateway mints: after the revocation.
        "iat": SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64(),
        "exp": now() + 30,
        "jti": unique("late"),
        "session_exp": session["exp"],
    });
    if let Some(sid) = session.get("sid") {
        c["sid"] = sid.clone();
    }
    if let Some(j) = session.get("jti") {
        c["session_jti"] = j.clone();
    }
    if let Some(iat) = session_iat {
        c["session_iat"] = json!(iat);
    }
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(TICKET_SECRET.as_bytes()),
        None,
        &c,
    )
}

/// The whole sub/jti/sid story against `mint_on` and `use_on`, with the
/// revocations made on `admin_on` (one node: all three the same).
async fn revoked_sessions_mint_nothing(admin_on: &Gateway, mint_on: &Gateway, use_on: &Gateway) {
    // sub: a socket is open, a ticket was minted before the revocation.
    let mut alice = claims("alice", 600);
    alice["jti"] = json!(unique("alice"));
    let t = hs(&alice);
    let (mut ws, _) = bearer(&use_on.url(), &t).await.open();
    let early = minted(mint_on, &t).await;
    // iat has second granularity: make the revocation strictly later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    revoke(admin_on, json!({"sub": "alice"})).await;
    // The socket's close shows the revocation reached the node using it.
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4403);
    wait_revoked(mint_on, &t).await;
    bearer(&use_on.url(), &t).await.refused(401, "revoked");
    mint_refused(mint_on, &t, "revoked").await;
    upgrade(&ticket_url(use_on, &early), &[])
        .await
        .refused(401, "revoked");
    // A ticket minted after the revocation (by a node that had not heard of
    // it) carries the session's iat, and is refused at redemption for it.
    let iat = alice["iat"].as_i64().expect("iat");
    upgrade(&ticket_url(use_on, &late_ticket(&alice, Some(iat))), &[])
        .await
        .refused(401, "revoked");
    // Without session_iat the socket cannot prove it came after: refused.
    upgrade(&ticket_url(use_on, &late_ticket(&alice, None)), &[])
        .await
        .refused(401, "revoked");
    // A fresh login (issued after the revocation) mints and connects.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut fresh = claims("alice", 600);
    fresh["jti"] = json!(unique("alice"));
    let k = minted(mint_on, &hs(&fresh)).await;
    let (mut ws, _) = upgrade(&ticket_url(use_on, &k), &[]).await.open();
    assert_eq!(echo(&mut ws, "back").await, "back");
    let iat = fresh["iat"].as_i64().expect("iat");
    let (_ws, _) = upgrade(&ticket_url(use_on, &late_ticket(&fresh, Some(iat))), &[])
        .await
        .open();

    // jti and sid: the mint refuses the revoked token, not its siblings.
    for kind in ["jti", "sid"] {
        let value = unique(kind);
        let mut c = claims("bob", 600);
        c[kind] = json!(value);
        let revoked = hs(&c);
        let early = minted(mint_on, &revoked).await;
        revoke(admin_on, json!({kind: value})).await;
        wait_revoked(mint_on, &revoked).await;
        mint_refused(mint_on, &revoked, "revoked").await;
        upgrade(&ticket_url(use_on, &early), &[])
            .await
            .refused(401, "revoked");
        let mut sibling = claims("bob", 600);
        sibling["jti"] = json!(unique("sibling"));
        sibling["sid"] = json!(unique("sibling"));
        let k = minted(mint_on, &hs(&sibling)).await;
        upgrade(&ticket_url(use_on, &k), &[]).await.open();
    }
}

/// Waits until `gw` refuses `token` as revoked (pub/sub across nodes).
async fn wait_revoked(gw: &Gateway, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Upgrade::Refused { body, .. } = bearer(&gw.url(), token).await {
            if body["error"] == "revoked" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "revocation never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoked_session_cannot_mint_tickets() {
    let gw = Gateway::start_with_env(&config(""), &env());
    revoked_sessions_mint_nothing(&gw, &gw, &gw).await;
    // Logged and counted like any refusal; never the token.
    let ev = gw.events("ticket_refused", 3);
    assert!(ev
        .iter()
        .all(|e| e["reason"] == "revoked" && e["status"] == 401 && e["transport"] == "bearer"));
    assert!(ev.iter().any(|e| e["sub"] == "alice"));
    assert_eq!(
        metric(&gw, r#"wsgate_ticket_refusals_total{reason="revoked"}"#).await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_session_cannot_mint_tickets_across_nodes_on_redis() {
    let store = format!(
        "[store]\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"{}\"\n",
        unique_prefix("mint-revoked")
    );
    let cfg = config(&store);
    let a = Gateway::start_with_env(&cfg, &env());
    let b = Gateway::start_with_env(&cfg, &env());
    // Revoked on A; minted on B; redeemed on A and on B.
    revoked_sessions_mint_nothing(&a, &b, &a).await;
    revoked_sessions_mint_nothing(&a, &b, &b).await;
}

/// 150 fast POSTs with a bad token from one address: charged to the same
/// per-IP bucket as upgrades, before any verification.
#[tokio::test]
async fn ticket_mint_is_rate_limited_per_ip() {
    let gw = Gateway::start_with_env(
        &config(""),
        &[
            ("TEST_TICKET_SECRET", TICKET_SECRET),
            ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "2"),
            ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "10"),
        ],
    );
    let bad = format!("{}x", &token("mallory")[..60]);
    let (mut unauthorized, mut limited) = (0, 0);
    for _ in 0..150 {
        let r = mint(&gw, &bad).await;
        match r.status {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                assert_eq!(r.json()["error"], "rate_limited");
                let after: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("Retry-After");
                assert!(after >= 1);
            }
            s => panic!("unexpected {s}: {r:?}"),
        }
    }
    // The burst, plus what refilled while the loop ran (2/s).
    assert!(unauthorized <= 20, "{unauthorized} verified");
    assert!(limited >= 130, "{limited} limited");
    // Only what was let through was verified.
    let verified = metric(&gw, "wsgate_token_verify_seconds_count").await;
    assert_eq!(verified, f64::from(unauthorized));
    assert_eq!(
        metric(
            &gw,
            r#"wsgate_ticket_refusals_total{reason="rate_limited"}"#
        )
        .await,
        f64::from(limited)
    );
    // The same bucket: upgrades from this address are refused too, and a
    // valid session cannot mint either until it refills (one token a
    // second may come back meanwhile, so one of three may pass).
    let mut refused = 0;
    for _ in 0..3 {
        if let Upgrade::Refused { status, .. } = bearer(&gw.url(), &token("alice")).await {
            assert_eq!(status, 429);
            refused += 1;
        }
        refused += usize::from(mint(&gw, &token("alice")).await.status == 429);
    }
    assert!(refused >= 5, "{refused} of 6 refused");
}

/// Refused mints count toward `limits.block_after_refusals` like refused
/// upgrades: the address is then dropped in the kernel.
#[tokio::test]
async fn refused_mints_lead_to_a_kernel_block() {
    let gw = Gateway::start_with_env(
        &config(""),
        &[
            ("TEST_TICKET_SECRET", TICKET_SECRET),
            ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1"),
            ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "1"),
            ("WSGATE_LIMITS__BLOCK_AFTER_REFUSALS", "5"),
            ("WSGATE_LIMITS__BLOCK_DURATION", "2s"),
        ],
    );
    let from = "127.0.0.9";
    let session = token("flooder");
    let post = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {session}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let Some(s) = connect_from(from, gw.addr).await else {
            break;
        };
        statuses.push(status_of(s, &post).await);
    }
    assert_eq!(statuses, ["201", "429", "429", "429", "429", "429"]);
    assert!(
        connect_from(from, gw.addr).await.is_none(),
        "{from} should be blocked after five refused mints"
    );
    gw.events("address_blocked", 1);
    // Everyone else is still served.
    assert_eq!(mint(&gw, &token("alice")).await.status, 201);
}

async fn connect_from(src: &str, to: SocketAddr) -> Option<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(src.parse().expect("ip"), 0))
        .expect("bind");
    match tokio::time::timeout(Duration::from_millis(700), sock.connect(to)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => panic!("connect from {src}: {e}"),
        Err(_) => None,
    }
}

async fn status_of(mut s: TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer")
        .expect("read");
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

/// A subject as long as a token allows (over 1 KiB) is accepted on the
/// upgrade, so it must be revocable too.
#[tokio::test]
async fn a_long_subject_can_be_revoked() {
    let gw = Gateway::start_with_env(&config(""), &env());
    let sub = "s".repeat(1100);
    let t = token(&sub);
    let (mut ws, _) = bearer(&gw.url(), &t).await.open();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    revoke(&gw, json!({"sub": sub})).await;
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4403);
    bearer(&gw.url(), &t).await.refused(401, "revoked");
}
