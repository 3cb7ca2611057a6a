#!/usr/bin/env node
'use strict';
// The Node.js handler of the matrix: a `packetflow` Reactor serving
// `df:transform` (uppercase a string), connected to a hub or listening.
//
//   node bench/matrix/handler.js HUB_URL
//   node bench/matrix/handler.js --listen 127.0.0.1:0
//
// Prints `ready PID` on stdout once `connect` has resolved (the hub then
// knows the handler), or `ready PID URL` once listening; serves until stdin
// closes or SIGTERM, then stops.

const path = require('node:path');
const { Reactor } = require(path.resolve(__dirname, '../../bindings-node'));

const listen = process.argv[2] === '--listen' ? process.argv[3] : null;
const url = listen ? null : process.argv[2];
if (!url && !listen) {
  console.error('usage: node handler.js HUB_URL | --listen HOST:PORT');
  process.exit(2);
}

// MATRIX_BUSY_POLL_US (set by matrix.py's busy- topologies): the reactor's
// busyPollUs; MATRIX_NODE_SOCKETS (matrix.py --node-sockets): its sockets.
const r = new Reactor({
  name: 'matrix-node-handler',
  busyPollUs: Number(process.env.MATRIX_BUSY_POLL_US || 0),
  sockets: process.env.MATRIX_NODE_SOCKETS || undefined,
});
// MATRIX_HANDLER_WORK_US (matrix.py --handler-work-us): each call first
// keeps the JS thread busy this long (a CPU-heavy handler); default 0.
const workUs = Number(process.env.MATRIX_HANDLER_WORK_US || 0);
function work() {
  const until = process.hrtime.bigint() + BigInt(workUs * 1000);
  while (process.hrtime.bigint() < until);
}
r.register('df', 'transform', async (data) => {
  if (workUs > 0) work();
  return data.toUpperCase();
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  r.stop().then(() => process.exit(0));
}

(listen ? r.listen(listen) : r.connect(url)).then(
  (bound) => {
    process.stdout.write(listen ? `ready ${process.pid} ${bound.url}\n` : `ready ${process.pid}\n`);
    process.stdin.on('end', stop);
    process.stdin.resume();
  },
  (error) => {
    console.error(`cannot ${listen ? 'listen' : 'connect'}: ${error.code} ${error.message}`);
    process.exit(1);
  },
);
process.on('SIGTERM', stop);
