#!/usr/bin/env node
'use strict';
// In-process throughput of the Node binding, with its baseline in the same
// run: N calls `await submit → JS handler → result`, `--inflight` of them in
// flight at once (each worker awaits its call, then starts the next).
//
//   node bench/node/bench.js [--n 200000] [--inflight 100] [--trials 5]
//                            [--packages DIR[,DIR...]]
//
// `--packages` measures several builds of the package side by side (A/B),
// each a folder with index.js and packetflow.node (default: bindings-node):
// every variant of every package runs in each trial, interleaved, in this
// one process. Two packages at most: a third addon in one process exhausts
// the static TLS block (`cannot allocate memory in static TLS block`).
//
// Variants (all with the same async uppercase handler):
//   plain-js   Map lookup of `group:element` + await handler + result object
//   submit     await r.submit({group, element, data}) → Result
//   call       await r.call({group, element, data}) → data
//   submit-sync  the same with a sync handler
// Prints one JSON line per trial and a summary table (median, min–max, and
// CPU time per call, which a busy shared machine disturbs far less).

const path = require('node:path');
const { performance } = require('node:perf_hooks');

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
function textOption(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
}
const N = option('n', 200000);
const INFLIGHT = option('inflight', 100);
const TRIALS = option('trials', 5);
const WARMUP = Math.min(N, 20000);

const PACKAGES = textOption('packages', path.resolve(__dirname, '../../bindings-node'))
  .split(',')
  .map((dir) => path.resolve(dir));

const upper = async (data) => data.toUpperCase();
const upperSync = (data) => data.toUpperCase();

/**
 * Runs `n` calls of `once()` with `inflight` workers; returns calls/s and
 * the process's CPU time per call in µs (all threads: the noise-robust
 * figure on a shared machine).
 */
async function drive(n, inflight, once) {
  let next = 0;
  let errors = 0;
  async function worker() {
    while (next < n) {
      next += 1;
      const ok = await once();
      if (!ok) errors += 1;
    }
  }
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: inflight }, worker));
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  if (errors > 0) throw new Error(`${errors} calls failed`);
  return { rate: n / seconds, cpuUs: (used.user + used.system) / n };
}

function plainJs() {
  // The baseline: what a hand-written JS dispatcher does per packet.
  const handlers = new Map([['df:transform', upper]]);
  let id = 0;
  return async () => {
    const packet = { id: String(++id), group: 'df', element: 'transform', data: 'hello world' };
    const start = performance.now();
    const handler = handlers.get(`${packet.group}:${packet.element}`);
    const data = await handler(packet.data);
    const result = { packetId: packet.id, status: 'success', data, error: null, durationMs: performance.now() - start };
    return result.data === 'HELLO WORLD';
  };
}

function pfSubmit(reactor, element) {
  const packet = { group: 'df', element, data: 'hello world' };
  return async () => {
    const result = await reactor.submit(packet);
    return result.status === 'success' && result.data === 'HELLO WORLD';
  };
}

function pfCall(reactor) {
  const packet = { group: 'df', element: 'transform', data: 'hello world' };
  return async () => (await reactor.call(packet)) === 'HELLO WORLD';
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const variants = { 'plain-js': plainJs() };
  const reactors = [];
  for (const dir of PACKAGES) {
    const { Reactor } = require(dir);
    const reactor = new Reactor({ name: 'bench' });
    reactor.register('df', 'transform', upper);
    reactor.register('df', 'transform-sync', upperSync);
    reactors.push(reactor);
    const suffix = PACKAGES.length > 1 ? `@${path.basename(dir)}` : '';
    variants[`submit${suffix}`] = pfSubmit(reactor, 'transform');
    variants[`call${suffix}`] = pfCall(reactor);
    variants[`submit-sync${suffix}`] = pfSubmit(reactor, 'transform-sync');
  }
  const results = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  const cpu = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const once of Object.values(variants)) await drive(WARMUP, INFLIGHT, once);
  for (let trial = 1; trial <= TRIALS; trial++) {
    // Interleave variants within a trial so that drift hits all of them,
    // in reverse order every other trial so that none always goes first.
    const order = Object.entries(variants);
    if (trial % 2 === 0) order.reverse();
    for (const [name, once] of order) {
      const { rate, cpuUs } = await drive(N, INFLIGHT, once);
      results[name].push(rate);
      cpu[name].push(cpuUs);
      console.log(JSON.stringify({ trial, variant: name, n: N, inflight: INFLIGHT, callsPerSec: Math.round(rate), cpuUsPerCall: +cpuUs.toFixed(3) }));
    }
  }
  for (const reactor of reactors) await reactor.stop();
  const base = median(results['plain-js']);
  console.log(`\n| variant | calls/s median (min–max) | vs plain-js | CPU µs/call median | calls/s per CPU-second |`);
  console.log(`|---|---|---|---|---|`);
  for (const [name, rates] of Object.entries(results)) {
    const m = median(rates);
    const c = median(cpu[name]);
    const k = (x) => `${Math.round(x / 1000)}k`;
    console.log(
      `| ${name} | ${k(m)} (${k(Math.min(...rates))}–${k(Math.max(...rates))}) | ${(m / base).toFixed(3)} | ` +
        `${c.toFixed(2)} | ${k(1e6 / c)} |`,
    );
  }
  console.log(`\nnode ${process.version}, N=${N}, inflight=${INFLIGHT}, trials=${TRIALS}, ` +
    `PACKETFLOW_WORKER_THREADS=${process.env.PACKETFLOW_WORKER_THREADS || '(default)'}; ` +
    `packages ${PACKAGES.join(', ')}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
