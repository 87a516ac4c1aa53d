// Unit tests of the wsgate client's logic against an in-process fake
// WebSocket (fake-ws.mjs) that plays the gateway. The real gateway and a
// real browser are exercised by e2e/.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WsgateClient, WsgateError, backoffDelay, decodeClaims, ticketEndpointFor } from "../dist/wsgate.js";
import { fakeSockets, fakeJwt, sleep } from "./fake-ws.mjs";

const FAST = { initialDelayMs: 50, maxDelayMs: 400, factor: 2, jitter: 0, stableAfterMs: 60_000 };

async function until(cond, what, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function record(client) {
  const events = [];
  for (const t of ["open", "close", "auth", "message", "error"]) client.on(t, (e) => events.push({ t, e }));
  return events;
}

test("backoff grows exponentially, is capped, and stays inside its jitter band", () => {
  const opts = { initialDelayMs: 100, maxDelayMs: 5000, factor: 2, jitter: 0.5 };
  let prevHigh = 0;
  for (let n = 0; n < 30; n++) {
    const d = Math.min(5000, 100 * 2 ** n);
    const lo = backoffDelay(n, opts, () => 0);
    const hi = backoffDelay(n, opts, () => 1);
    assert.equal(lo, Math.round(d / 2), `attempt ${n} low`);
    assert.equal(hi, d, `attempt ${n} high`);
    for (let i = 0; i < 50; i++) {
      const x = backoffDelay(n, opts);
      assert.ok(x >= lo && x <= hi, `attempt ${n}: ${x} not in [${lo}, ${hi}]`);
    }
    assert.ok(hi >= prevHigh, "never shrinks");
    prevHigh = hi;
  }
  assert.equal(backoffDelay(1000, opts, () => 1), 5000, "capped at maxDelayMs");
});

test("backoff never allows a tight loop, whatever the options", () => {
  const silly = { initialDelayMs: 0, maxDelayMs: 0, factor: 0, jitter: 5 };
  for (let n = 0; n < 10; n++) {
    assert.ok(backoffDelay(n, silly, () => 0) >= 50);
    assert.ok(backoffDelay(n, silly, () => 1) >= 50);
  }
  // jitter is clamped to 0.9: at least 10% of the step is fixed.
  assert.equal(backoffDelay(0, { initialDelayMs: 1000, jitter: 1 }, () => 0), 100);
  assert.equal(backoffDelay(-3, {}, () => 1), 500, "negative attempts count as the first");
});

test("helpers: ticket endpoint and claims decoding", () => {
  assert.equal(ticketEndpointFor("ws://127.0.0.1:8080/ws"), "http://127.0.0.1:8080/v1/tickets");
  assert.equal(ticketEndpointFor("wss://ws.example/deep/ws?x=1"), "https://ws.example/v1/tickets");
  assert.deepEqual(decodeClaims(fakeJwt({ sub: "ü", exp: 12 })), { sub: "ü", exp: 12 });
  assert.equal(decodeClaims("not-a-jwt"), null);
  assert.equal(decodeClaims("a.!!!.b"), null);
});

test("subprotocol: offers [jwt, token] and opens only when the sentinel is echoed", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const token = fakeJwt({ sub: "alice", exp: 2_000_000_000 });
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "subprotocol", token, WebSocket: FakeWebSocket });
  const ev = record(c);
  const opened = c.connect();
  const s = await nth(0);
  assert.equal(s.url, "ws://gw/ws");
  assert.deepEqual(s.protocols, ["jwt", token]);
  s.accept("jwt");
  await opened;
  assert.equal(c.state, "open");
  assert.equal(c.exp, 2_000_000_000);
  assert.deepEqual(
    ev.filter((x) => x.t === "auth").map((x) => x.e.state),
    ["connecting", "authenticated"],
  );
  assert.equal(ev.find((x) => x.t === "open").e.protocol, "jwt");
  c.close();
});

