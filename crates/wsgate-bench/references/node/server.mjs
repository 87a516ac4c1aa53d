// Reference for wsgate's upgrade benchmark: an authenticating WebSocket echo
// server written the way the common tutorials (and the `ws` README's
// "Client authentication" example) do it — Node `http` + `ws` in noServer
// mode + `jsonwebtoken` verifying an HS256 bearer token in the `upgrade`
// handler. Deliberately nothing clever: this is the shape being compared to.
//
//   WSGATE_JWT_SECRET=... node server.mjs [HOST:PORT]     (default 127.0.0.1:18780)
//
// The secret is the env variable's bytes (as wsgate's `secret_env` reads it),
// wrapped once in a KeyObject so jsonwebtoken does not re-import it per call.
import { createSecretKey } from 'node:crypto';
import http from 'node:http';

import jwt from 'jsonwebtoken';
import { WebSocketServer } from 'ws';

const secret = process.env.WSGATE_JWT_SECRET;
if (!secret) {
  console.error('server.mjs: WSGATE_JWT_SECRET is not set');
  process.exit(2);
}
const key = createSecretKey(Buffer.from(secret, 'utf8'));

const addr = process.argv[2] ?? '127.0.0.1:18780';
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));
if (colon < 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.mjs [HOST:PORT]');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
  res.end('WebSocket upgrade required\n');
});
const wss = new WebSocketServer({ noServer: true });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

function onSocketError() {}

server.on('upgrade', (req, socket, head) => {
  socket.on('error', onSocketError);
  const auth = req.headers.authorization;
  let claims;
  try {
    if (typeof auth !== 'string' || !auth.startsWith('Bearer ')) {
      throw new Error('no bearer token');
    }
    claims = jwt.verify(auth.slice(7), key, { algorithms: ['HS256'] });
  } catch {
    socket.write('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    socket.destroy();
    return;
  }
  socket.removeListener('error', onSocketError);
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req, claims));
});

server.listen(port, host, () => {
  console.error(`server.mjs listening on ws://${host}:${port}/ (node ${process.version})`);
});
