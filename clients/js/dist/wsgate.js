/**
 * wsgate client: opens an authenticated WebSocket through a wsgate gateway,
 * keeps it authenticated (in-band refresh, reconnect with a fresh credential
 * after 4401), stops for good on revocation (4403), backs off on everything
 * else, and speaks the hub protocol (subscribe / publish with acks).
 *
 * Dependency-free; runs in browsers and in Node (inject a WebSocket
 * constructor there). It never logs or emits a token or a ticket.
 */
/**
 * A refused hub request (`reason` from the gateway) or a client-side failure
 * (`handshake_refused`, `timeout`, `not_connected`, ...; see the README).
 * `status` is an HTTP status when one is known (the ticket request's, or the
 * refused upgrade's where the WebSocket implementation reports it).
 */
export class WsgateError extends Error {
    constructor(reason, message, status) {
        super(message ?? reason);
        this.name = "WsgateError";
        this.reason = reason;
        this.status = status;
    }
}
/** The gateway's close codes (docs/reference.md, "Close codes"). */
export const CloseCodes = {
    NORMAL: 1000,
    GOING_AWAY: 1001,
    ABNORMAL: 1006,
    TOO_BIG: 1009,
    INTERNAL: 1011,
    TRY_AGAIN_LATER: 1013,
    FIRST_MESSAGE_FAILED: 4001,
    EXPIRED: 4401,
    REVOKED: 4403,
    IDLE: 4408,
    RATE_LIMITED: 4429,
};
const OPEN = 1;
/**
 * The delay before reconnect attempt `attempt` (0 = first): exponential,
 * capped, with the top `jitter` share random so that clients dropped
 * together do not come back together. Never below 50 ms.
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
    const initial = Math.max(50, opts.initialDelayMs ?? 500);
    const max = Math.max(initial, opts.maxDelayMs ?? 30000);
    const factor = Math.max(1, opts.factor ?? 2);
    const jitter = Math.min(0.9, Math.max(0, opts.jitter ?? 0.5));
    const n = Math.max(0, Math.floor(attempt));
    const d = Math.min(max, initial * Math.pow(factor, Math.min(n, 64)));
    const r = Math.min(1, Math.max(0, random()));
    return Math.max(50, Math.round(d * (1 - jitter) + d * jitter * r));
}
/** Reads a JWT's payload without verifying it (only to show or schedule). */
export function decodeClaims(jwt) {
    const part = jwt.split(".")[1];
    if (!part)
        return null;
    try {
        const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
        const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
        const v = JSON.parse(new TextDecoder().decode(bytes));
        return v && typeof v === "object" ? v : null;
    }
    catch {
        return null;
    }
}
/** `ws://host/ws` → `http://host/v1/tickets`. */
export function ticketEndpointFor(wsUrl) {
    const u = new URL(wsUrl);
    const scheme = u.protocol === "wss:" ? "https:" : "http:";
    return `${scheme}//${u.host}/v1/tickets`;
}
/**
 * `POST /v1/tickets`: with the session cookie and `X-CSRF-Token` (browser
 * pages), or with `Authorization: Bearer <token>`.
 */
