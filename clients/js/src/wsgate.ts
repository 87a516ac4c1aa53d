/**
 * wsgate client: opens an authenticated WebSocket through a wsgate gateway,
 * keeps it authenticated (in-band refresh, reconnect with a fresh credential
 * after 4401), stops for good on revocation (4403), backs off on everything
 * else, and speaks the hub protocol (subscribe / publish with acks).
 *
 * Dependency-free; runs in browsers and in Node (inject a WebSocket
 * constructor there). It never logs or emits a token or a ticket.
 */

/** How the credential reaches the gateway on the upgrade (docs/reference.md, "Endpoints"). */
export type Transport = "ticket" | "subprotocol" | "cookie";

/** Why a credential is being asked for. */
export type CredentialReason =
  /** the first connection */
  | "connect"
  /** a reconnection after a drop (1006, 1013, 4429, ...) */
  | "reconnect"
  /** the session ended 4401: a cached token is stale, get a new one */
  | "expired"
  /**
   * the last attempt ended before the socket opened: the gateway refused the
   * upgrade (a browser cannot see why) or was unreachable. A cached
   * credential may be the cause: get a new one, as for `expired`.
   */
  | "refused"
  /** in-band refresh after `auth_expiring` */
  | "refresh";

export interface CredentialContext {
  reason: CredentialReason;
}

/** What `POST /v1/tickets` answers (docs/reference.md, "Endpoints"). */
export interface TicketResponse {
  ticket: string;
  expires_in?: number;
  url?: string;
}

/**
 * An event-handler property of {@link WebSocketLike}. Written as a method
 * type so that its parameter is checked bivariantly: the browser's
 * `(this: WebSocket, ev: CloseEvent) => any` and the `ws` package's
 * `(event: WebSocket.CloseEvent) => void` both fit under `strict`, while
 * the client's own handlers still see the fields they read.
 */
export type EventHandler<E> = { handle(ev: E): void }["handle"];

/**
 * The part of the WebSocket API the client uses. The browser's `WebSocket`
 * and the `ws` package's both satisfy it (tested under `strict`).
 */
export interface WebSocketLike {
  readonly protocol: string;
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: EventHandler<unknown> | null;
  onclose: EventHandler<{ code: number; reason: string }> | null;
  onmessage: EventHandler<{ data: unknown }> | null;
  /** `ws` (Node) names a refused upgrade's status in the event's `message`; browsers say nothing. */
  onerror: EventHandler<unknown> | null;
}

/**
 * A WebSocket class: `globalThis.WebSocket` in browsers (and Node >= 22), or
 * the `ws` package's default export in Node.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The part of `fetch` the client uses. */
export type FetchLike = (
  input: string,
  init: { method: string; headers: Record<string, string>; credentials?: "include" | "same-origin" | "omit" },
) => Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;

export interface BackoffOptions {
  /** First delay before a reconnect, ms (default 500). */
  initialDelayMs?: number;
  /** Cap on the delay, ms (default 30000). */
  maxDelayMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /** Share of the delay that is random, 0..0.9 (default 0.5: a delay lies in [d/2, d]). */
  jitter?: number;
  /** A connection open this long resets the backoff (default 10000 ms). */
  stableAfterMs?: number;
  /** Give up after this many consecutive failed attempts (default: never). */
  maxAttempts?: number;
  /**
   * After this many consecutive attempts that ended before the socket opened
   * (refused upgrade, gateway unreachable, no credential), emit `error`
   * `handshake_refused` once and reject pending `connect()` calls (default 5,
   * at least 1). The client keeps retrying; stop it with `close()` or
   * `maxAttempts`.
   */
  refusalsBeforeError?: number;
}