test("subprotocol: a server that does not echo the sentinel is refused, without retry", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "subprotocol",
    token: fakeJwt({ sub: "a" }),
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  const ev = record(c);
  const opened = c.connect();
  (await nth(0)).accept("");
  await assert.rejects(opened, (e) => e instanceof WsgateError && e.reason === "stopped");
  assert.equal(ev.find((x) => x.t === "error").e.reason, "protocol_mismatch");
  assert.equal(sockets[0].closedWith.code, 1000);
  assert.equal(ev.some((x) => x.t === "open"), false, "never reported open");
  await sleep(300);
  assert.equal(sockets.length, 1, "no reconnect");
  assert.equal(c.state, "stopped");
});

test("4401: fetches a fresh credential and reconnects after a backoff delay", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const asked = [];
  let n = 0;
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "subprotocol",
    getToken: (ctx) => {
      asked.push(ctx.reason);
      n++;
      return fakeJwt({ sub: "alice", exp: 1000 + n });
    },
    refresh: false,
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  const ev = record(c);
  await Promise.all([c.connect(), nth(0).then((s) => s.accept("jwt"))]);
  const first = await nth(0);
  first.drop(4401, "token expired");
  const second = await nth(1);
  const gap = second.createdAt - first.createdAt;
  const close = ev.find((x) => x.t === "close").e;
  assert.equal(close.code, 4401);
  assert.equal(close.willReconnect, true);
  assert.equal(close.delayMs, 50);
  assert.ok(gap >= 45, `reconnected after ${gap} ms`);
  assert.deepEqual(asked, ["connect", "expired"]);
  assert.equal(decodeClaims(second.protocols[1]).exp, 1002, "the fresh token is offered");
  assert.ok(ev.some((x) => x.t === "auth" && x.e.state === "expired"));
  second.accept("jwt");
  await until(() => c.state === "open", "reopen");
  assert.equal(ev.filter((x) => x.t === "open")[1].e.reconnected, true);
  assert.equal(c.exp, 1002);
  c.close();
});

test("4403: reports revoked and never reconnects", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  let asked = 0;
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "subprotocol",
    getToken: () => (asked++, fakeJwt({ sub: "a" })),
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  const ev = record(c);
  const p = c.connect();
  (await nth(0)).accept("jwt");
  await p;
  sockets[0].drop(4403, "session revoked");
  await sleep(FAST.maxDelayMs + 200);
  assert.equal(sockets.length, 1, "no reconnect after 4403");
  assert.equal(asked, 1, "no new credential asked for");
  assert.ok(ev.some((x) => x.t === "auth" && x.e.state === "revoked"));
  const close = ev.find((x) => x.t === "close").e;
  assert.deepEqual([close.code, close.willReconnect, close.wasOpen], [4403, false, true]);
  assert.equal(c.state, "stopped");
  await assert.rejects(c.connect(), /stopped/);
});

for (const code of [1006, 1013, 4429, 1001, 1011]) {
  test(`${code}: reconnects with growing delays, never in a tight loop`, async () => {
    const { FakeWebSocket, nth, sockets } = fakeSockets();
    const c = new WsgateClient({
      url: "ws://gw/ws",
      transport: "cookie",
      WebSocket: FakeWebSocket,
      backoff: { ...FAST, maxDelayMs: 200 },
    });
    const delays = [];
    c.on("close", (e) => delays.push(e.delayMs));
    void c.connect().catch(() => {});
    // Open once, then every attempt fails at once (gateway refusing / down).
    (await nth(0)).accept("");
    sockets[0].drop(code);
    for (let i = 1; i <= 4; i++) (await nth(i)).drop(1006);
    await nth(5);
    assert.deepEqual(delays, [50, 100, 200, 200, 200], "exponential, capped");
    for (let i = 1; i <= 5; i++) {
      const gap = sockets[i].createdAt - sockets[i - 1].createdAt;
      assert.ok(gap >= delays[i - 1] - 5, `attempt ${i} came after ${gap} ms, wanted >= ${delays[i - 1]}`);
    }
    assert.deepEqual(sockets[0].protocols, [], "cookie transport offers no credential protocol");
    c.close();
  });
}

