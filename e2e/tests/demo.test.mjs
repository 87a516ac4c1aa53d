// The demo page a new user sees at `/` in dev mode, driven like a person
// would: two tabs sign in as two users, join a channel and chat through the
// hub; one watches its session count down; one is revoked. Screenshots go
// to e2e/artifacts/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startGateway, launchBrowser, artifactPath } from "../lib/harness.mjs";

let gw, browser;
before(async () => {
  gw = await startGateway();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

// Only the tab in front gets animation frames at full rate (Playwright's
// click waits for them): act on a tab the way a person would, in front.
async function signInAndJoin(page, sub, transport) {
  await page.bringToFront();
  await page.goto(gw.origin + "/");
  await page.fill("#sub", sub);
  await page.fill("#roles", "user, chat");
  await page.click("#login");
  await page.waitForFunction((sub) => document.querySelector("#who").textContent.startsWith(sub + " "), sub);
  assert.equal(await page.textContent("#who"), `${sub} roles: user, chat`);
  await page.check(`input[name=transport][value=${transport}]`);
  await page.click("#connect");
  await page.waitForFunction(() => document.querySelector("#state").textContent === "connected");
  await page.fill("#channel", "chat:lobby");
  await page.click("#join");
  await page.waitForFunction(() => document.querySelector("#events").textContent.includes("subscribed to chat:lobby"));
}

async function say(page, text) {
  await page.bringToFront();
  await page.fill("#text", text);
  await page.click("#send");
}

function waitForMessage(page, text) {
  return page.waitForFunction(
    (text) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === text),
    text,
    { timeout: 10_000 },
  );
}

test("demo page: two tabs chat through the hub, the session counts down, a revoked session ends", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  try {
    const alice = await ctx.newPage();
    const bob = await ctx.newPage();
    for (const p of [alice, bob]) p.on("pageerror", (e) => errors.push(e.message));
    // Alice by subprotocol; Bob by ticket (cookie + CSRF; he signs in last, so the cookie is his).
    await signInAndJoin(alice, "alice", "subprotocol");
    await signInAndJoin(bob, "bob", "ticket");

    await say(alice, "hello from alice");
    await waitForMessage(bob, "hello from alice");
    await say(bob, "hi alice, bob here");
    await waitForMessage(alice, "hi alice, bob here");
    await waitForMessage(bob, "hi alice, bob here");

    // Who said what, as each tab shows it.
    const seen = await bob.$$eval("#messages .msg:not(.system)", (els) =>
      els.map((e) => ({ mine: e.classList.contains("mine"), meta: e.querySelector(".meta").textContent, text: e.querySelector(".text").textContent })),
    );
    assert.deepEqual(
      seen.map((m) => [m.mine, m.meta.split(" · ").slice(0, 2).join(" · "), m.text]),
      [
        [false, "alice · chat:lobby", "hello from alice"],
        [true, "bob · chat:lobby", "hi alice, bob here"],
      ],
    );
    // The session's deadline counts down (default 45 s sessions).
    const c1 = await alice.textContent("#countdown");
    assert.match(c1, /^00:[0-4]\d$/);
    await alice.waitForFunction((c1) => document.querySelector("#countdown").textContent !== c1, c1, { timeout: 3000 });
    assert.equal(await alice.textContent("#auth"), "authenticated");
    assert.match(await alice.textContent("#events"), /open via subprotocol \(protocol "jwt"\)/);
    assert.match(await bob.textContent("#events"), /open via ticket/);
    await alice.bringToFront();
    await alice.screenshot({ path: artifactPath("demo-alice.png"), fullPage: true });
    await bob.bringToFront();
    await bob.screenshot({ path: artifactPath("demo-bob.png"), fullPage: true });

    // Bob revokes himself from his tab: his socket ends 4403, no reconnect.
    await bob.bringToFront();
    await bob.click("#revoke");
    await bob.waitForFunction(() => document.querySelector("#state").textContent === "revoked");
    assert.equal(await bob.isVisible("#revoked"), true, "the revoked banner shows");
    assert.equal(await bob.textContent("#auth"), "revoked");
    await gw.waitForLog((l) => l.event === "close" && l.sub === "bob" && l.code === 4403);
    await bob.screenshot({ path: artifactPath("demo-revoked.png"), fullPage: true });
    // Alice is untouched and still talks.
    await say(alice, "still here");
    await waitForMessage(alice, "still here");
    assert.equal(await alice.textContent("#state"), "connected");
    assert.deepEqual(errors, [], "no script errors on the page");
    assert.equal(gw.events("handshake", { result: "accepted", sub: "bob" }).length, 1, "bob did not reconnect");
  } finally {
    await ctx.close();
  }
});