export interface WsgateOptions {
  /** The gateway's WebSocket endpoint, e.g. `wss://ws.example/ws`. */
  url: string;
  transport: Transport;
  /**
   * A fresh session token (a JWT). Required for the `subprotocol` transport
   * (called before every connection); with any transport it enables in-band
   * refresh on `auth_expiring`.
   */
  getToken?: (ctx: CredentialContext) => string | Promise<string>;
  /** A static token for `subprotocol` when there is no `getToken` (it cannot be renewed). */
  token?: string;
  /**
   * A fresh single-use ticket (`ticket` transport). Without it the client
   * POSTs `ticketEndpoint` with the session cookie and `X-CSRF-Token: csrf`
   * (or with `Authorization: Bearer <getToken()>` when no `csrf` is given).
   */
  getTicket?: (ctx: CredentialContext) => string | TicketResponse | Promise<string | TicketResponse>;
  /** Default: the `url`'s origin (http/https) + `/v1/tickets`. */
  ticketEndpoint?: string;
  /** The session's CSRF value (the token's `csrf` claim) for the ticket request. */
  csrf?: string | (() => string | Promise<string>);
  /** Query parameter carrying the ticket (gateway's `auth.ticket_param`, default `ticket`). */
  ticketParam?: string;
  /**
   * Renews the app's session (e.g. its cookie) before reconnecting after a
   * 4401 or a refused upgrade, for the `cookie` and `ticket` transports.
   */
  refreshSession?: (ctx: CredentialContext) => void | Promise<void>;
  /** Refresh in-band on `auth_expiring` when `getToken` is given (default true). */
  refresh?: boolean;
  /** Application subprotocols to offer besides the credential. */
  protocols?: string[];
  /** The gateway's subprotocol sentinel (`auth.subprotocol`, default `jwt`). */
  subprotocol?: string;
  /** Reconnect with backoff after drops (default true). */
  reconnect?: boolean;
  backoff?: BackoffOptions;
  /** A hub request not answered within this is rejected `timeout` (default 10000 ms). */
  requestTimeoutMs?: number;
  /** At most this many unanswered hub requests (default 256). */
  maxPending?: number;
  /** Defaults to `globalThis.WebSocket` (Node 20: pass one, e.g. from `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Defaults to `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Defaults to `Math.random` (tests inject their own). */
  random?: () => number;
}

/** Where the client is: `waiting` is the backoff before a reconnect; `stopped` is final. */
export type ClientState = "idle" | "connecting" | "open" | "waiting" | "stopped";

/** The session's authentication state, as the `auth` event reports it. */
export type AuthState =
  | "connecting"
  | "authenticated"
  | "expiring"
  | "refreshed"
  | "refresh_failed"
  | "expired"
  | "revoked";

export interface AuthEvent {
  state: AuthState;
  /** The session's expiry (Unix seconds) when known. */
  exp?: number;
  /** The gateway's reason code (`auth_fail`). */
  reason?: string;
}

export interface OpenEvent {
  /** The subprotocol the gateway echoed. */
  protocol: string;
  /** true after a reconnect. */
  reconnected: boolean;
}

export interface CloseEvent {
  code: number;
  reason: string;
  /** Whether the socket had opened (a refused upgrade closes 1006 without opening). */
  wasOpen: boolean;
  willReconnect: boolean;
  /** Delay before the next attempt when `willReconnect`. */
  delayMs?: number;
}

export interface HubMessage {
  channel?: string;
  data: unknown;
  from?: string | null;
  /** The frame as received. */
  raw: string;
}

export interface ClientEvents {
  open: OpenEvent;
  close: CloseEvent;
  auth: AuthEvent;
  message: HubMessage;
  error: WsgateError;
}

export type Listener<T> = (ev: T) => void;

/**
 * A refused hub request (`reason` from the gateway) or a client-side failure
 * (`handshake_refused`, `timeout`, `not_connected`, ...; see the README).
 * `status` is an HTTP status when one is known (the ticket request's, or the
 * refused upgrade's where the WebSocket implementation reports it).
 */
export class WsgateError extends Error {
  readonly reason: string;
  readonly status?: number;
  constructor(reason: string, message?: string, status?: number) {
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
} as const;

const OPEN = 1;

/**
 * The delay before reconnect attempt `attempt` (0 = first): exponential,
 * capped, with the top `jitter` share random so that clients dropped
 * together do not come back together. Never below 50 ms.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = Math.max(50, opts.initialDelayMs ?? 500);
  const max = Math.max(initial, opts.maxDelayMs ?? 30_000);
  const factor = Math.max(1, opts.factor ?? 2);
  const jitter = Math.min(0.9, Math.max(0, opts.jitter ?? 0.5));
  const n = Math.max(0, Math.floor(attempt));
  const d = Math.min(max, initial * Math.pow(factor, Math.min(n, 64)));
  const r = Math.min(1, Math.max(0, random()));
  return Math.max(50, Math.round(d * (1 - jitter) + d * jitter * r));
}

/** Reads a JWT's payload without verifying it (only to show or schedule). */
export function decodeClaims(jwt: string): Record<string, unknown> | null {
  const part = jwt.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c: string) => c.charCodeAt(0));
    const v: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return v && typeof v === "object" ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** `ws://host/ws` → `http://host/v1/tickets`. */
