//! Cluster state under store faults: nodes on a real `redis-server`, with a
//! fault-injecting proxy (tests/common/faults.rs) where the fault is on the
//! path rather than in Redis. Each test is one fault of
//! `docs/clustering.md`'s table: revocations never fail open, caps stay
//! exact, and every node heals by itself.

mod common;
use common::faults::{FaultProxy, Mode};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789-0123456789";
const TICKET_SECRET: &str = "ticket-secret-0123456789abcdef-0123456789";

fn env() -> [(&'static str, &'static str); 2] {
    [
        ("WSGATE_ADMIN_TOKEN", ADMIN),
        ("TEST_TICKET_SECRET", TICKET_SECRET),
    ]
}

/// A node on `url` with `extra` appended to `[store]`.
fn config(url: &str, prefix: &str, store_extra: &str, extra: &str) -> String {
    base_config(&format!(
        "[store]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{store_extra}\n\
         [tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n{extra}"
    ))
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> HttpResponse {
    admin_post(gw, ADMIN, path, &body).await
}

/// Revokes `sub` on `gw`, retrying while the store is away.
async fn revoke(gw: &Gateway, sub: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = admin(gw, "/admin/v1/revoke", json!({"sub": sub})).await;
        if r.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "revoke never stored: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of a bearer upgrade (101 when it opened).
async fn status(gw: &Gateway, token: &str) -> (u16, String) {
    match bearer(&gw.url(), token).await {
        Upgrade::Open(..) => (101, String::new()),
        Upgrade::Refused { status, body, .. } => {
            (status, body["error"].as_str().unwrap_or("").to_owned())
        }
    }
}

async fn readyz(gw: &Gateway) -> u16 {
    http(gw.admin, "GET", "/readyz", &[], "").await.status
}

/// A token issued now, revoked later: revocations by `sub` match tokens
/// issued before them, and `iat` has whole seconds.
async fn token_then_wait(sub: &str) -> String {
    let t = token(sub);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t
}

/// Waits for `cond`, polling; panics with `what` after `within`. Returns
/// how long it took.
async fn until<F, Fut>(within: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `gw` refuses `t` as revoked, asserting it never admits it
/// meanwhile; returns how long it took.
async fn until_revoked(gw: &Gateway, t: &str, what: &str) -> Duration {
    until(Duration::from_secs(10), what, || async {
        let (s, _) = status(gw, t).await;
        assert_ne!(s, 101, "a revoked token was admitted");
        s == 401
    })
    .await
}

/// A ready node on `url` (the harness makes a new key prefix trusted after
/// 500 ms).
fn node(url: &str, prefix: &str, extra: &str) -> Gateway {
    let gw = Gateway::start_with_env(&config(url, prefix, "", extra), &env());
    assert!(gw.wait_ready(Duration::from_secs(10)), "node never ready");
    gw
}

fn redis_addr(r: &OwnRedis) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], r.port))
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fault 1: a node that just started admits no revoked token before its
/// revocation set is loaded, and `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_just_started_never_admits_a_revoked_token() {
    let cfg = config(
        "redis://127.0.0.1:6379/0",
        &unique_prefix("fresh-node"),
        "",
        "",
    );
    let a = Gateway::start_with_env(&cfg, &env());
    let t = token_then_wait("alice").await;
    revoke(&a, "alice").await;
    for _ in 0..5 {
        let b = Gateway::start_unready(&cfg, &env());
        let listening = Instant::now();
        let mut knew = None;
        // As fast as possible from the first moment it listens.
        let mut seen = Vec::new();
        // At least 30 attempts, and on until it knows (bounded: a loaded
        // machine may take more than 30 fast attempts to load the set).
        let give_up = Instant::now() + Duration::from_secs(15);
        while seen.len() < 30 || (seen.last() != Some(&401) && Instant::now() < give_up) {
            let ready = readyz(&b).await == 200;
            let (s, reason) = status(&b, &t).await;
            assert_ne!(s, 101, "a revoked token was admitted");
            if s == 503 {
                assert_eq!(reason, "store_unavailable");
            }
            // Ready means it knows: never a 503 for want of the set after.
            if ready {
                assert_eq!(s, 401, "ready, yet it did not know");
            }
            if s == 401 && knew.is_none() {
                knew = Some(listening.elapsed());
            }
            seen.push(s);
        }
        assert_eq!(seen.last(), Some(&401), "{seen:?}");
        let refused = seen.iter().filter(|s| **s == 503).count();
        eprintln!(
            "fault 1: a new node knew the revocations {knew:?} after it listened \
             ({refused} of {} upgrades refused 503 before, 0 admitted)",
            seen.len()
        );
        b.events("revocations_loaded", 1);
    }
}

