//! `redis://` / `rediss://`: state shared by every node of a cluster.
//!
//! Two properties drive this module:
//! - **Never accept an id twice.** The check-and-record is one Lua script
//!   (atomic on the server), and an epoch key fences off everything issued
//!   before Redis last lost its data (see [`USE_ONCE`]).
//! - **Never hang, never crash.** The gateway starts with Redis down and
//!   keeps running while it is down: every call is bounded by
//!   [`OP_TIMEOUT`], fails with [`StoreError::Unavailable`] (the caller
//!   answers `503 store_unavailable`), and the store recovers by itself.
//! - **No connection is trusted to be alive.** A command that times out or
//!   fails on I/O retires the connection it ran on (a black-holed TCP
//!   connection never errors by itself); the next call opens a new one.
//!   Subscriptions are pinged, and a subscription whose ping goes
//!   unanswered is replaced. Reconnects back off to about a second, with
//!   jitter.

use super::{Feed, Snapshot, Store, StoreError};
use crate::error::{Kind, Side};
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wsgate_core::revocation::Revocation;
use wsgate_core::UnixMillis;

/// Bound on one store call, connecting included: an upgrade never waits
/// longer than this on Redis.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one TCP (+ TLS + AUTH) connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one command's reply on an established connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// While no connection exists, at most one attempt to open one per this
/// interval (with jitter, see [`jittered`]); calls in between fail fast
/// instead of each waiting for a connect timeout against a Redis that is
/// down.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);
/// First and longest wait before a subscription is opened again.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(1);
/// How often a subscription is pinged; an unanswered ping (within
/// [`RESPONSE_TIMEOUT`]) replaces it. Each answered ping also tells the
/// feed's reader that everything published before it was delivered.
pub const SUBSCRIPTION_PING: Duration = Duration::from_millis(500);
/// Upper bound on a recorded id's life: far beyond any credential this
/// gateway accepts, and well inside what Redis accepts for `PX`.
const MAX_TTL_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// The atomic single-use step. KEYS[1] = the id's key, KEYS[2] = the epoch
/// key; ARGV = issued_at_ms, now_ms, ttl_ms. Returns 1 on first use, 0 if
/// used or issued before the epoch.
///
/// Redis runs without persistence: a restart loses the used ids. It loses
/// the epoch key with them, so the first node to call after the restart
/// sets a new epoch (its `now`), and every id issued before that is refused
/// because nobody can prove it unused. Tickets live at most 60 s, so the
/// only cost is that tickets in flight during a restart must be fetched
/// again; no ticket is ever accepted twice.
const USE_ONCE: &str = r"
local e = redis.call('GET', KEYS[2])
if not e then redis.call('SET', KEYS[2], ARGV[2]); e = ARGV[2] end
if tonumber(ARGV[1]) < tonumber(e) then return 0 end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 1 end
return 0
";

/// A cluster's store in one Redis.
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Prefix of every key (`store.key_prefix`).
    prefix: String,
    epoch_key: String,
    use_once: Script,
    /// Credentials from the URL, scrubbed from every error message.
    secrets: Vec<String>,
    conn: tokio::sync::Mutex<Conn>,
    /// The generation of the connection in use (0: none); read without
    /// the lock by calls that must retire the connection they timed out on.
    generation: std::sync::atomic::AtomicU64,
    load_revocations: Script,
    revocations_intact: Script,
    /// `store.revocation_writeback_wait`, in ms.
    writeback_wait_ms: std::sync::atomic::AtomicI64,
}

#[derive(Default)]
struct Conn {
    /// The shared connection and its generation, opened on first use and
    /// replaced when a call on it times out or fails on I/O.
    current: Option<(u64, MultiplexedConnection)>,
    /// Start of the last attempt to open one. Recorded before the attempt,
    /// so an attempt cut short by a caller's timeout still counts.
    last_attempt: Option<Instant>,
    /// The wait after `last_attempt` before the next one (jittered).
    wait: Duration,
}