export function ticketEndpointFor(wsUrl: string): string {
  const u = new URL(wsUrl);
  const scheme = u.protocol === "wss:" ? "https:" : "http:";
  return `${scheme}//${u.host}/v1/tickets`;
}

/**
 * `POST /v1/tickets`: with the session cookie and `X-CSRF-Token` (browser
 * pages), or with `Authorization: Bearer <token>`.
 */
export async function fetchTicket(
  endpoint: string,
  auth: { csrf?: string; token?: string },
  fetchImpl: FetchLike | undefined = defaultFetch(),
): Promise<TicketResponse> {
  if (!fetchImpl) throw new WsgateError("no_fetch", "no fetch implementation available");
  const headers: Record<string, string> = {};
  if (auth.csrf !== undefined) headers["X-CSRF-Token"] = auth.csrf;
  if (auth.token !== undefined) headers["Authorization"] = `Bearer ${auth.token}`;
  const r = await fetchImpl(endpoint, { method: "POST", headers, credentials: "include" });
  let body: unknown = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  const b = (body && typeof body === "object" ? body : {}) as Record<string, unknown>;
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

function defaultFetch(): FetchLike | undefined {
  const f = (globalThis as { fetch?: FetchLike }).fetch;
  return f ? f.bind(globalThis) : undefined;
}

function withParam(url: string, name: string, value: string): string {
  const u = new URL(url);
  u.searchParams.set(name, value);
  return u.toString();
}

interface Pending {
  resolve: () => void;
  reject: (e: WsgateError) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Deferred = { resolve: () => void; reject: (e: WsgateError) => void };

/** One logical connection to the gateway, kept alive across reconnects. */
export class WsgateClient {
  private readonly opts: WsgateOptions;
  private readonly WS: WebSocketConstructor;
  private readonly random: () => number;
  private ws: WebSocketLike | null = null;
  private listeners: { [K in keyof ClientEvents]?: Set<Listener<ClientEvents[K]>> } = {};
  private stopped = false;
  private started = false;
  private attempts = 0;
  /** Consecutive attempts that ended before the socket opened. */
  private refusals = 0;
  /** The HTTP status of the current attempt's failure, when known. */
  private failStatus: number | undefined;
  private everOpened = false;
  private nextReason: CredentialReason = "connect";
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshing = false;
  private lastRefreshAt = 0;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subs = new Map<string, Set<Listener<HubMessage>>>();
  /** subscribe() calls waiting for the channel's next (re)subscribe ack. */
  private subWaiters = new Map<string, Deferred[]>();
  private openWaiters: Deferred[] = [];
  private _exp: number | undefined;
  private _state: ClientState = "idle";

  constructor(opts: WsgateOptions) {
    if (!opts || typeof opts.url !== "string") throw new TypeError("wsgate: url is required");
    if (!["ticket", "subprotocol", "cookie"].includes(opts.transport)) {
      throw new TypeError(`wsgate: unknown transport ${String(opts.transport)}`);
    }
    if (opts.transport === "subprotocol" && !opts.getToken && !opts.token) {
      throw new TypeError("wsgate: the subprotocol transport needs getToken or token");
    }
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("wsgate: no WebSocket available; pass options.WebSocket");
    this.opts = opts;
    this.WS = WS;
    this.random = opts.random ?? Math.random;
  }

  /** `idle`, `connecting`, `open`, `waiting` (to reconnect) or `stopped`. */
  get state(): ClientState {
    return this._state;
  }

  /** The session's expiry (Unix seconds) when known. */
  get exp(): number | undefined {
    return this._exp;
  }

  /** The channels this client is subscribed to (re-subscribed after every reconnect). */
  get channels(): string[] {
    return [...this.subs.keys()];
  }

  on<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): () => void {
    const all = this.listeners as Record<string, Set<unknown> | undefined>;
    const set = (all[type] ??= new Set()) as Set<Listener<ClientEvents[K]>>;
    set.add(fn);
    return () => this.off(type, fn);
  }

  off<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): void {
    (this.listeners[type] as Set<Listener<ClientEvents[K]>> | undefined)?.delete(fn);
  }

  /** Starts connecting; resolves at the first open, rejects if the client stops before. */
  connect(): Promise<void> {
    if (this.stopped) return Promise.reject(new WsgateError("stopped", "client is stopped"));
    const p = new Promise<void>((resolve, reject) => {
      if (this._state === "open") resolve();
      else this.openWaiters.push({ resolve, reject });
    });
    if (!this.started) {
      this.started = true;
      void this.attempt();
    }
    return p;
  }

  /** Closes for good (no reconnect). */
  close(code: number = CloseCodes.NORMAL, reason = ""): void {
    if (this.stopped) return;
    this.stop();
    const ws = this.ws;
    if (!ws) {
      // Between attempts: no socket to close, but the app still hears of it.
      this.emit("close", { code, reason, wasOpen: false, willReconnect: false });
      return;
    }
    try {
      ws.close(code, reason);
    } catch {
      // Browsers only take 1000 and 3000-4999 from scripts.
      ws.close();
    }
  }

  /** Sends raw text (non-hub backends). Throws when not open. */
  send(text: string): void {
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
  subscribe(channel: string, handler: Listener<HubMessage>): Promise<void> {
    let set = this.subs.get(channel);
    if (set) {
      set.add(handler);
      return Promise.resolve();
    }
    set = new Set([handler]);
    this.subs.set(channel, set);
    return new Promise<void>((resolve, reject) => {
      const waiters = this.subWaiters.get(channel) ?? [];
      waiters.push({ resolve, reject });
      this.subWaiters.set(channel, waiters);
      // Not open: sent with the others at the next open.
      if (this._state === "open") this.sendSubscribe(channel);
    });
  }

  /** Removes `handler` (or every handler) from `channel`; unsubscribes when none is left. */
  unsubscribe(channel: string, handler?: Listener<HubMessage>): Promise<void> {
    const set = this.subs.get(channel);
    if (!set) return Promise.resolve();
    if (handler) set.delete(handler);
    if (handler && set.size > 0) return Promise.resolve();
    this.subs.delete(channel);
    this.settleSubWaiters(channel, new WsgateError("unsubscribed"));
    if (this._state !== "open") return Promise.resolve();
    return this.request({ type: "unsubscribe", channel });
  }

  /** Publishes `data` on `channel`; resolves at `ack`, rejects with `error`. */
  publish(channel: string, data: unknown): Promise<void> {
    if (this._state !== "open") return Promise.reject(new WsgateError("not_connected", "socket is not open"));
    return this.request({ type: "publish", channel, data });
  }

  // --- connection lifecycle -------------------------------------------------

  private async attempt(): Promise<void> {
    this.reconnectTimer = null;
    if (this.stopped) return;
    this._state = "connecting";
    const reason = this.nextReason;
    this.emit("auth", { state: "connecting" });
    let url = this.opts.url;
    let protocols = [...(this.opts.protocols ?? [])];
    let exp: number | undefined;
    try {
      if (this.opts.transport === "subprotocol") {
        const token = this.opts.getToken ? await this.opts.getToken({ reason }) : (this.opts.token as string);
        if (typeof token !== "string" || token === "") throw new WsgateError("no_token", "getToken gave no token");
        protocols = [this.sentinel(), token, ...protocols];
        exp = numberClaim(decodeClaims(token), "exp");
      } else {
        if ((reason === "expired" || reason === "refused") && this.opts.refreshSession) {
          await this.opts.refreshSession({ reason });
        }
        if (this.opts.transport === "ticket") {
          const ticket = await this.ticket(reason);
          url = withParam(url, this.opts.ticketParam ?? "ticket", ticket);
          exp = numberClaim(decodeClaims(ticket), "session_exp");
        }
      }
    } catch (e) {
      if (this.stopped) return;
      const err = asError(e, "credential_failed");
      this.failStatus = err.status;
      // The session behind the ticket request is gone: renew it next time.
      if (err.status === 401) this.nextReason = "expired";
      this.emit("error", err);
      this.afterFailure(CloseCodes.ABNORMAL, "credential unavailable", false);
      return;
    }
    if (this.stopped) return;
    this.failStatus = undefined;
    let ws: WebSocketLike;
    try {
      ws = protocols.length > 0 ? new this.WS(url, protocols) : new this.WS(url);
    } catch (e) {
      this.emit("error", asError(e, "connect_failed"));
      this.afterFailure(CloseCodes.ABNORMAL, "cannot open socket", false);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
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
      }, this.opts.backoff?.stableAfterMs ?? 10_000);
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.emit("auth", { state: "authenticated", exp: this._exp });
      this.emit("open", { protocol: ws.protocol, reconnected });
      for (const w of this.openWaiters.splice(0)) w.resolve();
      for (const ch of this.subs.keys()) this.sendSubscribe(ch);
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws && typeof ev.data === "string") this.onText(ev.data);
    };
    ws.onerror = (ev) => {
      // A close event follows. `ws` (Node) says "Unexpected server response: 401".
      const m = /server response: (\d{3})\b/.exec(String((ev as { message?: unknown } | null)?.message ?? ""));
      if (this.ws === ws && !opened && m) this.failStatus = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.detach(ws);
      this.onClosed(ev.code, ev.reason ?? "", opened);
    };
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (this.ws === ws) this.ws = null;
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.stableTimer = this.refreshTimer = null;
    this.refreshing = false;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new WsgateError("disconnected", "the socket closed before an answer"));
      this.pending.delete(id);
    }
  }

  private onClosed(code: number, reason: string, wasOpen: boolean): void {
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
    } else if (!wasOpen) {
      this.nextReason = "refused";
    } else {
      this.nextReason = "reconnect";
    }
    this.afterFailure(code, reason, wasOpen);
  }

  /** Schedules the next attempt with backoff, or stops. */
  private afterFailure(code: number, reason: string, wasOpen: boolean): void {
    const b = this.opts.backoff ?? {};
    if (!wasOpen) this.countRefusal(code);
    if (this.opts.reconnect === false || this.attempts >= (b.maxAttempts ?? Infinity)) {
      this.finish(code, reason, wasOpen, true);
      return;
    }
    if (this.nextReason === "connect") this.nextReason = "reconnect";
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
  private countRefusal(code: number): void {
    this.refusals++;
    const limit = Math.max(1, Math.floor(this.opts.backoff?.refusalsBeforeError ?? 5));
    if (this.refusals < limit) return;
    const status = this.failStatus === undefined ? "" : `, last status ${this.failStatus}`;
    const err = new WsgateError(
      "handshake_refused",
      `${this.refusals} attempts in a row ended before the socket opened (last close ${code}${status})`,
      this.failStatus,
    );
    if (this.refusals === limit) this.emit("error", err);
    for (const w of this.openWaiters.splice(0)) w.reject(err);
  }

  /** Ends the client (revoked, closed by the app, gave up). */
  private finish(code: number, reason: string, wasOpen: boolean, stop: boolean): void {
    if (stop) this.stop();
    this.emit("close", { code, reason, wasOpen, willReconnect: false });
  }

  private stop(): void {
    this.stopped = true;
    this._state = "stopped";
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.ws) {
      const ws = this.ws;
      // Keep onclose for the final event when the app closes an open socket.
      if (this.stableTimer) clearTimeout(this.stableTimer);
      if (this.refreshTimer) clearTimeout(this.refreshTimer);
      ws.onopen = ws.onmessage = null;
    }
    const err = new WsgateError("stopped", "client is stopped");
    for (const w of this.openWaiters.splice(0)) w.reject(err);
    for (const ch of [...this.subWaiters.keys()]) this.settleSubWaiters(ch, err);
  }

  private protocolOk(p: string): boolean {
    if (this.opts.transport !== "subprotocol") {
      return !p || (this.opts.protocols ?? []).includes(p);
    }
    // The sentinel, or an application protocol we offered; never anything else.
    return p === this.sentinel() || (this.opts.protocols ?? []).includes(p);
  }

  private sentinel(): string {
    return this.opts.subprotocol ?? "jwt";
  }

  private async ticket(reason: CredentialReason): Promise<string> {
    if (this.opts.getTicket) {
      const t = await this.opts.getTicket({ reason });
      const s = typeof t === "string" ? t : t?.ticket;
      if (typeof s !== "string" || s === "") throw new WsgateError("no_ticket", "getTicket gave no ticket");
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

  private onText(raw: string): void {
    let m: Record<string, unknown> | null = null;
    try {
      const v: unknown = JSON.parse(raw);
      if (v && typeof v === "object" && !Array.isArray(v)) m = v as Record<string, unknown>;
    } catch {
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
        if (!this.settle(m.id, err)) this.emit("error", err);
        return;
      }
      case "message": {
        const channel = typeof m.channel === "string" ? m.channel : undefined;
        const msg: HubMessage = { channel, data: m.data, from: (m.from as string | null | undefined) ?? null, raw };
        if (channel) for (const h of this.subs.get(channel) ?? []) safeCall(h, msg);
        this.emit("message", msg);
        return;
      }
      default:
        this.emit("message", { data: m ?? raw, raw });
    }
  }

  /** In-band refresh, at most once per second whatever the gateway asks. */
  private scheduleRefresh(): void {
    if (this.opts.refresh === false || !this.opts.getToken || this.refreshing || this.refreshTimer) return;
    const wait = Math.max(0, this.lastRefreshAt + 1000 - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshNow();
    }, wait);
  }

  private async refreshNow(): Promise<void> {
    const ws = this.ws;
    if (!ws || !this.opts.getToken) return;
    this.refreshing = true;
    this.lastRefreshAt = Date.now();
    try {
      const token = await this.opts.getToken({ reason: "refresh" });
      if (this.ws === ws && ws.readyState === OPEN && typeof token === "string" && token !== "") {
        ws.send(JSON.stringify({ type: "auth", token }));
      }
    } catch (e) {
      this.emit("error", asError(e, "refresh_failed"));
      this.emit("auth", { state: "refresh_failed", exp: this._exp, reason: "no_token" });
    } finally {
      if (this.ws === ws) this.refreshing = false;
    }
  }

  private sendSubscribe(channel: string): void {
    this.request({ type: "subscribe", channel }).then(
      () => this.settleSubWaiters(channel, null),
      (e: WsgateError) => {
        if (e.reason === "disconnected") return; // retried at the next open
        // Refused (forbidden, bad_request...): not retried. Reported once:
        // to the subscribe() calls waiting, else (a re-subscribe after a
        // reconnect) as an `error` event.
        this.subs.delete(channel);
        const awaited = this.subWaiters.has(channel);
        this.settleSubWaiters(channel, e);
        if (!awaited) this.emit("error", e);
      },
    );
  }

  private settleSubWaiters(channel: string, err: WsgateError | null): void {
    const ws = this.subWaiters.get(channel);
    this.subWaiters.delete(channel);
    for (const w of ws ?? []) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  private request(msg: Record<string, unknown>): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return Promise.reject(new WsgateError("not_connected", "socket is not open"));
    if (this.pending.size >= (this.opts.maxPending ?? 256)) {
      return Promise.reject(new WsgateError("too_many_pending", "too many unanswered requests"));
    }
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WsgateError("timeout", "no answer from the gateway"));
      }, this.opts.requestTimeoutMs ?? 10_000);
      this.pending.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ ...msg, id }));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(asError(e, "send_failed"));
      }
    });
  }

  /** Resolves (err null) or rejects the request `id`; false when unknown. */
  private settle(id: unknown, err: WsgateError | null): boolean {
    if (typeof id !== "number") return false;
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve();
    return true;
  }

  private emit<K extends keyof ClientEvents>(type: K, ev: ClientEvents[K]): void {
    const set = this.listeners[type] as Set<Listener<ClientEvents[K]>> | undefined;
    for (const fn of set ?? []) safeCall(fn, ev);
  }
}

function numberClaim(m: Record<string, unknown> | null, k: string): number | undefined {
  const v = m?.[k];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function asError(e: unknown, reason: string): WsgateError {
  if (e instanceof WsgateError) return e;
  return new WsgateError(reason, e instanceof Error ? e.message : String(e));
}

/** A throwing listener must not break the client. */
function safeCall<T>(fn: Listener<T>, ev: T): void {
  try {
    fn(ev);
  } catch (e) {
    const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
    if (report) report(e);
    else console.error(e);
  }
}

/** Creates a client and starts connecting. */
export function connect(opts: WsgateOptions): WsgateClient {
  const c = new WsgateClient(opts);
  void c.connect().catch(() => undefined);
  return c;
}