/// Fault 2: a node started while Redis is unreachable answers 503 (never
/// 101) until it loads the set, then 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_while_redis_is_down_fails_closed() {
    let redis = OwnRedis::start();
    let a = node(&redis.url(), "down:", "");
    let t = token_then_wait("bob").await;
    revoke(&a, "bob").await;
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    proxy.set(Mode::Reset);
    let b = Gateway::start_unready(&config(&proxy.redis_url(), "down:", "", ""), &env());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(status(&b, &t).await, (503, "store_unavailable".into()));
        assert_eq!(status(&b, &token("carol")).await.0, 503);
    }
    assert_eq!(readyz(&b).await, 503);
    proxy.set(Mode::Up);
    let took = until_revoked(&b, &t, "b loads the set").await;
    eprintln!("fault 2: recovered {took:?} after Redis came back");
    until(Duration::from_secs(3), "b ready", || async {
        readyz(&b).await == 200
    })
    .await;
    let (mut ws, _) = bearer(&b.url(), &token("carol")).await.open();
    assert_eq!(echo(&mut ws, "hi").await, "hi");
}

/// Fault 3: Redis restarts without persistence and a node starts before
/// any survivor wrote the revocations back: it waits for the write-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_after_redis_lost_its_data_waits_for_the_write_back() {
    let mut redis = OwnRedis::start();
    // Long enough that only a survivor's vouching can make the set trusted
    // (the environment overrides the file, and the harness sets 500 ms).
    let env = [
        env()[0],
        env()[1],
        ("WSGATE_STORE__REVOCATION_WRITEBACK_WAIT", "60s"),
    ];
    // A Redis that has served this prefix before (a brand-new one looks
    // like one that lost its data, and would wait the 60 s).
    let epoch = (now() * 1000).to_string();
    redis_cli(redis.port, &["SET", "lost:epoch", &epoch]);
    redis_cli(
        redis.port,
        &["HSET", "lost:revocations", "@complete", &epoch],
    );
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    let a = Gateway::start_with_env(&config(&proxy.redis_url(), "lost:", "", ""), &env);
    assert!(a.wait_ready(Duration::from_secs(10)));
    let t = token_then_wait("dave").await;
    revoke(&a, "dave").await;
    // The survivor cannot reach Redis while it restarts empty.
    proxy.set(Mode::BlackHole);
    redis.restart();
    let c = Gateway::start_unready(&config(&redis.url(), "lost:", "", ""), &env);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (s, reason) = status(&c, &t).await;
        assert_eq!(
            (s, reason.as_str()),
            (503, "store_unavailable"),
            "new node trusted a set nobody vouched for"
        );
    }
    assert_eq!(readyz(&c).await, 503);
    c.events("revocations_incomplete", 1);
    // The survivor comes back, writes back and vouches; the new node loads.
    proxy.set(Mode::Up);
    let took = until_revoked(&c, &t, "c refuses the revoked token").await;
    eprintln!("fault 3: the new node knew {took:?} after the survivor came back");
    bearer(&a.url(), &t).await.refused(401, "revoked");
}

