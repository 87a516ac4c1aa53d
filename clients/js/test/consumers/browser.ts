// A browser app using the packed package: scripts/check-package.mjs compiles
// it with `tsc --strict`, lib DOM, moduleResolution "bundler" (Vite, esbuild).
import { WsgateClient, WsgateError, type WebSocketConstructor, type WsgateOptions } from "@wsgate/client";

// The browser's WebSocket class, every way an app may name it.
const fromGlobal: WebSocketConstructor = globalThis.WebSocket;
const opts: WsgateOptions = { url: "wss://ws.example/ws", transport: "ticket", csrf: "c", WebSocket: globalThis.WebSocket };
const ticket = new WsgateClient(opts);
const cookie = new WsgateClient({ url: "wss://ws.example/ws", transport: "cookie", WebSocket });
const subprotocol = new WsgateClient({
  url: "wss://ws.example/ws",
  transport: "subprotocol",
  getToken: async ({ reason }) => (reason === "refused" || reason === "expired" ? "fresh.jwt" : "cached.jwt"),
  WebSocket: window.WebSocket,
  backoff: { refusalsBeforeError: 3 },
});

subprotocol.on("error", (e: WsgateError) => {
  if (e.reason === "handshake_refused") subprotocol.close();
});
subprotocol.on("close", (e) => console.log(e.code, e.wasOpen, e.willReconnect, e.delayMs));
subprotocol.connect().catch((e: unknown) => console.log(e instanceof WsgateError ? (e.reason, e.status) : e));

export { fromGlobal, ticket, cookie };
