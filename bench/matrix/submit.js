#!/usr/bin/env node
'use strict';
// The Node.js submitter of the matrix: connects a `packetflow` Reactor to a
// hub and calls `df:transform` with "hello world" (every answer must be
// "HELLO WORLD").
//
//   node bench/matrix/submit.js seq  HUB_URL [--n 2000] [--warmup 500]
//   node bench/matrix/submit.js pipe HUB_URL [--n 200000] [--inflight 100] [--warmup 20000]
//
// seq: N calls one after another (after the warm-up); round-trip
// p50/p95/p99 in µs. pipe: INFLIGHT calls kept in flight on the reactor's one
// connection until N are answered (after a warm-up of the same shape);
// packets/s and the process's CPU per packet. Prints one JSON line.

const path = require('node:path');
const { Reactor } = require(path.resolve(__dirname, '../../bindings-node'));

const EXPECT = 'HELLO WORLD';
const argv = process.argv.slice(2);
const [mode, url] = argv;
if (!['seq', 'pipe'].includes(mode) || !url) {
  console.error('usage: node submit.js seq|pipe HUB_URL [--n N] [--warmup W] [--inflight I]');
  process.exit(2);
}
function opt(name, def) {
  const i = argv.indexOf(name);
  if (i < 0) return def;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 0) throw new TypeError(`${name} must be a non-negative integer`);
  return v;
}
const now = () => process.hrtime.bigint();
// nearest rank on n-1 intervals, in µs
const pct = (s, p) => Number(s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))]) / 1000;
const cpuS = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function seq(r, n, warmup) {
  const lat = new BigInt64Array(n);
  for (let i = 0; i < warmup + n; i++) {
    const t0 = now();
    const out = await r.call('df', 'transform', 'hello world');
    const dt = now() - t0;
    if (out !== EXPECT) throw new Error(`round trip ${i}: unexpected answer ${JSON.stringify(out)}`);
    if (i >= warmup) lat[i - warmup] = dt;
  }
  lat.sort();
  let sum = 0;
  for (const v of lat) sum += Number(v);
  return { mode: 'seq', n, warmup, p50_us: pct(lat, 50), p95_us: pct(lat, 95), p99_us: pct(lat, 99), mean_us: sum / n / 1000 };
}

// Keeps `inflight` calls outstanding until `n` are answered.
async function window(r, n, inflight) {
  let left = n;
  const lane = async () => {
    while (left > 0) {
      left--;
      const out = await r.call('df', 'transform', 'hello world');
      if (out !== EXPECT) throw new Error(`unexpected answer ${JSON.stringify(out)}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inflight, n) }, lane));
}

async function pipe(r, n, inflight, warmup) {
  if (warmup) await window(r, warmup, inflight);
  const c0 = cpuS();
  const t0 = now();
  await window(r, n, inflight);
  const wall = Number(now() - t0) / 1e9;
  const cpu = cpuS() - c0;
  return { mode: 'pipe', n, inflight, warmup, pps: n / wall, wall_s: wall, cpu_us_per_packet: (cpu * 1e6) / n };
}

async function main() {
  const timer = setTimeout(() => {
    console.error('gave up: timeout');
    process.exit(3);
  }, opt('--timeout', 300) * 1000);
  // MATRIX_BUSY_POLL_US (set by matrix.py's busy- topologies): the reactor's
  // busyPollUs; MATRIX_NODE_SOCKETS (matrix.py --node-sockets): its sockets.
  const r = new Reactor({
    name: 'matrix-node-submitter',
    busyPollUs: Number(process.env.MATRIX_BUSY_POLL_US || 0),
    sockets: process.env.MATRIX_NODE_SOCKETS || undefined,
  });
  await r.connect(url);
  const out = mode === 'seq'
    ? await seq(r, opt('--n', 2000), opt('--warmup', 500))
    : await pipe(r, opt('--n', 200000), opt('--inflight', 100), opt('--warmup', 20000));
  await r.stop();
  clearTimeout(timer);
  console.log(JSON.stringify({ submitter: 'node', url, ...out }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