/// Fault 4: a node's Redis connections go silent (TCP up, no bytes). It
/// fails closed once its set is stale, and recovers by itself within
/// seconds of the path coming back: revocations made meanwhile apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_black_holed_node_fails_closed_then_heals_by_itself() {
    let redis = OwnRedis::start();
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    let a = node(&redis.url(), "hole:", "");
    let b = node(&proxy.redis_url(), "hole:", "");
    let t = token_then_wait("erin").await;
    let (mut on_b, _) = bearer(&b.url(), &t).await.open();
    proxy.set(Mode::BlackHole);
    let holed = Instant::now();
    revoke(&a, "erin").await;
    // Within the staleness bound (3 s) b may not know yet; past it, it must
    // refuse: 503 while it cannot confirm, never 101.
    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(holed.elapsed())).await;
    while holed.elapsed() < Duration::from_secs(5) {
        let (s, reason) = status(&b, &t).await;
        assert_eq!((s, reason.as_str()), (503, "store_unavailable"));
    }
    assert_eq!(readyz(&b).await, 503);
    proxy.set(Mode::Up);
    let took = until_revoked(&b, &t, "b refuses the token revoked meanwhile").await;
    eprintln!("fault 4: recovered {took:?} after the black hole ended");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(close_code(&mut on_b, Duration::from_secs(5)).await.0, 4403);
    until(Duration::from_secs(3), "b ready", || async {
        readyz(&b).await == 200
    })
    .await;
    b.events("store_reconnect", 1);
}

/// Fault 5: a revocation made right after an outage reaches every node at
/// pub/sub latency, not after a grown reconnect backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_right_after_an_outage_reaches_every_node_promptly() {
    let mut redis = OwnRedis::start();
    let a = node(&redis.url(), "after:", "");
    let b = node(&redis.url(), "after:", "");
    let t = token_then_wait("fred").await;
    let (mut on_b, _) = bearer(&b.url(), &t).await.open();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.restart();
    revoke(&a, "fred").await;
    let revoked = Instant::now();
    assert_eq!(close_code(&mut on_b, Duration::from_secs(5)).await.0, 4403);
    let took = revoked.elapsed();
    eprintln!("fault 5: closed on the other node {took:?} after the revocation");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// Fault 6: `CLIENT PAUSE` during capped upgrades: 503s, and the grabs that
/// ran after the pause leave no phantom slot behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slot_grabs_that_time_out_leave_no_phantom() {
    let redis = OwnRedis::start();
    let gw = node(&redis.url(), "pause:", "[limits]\nconnections_per_user = 1");
    redis_cli(redis.port, &["CLIENT", "PAUSE", "4000", "ALL"]);
    for _ in 0..3 {
        let (s, reason) = status(&gw, &token("gus")).await;
        assert_eq!((s, reason.as_str()), (503, "store_unavailable"));
    }
    // After the pause the user, with no socket anywhere, gets one socket
    // within one renewal period (10 s), and the count is exact.
    let paused = Instant::now();
    let socket = loop {
        if let Upgrade::Open(ws, _) = bearer(&gw.url(), &token("gus")).await {
            break ws;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "gus never connected again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "fault 6: the user connected {:?} after the refusals",
        paused.elapsed()
    );
    // Its one socket is the one slot: no phantom from the grabs that ran
    // after the pause (at most one renewal period, 10 s).
    let took = until(Duration::from_secs(12), "exactly one slot", || async {
        redis_cli(redis.port, &["ZCARD", "pause:u:gus"]) == "1"
    })
    .await;
    eprintln!("fault 6: slot count exact {took:?} after the user connected");
    bearer(&gw.url(), &token("gus"))
        .await
        .refused(429, "too_many_connections");
    drop(socket);
}