/// `d` scaled by a random factor in [0.75, 1.25): nodes that lost Redis
/// together do not all come back in the same millisecond.
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// Whether a failed command says its connection is unusable: I/O errors,
/// timeouts, a dropped connection. A server error (a script error, OOM)
/// leaves the connection fine.
fn connection_is_dead(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisStore {
    /// Parses `url`; never waits on the network. The gateway must start
    /// (and answer `503 store_unavailable`, `/readyz` not ready) while Redis
    /// is down, so the connection is made lazily.
    ///
    /// When called inside a Tokio runtime it also starts one background
    /// [`Store::ping`]: that connects early (the first upgrade does not pay
    /// for the connect) and establishes the epoch before this node mints its
    /// first ticket. Without it, on a fresh Redis (or a new key prefix) the
    /// first ticket used would set the epoch itself, after its own issue
    /// time, and be refused. If Redis is down the ping just fails.
    pub fn new(url: &str, key_prefix: &str) -> crate::error::Result<Self> {
        let secrets = url_secrets(url);
        let client = Client::open(url).map_err(|e| {
            // The cause is scrubbed text: redis's error may quote the URL.
            let context = "store.url: not a usable redis URL";
            let cause = scrub(e.to_string(), &secrets);
            crate::error::Error::because(Kind::Config, Side::Store, context, cause)
        })?;
        let inner = Arc::new(Inner {
            client,
            prefix: key_prefix.to_owned(),
            epoch_key: format!("{key_prefix}epoch"),
            use_once: Script::new(USE_ONCE),
            secrets,
            conn: tokio::sync::Mutex::new(Conn::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            load_revocations: Script::new(LOAD_REVOCATIONS),
            revocations_intact: Script::new(REVOCATIONS_INTACT),
            writeback_wait_ms: std::sync::atomic::AtomicI64::new(5_000),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let warm = inner.clone();
            // Bounded by OP_TIMEOUT; the result only matters for its effects.
            rt.spawn(async move {
                let _ = warm.ping().await;
            });
        }
        Ok(RedisStore { inner })
    }

    /// Sets how long after the stored revocations were lost nodes wait for
    /// one that held the complete set to write it back (see
    /// [`LOAD_REVOCATIONS`]).
    pub fn with_writeback_wait(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(MAX_TTL_MS);
        self.inner
            .writeback_wait_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
        self
    }
}

impl Inner {
    fn ticket_key(&self, id: &str) -> String {
        format!("{}t:{id}", self.prefix)
    }

    fn unavailable(&self, what: &str, e: &RedisError) -> StoreError {
        StoreError::Unavailable(self.describe(what, e))
    }

    /// One line, secrets scrubbed: error texts end up in logs.
    fn describe(&self, what: &str, e: &RedisError) -> String {
        // One line: some redis errors (parse errors) span several.
        let text = e.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        scrub(format!("redis {what}: {text}"), &self.secrets)
    }

    /// The shared connection, opened on first use and after it was retired.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        // Held across the connect on purpose: concurrent calls wait for one
        // attempt instead of each opening a connection. Waiting is bounded
        // by the caller's OP_TIMEOUT.
        let mut conn = self.conn.lock().await;
        if let Some((generation, c)) = &conn.current {
            return Ok((*generation, c.clone()));
        }
        if conn.last_attempt.is_some_and(|t| t.elapsed() < conn.wait) {
            return Err(StoreError::Unavailable(
                "redis: not connected (the last attempt failed moments ago)".into(),
            ));
        }
        conn.last_attempt = Some(Instant::now());
        conn.wait = jittered(RECONNECT_INTERVAL);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                let generation = self
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                    + 1;
                conn.current = Some((generation, c.clone()));
                Ok((generation, c))
            }
            Err(e) => Err(self.unavailable("connect", &e)),
        }
    }

    /// Retires connection `generation` if it is still the current one: a
    /// command on it timed out or failed on I/O, so it may be black-holed.
    /// Commands already sent on it finish or fail on their own.
    async fn retire(&self, generation: u64) {
        let mut conn = self.conn.lock().await;
        if conn.current.as_ref().is_some_and(|(g, _)| *g == generation) {
            conn.current = None;
            tracing::warn!(event = "store_reconnect", store = "redis", generation);
        }
    }

    /// Runs `op` with the shared connection, the whole call (connecting
    /// included) bounded by [`OP_TIMEOUT`]. A call that times out or fails
    /// on I/O retires the connection it used.
    async fn bounded<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let used = std::sync::atomic::AtomicU64::new(0);
        let call = async {
            let (generation, c) = self.connection().await?;
            used.store(generation, std::sync::atomic::Ordering::Relaxed);
            match op(c).await {
                Ok(v) => Ok(v),
                Err(e) if connection_is_dead(&e) => {
                    self.retire(generation).await;
                    // Sent, maybe run: only the answer was lost.
                    Err(StoreError::Unconfirmed(self.describe(what, &e)))
                }
                Err(e) => Err(self.unavailable(what, &e)),
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => {
                let generation = used.load(std::sync::atomic::Ordering::Relaxed);
                let msg = format!("redis {what}: no answer within {}s", OP_TIMEOUT.as_secs());
                if generation == 0 {
                    // Still connecting: nothing was sent.
                    return Err(StoreError::Unavailable(msg));
                }
                self.retire(generation).await;
                Err(StoreError::Unconfirmed(msg))
            }
        }
    }

    async fn use_once(
        &self,
        id: &str,
        issued_at: UnixMillis,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.ticket_key(id);
        // At least 1 ms: `PX 0` is an error, and the id must be recorded.
        let ttl_ms = i64::try_from(ttl.as_millis())
            .unwrap_or(MAX_TTL_MS)
            .clamp(1, MAX_TTL_MS);
        let now = crate::clock::now_ms();
        let used: i64 = self
            .bounded("use_once", |mut m| async move {
                self.use_once
                    .key(&key)
                    .key(&self.epoch_key)
                    .arg(issued_at)
                    .arg(now)
                    .arg(ttl_ms)
                    .invoke_async(&mut m)
                    .await
            })
            .await?;
        Ok(used == 1)
    }

    /// A reachability check that also sets the epoch if it is missing
    /// (`SET NX`, never overwriting), as [`USE_ONCE`] would. Doing it here
    /// too means a restarted Redis gets its new epoch at the next readiness
    /// check rather than at the next ticket, so fewer tickets minted after
    /// the restart are refused. Any epoch set after the data was lost is a
    /// correct fence, so setting it early is as safe as setting it late.
    async fn ping(&self) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        self.bounded("ping", |mut m| async move {
            redis::cmd("SET")
                .arg(&self.epoch_key)
                .arg(now)
                .arg("NX")
                .query_async::<Option<String>>(&mut m)
                .await
                .map(drop)
        })
        .await
    }
}

