//! Listeners: our own accept loop, the first head read under a deadline,
//! then hyper for HTTP/1.1 and the upgrade.

pub mod admin;
pub mod dev;
pub mod direct;
pub mod peer;
pub mod proxy;
pub mod respond;
pub mod tickets;
pub mod upgrade;

use crate::app::App;
use crate::head_io::{self as head, read_head, Head, Rewind};
use futures_util::future::Either;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use peer::Peer;
use respond::Body;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use wsgate_core::Reason;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Admin,
}

/// A started gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    /// Sent at the end of a shutdown: the admin listener serves /metrics
    /// and /readyz until then.
    admin_stop: watch::Sender<bool>,
}

impl Running {
    /// Stops accepting new connections on the main listener.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }
}

/// Bound but not yet serving listeners (the actual ports are known here,
/// which dev mode needs for its Origin allow-list).
pub struct Bound {
    main: TcpListener,
    admin: TcpListener,
}

impl Bound {
    pub fn main_addr(&self) -> std::io::Result<SocketAddr> {
        self.main.local_addr()
    }
}

/// Accept backlog asked of the kernel (capped by `net.core.somaxconn`).
/// tokio's default of 1024 overflows when thousands of sockets reconnect
/// at once (a drain elsewhere, an attacker's slowloris cycling): the kernel
/// then drops SYNs, and legitimate clients wait a 1 s retransmit.
const LISTEN_BACKLOG: u32 = 65_535;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's bind do: a restarted gateway can rebind at once.
    socket.set_reuseaddr(true)?;
    // Small writes (a 101, a close frame) go out at once. Linux copies
    // TCP_NODELAY from the listener to every accepted socket, which saves
    // a setsockopt per connection (test `accepted_sockets_have_nodelay`).
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds both listeners; an error names the listener and its address.
pub async fn bind(main: SocketAddr, admin: SocketAddr) -> std::io::Result<Bound> {
    let named = |key: &'static str, addr: SocketAddr| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}"))
    };
    Ok(Bound {
        main: listen(main).map_err(named("server.listen", main))?,
        admin: listen(admin).map_err(named("admin.listen", admin))?,
    })
}

/// Starts accepting on bound listeners.
pub fn serve(app: Arc<App>, bound: Bound) -> std::io::Result<Running> {
    let addr = bound.main.local_addr()?;
    let admin_addr = bound.admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let tasks = &app.tasks;
    if app.admission.blocklist.enabled() {
        app.admission.blocklist.watch(&bound.main)?;
        tasks.spawn_loop(expire_blocks(app.clone()));
    }
    tasks.spawn_loop(watch_store(app.clone()));
    tasks.spawn_loop(prune_limiter(app.clone()));
    tasks.spawn_loop(prune_egress(app.egress.clone()));
    tasks.spawn_loop(crate::revocations::feed(crate::revocations::FeedHandles {
        revocations: app.admission.revocations.clone(),
        store: app.store.clone(),
        registry: app.registry.clone(),
        metrics: app.metrics.clone(),
        node_id: app.node_id.clone(),
    }));
    tasks.spawn_loop(app.registry.clone().renew());
    crate::keys::start(&app.admission.keys, app.config.source.as_deref(), tasks);
    if app.tls_main.is_some() || app.tls_admin.is_some() {
        tasks.spawn_loop(reload_certs(app.clone()));
    }
    if app.store.is_shared() {
        let relay = app
            .hub
            .clone()
            .relay(app.store.clone(), app.metrics.clone());
        tasks.spawn_loop(relay);
    }
    // Tracked, not cut off: each stops on its own signal (`stop` below for
    // the main listener; the admin one at the end of a shutdown).
    tasks.spawn(accept_loop(
        app.clone(),
        bound.main,
        Listener::Main,
        stopped.clone(),
    ));
    // The admin listener serves /metrics and /readyz until the end of the
    // shutdown (its loop and connections stop with the tasks).
    let (admin_stop_tx, admin_stop) = watch::channel(false);
    tasks.spawn(accept_loop(
        app.clone(),
        bound.admin,
        Listener::Admin,
        admin_stop,
    ));
    Ok(Running {
        addr,
        admin_addr,
        app,
        stop,
        admin_stop: admin_stop_tx,
    })
}

