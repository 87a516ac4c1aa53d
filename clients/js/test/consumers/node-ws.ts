// A Node app using the packed package with the `ws` library:
// scripts/check-package.mjs compiles it with `tsc --strict`, no DOM lib,
// moduleResolution "nodenext", @types/ws.
import WebSocket from "ws";
import { WsgateClient, type WebSocketConstructor, type WsgateOptions } from "@wsgate/client";

const ctor: WebSocketConstructor = WebSocket;
const opts: WsgateOptions = { url: "ws://127.0.0.1:8080/ws", transport: "subprotocol", token: "a.jwt.x", WebSocket };
const client = new WsgateClient(opts);
client.on("message", (m) => console.log(m.channel, m.data));
await client.connect().catch((e: unknown) => console.log(e));

export { ctor, client };