/// Fault 7: Redis restarts with sockets open: their slots come back, so the
/// cap holds cluster-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_come_back_after_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let a = node(&redis.url(), "slots:", "[limits]\nconnections_per_user = 3");
    let b = node(&redis.url(), "slots:", "[limits]\nconnections_per_user = 3");
    let mut open = Vec::new();
    for gw in [&a, &a, &b] {
        open.push(bearer(&gw.url(), &token("hana")).await.open().0);
    }
    bearer(&b.url(), &token("hana"))
        .await
        .refused(429, "too_many_connections");
    redis.restart();
    let restarted = Instant::now();
    let took = until(Duration::from_secs(12), "slots re-created", || async {
        redis_cli(redis.port, &["ZCARD", "slots:u:hana"]) == "3"
    })
    .await;
    eprintln!("fault 7: slots back {took:?} after the restart");
    for gw in [&a, &b] {
        let (s, reason) = status(gw, &token("hana")).await;
        assert_eq!((s, reason.as_str()), (429, "too_many_connections"));
    }
    assert!(restarted.elapsed() < Duration::from_secs(12));
    for ws in &mut open {
        assert_eq!(echo(ws, "still").await, "still");
    }
}

/// A revocation whose store write is not confirmed is reported as such,
/// is in force on its node at once, and reaches the store afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconfirmed_revocation_says_so_and_lands_later() {
    let redis = OwnRedis::start();
    let a = node(&redis.url(), "slow:", "");
    let b = node(&redis.url(), "slow:", "");
    let t = token_then_wait("ida").await;
    let (mut on_a, _) = bearer(&a.url(), &t).await.open();
    let (mut on_b, _) = bearer(&b.url(), &t).await.open();
    redis_cli(redis.port, &["CLIENT", "PAUSE", "3000", "WRITE"]);
    let r = admin(&a, "/admin/v1/revoke", json!({"sub": "ida"})).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "store_unavailable");
    assert_eq!(r.json()["stored"], "unknown");
    assert_eq!(r.json()["closed"], 1);
    assert!(r.header("retry-after").is_some());
    // In force on this node at once...
    assert_eq!(close_code(&mut on_a, Duration::from_secs(5)).await.0, 4403);
    // ...and on the other once the store has it.
    assert_eq!(close_code(&mut on_b, Duration::from_secs(10)).await.0, 4403);
    let took = until(Duration::from_secs(10), "stored", || async {
        redis_cli(redis.port, &["HEXISTS", "slow:revocations", "sub:ida"]) == "1"
    })
    .await;
    eprintln!("fault 8: an unconfirmed revocation was in the store {took:?} after the 503");
}

/// A ticket redemption whose single use is not confirmed says the ticket
/// may be spent; it is never accepted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconfirmed_ticket_redemption_says_the_ticket_may_be_spent() {
    let redis = OwnRedis::start();
    let gw = node(&redis.url(), "tix:", "");
    let r = mint(&gw, &token("jo")).await;
    let ticket = r.json()["ticket"].as_str().expect("ticket").to_owned();
    let url = format!("{}?ticket={ticket}", gw.url());
    redis_cli(redis.port, &["CLIENT", "PAUSE", "3000", "ALL"]);
    match upgrade(&url, &[]).await {
        Upgrade::Refused { status, body, .. } => {
            assert_eq!(status, 503);
            assert_eq!(body["error"], "store_unavailable");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("may be spent"),
                "{body}"
            );
        }
        Upgrade::Open(..) => panic!("admitted without a confirmed single use"),
    }
    // Once Redis answers, the ticket that ran late is spent: refused, as
    // the answer said it might be.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (s, reason) = match upgrade(&url, &[]).await {
        Upgrade::Open(..) => (101, String::new()),
        Upgrade::Refused { status, body, .. } => {
            (status, body["error"].as_str().unwrap_or("").to_owned())
        }
    };
    assert!(
        s == 101 || (s, reason.as_str()) == (401, "ticket_replayed"),
        "{s} {reason}"
    );
}

