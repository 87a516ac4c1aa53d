// The browser transports against the real gateway, in Chromium:
// subprotocol (echoed sentinel), ticket (cookie + CSRF, single use), and a
// cross-site WebSocket hijacking attempt with the victim's cookie.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startGateway, launchBrowser, startOtherOrigin, devLogin, repo } from "../lib/harness.mjs";
import { pageClient, recorded } from "../lib/page-client.mjs";

const dist = readFileSync(join(repo, "clients/js/dist/wsgate.js"), "utf8");
let gw, browser, app;
before(async () => {
  // An application on another origin that the gateway allows (as
  // app.example would be for ws.example), bundling the client itself.
  app = await startOtherOrigin("<!doctype html><title>app</title><h1>app</h1>", { "/wsgate.js": dist });
  gw = await startGateway({ WSGATE_ORIGINS__ALLOW: JSON.stringify([app.origin]) });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gw?.stop();
  await app?.close();
});

/** A fresh browser profile (own cookie jar) on the demo page's origin. */
async function freshPage() {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(gw.origin + "/");
  return { ctx, page };
}

test("the gateway serves the committed client build", async () => {
  const r = await fetch(gw.origin + "/dev/wsgate.js");
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/javascript/);
  assert.equal(await r.text(), dist, "the binary embeds clients/js/dist/wsgate.js as committed");
});

test("subprotocol: Chromium accepts the echoed sentinel, and the hub answers", async () => {
  const { ctx, page } = await freshPage();
  try {
    // Raw browser API first: the 101 must echo exactly "jwt" or Chromium fails the socket.
    const { token } = await devLogin(page, "sam");
    const raw = await page.evaluate(
      ([url, token]) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ["jwt", token]);
          ws.onopen = () => {
            const protocol = ws.protocol;
            ws.onmessage = (e) => {
              resolve({ opened: true, protocol, reply: JSON.parse(e.data) });
              ws.close();
            };
            ws.send(JSON.stringify({ type: "subscribe", channel: "public:raw", id: 7 }));
          };
          ws.onclose = (e) => resolve({ opened: false, code: e.code });
        }),
      [gw.wsUrl, token],
    );
    assert.deepEqual(raw, { opened: true, protocol: "jwt", reply: { type: "ack", id: 7 } });

    // A token that does not verify: refused before 101, Chromium never opens.
    const bad = await page.evaluate(
      ([url, token]) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ["jwt", token.slice(0, -4) + "AAAA"]);
          ws.onopen = () => resolve({ opened: true });
          ws.onclose = (e) => resolve({ opened: false, code: e.code });
        }),
      [gw.wsUrl, token],
    );
    assert.deepEqual(bad, { opened: false, code: 1006 });
    await gw.waitForLog((l) => l.event === "handshake" && l.result === "rejected" && l.reason === "bad_signature" && l.transport === "subprotocol");

    // The client: offers ["jwt", token], checks the echo, then hub round trips.
    await pageClient(page, "sub", { sub: "sam", transport: "subprotocol" });
    const acked = await page.evaluate(async () => {
      const c = window.clients.sub.client;
      let delivered;
      const got = new Promise((r) => (delivered = r));
      await c.subscribe("chat:e2e", (m) => delivered(m));
      await c.publish("chat:e2e", { text: "hi" });
      const m = await got;
      return { channel: m.channel, data: m.data, from: m.from };
    });
    assert.deepEqual(acked, { channel: "chat:e2e", data: { text: "hi" }, from: "sam" });
    const rec = await recorded(page, "sub");
    assert.equal(rec.opens.length, 1);
    assert.equal(rec.opens[0].protocol, "jwt");
    assert.ok(rec.exp > Date.now() / 1000 + 3000, "exp read from the token");
    const accepted = gw.events("handshake", { result: "accepted", transport: "subprotocol", sub: "sam" });
    assert.equal(accepted.length, 2, "raw socket + client");
    // A publish the grants refuse is rejected with the gateway's reason (dev grants allow all: use a bad name).
    const refused = await page.evaluate(() =>
      window.clients.sub.client.publish("", 1).then(
        () => "ack",
        (e) => e.reason,
      ),
    );
    assert.equal(refused, "bad_request");
  } finally {
    await ctx.close();
  }
});

test("ticket: fetched with the cookie and X-CSRF-Token, opens the socket, and is refused on reuse", async () => {
  const { ctx, page } = await freshPage();
  try {
    // The client's default ticket flow: POST /v1/tickets (cookie + CSRF), then ?ticket=.
    await pageClient(page, "tk", { sub: "tia", transport: "ticket" });
    const rec = await recorded(page, "tk");
    assert.equal(rec.opens.length, 1);
    assert.equal(rec.errors.length, 0);
    assert.equal(rec.exp, rec.session.exp, "the session's expiry, from the ticket's session_exp");
    await gw.waitForLog((l) => l.event === "ticket_issued" && l.sub === "tia" && l.transport === "cookie");
    await gw.waitForLog((l) => l.event === "handshake" && l.result === "accepted" && l.transport === "ticket" && l.sub === "tia");

    // The same flow by hand, to spend one ticket twice.
    const out = await page.evaluate(
      async ([url, csrf]) => {
        const noCsrf = await fetch("/v1/tickets", { method: "POST", credentials: "include" });
        const r = await fetch("/v1/tickets", { method: "POST", credentials: "include", headers: { "X-CSRF-Token": csrf } });
        const body = await r.json();
        const open = (u) =>
          new Promise((resolve) => {
            const ws = new WebSocket(u);
            ws.onopen = () => resolve("open");
            ws.onclose = (e) => resolve(`closed ${e.code}`);
          });
        const u = `${url}?ticket=${encodeURIComponent(body.ticket)}`;
        const first = await open(u);
        const second = await open(u);
        return {
          noCsrf: [noCsrf.status, (await noCsrf.json()).error],
          status: r.status,
          cacheControl: r.headers.get("cache-control"),
          expires_in: body.expires_in,
          first,
          second,
        };
      },
      [gw.wsUrl, rec.session.csrf],
    );
    assert.deepEqual(out.noCsrf, [403, "csrf_failed"], "the cookie alone does not mint a ticket");
    assert.equal(out.status, 201);
    assert.equal(out.cacheControl, "no-store");
    assert.ok(out.expires_in > 0 && out.expires_in <= 30);
    assert.equal(out.first, "open");
    assert.equal(out.second, "closed 1006", "a refused upgrade never opens");
    const replay = await gw.waitForLog((l) => l.event === "handshake" && l.reason === "ticket_replayed");
    assert.equal(replay.status, 401);
    assert.equal(replay.transport, "ticket");
  } finally {
    await ctx.close();
  }
});

