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
"connect"
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
export type EventHandler<E> = {
    handle(ev: E): void;
}["handle"];
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
    onclose: EventHandler<{
        code: number;
        reason: string;
    }> | null;
    onmessage: EventHandler<{
        data: unknown;
    }> | null;
    /** `ws` (Node) names a refused upgrade's status in the event's `message`; browsers say nothing. */
    onerror: EventHandler<unknown> | null;
}
/**
 * A WebSocket class: `globalThis.WebSocket` in browsers (and Node >= 22), or
 * the `ws` package's default export in Node.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
/** The part of `fetch` the client uses. */
export type FetchLike = (input: string, init: {
    method: string;
    headers: Record<string, string>;
    credentials?: "include" | "same-origin" | "omit";
}) => Promise<{
    ok: boolean;
    status: number;
    json(): Promise<unknown>;
}>;
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
export type AuthState = "connecting" | "authenticated" | "expiring" | "refreshed" | "refresh_failed" | "expired" | "revoked";
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
export declare class WsgateError extends Error {
    readonly reason: string;
    readonly status?: number;
    constructor(reason: string, message?: string, status?: number);
}
/** The gateway's close codes (docs/reference.md, "Close codes"). */
export declare const CloseCodes: {
    readonly NORMAL: 1000;
    readonly GOING_AWAY: 1001;
    readonly ABNORMAL: 1006;
    readonly TOO_BIG: 1009;
    readonly INTERNAL: 1011;
    readonly TRY_AGAIN_LATER: 1013;
    readonly FIRST_MESSAGE_FAILED: 4001;
    readonly EXPIRED: 4401;
    readonly REVOKED: 4403;
    readonly IDLE: 4408;
    readonly RATE_LIMITED: 4429;
};
/**
 * The delay before reconnect attempt `attempt` (0 = first): exponential,
 * capped, with the top `jitter` share random so that clients dropped
 * together do not come back together. Never below 50 ms.
 */
export declare function backoffDelay(attempt: number, opts?: BackoffOptions, random?: () => number): number;
/** Reads a JWT's payload without verifying it (only to show or schedule). */
export declare function decodeClaims(jwt: string): Record<string, unknown> | null;
/** `ws://host/ws` → `http://host/v1/tickets`. */
export declare function ticketEndpointFor(wsUrl: string): string;
/**
 * `POST /v1/tickets`: with the session cookie and `X-CSRF-Token` (browser
 * pages), or with `Authorization: Bearer <token>`.
 */
export declare function fetchTicket(endpoint: string, auth: {
    csrf?: string;
    token?: string;
}, fetchImpl?: FetchLike | undefined): Promise<TicketResponse>;
/** One logical connection to the gateway, kept alive across reconnects. */
export declare class WsgateClient {
    private readonly opts;
    private readonly WS;
    private readonly random;
    private ws;
    private listeners;
    private stopped;
    private started;
    private attempts;
    /** Consecutive attempts that ended before the socket opened. */
    private refusals;
    /** The HTTP status of the current attempt's failure, when known. */
    private failStatus;
    private everOpened;
    private nextReason;
    private reconnectTimer;
    private stableTimer;
    private refreshTimer;
    private refreshing;
    private lastRefreshAt;
    private nextId;
    private pending;
    private subs;
    /** subscribe() calls waiting for the channel's next (re)subscribe ack. */
    private subWaiters;
    private openWaiters;
    private _exp;
    private _state;
    constructor(opts: WsgateOptions);
    /** `idle`, `connecting`, `open`, `waiting` (to reconnect) or `stopped`. */
    get state(): ClientState;
    /** The session's expiry (Unix seconds) when known. */
    get exp(): number | undefined;
    /** The channels this client is subscribed to (re-subscribed after every reconnect). */
    get channels(): string[];
    on<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): () => void;
    off<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): void;
    /** Starts connecting; resolves at the first open, rejects if the client stops before. */
    connect(): Promise<void>;
    /** Closes for good (no reconnect). */
    close(code?: number, reason?: string): void;
    /** Sends raw text (non-hub backends). Throws when not open. */
    send(text: string): void;
    /**
     * Subscribes `handler` to `channel`. Resolves at the gateway's `ack` (at
     * once when the channel is already subscribed), rejects with its `error`
     * (`forbidden`, `bad_request`, ...). The subscription is re-sent after
     * every reconnect until `unsubscribe`.
     */
    subscribe(channel: string, handler: Listener<HubMessage>): Promise<void>;
    /** Removes `handler` (or every handler) from `channel`; unsubscribes when none is left. */
    unsubscribe(channel: string, handler?: Listener<HubMessage>): Promise<void>;
    /** Publishes `data` on `channel`; resolves at `ack`, rejects with `error`. */
    publish(channel: string, data: unknown): Promise<void>;
    private attempt;
    private detach;
    private onClosed;
    /** Schedules the next attempt with backoff, or stops. */
    private afterFailure;
    /**
     * A refused upgrade is a 1006 without open to a browser: without this the
     * app would never hear of it and `connect()` would never settle. Reported
     * once per run of failures; every `connect()` pending then rejects.
     */
    private countRefusal;
    /** Ends the client (revoked, closed by the app, gave up). */
    private finish;
    private stop;
    private protocolOk;
    private sentinel;
    private ticket;
    private onText;
    /** In-band refresh, at most once per second whatever the gateway asks. */
    private scheduleRefresh;
    private refreshNow;
    private sendSubscribe;
    private settleSubWaiters;
    private request;
    /** Resolves (err null) or rejects the request `id`; false when unknown. */
    private settle;
    private emit;
}
/** Creates a client and starts connecting. */
export declare function connect(opts: WsgateOptions): WsgateClient;
