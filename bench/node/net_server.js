#!/usr/bin/env node
'use strict';
// A JS handler behind a PacketFlow node: the Node binding's reactor listens,
// and its `df:transform` handler uppercases the string (the same async
// function as the plain `ws` server of the reference peers).
//
//   node bench/node/net_server.js [PORT=9401]
//
// PACKETFLOW_PACKAGE names the package folder to load (default
// bindings-node): network.js --packages measures builds side by side.
//
// Prints `listening on URL` on stderr once it accepts peers; stops cleanly
// (and exits) on SIGTERM or SIGINT.

const path = require('node:path');
const { Reactor } = require(process.env.PACKETFLOW_PACKAGE || path.resolve(__dirname, '../../bindings-node'));

const port = Number(process.argv[2] || process.env.PORT || 9401);
const r = new Reactor({ name: 'bench' });
r.register('df', 'transform', async (data) => data.toUpperCase());

r.listen(`127.0.0.1:${port}`).then(
  (bound) => console.error(`listening on ${bound.url}`),
  (error) => {
    console.error(`cannot listen: ${error.code} ${error.message}`);
    process.exitCode = 1;
  },
);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    r.stop().then(() => process.exit(0));
  });
}
