// What the browser tests share: the real gateway binary as a child process
// (dev mode, ports chosen by the OS), Debian's Chromium through
// playwright-core, a second origin to attack from, and log assertions.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const artifacts = join(repo, "e2e", "artifacts");

/** The gateway binary: $WSGATE_BIN, else cargo's debug build. */
export function gatewayBin() {
  if (process.env.WSGATE_BIN) return process.env.WSGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(repo, "target");
  return join(target, "debug", "wsgate");
}

const JWT = /eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;

/**
 * Starts `wsgate serve` in dev mode (no config, empty working directory) on
 * 127.0.0.1 with OS-chosen ports. `env` adds WSGATE_* overrides.
 */
export async function startGateway(env = {}) {
  const bin = gatewayBin();
  if (!existsSync(bin)) throw new Error(`no gateway binary at ${bin}: run cargo build -p wsgate (or set WSGATE_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), "wsgate-e2e-"));
  const adminToken = randomBytes(24).toString("base64url");
  const child = spawn(bin, ["serve"], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      WSGATE_SERVER__LISTEN: "127.0.0.1:0",
      WSGATE_ADMIN__LISTEN: "127.0.0.1:0",
      WSGATE_ADMIN_TOKEN: adminToken,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs = [];
  const stderr = [];
  const watchers = new Set();
  const lines = (stream, sink, parse) => {
    let buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        sink.push(parse ? parseLine(line) : line);
        for (const w of watchers) w();
      }
    });
  };
  lines(child.stdout, logs, true);
  lines(child.stderr, stderr, false);
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));

  const gw = {
    child,
    adminToken,
    logs,
    stderr,
    /** Resolves with the first log record matching `pred` (waits up to `ms`). */
    waitForLog(pred, ms = 10_000, what = "a log line") {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = logs.find((l) => l && pred(l));
          if (hit) {
            watchers.delete(check);
            clearTimeout(timer);
            resolve(hit);
          }
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`timed out waiting for ${what}; logs:\n${logs.map((l) => JSON.stringify(l)).join("\n")}`));
        }, ms);
        watchers.add(check);
        check();
      });
    },
    /** Log records of `event` matching `fields`. */
    events(event, fields = {}) {
      return logs.filter((l) => l && l.event === event && Object.entries(fields).every(([k, v]) => l[k] === v));
    },
    /** POSTs the admin API with the admin token. */
    async admin(path, body) {
      const r = await fetch(`${gw.adminUrl}${path}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: r.status, body: await r.json() };
    },
    /** SIGTERM, wait, and check that no token ever reached the JSON logs. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
      const leaked = logs.filter((l) => JWT.test(JSON.stringify(l)));
      if (leaked.length) throw new Error(`a token reached the gateway's logs: ${JSON.stringify(leaked[0]).slice(0, 200)}…`);
    },
  };
  const listening = await Promise.race([
    gw.waitForLog((l) => l.event === "listening", 20_000, "the gateway to listen"),
    exited.then(({ code }) => {
      throw new Error(`gateway exited ${code} before listening:\n${stderr.join("\n")}`);
    }),
  ]);
  gw.origin = `http://${listening.addr}`;
  gw.wsUrl = `ws://${listening.addr}/ws`;
  gw.adminUrl = `http://${listening.admin_addr}`;
  gw.port = Number(listening.addr.split(":").pop());
  return gw;
}

function parseLine(line) {
  try {
    return JSON.parse(line);
  } catch {
    return { event: "unparsed", line };
  }
}

/** Debian's Chromium, headless. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
}

/**
 * A page on another origin (another port of 127.0.0.1: same site, so the
 * browser attaches the gateway's cookie to requests it makes there), with
 * `files` (path -> JavaScript source) served beside it.
 */
export async function startOtherOrigin(html, files = {}) {
  const upgrades = [];
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, "http://x").pathname];
    if (file !== undefined) {
      res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" });
      res.end(file);
      return;
    }
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(html);
  });
  // WebSocket upgrades to this origin are recorded (headers only) and dropped:
  // they show what the browser attaches to a socket opened from here.
  server.on("upgrade", (req, socket) => {
    upgrades.push({ url: req.url, headers: req.headers });
    socket.destroy();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    upgrades,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Signs in through `/dev/login` from inside `page` (sets the session cookie). */
export function devLogin(page, sub, roles = ["user"], ttl) {
  return page.evaluate(
    async ([sub, roles, ttl]) => {
      const r = await fetch("/dev/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(ttl ? { sub, roles, ttl } : { sub, roles }),
      });
      if (!r.ok) throw new Error(`login failed: ${r.status}`);
      return r.json();
    },
    [sub, roles, ttl],
  );
}

export function artifactPath(name) {
  mkdirSync(artifacts, { recursive: true });
  return join(artifacts, name);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