test("a connection that stays up resets the backoff", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "cookie",
    WebSocket: FakeWebSocket,
    backoff: { ...FAST, stableAfterMs: 100 },
  });
  const delays = [];
  c.on("close", (e) => delays.push(e.delayMs));
  void c.connect().catch(() => {});
  (await nth(0)).drop(1006);
  (await nth(1)).drop(1006);
  (await nth(2)).accept("");
  await sleep(150);
  sockets[2].drop(1006);
  await nth(3);
  assert.deepEqual(delays, [50, 100, 50]);
  c.close();
});

test("maxAttempts: gives up and says so", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "cookie",
    WebSocket: FakeWebSocket,
    backoff: { ...FAST, maxAttempts: 2 },
  });
  const closes = [];
  c.on("close", (e) => closes.push(e));
  const p = c.connect();
  for (let i = 0; i < 3; i++) (await nth(i)).drop(1006);
  await assert.rejects(p, /stopped/);
  await sleep(150);
  assert.equal(sockets.length, 3);
  assert.deepEqual(closes.map((e) => e.willReconnect), [true, true, false]);
});

test("the app's close() stops reconnecting, also while waiting to reconnect", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  const ev = record(c);
  void c.connect().catch(() => {});
  (await nth(0)).accept("");
  c.close();
  await until(() => ev.some((x) => x.t === "close"), "close event");
  assert.equal(sockets[0].closedWith.code, 1000);
  assert.equal(ev.find((x) => x.t === "close").e.willReconnect, false);
  // Waiting case.
  const d = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  void d.connect().catch(() => {});
  (await nth(1)).drop(1006);
  const dCloses = [];
  d.on("close", (e) => dCloses.push(e));
  d.close();
  await sleep(200);
  assert.equal(sockets.length, 2, "the scheduled reconnect was cancelled");
  assert.deepEqual(dCloses, [{ code: 1000, reason: "", wasOpen: false, willReconnect: false }]);
  d.close();
  assert.equal(dCloses.length, 1, "a second close() is a no-op");
});

test("auth_expiring: refreshes in-band with getToken, at most once a second", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const asked = [];
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "subprotocol",
    getToken: (ctx) => {
      asked.push(ctx.reason);
      return fakeJwt({ sub: "alice", n: asked.length });
    },
    WebSocket: FakeWebSocket,
  });
  const ev = record(c);
  const p = c.connect();
  const s = await nth(0);
  s.accept("jwt");
  await p;
  s.deliver({ type: "auth_expiring", exp: 100 });
  await until(() => s.sent.length === 1, "the auth message");
  const auth = JSON.parse(s.sent[0]);
  assert.equal(auth.type, "auth");
  assert.equal(decodeClaims(auth.token).n, 2);
  assert.deepEqual(asked, ["connect", "refresh"]);
  s.deliver({ type: "auth_ok", sub: "alice", exp: 200 });
  assert.equal(c.exp, 200);
  // A gateway asking again right away is not answered in a tight loop.
  const t0 = Date.now();
  s.deliver({ type: "auth_expiring", exp: 200 });
  s.deliver({ type: "auth_expiring", exp: 200 });
  await until(() => s.sent.length === 2, "the second auth message");
  assert.ok(Date.now() - t0 >= 900, "second refresh waited ~1 s");
  await sleep(100);
  assert.equal(s.sent.length, 2, "two warnings in a row gave one refresh");
  s.deliver({ type: "auth_fail", reason: "bad_signature" });
  const states = ev.filter((x) => x.t === "auth").map((x) => x.e.state);
  assert.deepEqual(states, ["connecting", "authenticated", "expiring", "refreshed", "expiring", "expiring", "refresh_failed"]);
  assert.equal(ev.filter((x) => x.t === "auth").at(-1).e.reason, "bad_signature");
  assert.equal(ev.filter((x) => x.t === "message").length, 0, "control frames are not app messages");
  c.close();
});

test("auth_expiring without getToken, or with refresh: false, sends nothing", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  for (const [i, extra] of [{}, { refresh: false, getToken: () => "x.y.z" }].entries()) {
    const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, ...extra });
    const p = c.connect();
    const s = await nth(i);
    s.accept("");
    await p;
    s.deliver({ type: "auth_expiring", exp: 5 });
    await sleep(50);
    assert.deepEqual(s.sent, []);
    assert.equal(c.exp, 5);
    c.close();
  }
});

