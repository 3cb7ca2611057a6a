#!/usr/bin/env node
'use strict';
// In-process throughput of the Node binding, with its baseline in the same
// run: N calls `await submit → JS handler → result`, `--inflight` of them in
// flight at once (each worker awaits its call, then starts the next).
//
//   node bench/node/bench.js [--n 200000] [--inflight 100] [--trials 5]
//                            [--packages DIR[,DIR...]] [--signal]
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
// With `--signal` (builds with cancellation), what cancellation costs when
// it is used:
//   call-signal   await r.call(packet with a `signal`): every call watched
//                 by one AbortController shared by all (never aborted)
//   reads-signal  await r.call(...) to a handler that reads `ctx.signal`
//   own-controller  what Node's AbortController alone costs such a handler:
//                 it makes one, reads its signal, and aborts it with a
//                 fresh PacketFlowError once it has answered (as the
//                 packet's end aborts `ctx.signal`)
// Prints one JSON line per trial and a summary table (median, min–max, and
// CPU time per call, which a busy shared machine disturbs far less).

const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { trials, table, option, textOption } = require('./harness');

const N = option('n', 200000);
const INFLIGHT = option('inflight', 100);
const TRIALS = option('trials', 5);
const WARMUP = Math.min(N, 20000);
const SIGNAL = process.argv.includes('--signal');

const PACKAGES = textOption('packages', path.resolve(__dirname, '../../bindings-node'))
  .split(',')
  .map((dir) => path.resolve(dir));

const upper = async (data) => data.toUpperCase();
const upperSync = (data) => data.toUpperCase();

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

function pfCall(reactor, element = 'transform', signal = undefined) {
  const packet = { group: 'df', element, data: 'hello world', signal };
  return async () => (await reactor.call(packet)) === 'HELLO WORLD';
}

async function main() {
  const variants = { 'plain-js': plainJs() };
  const reactors = [];
  for (const dir of PACKAGES) {
    const { Reactor } = require(dir);
    const reactor = new Reactor({ name: 'bench' });
    reactor.register('df', 'transform', upper);
    reactor.register('df', 'transform-sync', upperSync);
    reactor.register('df', 'transform-signal', async (data, ctx) => {
      if (ctx.signal.aborted) throw new Error('aborted before it started');
      return data.toUpperCase();
    });
    const { PacketFlowError } = require(dir);
    let made = 0;
    reactor.register('df', 'transform-controller', async (data) => {
      const controller = new AbortController();
      if (controller.signal.aborted) throw new Error('aborted before it started');
      queueMicrotask(() => controller.abort(new PacketFlowError('PF499', `packet ${++made} was cancelled or is over`)));
      return data.toUpperCase();
    });
    reactors.push(reactor);
    const suffix = PACKAGES.length > 1 ? `@${path.basename(dir)}` : '';
    variants[`submit${suffix}`] = pfSubmit(reactor, 'transform');
    variants[`call${suffix}`] = pfCall(reactor);
    variants[`submit-sync${suffix}`] = pfSubmit(reactor, 'transform-sync');
    if (SIGNAL) {
      variants[`call-signal${suffix}`] = pfCall(reactor, 'transform', new AbortController().signal);
      variants[`reads-signal${suffix}`] = pfCall(reactor, 'transform-signal');
      variants[`own-controller${suffix}`] = pfCall(reactor, 'transform-controller');
    }
  }
  const measured = await trials(variants, { n: N, inflight: INFLIGHT, trials: TRIALS, warmup: WARMUP });
  for (const reactor of reactors) await reactor.stop();
  table(measured, 'plain-js');
  console.log(`\nnode ${process.version}, N=${N}, inflight=${INFLIGHT}, trials=${TRIALS}, ` +
    `PACKETFLOW_WORKER_THREADS=${process.env.PACKETFLOW_WORKER_THREADS || '(default)'}; ` +
    `packages ${PACKAGES.join(', ')}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
