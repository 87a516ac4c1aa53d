//! `RedisStore` against a real Redis: single use across nodes, expiry, the
//! epoch fence across a Redis restart, and bounded failure while Redis is
//! down.
//!
//! Needs a Redis at 127.0.0.1:6379 (CI starts one) and `redis-server` on
//! PATH for the restart test. Without them these tests fail rather than
//! skip: a store that is never tested against Redis is not tested.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wsgate::clock::now_ms;
use wsgate::store::redis::RedisStore;
use wsgate::store::{Store, StoreError};

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const TTL: Duration = Duration::from_secs(30);

/// A key prefix no other test (or concurrent run) uses.
fn unique_prefix() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "test:{}:{nanos}:{}:",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain connection, to look at and tamper with keys behind the store's
/// back. Panics with a clear message when Redis is not there.
async fn plain(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!(
            "no Redis at {url} ({other:?}); these tests need one (CI starts it: \
             `redis-server --save '' --appendonly no`)"
        ),
    }
}

async fn cmd<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.expect("redis command")
}

/// Deletes every key under `prefix` (the epoch key has no expiry).
async fn cleanup(prefix: &str) {
    let mut c = plain(REDIS_URL).await;
    let keys: Vec<String> = cmd(&mut c, &["KEYS", &format!("{prefix}*")]).await;
    for k in keys {
        let _: i64 = cmd(&mut c, &["DEL", &k]).await;
    }
}

fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::new(url, prefix).expect("store")
}

/// A store that has answered a ping, so its epoch is set: ids issued from
/// now on are past the fence (a fresh prefix is a fresh Redis to the store).
async fn connected(url: &str, prefix: &str) -> RedisStore {
    let s = store(url, prefix);
    s.ping().await.expect("ping");
    s
}

#[tokio::test]
async fn single_use_across_two_nodes() {
    let p = unique_prefix();
    let mut c = plain(REDIS_URL).await;
    let (a, b) = (connected(REDIS_URL, &p).await, store(REDIS_URL, &p));
    assert_eq!(a.kind(), "redis");
    let issued = now_ms();
    assert!(a.use_once("t1", issued, TTL).await.expect("a first"));
    assert!(!b.use_once("t1", issued, TTL).await.expect("b second"));
    assert!(!a.use_once("t1", issued, TTL).await.expect("a third"));
    assert!(b.use_once("t2", issued, TTL).await.expect("b other id"));
    assert!(!a.use_once("t2", issued, TTL).await.expect("a other id"));

    // The key layout the docs describe: `{prefix}t:{id}` with the ttl, and
    // `{prefix}epoch` without expiry (it must outlive every ticket).
    let pttl: i64 = cmd(&mut c, &["PTTL", &format!("{p}t:t1")]).await;
    assert!(pttl > 25_000 && pttl <= 30_000, "pttl {pttl}");
    let epoch_ttl: i64 = cmd(&mut c, &["TTL", &format!("{p}epoch")]).await;
    assert_eq!(epoch_ttl, -1);

    // Another prefix is another deployment: same id, separate state.
    let q = unique_prefix();
    let other = connected(REDIS_URL, &q).await;
    let issued = now_ms();
    assert!(other
        .use_once("t1", issued, TTL)
        .await
        .expect("other prefix"));
    cleanup(&p).await;
    cleanup(&q).await;
}

