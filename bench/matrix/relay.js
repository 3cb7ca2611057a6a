#!/usr/bin/env node
'use strict';
// A plain `ws` relay: the least a two-hop path can be. Each client
// connection gets its own connection to UPSTREAM, and every message is
// passed on as it came, both ways (no parsing, no routing, no table of
// packets in flight). With ../shared/peers/node's client and server it
// makes the plain Node pair's two-hop baseline of the matrix.
//
//   node bench/matrix/relay.js PORT UPSTREAM_URL
//
// Prints `relay on PORT` on stderr once listening; stops on SIGTERM or
// when stdin closes. Needs `ws` on NODE_PATH (matrix.py installs it).

const { WebSocket, WebSocketServer } = require('ws');

const [port, upstream] = [Number(process.argv[2]), process.argv[3]];
if (!Number.isInteger(port) || !/^ws:\/\/(127\.0\.0\.1|localhost)[:/]/.test(upstream || '')) {
  console.error('usage: node relay.js PORT ws://127.0.0.1:PORT/  (loopback upstream only)');
  process.exit(2);
}

const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
server.on('connection', (client) => {
  client._socket.setNoDelay(true);
  const up = new WebSocket(upstream, { perMessageDeflate: false });
  // What the client sends before the upstream connection is open waits here.
  let early = [];
  up.on('open', () => {
    up._socket.setNoDelay(true);
    for (const [data, isBinary] of early) up.send(data, { binary: isBinary });
    early = null;
  });
  client.on('message', (data, isBinary) => {
    if (early) early.push([data, isBinary]);
    else up.send(data, { binary: isBinary });
  });
  up.on('message', (data, isBinary) => client.send(data, { binary: isBinary }));
  const closeBoth = () => {
    client.close();
    up.close();
  };
  client.on('close', closeBoth);
  up.on('close', closeBoth);
  client.on('error', closeBoth);
  up.on('error', (e) => {
    console.error(`upstream: ${e.message}`);
    closeBoth();
  });
});
server.on('listening', () => console.error(`relay on ${port}`));

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
