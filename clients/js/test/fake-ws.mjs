// An in-process stand-in for the browser WebSocket, driven by the test as if
// it were the gateway: accept with a protocol, send frames, close with a code.

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 3;

export function fakeSockets() {
  const sockets = [];
  const waiters = [];

  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols === undefined ? [] : [].concat(protocols);
      this.protocol = "";
      this.readyState = CONNECTING;
      this.sent = [];
      this.closedWith = null;
      this.createdAt = Date.now();
      this.onopen = this.onclose = this.onmessage = this.onerror = null;
      sockets.push(this);
      for (const w of waiters.splice(0)) w();
    }
    send(data) {
      if (this.readyState !== OPEN) throw new Error("InvalidStateError");
      this.sent.push(data);
    }
    close(code = 1000, reason = "") {
      if (this.readyState === CLOSED) return;
      this.closedWith = { code, reason };
      const wasConnecting = this.readyState === CONNECTING;
      this.readyState = CLOSED;
      // A browser reports 1006 for a socket closed before it opened.
      queueMicrotask(() => this.onclose?.({ code: wasConnecting ? 1006 : code, reason }));
    }
    // --- the gateway's side ---
    accept(protocol = "") {
      this.protocol = protocol;
      this.readyState = OPEN;
      this.onopen?.({});
    }
    deliver(obj) {
      this.onmessage?.({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
    }
    /** A refused upgrade as `ws` reports it (browsers: `drop(1006)`, no error detail). */
    refuse(status) {
      this.readyState = CLOSED;
      this.onerror?.({ message: `Unexpected server response: ${status}` });
      this.onclose?.({ code: 1006, reason: "" });
    }
    drop(code, reason = "") {
      this.readyState = CLOSED;
      this.onclose?.({ code, reason });
    }
    /** Parsed JSON frames the client sent. */
    frames() {
      return this.sent.map((s) => JSON.parse(s));
    }
  }

  /** Resolves with socket number `n` (0-based) once the client created it. */
  async function nth(n, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (sockets.length <= n) {
      if (Date.now() > deadline) throw new Error(`socket #${n} was never opened (have ${sockets.length})`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 20);
      });
    }
    return sockets[n];
  }

  return { FakeWebSocket, sockets, nth };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JWT-shaped string with the given payload (unsigned: the client only reads it). */
export function fakeJwt(payload) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(payload)}.c2ln`;
}
