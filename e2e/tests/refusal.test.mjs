// A gateway that refuses the upgrade (401/403 before 101), seen from
// Chromium: the page only gets 1006 without open. The client must ask for a
// fresh credential before every retry, back off, report `handshake_refused`
// once, and reject connect(). The client under test is the worktree's
// clients/js/dist, served by an app origin (not the copy the binary embeds).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startGateway, launchBrowser, startOtherOrigin, repo } from "../lib/harness.mjs";

const dist = readFileSync(join(repo, "clients/js/dist/wsgate.js"), "utf8");
const PAGE = "<!doctype html><title>app</title><h1>app</h1>";
const LIMIT = 3;
let gw, browser, app, stranger;
before(async () => {
  app = await startOtherOrigin(PAGE, { "/wsgate.js": dist });
  stranger = await startOtherOrigin(PAGE, { "/wsgate.js": dist });
  gw = await startGateway({ WSGATE_ORIGINS__ALLOW: JSON.stringify([app.origin]) });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gw?.stop();
  await app?.close();
  await stranger?.close();
});

/** A fresh dev-mode session token, minted by the test (no Origin: not a browser). */
async function devToken(sub) {
  const r = await fetch(gw.origin + "/dev/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sub, roles: ["user"] }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

/**
 * In a page on `origin`: a subprotocol client whose getToken hands out
 * `tokens` in turn (a fresh one per call). Waits for connect() to settle,
 * then for `extra` more refused attempts, and reports what the client said.
 */
async function refusedClient(origin, tokens, extra = 2) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(origin + "/");
  try {
    return await page.evaluate(
      async ([url, tokens, limit, extra]) => {
        const { WsgateClient } = await import("/wsgate.js");
        const rec = { reasons: [], offered: [], errors: [], closes: [], opens: 0 };
        const c = new WsgateClient({
          url,
          transport: "subprotocol",
          getToken: ({ reason }) => {
            rec.reasons.push(reason);
            const t = tokens[Math.min(rec.reasons.length - 1, tokens.length - 1)];
            rec.offered.push(tokens.indexOf(t));
            return t;
          },
          backoff: { initialDelayMs: 100, maxDelayMs: 400, jitter: 0.5, refusalsBeforeError: limit },
        });
        c.on("open", () => rec.opens++);
        c.on("error", (e) => rec.errors.push({ reason: e.reason, status: e.status ?? null, message: e.message }));
        c.on("close", (e) => rec.closes.push(e));
        const t0 = performance.now();
        // Bounded: a client that never settles fails the test instead of hanging it.
        rec.connect = await Promise.race([
          c.connect().then(
            () => "resolved",
            (e) => ({ reason: e.reason, status: e.status ?? null, sameAsEvent: rec.errors.length === 1 }),
          ),
          new Promise((r) => setTimeout(() => r("still pending after 15 s"), 15_000)),
        ]);
        rec.settledAfterMs = Math.round(performance.now() - t0);
        // The client keeps trying: the error is not repeated.
        const want = rec.closes.length + extra;
        while (rec.closes.length < want) await new Promise((r) => setTimeout(r, 20));
        rec.stateBeforeClose = c.state;
        rec.closesBefore = rec.closes.length;
        c.close();
        rec.state = c.state;
        return rec;
      },
      [gw.wsUrl, tokens, LIMIT, extra],
    );
  } finally {
    await ctx.close();
  }
}

function assertRefusedOnce(rec, attempts) {
  assert.deepEqual(rec.connect, { reason: "handshake_refused", status: null, sameAsEvent: true }, "connect() rejected");
  assert.equal(rec.opens, 0);
  assert.equal(rec.errors.length, 1, `one error, got ${JSON.stringify(rec.errors)}`);
  assert.equal(rec.errors[0].reason, "handshake_refused");
  assert.match(rec.errors[0].message, new RegExp(`^${LIMIT} attempts in a row ended before the socket opened`));
  assert.equal(rec.closesBefore, attempts);
  const last = rec.closes.pop();
  assert.deepEqual(last, { code: 1000, reason: "", wasOpen: false, willReconnect: false }, "close() while waiting");
  assert.equal(rec.closes.length, attempts);
  for (const [i, c] of rec.closes.entries()) {
    assert.equal(c.code, 1006, "a browser sees a refused upgrade as 1006");
    assert.equal(c.wasOpen, false);
    assert.equal(c.willReconnect, true);
    const d = Math.min(400, 100 * 2 ** i);
    assert.ok(c.delayMs >= d / 2 && c.delayMs <= d, `attempt ${i}: delay ${c.delayMs} outside [${d / 2}, ${d}]`);
  }
  assert.deepEqual(rec.reasons, ["connect", ...Array(attempts - 1).fill("refused")], "a fresh credential before every retry");
  assert.equal(rec.stateBeforeClose, "waiting", "still retrying after the report");
  assert.equal(rec.state, "stopped");
}

test("401 before 101 (a token that does not verify): one handshake_refused, connect() rejects", async () => {
  const good = await Promise.all(Array.from({ length: LIMIT + 2 }, (_, i) => devToken(`rita${i}`)));
  // Each token gets a broken signature: the gateway refuses 401 bad_signature.
  const tokens = good.map((t) => t.slice(0, -4) + (t.endsWith("AAAA") ? "BBBB" : "AAAA"));
  const rec = await refusedClient(app.origin, tokens);
  assertRefusedOnce(rec, LIMIT + 2);
  assert.deepEqual(rec.offered, [0, 1, 2, 3, 4], "every attempt offered a new token");
  const refused = gw.events("handshake", { result: "rejected", origin: app.origin });
  assert.equal(refused.length, LIMIT + 2, "every attempt reached the gateway and was refused there");
  for (const l of refused) assert.deepEqual([l.status, l.reason, l.transport], [401, "bad_signature", "subprotocol"]);
  assert.equal(gw.events("handshake", { result: "accepted", origin: app.origin }).length, 0);
});

test("403 before 101 (an origin not allowed): one handshake_refused, connect() rejects", async () => {
  const tokens = [await devToken("sid"), await devToken("sid")];
  const rec = await refusedClient(stranger.origin, tokens, 1);
  assertRefusedOnce(rec, LIMIT + 1);
  const refused = gw.events("handshake", { result: "rejected", origin: stranger.origin });
  assert.equal(refused.length, LIMIT + 1);
  for (const l of refused) assert.deepEqual([l.status, l.reason], [403, "origin_not_allowed"]);
});

test("a refused subscribe is reported once: its promise rejects, no error event", async () => {
  const token = await devToken("sue");
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(app.origin + "/");
  try {
    const out = await page.evaluate(
      async ([url, token]) => {
        const { WsgateClient } = await import("/wsgate.js");
        const c = new WsgateClient({ url, transport: "subprotocol", token });
        const errors = [];
        c.on("error", (e) => errors.push(e.reason));
        await c.connect();
        // Dev grants allow every channel; an empty name is refused bad_request.
        const sub = await c.subscribe("", () => {}).then(
          () => "ack",
          (e) => e.reason,
        );
        // The hub answers in order: once this acks, a stray error would have arrived.
        await c.subscribe("chat:after", () => {});
        const r = { sub, errors, channels: c.channels };
        c.close();
        return r;
      },
      [gw.wsUrl, token],
    );
    assert.deepEqual(out, { sub: "bad_request", errors: [], channels: ["chat:after"] });
  } finally {
    await ctx.close();
  }
});