impl Inner {
    fn revocations_key(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// Persists and announces in one MULTI: a node that misses the
    /// announcement still finds the revocation when it resyncs.
    async fn revoke(&self, r: &Revocation) -> Result<(), StoreError> {
        let key = self.revocations_key();
        let field = format!("{}:{}", r.target.kind(), r.target.value());
        let json = super::revocation_to_json(r);
        self.bounded("revoke", |mut m| async move {
            redis::pipe()
                .atomic()
                .hset(&key, &field, &json)
                .ignore()
                .publish(&key, &json)
                .ignore()
                .query_async::<()>(&mut m)
                .await
        })
        .await
    }

    async fn revocations(&self, now: UnixMillis, vouch: bool) -> Result<Snapshot, StoreError> {
        let key = self.revocations_key();
        let (complete, since, all): (i64, i64, std::collections::HashMap<String, String>) = self
            .bounded("revocations", |mut m| {
                let key = key.clone();
                async move {
                    self.load_revocations
                        .key(&key)
                        .key(&self.epoch_key)
                        .arg(now)
                        .arg(
                            self.writeback_wait_ms
                                .load(std::sync::atomic::Ordering::Relaxed),
                        )
                        .arg(i64::from(vouch))
                        .invoke_async(&mut m)
                        .await
                }
            })
            .await?;
        let mut live = Vec::with_capacity(all.len());
        let mut dead = Vec::new();
        for (field, json) in all {
            if field.starts_with('@') {
                continue;
            }
            match super::revocation_from_json(&json) {
                Some(r) if r.until > now => live.push(r),
                _ => dead.push(field),
            }
        }
        if !dead.is_empty() {
            // Best effort: expired entries only cost memory until the next load.
            let _ = self
                .bounded("revocations_prune", |mut m| async move {
                    redis::cmd("HDEL")
                        .arg(&key)
                        .arg(&dead)
                        .query_async::<()>(&mut m)
                        .await
                })
                .await;
        }
        Ok(Snapshot {
            revocations: live,
            complete: complete == 1,
            incomplete_since: (complete != 1).then_some(since),
        })
    }

    async fn revocations_intact(&self) -> Result<bool, StoreError> {
        let key = self.revocations_key();
        let intact: i64 = self
            .bounded("revocations_intact", |mut m| async move {
                self.revocations_intact
                    .key(&key)
                    .key(&self.epoch_key)
                    .invoke_async(&mut m)
                    .await
            })
            .await?;
        Ok(intact == 1)
    }

    /// Forwards announcements to `tx` until it closes, reconnecting with
    /// backoff; every (re)subscription starts with a `Resync`, because
    /// pub/sub is at-most-once and anything may have been missed meanwhile,
    /// and every answered ping sends `Alive`.
    async fn watch(self: Arc<Self>, tx: mpsc::Sender<Feed>) {
        let channel = self.revocations_key();
        self.subscribe_loop(channel, tx, |ev| match ev {
            SubEvent::Subscribed => Some(Feed::Resync),
            SubEvent::Alive(at) => Some(Feed::Alive(at)),
            SubEvent::Message(payload) => Some(super::feed_from_json(&payload)),
        })
        .await;
    }
}

/// Why [`serve_subscription`] returned.
enum Ended {
    ReaderGone,
    Lost,
}

/// Sends `item` (if any); false when the reader is gone.
async fn forward<T>(tx: &mpsc::Sender<T>, item: Option<T>) -> bool {
    match item {
        Some(item) => tx.send(item).await.is_ok(),
        None => true,
    }
}

/// Relays one live subscription, pinging it, until it is lost.
async fn serve_subscription<T, F: Fn(SubEvent) -> Option<T>>(
    sink: &mut redis::aio::PubSubSink,
    stream: &mut redis::aio::PubSubStream,
    tx: &mpsc::Sender<T>,
    map: &F,
) -> Ended {
    use futures_util::FutureExt;
    let message = |m: redis::Msg| m.get_payload::<String>().ok().map(SubEvent::Message);
    loop {
        let sent_at = crate::clock::now_ms();
        // In subscribed mode (RESP2) the answer is `["pong", ""]`, not `PONG`.
        let ping = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>());
        tokio::pin!(ping);
        let answered = loop {
            tokio::select! {
                r = &mut ping => break matches!(r, Ok(Ok(_))),
                m = stream.next() => match m {
                    None => return Ended::Lost,
                    Some(m) => if !forward(tx, message(m).and_then(map)).await {
                        return Ended::ReaderGone;
                    },
                },
            }
        };
        if !answered {
            return Ended::Lost;
        }
        // The answer came after every message published before the ping;
        // those already read off the connection are relayed first.
        while let Some(Some(m)) = stream.next().now_or_never() {
            if !forward(tx, message(m).and_then(map)).await {
                return Ended::ReaderGone;
            }
        }
        if !forward(tx, map(SubEvent::Alive(sent_at))).await {
            return Ended::ReaderGone;
        }
        let pause = tokio::time::sleep(SUBSCRIPTION_PING);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                m = stream.next() => match m {
                    None => return Ended::Lost,
                    Some(m) => if !forward(tx, message(m).and_then(map)).await {
                        return Ended::ReaderGone;
                    },
                },
            }
        }
    }
}