export async function fetchTicket(endpoint, auth, fetchImpl = defaultFetch()) {
    if (!fetchImpl)
        throw new WsgateError("no_fetch", "no fetch implementation available");
    const headers = {};
    if (auth.csrf !== undefined)
        headers["X-CSRF-Token"] = auth.csrf;
    if (auth.token !== undefined)
        headers["Authorization"] = `Bearer ${auth.token}`;
    const r = await fetchImpl(endpoint, { method: "POST", headers, credentials: "include" });
    let body = null;
    try {
        body = await r.json();
    }
    catch {
        body = null;
    }
    const b = (body && typeof body === "object" ? body : {});
    if (r.status !== 201 || typeof b.ticket !== "string") {
        const reason = typeof b.error === "string" ? b.error : "ticket_failed";
        throw new WsgateError(reason, `ticket request refused (${r.status} ${reason})`, r.status);
    }
    return {
        ticket: b.ticket,
        expires_in: typeof b.expires_in === "number" ? b.expires_in : undefined,
        url: typeof b.url === "string" ? b.url : undefined,
    };
}
function defaultFetch() {
    const f = globalThis.fetch;
    return f ? f.bind(globalThis) : undefined;
}
function withParam(url, name, value) {
    const u = new URL(url);
    u.searchParams.set(name, value);
    return u.toString();
}
/** One logical connection to the gateway, kept alive across reconnects. */
export class WsgateClient {
    constructor(opts) {
        this.ws = null;
        this.listeners = {};
        this.stopped = false;
        this.started = false;
        this.attempts = 0;
        /** Consecutive attempts that ended before the socket opened. */
        this.refusals = 0;
        this.everOpened = false;
        this.nextReason = "connect";
        this.reconnectTimer = null;
        this.stableTimer = null;
        this.refreshTimer = null;
        this.refreshing = false;
        this.lastRefreshAt = 0;
        this.nextId = 1;
        this.pending = new Map();
        this.subs = new Map();
        /** subscribe() calls waiting for the channel's next (re)subscribe ack. */
        this.subWaiters = new Map();
        this.openWaiters = [];
        this._state = "idle";
        if (!opts || typeof opts.url !== "string")
            throw new TypeError("wsgate: url is required");
        if (!["ticket", "subprotocol", "cookie"].includes(opts.transport)) {
            throw new TypeError(`wsgate: unknown transport ${String(opts.transport)}`);
        }
        if (opts.transport === "subprotocol" && !opts.getToken && !opts.token) {
            throw new TypeError("wsgate: the subprotocol transport needs getToken or token");
        }
        const WS = opts.WebSocket ?? globalThis.WebSocket;
        if (!WS)
            throw new TypeError("wsgate: no WebSocket available; pass options.WebSocket");
        this.opts = opts;
        this.WS = WS;
        this.random = opts.random ?? Math.random;
    }
    /** `idle`, `connecting`, `open`, `waiting` (to reconnect) or `stopped`. */
    get state() {
        return this._state;
    }
    /** The session's expiry (Unix seconds) when known. */
    get exp() {
        return this._exp;
    }
    /** The channels this client is subscribed to (re-subscribed after every reconnect). */
    get channels() {
        return [...this.subs.keys()];
    }
    on(type, fn) {
        const all = this.listeners;
        const set = (all[type] ?? (all[type] = new Set()));
        set.add(fn);
        return () => this.off(type, fn);
    }
    off(type, fn) {
        this.listeners[type]?.delete(fn);
    }
    /** Starts connecting; resolves at the first open, rejects if the client stops before. */
    connect() {
        if (this.stopped)
            return Promise.reject(new WsgateError("stopped", "client is stopped"));
        const p = new Promise((resolve, reject) => {
            if (this._state === "open")
                resolve();
            else
                this.openWaiters.push({ resolve, reject });
        });
        if (!this.started) {
            this.started = true;
            void this.attempt();
        }
        return p;
    }
    /** Closes for good (no reconnect). */
    close(code = CloseCodes.NORMAL, reason = "") {
        if (this.stopped)
            return;
        this.stop();
        const ws = this.ws;
        if (!ws) {
            // Between attempts: no socket to close, but the app still hears of it.
            this.emit("close", { code, reason, wasOpen: false, willReconnect: false });
            return;
        }
        try {
            ws.close(code, reason);
        }
        catch {
            // Browsers only take 1000 and 3000-4999 from scripts.
            ws.close();
        }
    }
    /** Sends raw text (non-hub backends). Throws when not open. */
    send(text) {
        const ws = this.ws;
        if (!ws || this._state !== "open" || ws.readyState !== OPEN) {
            throw new WsgateError("not_connected", "socket is not open");
        }
        ws.send(text);
    }
    /**
     * Subscribes `handler` to `channel`. Resolves at the gateway's `ack` (at
     * once when the channel is already subscribed), rejects with its `error`
     * (`forbidden`, `bad_request`, ...). The subscription is re-sent after
     * every reconnect until `unsubscribe`.
     */
    subscribe(channel, handler) {
        let set = this.subs.get(channel);
        if (set) {
            set.add(handler);
            return Promise.resolve();
        }
        set = new Set([handler]);
        this.subs.set(channel, set);
        return new Promise((resolve, reject) => {
            const waiters = this.subWaiters.get(channel) ?? [];
            waiters.push({ resolve, reject });
            this.subWaiters.set(channel, waiters);
            // Not open: sent with the others at the next open.
            if (this._state === "open")
                this.sendSubscribe(channel);
        });
    }
    /** Removes `handler` (or every handler) from `channel`; unsubscribes when none is left. */
    unsubscribe(channel, handler) {
        const set = this.subs.get(channel);
        if (!set)
            return Promise.resolve();
        if (handler)
            set.delete(handler);
        if (handler && set.size > 0)
            return Promise.resolve();
        this.subs.delete(channel);
        this.settleSubWaiters(channel, new WsgateError("unsubscribed"));
        if (this._state !== "open")
            return Promise.resolve();
        return this.request({ type: "unsubscribe", channel });
    }
    /** Publishes `data` on `channel`; resolves at `ack`, rejects with `error`. */
    publish(channel, data) {
        if (this._state !== "open")
            return Promise.reject(new WsgateError("not_connected", "socket is not open"));
        return this.request({ type: "publish", channel, data });
    }
    // --- connection lifecycle -------------------------------------------------
    async attempt() {
        this.reconnectTimer = null;
        if (this.stopped)
            return;
        this._state = "connecting";
        const reason = this.nextReason;
        this.emit("auth", { state: "connecting" });
        let url = this.opts.url;
        let protocols = [...(this.opts.protocols ?? [])];
        let exp;
        try {
            if (this.opts.transport === "subprotocol") {
                const token = this.opts.getToken ? await this.opts.getToken({ reason }) : this.opts.token;
                if (typeof token !== "string" || token === "")
                    throw new WsgateError("no_token", "getToken gave no token");
                protocols = [this.sentinel(), token, ...protocols];
                exp = numberClaim(decodeClaims(token), "exp");
            }
            else {
                if ((reason === "expired" || reason === "refused") && this.opts.refreshSession) {
                    await this.opts.refreshSession({ reason });
                }
                if (this.opts.transport === "ticket") {
                    const ticket = await this.ticket(reason);
                    url = withParam(url, this.opts.ticketParam ?? "ticket", ticket);
                    exp = numberClaim(decodeClaims(ticket), "session_exp");
                }
            }
        }
        catch (e) {
            if (this.stopped)
                return;
            const err = asError(e, "credential_failed");
            this.failStatus = err.status;
            // The session behind the ticket request is gone: renew it next time.
            if (err.status === 401)
                this.nextReason = "expired";
            this.emit("error", err);
            this.afterFailure(CloseCodes.ABNORMAL, "credential unavailable", false);
            return;
        }
        if (this.stopped)
            return;
        this.failStatus = undefined;
        let ws;
        try {
            ws = protocols.length > 0 ? new this.WS(url, protocols) : new this.WS(url);
        }
        catch (e) {
            this.emit("error", asError(e, "connect_failed"));
            this.afterFailure(CloseCodes.ABNORMAL, "cannot open socket", false);
            return;
        }
        this.ws = ws;
        let opened = false;
        ws.onopen = () => {
            if (this.ws !== ws)
                return;
            if (!this.protocolOk(ws.protocol)) {
                // Fail closed: a gateway (or proxy) that does not echo the sentinel
                // is not the one we meant to hand the token to.
                this.emit("error", new WsgateError("protocol_mismatch", "the gateway did not echo the subprotocol sentinel"));
                this.detach(ws);
                ws.close(CloseCodes.NORMAL);
                this.finish(1002, "subprotocol not echoed", false, true);
                return;
            }
            opened = true;
            this.refusals = 0;
            this._state = "open";
            this._exp = exp ?? this._exp;
            this.stableTimer = setTimeout(() => {
                this.attempts = 0;
            }, this.opts.backoff?.stableAfterMs ?? 10000);
            const reconnected = this.everOpened;
            this.everOpened = true;
            this.emit("auth", { state: "authenticated", exp: this._exp });
            this.emit("open", { protocol: ws.protocol, reconnected });
            for (const w of this.openWaiters.splice(0))
                w.resolve();
            for (const ch of this.subs.keys())
                this.sendSubscribe(ch);
        };
        ws.onmessage = (ev) => {
            if (this.ws === ws && typeof ev.data === "string")
                this.onText(ev.data);
        };
        ws.onerror = (ev) => {
            // A close event follows. `ws` (Node) says "Unexpected server response: 401".
            const m = /server response: (\d{3})\b/.exec(String(ev?.message ?? ""));
            if (this.ws === ws && !opened && m)
                this.failStatus = Number(m[1]);
        };
        ws.onclose = (ev) => {
            if (this.ws !== ws)
                return;
            this.detach(ws);
            this.onClosed(ev.code, ev.reason ?? "", opened);
        };
    }
    detach(ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        if (this.ws === ws)
            this.ws = null;
        if (this.stableTimer)
            clearTimeout(this.stableTimer);
        if (this.refreshTimer)
            clearTimeout(this.refreshTimer);
        this.stableTimer = this.refreshTimer = null;
        this.refreshing = false;
        for (const [id, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(new WsgateError("disconnected", "the socket closed before an answer"));
            this.pending.delete(id);
        }
    }
    onClosed(code, reason, wasOpen) {
        if (this.stopped) {
            this.finish(code, reason, wasOpen, false);
            return;
        }
        if (code === CloseCodes.REVOKED) {
            this.emit("auth", { state: "revoked", exp: this._exp });
            this.finish(code, reason, wasOpen, true);
            return;
        }
        if (code === CloseCodes.EXPIRED || code === CloseCodes.FIRST_MESSAGE_FAILED) {
            this.emit("auth", { state: "expired", exp: this._exp });
            this.nextReason = "expired";
        }
        else if (!wasOpen) {
            this.nextReason = "refused";
        }
        else {
            this.nextReason = "reconnect";
        }
        this.afterFailure(code, reason, wasOpen);
    }
    /** Schedules the next attempt with backoff, or stops. */
    afterFailure(code, reason, wasOpen) {
        const b = this.opts.backoff ?? {};
        if (!wasOpen)
            this.countRefusal(code);
        if (this.opts.reconnect === false || this.attempts >= (b.maxAttempts ?? Infinity)) {
            this.finish(code, reason, wasOpen, true);
            return;
        }
        if (this.nextReason === "connect")
            this.nextReason = "reconnect";
        const delayMs = backoffDelay(this.attempts, b, this.random);
        this.attempts++;
        this._state = "waiting";
        this.emit("close", { code, reason, wasOpen, willReconnect: true, delayMs });
        this.reconnectTimer = setTimeout(() => void this.attempt(), delayMs);
    }
    /**
     * A refused upgrade is a 1006 without open to a browser: without this the
     * app would never hear of it and `connect()` would never settle. Reported
     * once per run of failures; every `connect()` pending then rejects.
     */
    countRefusal(code) {
        this.refusals++;
        const limit = Math.max(1, Math.floor(this.opts.backoff?.refusalsBeforeError ?? 5));
        if (this.refusals < limit)
            return;
        const status = this.failStatus === undefined ? "" : `, last status ${this.failStatus}`;
        const err = new WsgateError("handshake_refused", `${this.refusals} attempts in a row ended before the socket opened (last close ${code}${status})`, this.failStatus);
        if (this.refusals === limit)
            this.emit("error", err);
        for (const w of this.openWaiters.splice(0))
            w.reject(err);
    }
    /** Ends the client (revoked, closed by the app, gave up). */
    finish(code, reason, wasOpen, stop) {
        if (stop)
            this.stop();
        this.emit("close", { code, reason, wasOpen, willReconnect: false });
    }
    stop() {
        this.stopped = true;
        this._state = "stopped";
        if (this.reconnectTimer)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        if (this.ws) {
            const ws = this.ws;
            // Keep onclose for the final event when the app closes an open socket.
            if (this.stableTimer)
                clearTimeout(this.stableTimer);
            if (this.refreshTimer)
                clearTimeout(this.refreshTimer);
            ws.onopen = ws.onmessage = null;
        }
        const err = new WsgateError("stopped", "client is stopped");
        for (const w of this.openWaiters.splice(0))
            w.reject(err);
        for (const ch of [...this.subWaiters.keys()])
            this.settleSubWaiters(ch, err);
    }
    protocolOk(p) {
        if (this.opts.transport !== "subprotocol") {
            return !p || (this.opts.protocols ?? []).includes(p);
        }
        // The sentinel, or an application protocol we offered; never anything else.
        return p === this.sentinel() || (this.opts.protocols ?? []).includes(p);
    }
    sentinel() {
        return this.opts.subprotocol ?? "jwt";
    }
    async ticket(reason) {
        if (this.opts.getTicket) {
            const t = await this.opts.getTicket({ reason });
            const s = typeof t === "string" ? t : t?.ticket;
            if (typeof s !== "string" || s === "")
                throw new WsgateError("no_ticket", "getTicket gave no ticket");
            return s;
        }
        const endpoint = this.opts.ticketEndpoint ?? ticketEndpointFor(this.opts.url);
        const c = this.opts.csrf;
        const csrf = typeof c === "function" ? await c() : c;
        const token = csrf === undefined && this.opts.getToken ? await this.opts.getToken({ reason }) : undefined;
        const r = await fetchTicket(endpoint, { csrf, token }, this.opts.fetch ?? defaultFetch());
        return r.ticket;
    }
    // --- frames ---------------------------------------------------------------
    onText(raw) {
        let m = null;
        try {
            const v = JSON.parse(raw);
            if (v && typeof v === "object" && !Array.isArray(v))
                m = v;
        }
        catch {
            m = null;
        }
        switch (m?.type) {
            case "auth_expiring":
                this._exp = numberClaim(m, "exp") ?? this._exp;
                this.emit("auth", { state: "expiring", exp: this._exp });
                this.scheduleRefresh();
                return;
            case "auth_ok":
                this._exp = numberClaim(m, "exp") ?? this._exp;
                this.emit("auth", { state: "refreshed", exp: this._exp });
                return;
            case "auth_fail":
                this.emit("auth", { state: "refresh_failed", exp: this._exp, reason: String(m.reason ?? "") });
                return;
            case "ack":
                this.settle(m.id, null);
                return;
            case "error": {
                const err = new WsgateError(String(m.reason ?? "error"), `refused: ${String(m.reason ?? "error")}`);
                if (!this.settle(m.id, err))
                    this.emit("error", err);
                return;
            }
            case "message": {
                const channel = typeof m.channel === "string" ? m.channel : undefined;
                const msg = { channel, data: m.data, from: m.from ?? null, raw };
                if (channel)
                    for (const h of this.subs.get(channel) ?? [])
                        safeCall(h, msg);
                this.emit("message", msg);
                return;
            }
            default:
                this.emit("message", { data: m ?? raw, raw });
        }
    }
    /** In-band refresh, at most once per second whatever the gateway asks. */
    scheduleRefresh() {
        if (this.opts.refresh === false || !this.opts.getToken || this.refreshing || this.refreshTimer)
            return;
        const wait = Math.max(0, this.lastRefreshAt + 1000 - Date.now());
        this.refreshTimer = setTimeout(() => {
            this.refreshTimer = null;
            void this.refreshNow();
        }, wait);
    }
    async refreshNow() {
        const ws = this.ws;
        if (!ws || !this.opts.getToken)
            return;
        this.refreshing = true;
        this.lastRefreshAt = Date.now();
        try {
            const token = await this.opts.getToken({ reason: "refresh" });
            if (this.ws === ws && ws.readyState === OPEN && typeof token === "string" && token !== "") {
                ws.send(JSON.stringify({ type: "auth", token }));
            }
        }
        catch (e) {
            this.emit("error", asError(e, "refresh_failed"));
            this.emit("auth", { state: "refresh_failed", exp: this._exp, reason: "no_token" });
        }
        finally {
            if (this.ws === ws)
                this.refreshing = false;
        }
    }
    sendSubscribe(channel) {
        this.request({ type: "subscribe", channel }).then(() => this.settleSubWaiters(channel, null), (e) => {
            if (e.reason === "disconnected")
                return; // retried at the next open
            // Refused (forbidden, bad_request...): not retried. Reported once:
            // to the subscribe() calls waiting, else (a re-subscribe after a
            // reconnect) as an `error` event.
            this.subs.delete(channel);
            const awaited = this.subWaiters.has(channel);
            this.settleSubWaiters(channel, e);
            if (!awaited)
                this.emit("error", e);
        });
    }
    settleSubWaiters(channel, err) {
        const ws = this.subWaiters.get(channel);
        this.subWaiters.delete(channel);
        for (const w of ws ?? []) {
            if (err)
                w.reject(err);
            else
                w.resolve();
        }
    }
    request(msg) {
        const ws = this.ws;
        if (!ws || ws.readyState !== OPEN)
            return Promise.reject(new WsgateError("not_connected", "socket is not open"));
        if (this.pending.size >= (this.opts.maxPending ?? 256)) {
            return Promise.reject(new WsgateError("too_many_pending", "too many unanswered requests"));
        }
        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new WsgateError("timeout", "no answer from the gateway"));
            }, this.opts.requestTimeoutMs ?? 10000);
            this.pending.set(id, { resolve, reject, timer });
            try {
                ws.send(JSON.stringify({ ...msg, id }));
            }
            catch (e) {
                clearTimeout(timer);
                this.pending.delete(id);
                reject(asError(e, "send_failed"));
            }
        });
    }
    /** Resolves (err null) or rejects the request `id`; false when unknown. */
    settle(id, err) {
        if (typeof id !== "number")
            return false;
        const p = this.pending.get(id);
        if (!p)
            return false;
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (err)
            p.reject(err);
        else
            p.resolve();
        return true;
    }
    emit(type, ev) {
        const set = this.listeners[type];
        for (const fn of set ?? [])
            safeCall(fn, ev);
    }
}
function numberClaim(m, k) {
    const v = m?.[k];
    return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
function asError(e, reason) {
    if (e instanceof WsgateError)
        return e;
    return new WsgateError(reason, e instanceof Error ? e.message : String(e));
}
/** A throwing listener must not break the client. */
function safeCall(fn, ev) {
    try {
        fn(ev);
    }
    catch (e) {
        const report = globalThis.reportError;
        if (report)
            report(e);
        else
            console.error(e);
    }
}
/** Creates a client and starts connecting. */
export function connect(opts) {
    const c = new WsgateClient(opts);
    void c.connect().catch(() => undefined);
    return c;
}