/// Binds both listeners and starts accepting.
pub async fn start(app: Arc<App>) -> std::io::Result<Running> {
    let bound = bind(app.config.server.listen, app.config.admin.listen).await?;
    serve(app, bound)
}

/// Checks the store every second for `/readyz`. For Redis this also re-sets
/// the restart fence promptly after a Redis restart.
async fn watch_store(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = true;
    loop {
        tick.tick().await;
        let ok = app.store.ping().await.is_ok();
        // A flush (or a lost hash) that the revocation subscription survived
        // goes unnoticed by the feed: look for the completeness mark, and
        // have the feed reload and write back when it is gone.
        if ok && matches!(app.store.revocations_intact().await, Ok(false)) {
            app.admission.revocations.resync_soon();
        }
        if ok != was_ok {
            if ok {
                tracing::info!(event = "store_recovered", store = app.store.kind());
            } else {
                app.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "ping", store = app.store.kind());
            }
            was_ok = ok;
        }
        app.store_ready
            .store(ok, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reloads TLS certificates on SIGHUP and when their files change (checked
/// every 5 s). A pair that fails to load is logged and the old one kept.
async fn reload_certs(app: Arc<App>) {
    let mut trigger = crate::reload::Trigger::hook();
    loop {
        let forced = trigger.next().await;
        for (name, cert) in [("server", &app.tls_main), ("admin", &app.tls_admin)] {
            let Some(cert) = cert.as_ref().map(|t| &t.cert) else {
                continue;
            };
            if !forced && !cert.changed() {
                continue;
            }
            match cert.reload() {
                Ok(()) => tracing::info!(event = "tls_reloaded", listener = name),
                Err(e) => tracing::error!(
                    event = "tls_reload_failed",
                    listener = name,
                    error = %e
                ),
            }
        }
    }
}

/// Forgets idle client IPs so the limiter's table stays small.
async fn prune_limiter(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        app.admission.limiter.retain_recent();
    }
}

/// Forgets egress meters of users gone quiet (every minute).
async fn prune_egress(egress: Arc<crate::egress::Egress>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        egress.prune(crate::clock::now_ms());
    }
}

/// Lifts kernel blocks when they are due (checked every second).
async fn expire_blocks(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (ended, change) = app.admission.blocklist.expire(std::time::Instant::now());
        for key in ended {
            tracing::info!(event = "address_unblocked", address = %key);
        }
        app.admission.apply_blocks(change);
    }
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    which: Listener,
    mut stop: watch::Receiver<bool>,
) {
    let mut accept_errors: u64 = 0;
    let mut last_logged = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Inherited from the listener on Linux (see `listen`).
                #[cfg(not(target_os = "linux"))]
                let _ = stream.set_nodelay(true);
                let conn = serve_conn(app.clone(), stream, peer, which);
                match which {
                    // Counted by the registry once they are sessions, and
                    // closed by the drain: not cut off by the shutdown.
                    Listener::Main => {
                        tokio::spawn(conn);
                    }
                    Listener::Admin => app.tasks.spawn_loop(conn),
                }
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning;
                // the pending connection stays in the backlog. Logged at
                // most every 10 s with a count, not 20 lines a second.
                accept_errors += 1;
                if last_logged
                    .is_none_or(|t: tokio::time::Instant| t.elapsed() >= Duration::from_secs(10))
                {
                    tracing::warn!(event = "accept_error", error = %e, count = accept_errors);
                    accept_errors = 0;
                    last_logged = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection; called at accept. One deadline,
/// `server.handshake_timeout` from here, covers the PROXY header, the TLS
/// handshake and the first request head together: a peer cannot stretch
/// its stay by spending a fresh timeout on each stage. Not an `async fn`,
/// for the reason given at [`serve_tls_or_plain`].
fn serve_conn(
    app: Arc<App>,
    stream: TcpStream,
    addr: SocketAddr,
    which: Listener,
) -> impl std::future::Future<Output = ()> + Send {
    let deadline = Instant::now() + app.config.server.handshake_timeout;
    if which == Listener::Main && app.config.server.proxy_protocol {
        // Boxed: this variant is as large as the plain one, and inline it
        // would double every connection's task (see serve_tls_or_plain).
        return Either::Left(Box::pin(serve_proxied(app, stream, addr, deadline)));
    }
    let peer = Peer::direct(&app, addr);
    Either::Right(serve_tls_or_plain(app, stream, peer, which, deadline))
}

/// A connection from an L4 balancer: the PROXY header names the client.
async fn serve_proxied(app: Arc<App>, mut stream: TcpStream, addr: SocketAddr, deadline: Instant) {
    // Only trusted balancers may name the client; anyone else could
    // spoof any address with a PROXY header. The balancer itself is a
    // trusted proxy, so not held to the pending cap: that is applied to
    // the client the header names, below, before TLS.
    if !app.admission.trusted_proxies.contains(addr.ip()) {
        return;
    }
    let (source, rest) = match proxy::read(&mut stream, deadline).await {
        Ok(read) => read,
        Err(proxy::Refused::TimedOut) => return stream.reset_on_close(),
        Err(proxy::Refused::Invalid) => return,
    };
    let peer = match source {
        Some(ip) => Peer::proxied(&app, ip, addr.port()),
        None => Peer::balancer(addr),
    };
    let stream = Rewind::new(rest.freeze(), stream);
    serve_tls_or_plain(app, stream, peer, Listener::Main, deadline).await
}

/// Not an `async fn`: a layer of state machine around the chosen future
/// would hold a second copy of every argument for the connection's life.
fn serve_tls_or_plain<S>(
    app: Arc<App>,
    stream: S,
    peer: Peer,
    which: Listener,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Abortive + Unpin + Send + 'static,
{
    let tls = match which {
        Listener::Main => app.tls_main.as_ref(),
        Listener::Admin => app.tls_admin.as_ref(),
    };
    match tls.map(|t| t.acceptor.clone()) {
        None => Either::Left(serve_plain(app, stream, peer, which, deadline)),
        // Boxed: the TLS variant of this future is ~4.5 KiB. Inline, every
        // connection's task carried it, TLS or not, and spawning copied it
        // (6,152 -> ~1 KiB per plain connection; BENCHMARKS.md "Task size").
        Some(acceptor) => Either::Right(Box::pin(serve_tls(
            app, acceptor, stream, peer, which, deadline,
        ))),
    }
}

async fn serve_plain<S>(
    app: Arc<App>,
    mut stream: S,
    peer: Peer,
    which: Listener,
    deadline: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Abortive + Unpin + Send + 'static,
{
    let Some(pending) = take_pending(&app, peer, which) else {
        // Nothing read: the 429 goes out at once.
        let raw = respond::reject_raw(Reason::RateLimited, false);
        let timeout = app.config.server.handshake_timeout;
        return direct::write_and_close(&mut stream, &raw, timeout).await;
    };
    let head = read_head(&mut stream, app.config.server.max_header_bytes, deadline).await;
    drop(pending);
    serve_head(app, stream, head, peer, which).await
}

/// The pending cap is taken before the TLS handshake: a peer that never
/// finishes its ClientHello holds a slot (and rustls's buffers) like one
/// that never finishes its head.
async fn serve_tls<S>(
    app: Arc<App>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: S,
    peer: Peer,
    which: Listener,
    deadline: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Abortive + Unpin + Send + 'static,
{
    let Some(pending) = take_pending(&app, peer, which) else {
        // No TLS session exists to carry a 429, and making one is the
        // work the cap withholds: a reset at once, without reading.
        return stream.reset_on_close();
    };
    let mut accept = acceptor.accept(stream);
    let mut tls = match tokio::time::timeout_at(deadline, &mut accept).await {
        Ok(Ok(tls)) => tls,
        // A failed handshake just ends; rustls sent its alert.
        Ok(Err(_)) => return,
        // A slow one gets nothing but a reset, as a slow head does.
        Err(_) => {
            if let Some(io) = accept.get_ref() {
                io.reset_on_close();
            }
            return;
        }
    };
    let head = read_head(&mut tls, app.config.server.max_header_bytes, deadline).await;
    drop(pending);
    serve_head(app, tls, head, peer, which).await
}

/// A stream over a TCP socket that can be closed with a reset.
trait Abortive {
    /// Makes the coming close a RST (`SO_LINGER` 0) instead of a FIN
    /// exchange followed by TIME_WAIT: for peers dropped on a timeout, as
    /// nginx's `reset_timedout_connection` does. Three fewer packets and
    /// no lingering socket per slowloris cycle.
    fn reset_on_close(&self);
}

impl Abortive for TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl<S: Abortive> Abortive for Rewind<S> {
    fn reset_on_close(&self) {
        self.get_ref().reset_on_close();
    }
}

impl<S: Abortive> Abortive for tokio_rustls::server::TlsStream<S> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

/// The peer's place under `limits.pending_handshakes_per_ip`, or `None`
/// after logging and counting the refusal ([`over_pending_cap`]).
fn take_pending(
    app: &App,
    peer: Peer,
    which: Listener,
) -> Option<crate::limiter::PendingGuard<'_>> {
    let guard = app.pending.acquire(peer.ip(), peer.pending_cap(app));
    if guard.is_none() {
        over_pending_cap(app, peer, which);
    }
    guard
}

/// A peer over `limits.pending_handshakes_per_ip`, refused before anything
/// is read: logged and counted as `rate_limited`, and towards a kernel
/// block where the peer is a direct one.
fn over_pending_cap(app: &App, peer: Peer, which: Listener) {
    // Only a direct peer's own address may be blocked in the kernel (the
    // cap applies only to peers that are no trusted proxy).
    if which == Listener::Main && !app.config.server.proxy_protocol {
        app.admission.count_refusal(peer.ip());
    }
    upgrade::log_early_rejection(peer.ip(), Reason::RateLimited);
    app.metrics.handshake(Err(Reason::RateLimited), None);
}

/// Everything after the first head: the early answers, the direct upgrade
/// path, or hyper.
async fn serve_head<S>(app: Arc<App>, mut stream: S, head: Head, peer: Peer, which: Listener)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Abortive + Unpin + Send + 'static,
{
    let capped = peer.pending_cap(&app) != 0;
    let buf = match head {
        // An address over its handshake rate, upgrading: answered here, as
        // the pending cap is, without hyper or the upgrade checks. A
        // flood's 429 then costs little more than its accept and close
        // (BENCHMARKS.md, "Under attack"). The limiter is only peeked at;
        // the upgrade path still charges and decides.
        Head::Complete(buf)
            if capped
                && which == Listener::Main
                && app.admission.limiter.is_limited(peer.ip())
                && head::is_get_of(&buf, &app.config.server.path) =>
        {
            if !app.config.server.proxy_protocol {
                app.admission.count_refusal(peer.ip());
            }
            return refuse_early(&app, &mut stream, peer.ip(), Reason::RateLimited).await;
        }
        // An upgrade on a fresh connection: answered without hyper. Boxed:
        // its state would otherwise enlarge every connection's task.
        Head::Complete(buf)
            if which == Listener::Main && head::is_get_of(&buf, &app.config.server.path) =>
        {
            return Box::pin(direct::serve(app, stream, buf, peer)).await;
        }
        Head::Complete(buf) => buf,
        Head::TooLarge => {
            return refuse_early(&app, &mut stream, peer.ip(), Reason::HeadersTooLarge).await;
        }
        // Slow or silent peers get nothing but a reset.
        Head::TimedOut => return stream.reset_on_close(),
        Head::Closed => return,
    };
    let server = &app.config.server;
    let timeout = server.handshake_timeout;
    let max_head = server.max_header_bytes;
    let io = TokioIo::new(Rewind::new(buf.freeze(), stream));
    let app2 = app.clone();
    let svc = service_fn(move |req| {
        let app = app2.clone();
        async move { Ok::<_, Infallible>(route(app, req, peer, which).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        // hyper's floor is 8 KiB; our own cap was enforced on the first head.
        .max_buf_size(max_head.max(8192))
        .max_headers(head::MAX_HEADERS)
        .serve_connection(io, svc)
        .with_upgrades();
    let _ = conn.await;
}

/// A refusal decided before hyper sees the connection: logged and counted
/// like any handshake refusal, answered with our raw status and body.
async fn refuse_early<S>(app: &App, stream: &mut S, ip: std::net::IpAddr, reason: Reason)
where
    S: tokio::io::AsyncWrite + Unpin,
{
    upgrade::log_early_rejection(ip, reason);
    app.metrics.handshake(Err(reason), None);
    let raw = respond::reject_raw(reason, false);
    direct::write_and_close(stream, &raw, app.config.server.handshake_timeout).await;
}

async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: Peer,
    which: Listener,
) -> Response<Body> {
    let path = req.uri().path();
    match (which, path) {
        (_, "/healthz") => respond::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (_, "/readyz") => readyz(&app),
        (Listener::Admin, "/metrics") => metrics(&app, req.headers()),
        (Listener::Admin, p) if p.starts_with("/admin/") => {
            admin::handle(app, req, peer.ip()).await
        }
        (Listener::Main, p) if p == app.config.server.path => upgrade::handle(app, req, peer).await,
        (Listener::Main, "/v1/tickets") => tickets::handle(&app, req, peer).await,
        (Listener::Main, "/") if app.config.dev_mode => {
            if req.method() == Method::GET {
                dev::page()
            } else {
                respond::method_not_allowed("GET")
            }
        }
        (Listener::Main, p) if app.config.dev_mode && p.starts_with("/dev/") => {
            dev::handle(app, req).await
        }
        _ => respond::not_found(),
    }
}

/// OpenMetrics or the Prometheus text format, as the scraper's `Accept`
/// prefers; each under the content type its text follows.
fn metrics(app: &App, req: &http::HeaderMap) -> Response<Body> {
    let format = crate::metrics::Format::negotiate(req);
    let mut r = Response::new(Body::from(app.metrics.encode(format)));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    // The body depends on Accept: a cache in between must key on it.
    h.insert(http::header::VARY, http::HeaderValue::from_static("accept"));
    r
}

fn readyz(app: &App) -> Response<Body> {
    if app.is_draining() {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "draining"}),
        )
    } else if !app.store_ready.load(std::sync::atomic::Ordering::Relaxed) {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "store_unavailable"}),
        )
    } else if !app.admission.revocations.is_known(crate::clock::now_ms()) {
        // Upgrades would be refused: not loaded yet, or gone stale.
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "revocations_unknown"}),
        )
    } else if !app.admission.keys.has_keys() {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "no_keys"}),
        )
    } else {
        respond::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    }
}