/// What a subscription reports to its reader.
enum SubEvent {
    /// (Re)subscribed: anything published before may have been missed.
    Subscribed,
    /// A ping sent at this time was answered: everything published before
    /// it has been delivered.
    Alive(UnixMillis),
    Message(String),
}

/// Loads the revocation set and says whether it is complete. KEYS[1] = the
/// revocations hash, KEYS[2] = the epoch key; ARGV = now_ms (the node's,
/// only to create a missing epoch, as [`USE_ONCE`] does), writeback_wait_ms,
/// vouch (1: the caller held the complete set when the data was lost, and
/// wrote it back). Returns {complete, incomplete_since_ms, HGETALL}.
///
/// The hash's `@complete` field holds the epoch in which the set was
/// declared complete. A Redis that restarted without persistence lost the
/// hash and the epoch together; a `FLUSHALL` or a `DEL` of the hash loses
/// the mark too. Either way the set is not trusted until a node that held
/// it complete up to the loss writes it back and vouches, or, when no such
/// node reaches Redis, until `writeback_wait` has passed since the loss was
/// first seen (`@incomplete_since`). Times here are Redis's own (`TIME`),
/// so the wait does not depend on the nodes' clocks agreeing.
const LOAD_REVOCATIONS: &str = r"
local e = redis.call('GET', KEYS[2])
if not e then redis.call('SET', KEYS[2], ARGV[1]); e = ARGV[1] end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HGET', KEYS[1], '@complete')
local since = 0
if c ~= e then
  local s = redis.call('HGET', KEYS[1], '@incomplete_since')
  if s then since = tonumber(s) else
    since = now
    redis.call('HSET', KEYS[1], '@incomplete_since', now)
  end
  if ARGV[3] == '1' or now - since >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], '@complete', e)
    redis.call('HDEL', KEYS[1], '@incomplete_since')
    c = e
  end
