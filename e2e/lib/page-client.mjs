// Creates a wsgate client inside a page (the client module the gateway
// serves at /dev/wsgate.js) and records what it reports on
// window.clients[name], so tests can wait on it and read it.

/**
 * spec: { sub, roles?, ttl?, transport, refresh?, csrf? (use the login's) }
 * getToken signs in again through /dev/login (a fresh token each call).
 */
export async function pageClient(page, name, spec) {
  await page.evaluate(
    async ([name, spec]) => {
      const { WsgateClient } = await import("/dev/wsgate.js");
      window.clients ??= {};
      const rec = { opens: [], closes: [], auth: [], errors: [], messages: [], tokenReasons: [], logins: 0 };
      const login = async () => {
        const r = await fetch("/dev/login", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ sub: spec.sub, roles: spec.roles ?? ["user"], ...(spec.ttl ? { ttl: spec.ttl } : {}) }),
        });
        if (!r.ok) throw new Error(`login ${r.status}`);
        rec.logins++;
        rec.session = await r.json();
        return rec.session;
      };
      await login();
      const url = location.origin.replace(/^http/, "ws") + "/ws";
      const c = new WsgateClient({
        url,
        transport: spec.transport,
        refresh: spec.refresh ?? true,
        getToken: async (ctx) => {
          rec.tokenReasons.push(ctx.reason);
          // The first connection uses the login above; later ones sign in again.
          if (rec.tokenReasons.length === 1 && ctx.reason === "connect") return rec.session.token;
          return (await login()).token;
        },
        csrf: () => rec.session.csrf,
        refreshSession: async () => {
          await login();
        },
        backoff: spec.backoff,
      });
      const t0 = performance.now();
      const at = () => Math.round(performance.now() - t0);
      c.on("open", (e) => rec.opens.push({ ...e, at: at() }));
      c.on("close", (e) => rec.closes.push({ ...e, at: at() }));
      c.on("auth", (e) => rec.auth.push({ ...e, at: at() }));
      c.on("error", (e) => rec.errors.push({ reason: e.reason, status: e.status, at: at() }));
      c.on("message", (m) => rec.messages.push({ channel: m.channel, data: m.data, from: m.from }));
      rec.client = c;
      window.clients[name] = rec;
      await c.connect();
    },
    [name, spec],
  );
}

/** A JSON-safe copy of what client `name` recorded. */
export function recorded(page, name) {
  return page.evaluate((name) => {
    const { client, ...rest } = window.clients[name];
    return { ...JSON.parse(JSON.stringify(rest)), state: client.state, exp: client.exp };
  }, name);
}

/** Waits until `pred(record)` holds in the page (pred is serialized: no closures). */
export function waitForClient(page, name, pred, timeout = 15_000) {
  return page.waitForFunction(
    ([name, src]) => {
      const rec = window.clients?.[name];
      // eslint-disable-next-line no-new-func
      return rec && new Function("r", `return (${src})(r)`)(rec);
    },
    [name, pred.toString()],
    { timeout, polling: 50 },
  );
}