test("ticket from an app on another allowed origin: CORS preflight, cookie + CSRF, then the socket", async () => {
  const { ctx, page } = await freshPage();
  try {
    // The user's session cookie comes from the gateway's site; the app page got the CSRF value from its backend.
    const { csrf } = await devLogin(page, "ada");
    const appPage = await ctx.newPage();
    await appPage.goto(app.origin + "/");
    const out = await appPage.evaluate(
      async ([url, csrf]) => {
        const { WsgateClient } = await import("/wsgate.js");
        const c = new WsgateClient({ url, transport: "ticket", csrf });
        const errors = [];
        c.on("error", (e) => errors.push(e.reason));
        await c.connect();
        await c.subscribe("chat:app", () => {});
        const r = { state: c.state, errors };
        c.close();
        return r;
      },
      [gw.wsUrl, csrf],
    );
    assert.deepEqual(out, { state: "open", errors: [] });
    const issued = await gw.waitForLog((l) => l.event === "ticket_issued" && l.sub === "ada");
    assert.equal(issued.transport, "cookie");
    const hs = await gw.waitForLog((l) => l.event === "handshake" && l.sub === "ada");
    assert.deepEqual([hs.result, hs.transport, hs.origin], ["accepted", "ticket", app.origin]);
  } finally {
    await ctx.close();
  }
});

test("cross-site WebSocket hijacking: another origin's page cannot use the victim's cookie", async () => {
  const attacker = await startOtherOrigin(`<!doctype html><title>evil</title><script>
    const open = (url) => new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve("open");
      ws.onclose = (e) => resolve("closed " + e.code);
    });
    window.attack = async (gwOrigin, wsUrl) => {
      // What this page's sockets carry, seen by a recorder on this origin.
      const probe = new URL(wsUrl);
      probe.port = location.port;
      probe.pathname = "/probe";
      await open(probe.href);
      const socket = await open(wsUrl);
      let ticket;
      try {
        const r = await fetch(gwOrigin + "/v1/tickets", { method: "POST", credentials: "include" });
        ticket = "readable " + r.status;
      } catch (e) {
        ticket = "blocked";
      }
      return { socket, ticket };
    };
  </script>`);
  const { ctx, page } = await freshPage();
  try {
    // The victim signs in: the browser now holds the gateway's session cookie.
    await devLogin(page, "vic");
    const cookies = await ctx.cookies(gw.origin);
    assert.equal(cookies.find((c) => c.name === "session")?.httpOnly, true);
    // Control: from the gateway's own origin the cookie opens a socket.
    const own = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url);
          ws.onopen = () => (ws.close(), resolve("open"));
          ws.onclose = (e) => resolve("closed " + e.code);
        }),
      gw.wsUrl,
    );
    assert.equal(own, "open");
    await gw.waitForLog((l) => l.event === "handshake" && l.result === "accepted" && l.transport === "cookie" && l.sub === "vic");

    // The attack, from another port of 127.0.0.1 (same site: the cookie is attached).
    const evil = await ctx.newPage();
    await evil.goto(attacker.origin + "/");
    const result = await evil.evaluate(([o, u]) => window.attack(o, u), [gw.origin, gw.wsUrl]);
    assert.deepEqual(result, { socket: "closed 1006", ticket: "blocked" });
    const refused = await gw.waitForLog(
      (l) => l.event === "handshake" && l.result === "rejected" && l.origin === attacker.origin,
    );
    assert.equal(refused.reason, "origin_not_allowed");
    assert.equal(refused.status, 403);
    // Cookies are per host, not per port: the recorder on the attacker's
    // port saw the very cookie the browser sent the gateway.
    const probe = attacker.upgrades.find((u) => u.url === "/probe");
    assert.ok(probe, "the probe socket reached the recorder");
    assert.equal(probe.headers.origin, attacker.origin);
    const session = cookies.find((c) => c.name === "session").value;
    assert.ok((probe.headers.cookie ?? "").includes(`session=${session}`), "the browser attaches the victim's cookie to cross-origin sockets");
    assert.equal(gw.events("ticket_issued", { sub: "vic" }).length, 0, "no ticket was minted for the attacker");
    assert.equal(gw.events("handshake", { result: "accepted", origin: attacker.origin }).length, 0);
  } finally {
    await ctx.close();
    await attacker.close();
  }
});