end
return {c == e and 1 or 0, since, redis.call('HGETALL', KEYS[1])}
";

/// Whether the revocation set is still marked complete for the current
/// epoch: KEYS[1] = the revocations hash, KEYS[2] = the epoch key.
const REVOCATIONS_INTACT: &str = r"
local e = redis.call('GET', KEYS[2])
return e and redis.call('HGET', KEYS[1], '@complete') == e and 1 or 0
";

/// Per-user slots: a sorted set of holders scored by lease expiry.
/// KEYS[1] user set; ARGV: now, expiry, holder, cap, lease ms.
const ACQUIRE_SLOT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

impl Inner {
    /// `PUBLISH channel payload`, bounded like every call.
    async fn publish(&self, what: &str, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.bounded(what, |mut m| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<()>(&mut m)
                .await
        })
        .await
    }

    fn hub_key(&self) -> String {
        format!("{}hub", self.prefix)
    }

    /// Forwards hub announcements to `tx`, with a `Gap` after every
    /// (re)subscription: what was published meanwhile was not delivered.
    async fn watch_hub(self: Arc<Self>, tx: mpsc::Sender<super::HubFeed>) {
        let channel = self.hub_key();
        self.subscribe_loop(channel, tx, |ev| match ev {
            SubEvent::Subscribed => Some(super::HubFeed::Gap),
            SubEvent::Alive(_) => None,
            SubEvent::Message(payload) => Some(super::HubFeed::Message(payload)),
        })
        .await;
    }

    /// Subscribes to `channel` and sends what `map` makes of each event to
    /// `tx` until it closes. The subscription is pinged every
    /// [`SUBSCRIPTION_PING`]; one that fails or leaves a ping unanswered for
    /// [`RESPONSE_TIMEOUT`] (a dead or black-holed connection) is replaced,
    /// after a backoff from [`RESUBSCRIBE_MIN`] doubling to
    /// [`RESUBSCRIBE_MAX`], jittered. Waiting on a full `tx` is
    /// backpressure: Redis buffers, and drops us past its limit, which ends
    /// in a resubscription.
    async fn subscribe_loop<T, F: Fn(SubEvent) -> Option<T>>(
        &self,
        channel: String,
        tx: mpsc::Sender<T>,
        map: F,
    ) {
        let mut backoff = RESUBSCRIBE_MIN;
        while !tx.is_closed() {
            let sub = async {
                let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
                sink.subscribe(&channel).await?;
                Ok::<_, RedisError>((sink, stream))
            };
            if let Ok(Ok((mut sink, mut stream))) = tokio::time::timeout(OP_TIMEOUT, sub).await {
                backoff = RESUBSCRIBE_MIN;
                if !forward(&tx, map(SubEvent::Subscribed)).await {
                    return;
                }
                match serve_subscription(&mut sink, &mut stream, &tx, &map).await {
                    Ended::ReaderGone => return,
                    Ended::Lost => {
                        tracing::warn!(event = "store_resubscribe", store = "redis", channel = %channel);
                    }
                }
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
        }
    }
    fn user_key(&self, sub: &str) -> String {
        format!("{}u:{sub}", self.prefix)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn acquire_user_slot(
        &self,
        sub: &str,
        holder: &str,
        cap: u32,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let key = inner.user_key(sub);
        let now = crate::clock::now_ms();
        let lease_ms = i64::try_from(lease.as_millis())
            .unwrap_or(MAX_TTL_MS)
            .clamp(1, MAX_TTL_MS);
        let got: i64 = inner
            .bounded("acquire_user_slot", |mut m| async move {
                Script::new(ACQUIRE_SLOT)
                    .key(&key)
                    .arg(now)
                    .arg(now + lease_ms)
                    .arg(holder)
                    .arg(cap)
                    .arg(lease_ms)
                    .invoke_async(&mut m)
                    .await
            })
            .await?;
        Ok(got == 1)
    }

    async fn release_user_slot(&self, sub: &str, holder: &str) -> Result<(), StoreError> {
        let key = self.inner.user_key(sub);
        self.inner
            .bounded("release_user_slot", |mut m| async move {
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(holder)
                    .query_async::<()>(&mut m)
                    .await
            })
            .await
    }

    async fn renew_user_slots(
        &self,
        held: &[(String, String)],
        lease: Duration,
    ) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        let lease_ms = i64::try_from(lease.as_millis())
            .unwrap_or(MAX_TTL_MS)
            .clamp(1, MAX_TTL_MS);
        let expiry = crate::clock::now_ms() + lease_ms;
        let mut pipe = redis::pipe();
        for (sub, holder) in held {
            let key = self.inner.user_key(sub);
            // Not XX: a slot the store forgot (a restart without
            // persistence, an expiry while Redis was unreachable) belongs
            // to a socket that is open, so it counts again, even past the
            // cap; new grabs are refused until the user is under it.
            pipe.cmd("ZADD").arg(&key).arg(expiry).arg(holder).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(lease_ms).ignore();
        }
        self.inner
            .bounded("renew_user_slots", |mut m| async move {
                pipe.query_async::<()>(&mut m).await
            })
            .await
    }

    async fn revoke(&self, r: &Revocation) -> Result<(), StoreError> {
        self.inner.revoke(r).await
    }

    async fn revocations(&self, now: UnixMillis, vouch: bool) -> Result<Snapshot, StoreError> {
        self.inner.revocations(now, vouch).await
    }

    async fn revocations_intact(&self) -> Result<bool, StoreError> {
        self.inner.revocations_intact().await
    }

    fn watch_revocations(&self, tx: mpsc::Sender<Feed>) {
        tokio::spawn(self.inner.clone().watch(tx));
    }

    async fn announce_refresh(&self, payload: &str) -> Result<(), StoreError> {
        let key = self.inner.revocations_key();
        self.inner.publish("announce_refresh", &key, payload).await
    }

    async fn hub_publish(&self, payload: &str) -> Result<(), StoreError> {
        let key = self.inner.hub_key();
        self.inner.publish("hub_publish", &key, payload).await
    }

    fn watch_hub(&self, tx: mpsc::Sender<super::HubFeed>) {
        tokio::spawn(self.inner.clone().watch_hub(tx));
    }

    async fn use_once(
        &self,
        id: &str,
        issued_at: UnixMillis,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.use_once(id, issued_at, ttl).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The username and password in a redis URL's userinfo, if any
/// (`redis://[user][:password]@host`, or `redis://password@host`).
fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let mut out: Vec<String> = userinfo
        .split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    // Also the percent-decoded forms, which is what the client sends.
    let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    out.push(userinfo.to_owned());
    out.retain(|s| !s.is_empty());
    // Longest first, so a secret containing another is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn percent_decode(s: &str) -> String {
    let hex = |b: &u8| (*b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let digits = (
            bytes.get(i + 1).and_then(hex),
            bytes.get(i + 2).and_then(hex),
        );
        match (b, digits) {
            (b'%', (Some(h), Some(l))) => {
                // Two hex digits: always < 256.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `msg` with every secret replaced: error texts end up in logs and in
/// `/readyz` answers, and a password must never.
fn scrub(mut msg: String, secrets: &[String]) -> String {
    for s in secrets {
        if msg.contains(s.as_str()) {
            msg = msg.replace(s.as_str(), "[redacted]");
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_does_not_connect_and_rejects_bad_urls() {
        // Nothing listens on port 1; `new` must not care.
        let s = RedisStore::new("redis://127.0.0.1:1/0", "p:").expect("valid url");
        assert_eq!(s.kind(), "redis");
        assert_eq!(s.inner.ticket_key("abc"), "p:t:abc");
        assert_eq!(s.inner.epoch_key, "p:epoch");
        let e = RedisStore::new("redis://:hunter2@127.0.0.1:6379/notadb", "p:")
            .err()
            .expect("bad db")
            .to_string();
        assert!(e.starts_with("store.url:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn secrets_are_found_and_scrubbed() {
        let s = url_secrets("redis://user:p%40ss@h:6379/0");
        for want in ["user", "p%40ss", "p@ss"] {
            assert!(s.iter().any(|x| x == want), "{want} in {s:?}");
        }
        let msg = scrub("auth p@ss and p%40ss for user".into(), &s);
        assert!(!msg.contains("p@ss") && !msg.contains("p%40ss"), "{msg}");
        assert_eq!(url_secrets("redis://pw@h"), vec!["pw".to_string()]);
        assert!(url_secrets("redis://h:6379/0").is_empty());
        assert!(url_secrets("memory://").is_empty());
    }

    #[tokio::test]
    async fn down_redis_fails_fast_and_bounded() {
        let s = RedisStore::new("redis://:sekrit@127.0.0.1:1/0", "p:").expect("valid url");
        let started = Instant::now();
        for _ in 0..5 {
            match s.use_once("id", 0, Duration::from_secs(1)).await {
                Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("sekrit"), "{msg}"),
                other => panic!("expected Unavailable, got {other:?}"),
            }
            assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
        }
        assert!(started.elapsed() < OP_TIMEOUT, "{:?}", started.elapsed());
    }
}