test("publish: acks and errors are matched to their request by id", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket });
  const errors = [];
  c.on("error", (e) => errors.push(e.reason));
  const p = c.connect();
  const s = await nth(0);
  s.accept("");
  await p;
  const a = c.publish("chat:a", { text: "one" });
  const b = c.publish("chat:b", "two");
  const [fa, fb] = s.frames();
  assert.deepEqual([fa.type, fa.channel, fa.data], ["publish", "chat:a", { text: "one" }]);
  assert.deepEqual([fb.type, fb.channel, fb.data], ["publish", "chat:b", "two"]);
  assert.notEqual(fa.id, fb.id);
  // Answered out of order; an answer to an unknown id is ignored.
  s.deliver({ type: "ack", id: 987654 });
  s.deliver({ type: "ack", id: fb.id });
  s.deliver({ type: "error", id: fa.id, reason: "forbidden" });
  await b;
  await assert.rejects(a, (e) => e instanceof WsgateError && e.reason === "forbidden");
  // An error with no id (e.g. a binary frame) is reported as an event.
  s.deliver({ type: "error", id: null, reason: "bad_request" });
  assert.deepEqual(errors, ["bad_request"]);
  c.close();
});

test("requests: timeout, bounded pending, rejected on disconnect and when not connected", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "cookie",
    WebSocket: FakeWebSocket,
    requestTimeoutMs: 100,
    maxPending: 2,
    backoff: FAST,
  });
  await assert.rejects(c.publish("x", 1), (e) => e.reason === "not_connected");
  const p = c.connect();
  const s = await nth(0);
  s.accept("");
  await p;
  const t = c.publish("x", 1);
  await assert.rejects(t, (e) => e.reason === "timeout");
  const p1 = c.publish("x", 1);
  const p2 = c.publish("x", 2);
  await assert.rejects(c.publish("x", 3), (e) => e.reason === "too_many_pending");
  s.drop(1006);
  await assert.rejects(p1, (e) => e.reason === "disconnected");
  await assert.rejects(p2, (e) => e.reason === "disconnected");
  c.close();
});

test("subscribe: handlers get their channel's messages and are re-subscribed after every reconnect", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  const got = { a: [], b: [] };
  // Subscribed before the socket opens: sent at open.
  const subA = c.subscribe("room:a", (m) => got.a.push(m.data));
  void c.connect().catch(() => {});
  const s0 = await nth(0);
  s0.accept("");
  const f0 = s0.frames();
  assert.deepEqual(f0.map((f) => [f.type, f.channel]), [["subscribe", "room:a"]]);
  s0.deliver({ type: "ack", id: f0[0].id });
  await subA;
  const subB = c.subscribe("room:b", (m) => got.b.push(m.data));
  const fb = s0.frames()[1];
  s0.deliver({ type: "ack", id: fb.id });
  await subB;
  s0.deliver({ type: "message", channel: "room:a", data: 1, from: "bob" });
  s0.deliver({ type: "message", channel: "room:b", data: 2, from: null });
  s0.deliver({ type: "message", channel: "room:zzz", data: 3, from: null });
  assert.deepEqual(got, { a: [1], b: [2] });

  for (let round = 1; round <= 2; round++) {
    const prev = await nth(round - 1);
    prev.drop(round === 1 ? 1006 : 4401);
    const s = await nth(round);
    s.accept("");
    const frames = s.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.channel]).sort(),
      [["subscribe", "room:a"], ["subscribe", "room:b"]],
      `round ${round}: both channels re-subscribed`,
    );
    for (const f of frames) s.deliver({ type: "ack", id: f.id });
    s.deliver({ type: "message", channel: "room:a", data: 10 + round });
  }
  assert.deepEqual(got.a, [1, 11, 12]);

  // Unsubscribed channels are not re-subscribed.
  const s2 = await nth(2);
  const un = c.unsubscribe("room:b");
  const fu = s2.frames().at(-1);
  assert.deepEqual([fu.type, fu.channel], ["unsubscribe", "room:b"]);
  s2.deliver({ type: "ack", id: fu.id });
  await un;
  s2.drop(1006);
  const s3 = await nth(3);
  s3.accept("");
  assert.deepEqual(s3.frames().map((f) => f.channel), ["room:a"]);
  assert.deepEqual(c.channels, ["room:a"]);
  c.close();
});