/// Waits for SIGTERM/SIGINT, then drains: stop accepting, `/readyz` 503,
/// after `shutdown_grace` close every socket 1001, wait for the close
/// handshakes up to `shutdown_timeout`. A second signal ends the wait.
pub async fn wait_for_shutdown(running: Running) {
    let mut signals = Signals::new();
    signals.next().await;
    let app = running.app.clone();
    // Still accepting during the grace period, so health checks see 503 and
    // new upgrades get `503 draining` rather than a refused connection.
    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let cfg = &app.config.server;
    tracing::info!(
        event = "shutdown",
        phase = "draining",
        active = app.registry.active() as u64,
        grace_ms = cfg.shutdown_grace.as_millis() as u64,
    );
    let drain = async {
        tokio::time::sleep(cfg.shutdown_grace).await;
        running.stop_accepting();
        let n = app.registry.signal_all(crate::registry::Control::Drain);
        tracing::info!(event = "shutdown", phase = "closing", sessions = n as u64);
        let deadline = tokio::time::Instant::now() + cfg.shutdown_timeout;
        app.registry.drained(deadline).await;
    };
    let forced = tokio::select! {
        _ = drain => false,
        _ = signals.next() => {
            tracing::warn!(event = "shutdown", phase = "forced");
            true
        }
    };
    // The loops (store checks, feeds, renewals, both listeners) stop; what
    // they started (slot releases above all) may finish, unless forced.
    running.stop_accepting();
    let _ = running.admin_stop.send(true);
    let grace = if forced { Duration::ZERO } else { TASKS_GRACE };
    let left = app.tasks.shutdown(grace).await;
    tracing::info!(
        event = "shutdown",
        phase = "done",
        active = app.registry.active() as u64,
        tasks = left as u64
    );
}

/// How long the end of a shutdown waits for the gateway's own tasks (a slot
/// release is bounded by the store's timeout, well within it).
const TASKS_GRACE: Duration = Duration::from_secs(2);

/// SIGTERM and SIGINT as one stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    /// The listener's TCP_NODELAY reaches accepted sockets (Linux copies
    /// it), so `accept_loop` need not set it on each.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = super::listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        #[cfg(target_os = "linux")]
        assert!(accepted.nodelay().expect("getsockopt"));
        // The client side was never set: the option is per socket.
        assert!(!client.nodelay().expect("getsockopt"));
    }
}