/// Hub subscribers on a node whose hub feed was interrupted are told they
/// may have missed messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_subscribers_are_told_of_a_gap() {
    let redis = OwnRedis::start();
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    let cfg = base_config(&format!(
        "[store]\nurl = \"{}\"\nkey_prefix = \"gap:\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n\
         [[hub.grants]]\nsubscribe = [\"*\"]\npublish = [\"*\"]\n",
        proxy.redis_url()
    ))
    .replace("kind = \"echo\"", "kind = \"hub\"");
    let gw = Gateway::start_with_env(&cfg, &env());
    assert!(gw.wait_ready(Duration::from_secs(10)));
    let (mut ws, _) = bearer(&gw.url(), &token("kim")).await.open();
    let ack = echo(
        &mut ws,
        &json!({"type": "subscribe", "channel": "news", "id": 1}).to_string(),
    )
    .await;
    assert!(ack.contains("ack"), "{ack}");
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Up);
    let healed = Instant::now();
    loop {
        let m: Value = serde_json::from_str(&next_text(&mut ws).await).expect("json");
        if m["type"] == "hub_gap" {
            assert_eq!(m["channel"], "news");
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(10), "no hub_gap");
    }
    eprintln!(
        "fault 10: hub_gap reached the subscriber {:?} after the path healed",
        healed.elapsed()
    );
}

/// The vouching node must have held the set when it was lost: a node that
/// was cut off (and so missed a revocation) does not vouch for a Redis that
/// lost its data, and no node trusts the stored set until one that held it
/// writes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_was_cut_off_does_not_vouch_after_a_restart() {
    let mut redis = OwnRedis::start();
    let epoch = (now() * 1000).to_string();
    redis_cli(redis.port, &["SET", "stale:epoch", &epoch]);
    redis_cli(
        redis.port,
        &["HSET", "stale:revocations", "@complete", &epoch],
    );
    let env = [
        env()[0],
        env()[1],
        ("WSGATE_STORE__REVOCATION_WRITEBACK_WAIT", "60s"),
    ];
    let (pg, ph) = (
        FaultProxy::start(redis_addr(&redis)).await,
        FaultProxy::start(redis_addr(&redis)).await,
    );
    let g = Gateway::start_with_env(&config(&pg.redis_url(), "stale:", "", ""), &env);
    let h = Gateway::start_with_env(&config(&ph.redis_url(), "stale:", "", ""), &env);
    assert!(g.wait_ready(Duration::from_secs(10)) && h.wait_ready(Duration::from_secs(10)));
    let z = token_then_wait("zed").await;
    // g is cut off and misses the revocation made on h.
    pg.set(Mode::BlackHole);
    revoke(&h, "zed").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Then h is cut off too, and Redis restarts empty.
    ph.set(Mode::BlackHole);
    redis.restart();
    pg.set(Mode::Up);
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(4) {
        let (s, reason) = status(&g, &z).await;
        assert_eq!(
            (s, reason.as_str()),
            (503, "store_unavailable"),
            "a node that missed a revocation vouched for the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // h held the set: it writes back and vouches.
    ph.set(Mode::Up);
    let took = until_revoked(&g, &z, "g learns the revocation from h").await;
    eprintln!("fault 11: the cut-off node knew {took:?} after the holder came back");
}

/// A `FLUSHALL` that the nodes' subscriptions survive: the nodes notice the
/// lost set within about a second and write it back; a node started in
/// between does not trust the empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flushed_redis_is_written_back_and_never_trusted_empty() {
    let redis = OwnRedis::start();
    let env = [
        env()[0],
        env()[1],
        ("WSGATE_STORE__REVOCATION_WRITEBACK_WAIT", "60s"),
    ];
    let epoch = (now() * 1000).to_string();
    redis_cli(redis.port, &["SET", "flush:epoch", &epoch]);
    redis_cli(
        redis.port,
        &["HSET", "flush:revocations", "@complete", &epoch],
    );
    let a = Gateway::start_with_env(&config(&redis.url(), "flush:", "", ""), &env);
    assert!(a.wait_ready(Duration::from_secs(10)));
    let t = token_then_wait("flo").await;
    revoke(&a, "flo").await;
    redis_cli(redis.port, &["FLUSHALL"]);
    let f = Gateway::start_unready(&config(&redis.url(), "flush:", "", ""), &env);
    let took = until_revoked(&f, &t, "the new node learns the written-back revocation").await;
    eprintln!(
        "fault 12: after a FLUSHALL a new node knew the revocations {took:?} after it listened"
    );
    bearer(&a.url(), &t).await.refused(401, "revoked");
}