test("subscribe: a forbidden channel rejects and is not retried", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  const p = c.connect();
  const s0 = await nth(0);
  s0.accept("");
  await p;
  const sub = c.subscribe("admin:secret", () => {});
  s0.deliver({ type: "error", id: s0.frames()[0].id, reason: "forbidden" });
  await assert.rejects(sub, (e) => e.reason === "forbidden");
  assert.deepEqual(c.channels, []);
  s0.drop(1006);
  const s1 = await nth(1);
  s1.accept("");
  assert.deepEqual(s1.sent, []);
  c.close();
});

test("ticket: POSTs /v1/tickets with the cookie and X-CSRF-Token, a fresh ticket per connection", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const calls = [];
  let n = 0;
  const fetch = async (url, init) => {
    calls.push({ url, init });
    n++;
    if (n === 2) return { ok: false, status: 503, json: async () => ({ error: "store_unavailable" }) };
    return { ok: true, status: 201, json: async () => ({ ticket: fakeJwt({ n, session_exp: 4242 }), expires_in: 30 }) };
  };
  const c = new WsgateClient({
    url: "ws://gw:81/ws",
    transport: "ticket",
    csrf: () => "csrf-value",
    fetch,
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  const ev = record(c);
  const p = c.connect();
  const s0 = await nth(0);
  assert.equal(calls[0].url, "http://gw:81/v1/tickets");
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.credentials, "include");
  assert.deepEqual(calls[0].init.headers, { "X-CSRF-Token": "csrf-value" });
  const u0 = new URL(s0.url);
  assert.equal(decodeClaims(u0.searchParams.get("ticket")).n, 1);
  assert.deepEqual(s0.protocols, []);
  s0.accept("");
  await p;
  assert.equal(c.exp, 4242, "the session's expiry comes from the ticket's session_exp");
  s0.drop(1006);
  // The second ticket request fails (503): reported, then retried with backoff.
  const s1 = await nth(1);
  assert.equal(calls.length, 3);
  assert.equal(ev.find((x) => x.t === "error").e.reason, "store_unavailable");
  assert.equal(decodeClaims(new URL(s1.url).searchParams.get("ticket")).n, 3, "never a reused ticket");
  for (const x of ev) assert.ok(!JSON.stringify(x.e ?? "").includes(u0.searchParams.get("ticket")), "no ticket in events");
  c.close();
});

test("ticket: with getToken and no csrf, the ticket request uses Bearer; getTicket wins over both", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(init.headers);
    return { ok: true, status: 201, json: async () => ({ ticket: "t.k.n" }) };
  };
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "ticket",
    getToken: () => "session.jwt.x",
    fetch,
    WebSocket: FakeWebSocket,
  });
  void c.connect().catch(() => {});
  await nth(0);
  assert.deepEqual(calls, [{ Authorization: "Bearer session.jwt.x" }]);
  c.close();
  const d = new WsgateClient({
    url: "ws://gw/ws?x=1",
    transport: "ticket",
    getTicket: async () => ({ ticket: "from.app.ticket" }),
    ticketParam: "tk",
    fetch,
    WebSocket: FakeWebSocket,
  });
  void d.connect().catch(() => {});
  const s = await nth(1);
  assert.equal(s.url, "ws://gw/ws?x=1&tk=from.app.ticket");
  assert.equal(calls.length, 1, "getTicket replaces the default request");
  d.close();
});

test("cookie: 4401 renews the session through refreshSession before reconnecting", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const renewed = [];
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "cookie",
    refreshSession: (ctx) => {
      renewed.push(ctx.reason);
    },
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  void c.connect().catch(() => {});
  (await nth(0)).accept("");
  (await nth(0)).drop(1006);
  (await nth(1)).accept("");
  assert.deepEqual(renewed, [], "a plain drop does not renew the session");
  (await nth(1)).drop(4401, "token expired");
  await nth(2);
  assert.deepEqual(renewed, ["expired"]);
  c.close();
});

