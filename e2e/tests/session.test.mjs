// A socket's life after 101, in Chromium: a token that expires in seconds
// (4401 then a reconnect with a fresh credential; in-band refresh keeping
// another socket alive), and revocation from the admin API (4403, no
// reconnect).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startGateway, launchBrowser, sleep } from "../lib/harness.mjs";
import { pageClient, recorded, waitForClient } from "../lib/page-client.mjs";

let gw, browser;
before(async () => {
  // Short clocks so expiry happens within the test: the deadline is exp + 1 s,
  // auth_expiring comes 2 s before it.
  gw = await startGateway({ WSGATE_AUTH__LEEWAY: "1s", WSGATE_AUTH__EXPIRY_WARNING: "2s" });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

async function freshPage() {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(gw.origin + "/");
  return { ctx, page };
}

test("a 4-second token: 4401, then a reconnect with a fresh token; in-band refresh keeps another socket alive", async () => {
  const { ctx, page } = await freshPage();
  try {
    const TTL = 4;
    // A: no in-band refresh, so its session ends at the deadline.
    await pageClient(page, "a", { sub: "ann", ttl: TTL, transport: "subprotocol", refresh: false });
    // B: refreshes in-band on auth_expiring.
    await pageClient(page, "b", { sub: "ben", ttl: TTL, transport: "subprotocol", refresh: true });
    const t0 = Date.now();
    const firstExpB = (await recorded(page, "b")).session.exp;

    await waitForClient(page, "a", (r) => r.opens.length >= 2, 15_000);
    const a = await recorded(page, "a");
    assert.equal(a.closes[0].code, 4401, "the page saw 4401");
    assert.equal(a.closes[0].reason, "token expired");
    assert.equal(a.closes[0].willReconnect, true);
    assert.ok(a.closes[0].at >= (TTL - 1) * 1000, `closed after ${a.closes[0].at} ms, not before the token's expiry`);
    assert.ok(a.auth.some((e) => e.state === "expired"));
    assert.deepEqual(a.tokenReasons, ["connect", "expired"], "a fresh credential was fetched for the reconnect");
    assert.equal(a.opens[1].reconnected, true);
    assert.ok(a.opens[1].at - a.closes[0].at >= 250, "reconnected after a backoff delay, not at once");
    assert.ok(a.exp > a.session.exp - 1 && a.exp === a.session.exp, "the new session's expiry");
    // On the gateway: a 4401 close, then a second accepted handshake for ann.
    await gw.waitForLog((l) => l.event === "close" && l.sub === "ann" && l.code === 4401);
    assert.equal(gw.events("handshake", { result: "accepted", sub: "ann" }).length, 2);

    // B outlives its first token by a margin, on the same socket.
    const wait = (firstExpB + 1 + 4) * 1000 - Date.now();
    if (wait > 0) await sleep(wait);
    const b = await recorded(page, "b");
    assert.equal(b.opens.length, 1, "one socket, never reconnected");
    assert.equal(b.closes.length, 0, `no close: ${JSON.stringify(b.closes)}`);
    assert.equal(b.state, "open");
    const refreshed = b.auth.filter((e) => e.state === "refreshed");
    assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times in ${Date.now() - t0} ms`);
    assert.ok(b.exp > firstExpB, "the deadline moved");
    assert.ok(b.tokenReasons.slice(1).every((r) => r === "refresh"));
    // And it still works: a hub round trip past the first token's deadline.
    const ok = await page.evaluate(() => window.clients.b.client.subscribe("chat:after", () => {}).then(() => "ack"));
    assert.equal(ok, "ack");
    assert.ok(Date.now() / 1000 > firstExpB + 1, "checked after the first token's deadline");
    assert.equal(gw.events("close", { sub: "ben" }).length, 0);
    assert.equal(gw.events("handshake", { result: "accepted", sub: "ben" }).length, 1);
  } finally {
    await ctx.close();
  }
});

test("revocation from the admin API ends the page's sockets (subprotocol, ticket, cookie) with 4403; the client does not reconnect", async () => {
  const { ctx, page } = await freshPage();
  try {
    await pageClient(page, "r1", { sub: "rita", transport: "subprotocol", backoff: { initialDelayMs: 100 } });
    await pageClient(page, "r2", { sub: "rita", transport: "ticket", backoff: { initialDelayMs: 100 } });
    await pageClient(page, "r3", { sub: "rita", transport: "cookie", backoff: { initialDelayMs: 100 } });
    const r = await gw.admin("/admin/v1/revoke", { sub: "rita" });
    assert.deepEqual(r, { status: 200, body: { closed: 3 } });
    for (const name of ["r1", "r2", "r3"]) {
      await waitForClient(page, name, (r) => r.closes.length >= 1, 5_000);
    }
    // Longer than several backoff steps: any reconnect would have happened.
    await sleep(2500);
    for (const name of ["r1", "r2", "r3"]) {
      const rec = await recorded(page, name);
      assert.deepEqual(
        rec.closes.map((c) => [c.code, c.reason, c.willReconnect]),
        [[4403, "session revoked", false]],
        name,
      );
      assert.equal(rec.auth.at(-1).state, "revoked");
      assert.equal(rec.opens.length, 1, `${name}: no reconnect`);
      assert.equal(rec.state, "stopped");
      assert.equal(rec.tokenReasons.length, name === "r1" ? 1 : 0, `${name}: no new credential asked for`);
    }
    assert.deepEqual(
      gw.events("handshake", { sub: "rita" }).map((l) => [l.result, l.transport]),
      [["accepted", "subprotocol"], ["accepted", "ticket"], ["accepted", "cookie"]],
      "no handshake after the revocation",
    );
    assert.equal(gw.events("close", { sub: "rita", code: 4403 }).length, 3);
    // The revoked session's token is refused from now on.
    const again = await page.evaluate(
      ([url, token]) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ["jwt", token]);
          ws.onopen = () => resolve("open");
          ws.onclose = (e) => resolve("closed " + e.code);
        }),
      [gw.wsUrl, (await recorded(page, "r1")).session.token],
    );
    assert.equal(again, "closed 1006");
    await gw.waitForLog((l) => l.event === "handshake" && l.reason === "revoked" && l.sub === "rita");
  } finally {
    await ctx.close();
  }
});