/// A ticket presented to a node that cannot trust its revocation set is
/// refused without being spent: it works once the node knows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_refused_for_an_unknown_set_is_not_spent() {
    let redis = OwnRedis::start();
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    let gw = node(&proxy.redis_url(), "unspent:", "");
    let r = mint(&gw, &token("uma")).await;
    let ticket = r.json()["ticket"].as_str().expect("ticket").to_owned();
    let url = format!("{}?ticket={ticket}", gw.url());
    proxy.set(Mode::BlackHole);
    until(Duration::from_secs(6), "the set goes stale", || async {
        readyz(&gw).await == 503
    })
    .await;
    upgrade(&url, &[]).await.refused(503, "store_unavailable");
    proxy.set(Mode::Up);
    until(Duration::from_secs(10), "ready again", || async {
        readyz(&gw).await == 200
    })
    .await;
    let (mut ws, _) = upgrade(&url, &[]).await.open();
    assert_eq!(echo(&mut ws, "unspent").await, "unspent");
}

/// First-message auth and in-band refresh decide as an upgrade does: while
/// the node cannot trust its revocation set, a token revoked elsewhere gets
/// `auth_fail store_unavailable`, never `auth_ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_band_auth_fails_closed_while_the_set_is_unknown() {
    let redis = OwnRedis::start();
    let proxy = FaultProxy::start(redis_addr(&redis)).await;
    let a = node(&redis.url(), "inband:", "");
    let d = Gateway::start_with_env(
        &config(&proxy.redis_url(), "inband:", "", ""),
        &[env()[0], env()[1], ("WSGATE_AUTH__FIRST_MESSAGE", "true")],
    );
    assert!(d.wait_ready(Duration::from_secs(10)));
    let mut c1 = claims("vic", 600);
    c1["jti"] = json!("vic-1");
    let mut c2 = claims("vic", 600);
    c2["jti"] = json!("vic-2");
    let (t1, t2) = (hs(&c1), hs(&c2));
    let (mut on_d, _) = bearer(&d.url(), &t1).await.open();
    proxy.set(Mode::BlackHole);
    let holed = Instant::now();
    let r = admin(&a, "/admin/v1/revoke", json!({"jti": "vic-2"})).await;
    assert_eq!(r.status, 200);
    // Past the staleness bound (3 s): d no longer trusts its set.
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(holed.elapsed())).await;
    // In-band refresh with the token revoked meanwhile.
    let reply: Value = serde_json::from_str(
        &echo(&mut on_d, &json!({"type": "auth", "token": t2}).to_string()).await,
    )
    .expect("json");
    assert_eq!(reply["type"], "auth_fail", "{reply}");
    assert_eq!(reply["reason"], "store_unavailable", "{reply}");
    // First-message auth with it: refused, closed 1013 (try again later:
    // not the credential's fault).
    let (mut fm, _) = upgrade(&d.url(), &[]).await.open();
    let reply: Value = serde_json::from_str(
        &echo(&mut fm, &json!({"type": "auth", "token": t2}).to_string()).await,
    )
    .expect("json");
    assert_eq!(reply["type"], "auth_fail", "{reply}");
    assert_eq!(reply["reason"], "store_unavailable", "{reply}");
    assert_eq!(close_code(&mut fm, Duration::from_secs(5)).await.0, 1013);
    // Back: the revocation applies, the refresh is refused as revoked.
    proxy.set(Mode::Up);
    until(Duration::from_secs(10), "d ready", || async {
        readyz(&d).await == 200
    })
    .await;
    let reply: Value = serde_json::from_str(
        &echo(&mut on_d, &json!({"type": "auth", "token": t2}).to_string()).await,
    )
    .expect("json");
    assert_eq!(reply["reason"], "revoked", "{reply}");
}