test("a throwing listener does not break the client", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket });
  const saved = console.error;
  const logged = [];
  console.error = (e) => logged.push(e);
  const saved2 = globalThis.reportError;
  globalThis.reportError = undefined;
  try {
    c.on("open", () => {
      throw new Error("app bug");
    });
    const p = c.connect();
    (await nth(0)).accept("");
    await p;
    assert.equal(c.state, "open");
    assert.equal(logged.length, 1);
  } finally {
    console.error = saved;
    globalThis.reportError = saved2;
    c.close();
  }
});

test("constructor checks its options", () => {
  const { FakeWebSocket } = fakeSockets();
  assert.throws(() => new WsgateClient({ url: "ws://gw/ws", transport: "subprotocol", WebSocket: FakeWebSocket }), /getToken or token/);
  assert.throws(() => new WsgateClient({ url: "ws://gw/ws", transport: "query", WebSocket: FakeWebSocket }), /unknown transport/);
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    assert.throws(() => new WsgateClient({ url: "ws://gw/ws", transport: "cookie" }), /no WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("ticket: a 401 from the ticket endpoint renews the session before the next try", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  let n = 0;
  const renewed = [];
  const fetch = async () => {
    n++;
    if (n === 1) return { ok: false, status: 401, json: async () => ({ error: "expired" }) };
    return { ok: true, status: 201, json: async () => ({ ticket: "t.k.n" }) };
  };
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "ticket",
    csrf: "c",
    refreshSession: (ctx) => renewed.push(ctx.reason),
    fetch,
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  const errors = [];
  c.on("error", (e) => errors.push([e.reason, e.status]));
  void c.connect().catch(() => {});
  await nth(0);
  assert.deepEqual(errors, [["expired", 401]]);
  assert.deepEqual(renewed, ["expired"]);
  c.close();
});

test("refused upgrades: a fresh credential per try, backoff, one handshake_refused, connect() rejects", async () => {
  const { FakeWebSocket, nth, sockets } = fakeSockets();
  const asked = [];
  let n = 0;
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "subprotocol",
    getToken: (ctx) => {
      asked.push(ctx.reason);
      return fakeJwt({ sub: "alice", n: ++n });
    },
    WebSocket: FakeWebSocket,
    backoff: { ...FAST, maxDelayMs: 200, refusalsBeforeError: 3 },
  });
  const ev = record(c);
  let settled = null;
  const p = c.connect().then(
    () => (settled = "resolved"),
    (e) => (settled = e),
  );
  // A browser sees a 401/403 upgrade only as 1006 without open.
  for (let i = 0; i < 3; i++) (await nth(i)).drop(1006);
  await p;
  assert.ok(settled instanceof WsgateError, "connect() rejected");
  assert.equal(settled.reason, "handshake_refused");
  assert.equal(settled.status, undefined, "a browser gives no status");
  const errors = ev.filter((x) => x.t === "error").map((x) => x.e);
  assert.equal(errors.length, 1);
  assert.equal(errors[0], settled, "the event carries the error connect() rejected with");
  assert.deepEqual(asked, ["connect", "refused", "refused"], "a fresh credential before every retry");
  assert.deepEqual(
    new Set(sockets.map((s) => s.protocols[1])).size,
    3,
    "never the same token twice",
  );
  const delays = ev.filter((x) => x.t === "close").map((x) => x.e.delayMs);
  assert.deepEqual(delays, [50, 100, 200], "backed off");
  // The client keeps trying; the error is not repeated, a new connect() settles at the next try.
  assert.equal(c.state, "waiting");
  const again = c.connect();
  (await nth(3)).drop(1006);
  await assert.rejects(again, (e) => e.reason === "handshake_refused");
  assert.equal(ev.filter((x) => x.t === "error").length, 1, "reported once per run of refusals");
  // An open ends the run: the next refusals are counted afresh.
  const third = c.connect();
  (await nth(4)).accept("jwt");
  await third;
  sockets[4].drop(1006);
  for (let i = 5; i < 7; i++) (await nth(i)).drop(1006);
  await nth(7);
  assert.equal(ev.filter((x) => x.t === "error").length, 1, "two refusals after an open are under the limit");
  (await nth(7)).drop(1006);
  await until(() => ev.filter((x) => x.t === "error").length === 2, "second report");
  assert.deepEqual(asked.slice(4), ["refused", "reconnect", "refused", "refused"]);
  c.close();
});