#[tokio::test]
async fn used_id_is_usable_again_only_after_ttl() {
    let p = unique_prefix();
    let s = connected(REDIS_URL, &p).await;
    let issued = now_ms();
    let ttl = Duration::from_millis(300);
    assert!(s.use_once("x", issued, ttl).await.expect("first"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!s.use_once("x", issued, ttl).await.expect("within ttl"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(s.use_once("x", issued, ttl).await.expect("after ttl"));
    // A zero ttl is clamped to 1 ms rather than rejected by Redis.
    assert!(s
        .use_once("z", issued, Duration::ZERO)
        .await
        .expect("ttl 0"));
    cleanup(&p).await;
}

#[tokio::test]
async fn lost_state_refuses_ids_issued_before() {
    let p = unique_prefix();
    let mut c = plain(REDIS_URL).await;
    let s = connected(REDIS_URL, &p).await;
    let before = now_ms();
    assert!(s.use_once("used", before, TTL).await.expect("first use"));
    tokio::time::sleep(Duration::from_millis(5)).await;

    // What a restart of a Redis without persistence does to our keys.
    let _: i64 = cmd(
        &mut c,
        &["DEL", &format!("{p}epoch"), &format!("{p}t:used")],
    )
    .await;

    // The used key is gone, yet the id is refused: it was issued before
    // the new epoch, so nobody can prove it unused. The same holds for an
    // id that was never used: it must be fetched again.
    assert!(!s.use_once("used", before, TTL).await.expect("replay"));
    assert!(!s.use_once("never-used", before, TTL).await.expect("old"));
    let epoch: i64 = cmd(&mut c, &["GET", &format!("{p}epoch")]).await;
    assert!(epoch > before, "epoch {epoch} before {before}");
    // Ids issued after the new epoch work as usual, once.
    let after = now_ms();
    assert!(after >= epoch);
    assert!(s.use_once("new", after, TTL).await.expect("new"));
    assert!(!s.use_once("new", after, TTL).await.expect("new again"));
    cleanup(&p).await;
}

#[tokio::test]
async fn a_new_store_sets_the_epoch_by_itself() {
    // What a freshly started node does: nobody calls ping, yet the epoch is
    // set in the background before the first ticket is minted, so that
    // ticket is accepted (were the epoch set by its own redemption, it would
    // postdate the ticket and refuse it).
    let p = unique_prefix();
    let mut c = plain(REDIS_URL).await;
    let s = store(REDIS_URL, &p);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let epoch: Option<i64> = cmd(&mut c, &["GET", &format!("{p}epoch")]).await;
        if epoch.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no epoch set in the background");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let issued = now_ms();
    assert!(s
        .use_once("first", issued, TTL)
        .await
        .expect("first ticket"));
    // A ping never moves an existing epoch.
    let before: i64 = cmd(&mut c, &["GET", &format!("{p}epoch")]).await;
    s.ping().await.expect("ping");
    let after: i64 = cmd(&mut c, &["GET", &format!("{p}epoch")]).await;
    assert_eq!(before, after);
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_uses_across_nodes_accept_exactly_one() {
    let p = unique_prefix();
    // Connected first, so the race is on the script, not the connect.
    let nodes = [
        Arc::new(connected(REDIS_URL, &p).await),
        Arc::new(connected(REDIS_URL, &p).await),
    ];
    let issued = now_ms();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let node = nodes[i % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                node.use_once("contested", issued, TTL).await
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        if t.await.expect("task").expect("use_once") {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
    cleanup(&p).await;
}

#[tokio::test]
async fn nothing_listening_is_unavailable_quickly() {
    // Port 1 on loopback: connection refused. The password must not leak.
    let s = store("redis://:s3cr3t-pw@127.0.0.1:1/0", "p:");
    for i in 0..6 {
        let started = Instant::now();
        match s.use_once("id", now_ms(), TTL).await {
            Err(StoreError::Unavailable(msg)) => {
                assert!(!msg.contains("s3cr3t-pw"), "{msg}");
            }
            other => panic!("call {i}: expected Unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "call {i} took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(matches!(
            s.ping().await,
            Err(StoreError::Unavailable(_) | StoreError::Unconfirmed(_))
        ));
        assert!(started.elapsed() < Duration::from_millis(1500));
        // Spread over more than one reconnect interval (500 ms).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A `redis-server` of our own, killed when dropped.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        l.local_addr().expect("local addr").port()
    }

    /// Starts a server without persistence, like the deployment this store
    /// is designed for, and waits until it answers.
    async fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server (needed by this test): {e}"));
        let server = RedisServer {
            port,
            child: Some(child),
        };
        let client = redis::Client::open(server.url()).expect("url");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Freezes (`true`) or thaws the server: a Redis that accepts nothing
    /// and answers nothing, like one stuck in a slow command or swapping.
    fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_and_fenced() {
    let port = RedisServer::free_port();
    let mut server = RedisServer::start(port).await;
    let s = connected(&server.url(), "restart:").await;
    let before = now_ms();
    assert!(s.use_once("used", before, TTL).await.expect("first use"));
    assert!(!s.use_once("used", before, TTL).await.expect("second use"));

    // Redis goes away: every call fails closed, within the bound, no panic.
    server.kill();
    // Each call is bounded by the store's 2 s; allow a little scheduling.
    let bound = Duration::from_millis(2300);
    for i in 0..5 {
        let started = Instant::now();
        let r = s.use_once("during", now_ms(), TTL).await;
        assert!(
            matches!(
                r,
                Err(StoreError::Unavailable(_) | StoreError::Unconfirmed(_))
            ),
            "call {i}: {r:?}"
        );
        assert!(
            started.elapsed() < bound,
            "use_once {i}: {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let r = s.ping().await;
        assert!(
            matches!(
                r,
                Err(StoreError::Unavailable(_) | StoreError::Unconfirmed(_))
            ),
            "ping {i}: {r:?}"
        );
        assert!(
            started.elapsed() < bound,
            "ping {i}: {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Back on the same port, empty: the same store recovers by itself.
    let _server = RedisServer::start(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = s.ping().await {
        assert!(Instant::now() < deadline, "store did not recover: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The used key was lost with the restart, yet the id stays refused:
    // it was issued before the new epoch. So is an unused old id.
    assert!(!s.use_once("used", before, TTL).await.expect("replay"));
    assert!(!s.use_once("old-unused", before, TTL).await.expect("old"));
    let after = now_ms();
    assert!(s.use_once("after", after, TTL).await.expect("new id"));
    assert!(!s.use_once("after", after, TTL).await.expect("new id again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_times_out_and_recovers() {
    let server = RedisServer::start(RedisServer::free_port()).await;
    let s = connected(&server.url(), "hung:").await;
    let issued = now_ms();
    assert!(s.use_once("a", issued, TTL).await.expect("first use"));

    // The connection stays open but nothing answers: every call still ends
    // within the store's bound, as Unavailable.
    server.freeze(true);
    for i in 0..3 {
        let started = Instant::now();
        let r = s.use_once("b", issued, TTL).await;
        assert!(
            matches!(
                r,
                Err(StoreError::Unavailable(_) | StoreError::Unconfirmed(_))
            ),
            "call {i}: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2300),
            "call {i} took {:?}",
            started.elapsed()
        );
    }
    server.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = s.ping().await {
        assert!(Instant::now() < deadline, "store did not recover: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection is usable again and replies are not mixed up: the
    // used id stays used, a new one is accepted once.
    assert!(!s.use_once("a", issued, TTL).await.expect("replay"));
    assert!(s.use_once("c", issued, TTL).await.expect("new id"));
    assert!(!s.use_once("c", issued, TTL).await.expect("new id again"));
}