test("refused upgrades: the default limit is 5, and ws's status is kept", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const p = c.connect();
  for (let i = 0; i < 4; i++) (await nth(i)).refuse(403);
  await nth(4);
  assert.deepEqual(errors, [], "four refusals are not yet reported");
  (await nth(4)).refuse(401);
  await assert.rejects(p, (e) => e.reason === "handshake_refused" && e.status === 401);
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /5 attempts .*1006.*401/);
  c.close();
});

test("refused upgrades: cookie and ticket renew the session before the next try", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const renewed = [];
  let tickets = 0;
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "ticket",
    getTicket: () => `t.${++tickets}.x`,
    refreshSession: (ctx) => {
      renewed.push(ctx.reason);
    },
    WebSocket: FakeWebSocket,
    backoff: FAST,
  });
  void c.connect().catch(() => {});
  (await nth(0)).drop(1006);
  const s1 = await nth(1);
  assert.deepEqual(renewed, ["refused"]);
  assert.equal(new URL(s1.url).searchParams.get("ticket"), "t.2.x", "a new ticket");
  c.close();
});

test("ticket request failures count as attempts that never opened", async () => {
  const { FakeWebSocket } = fakeSockets();
  const fetch = async () => ({ ok: false, status: 503, json: async () => ({ error: "store_unavailable" }) });
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "ticket",
    csrf: "c",
    fetch,
    WebSocket: FakeWebSocket,
    backoff: { ...FAST, refusalsBeforeError: 2 },
  });
  const errors = [];
  c.on("error", (e) => errors.push([e.reason, e.status]));
  await assert.rejects(c.connect(), (e) => e.reason === "handshake_refused" && e.status === 503);
  assert.deepEqual(errors, [
    ["store_unavailable", 503],
    ["store_unavailable", 503],
    ["handshake_refused", 503],
  ]);
  c.close();
});

test("subscribe: a refusal is reported once: to the caller, or as an error when nobody waits", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({ url: "ws://gw/ws", transport: "cookie", WebSocket: FakeWebSocket, backoff: FAST });
  const errors = [];
  c.on("error", (e) => errors.push(e.reason));
  const p = c.connect();
  const s0 = await nth(0);
  s0.accept("");
  await p;
  const sub = c.subscribe("admin:secret", () => {});
  s0.deliver({ type: "error", id: s0.frames()[0].id, reason: "forbidden" });
  await assert.rejects(sub, (e) => e.reason === "forbidden");
  await sleep(10);
  assert.deepEqual(errors, [], "the rejected promise is the only report");
  // Granted at first, refused on the re-subscribe after a reconnect: nobody waits, so an event.
  const ok = c.subscribe("room:a", () => {});
  s0.deliver({ type: "ack", id: s0.frames()[1].id });
  await ok;
  s0.drop(1006);
  const s1 = await nth(1);
  s1.accept("");
  s1.deliver({ type: "error", id: s1.frames()[0].id, reason: "forbidden" });
  await until(() => errors.length > 0, "error event");
  await sleep(10);
  assert.deepEqual(errors, ["forbidden"]);
  assert.deepEqual(c.channels, []);
  c.close();
});

test("refused upgrades: only ws's \"Unexpected server response\" gives a status", async () => {
  const { FakeWebSocket, nth } = fakeSockets();
  const c = new WsgateClient({
    url: "ws://gw/ws",
    transport: "cookie",
    WebSocket: FakeWebSocket,
    backoff: { ...FAST, refusalsBeforeError: 1 },
  });
  const p = c.connect();
  const s = await nth(0);
  // A network error naming an address: no status in it.
  s.onerror?.({ message: "connect ECONNREFUSED 127.0.0.1:9" });
  s.drop(1006);
  await assert.rejects(p, (e) => e.reason === "handshake_refused" && e.status === undefined);
  c.close();
});
