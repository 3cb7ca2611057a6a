#!/usr/bin/env node
'use strict';
// In-process throughput of actors with a JS behaviour, beside plain handler
// calls of the same shape in the same run: N messages `{type: 'increment'}`,
// `--inflight` of them in flight at once (each worker awaits its answer,
// then sends the next).
//
//   node bench/node/actors.js [--n 100000] [--inflight 100] [--trials 5]
//                             [--only VARIANT[,VARIANT...]]
//                             [--packages DIR[,DIR]]
//
// `--packages` measures two builds of the package side by side (A/B), as
// bench.js does: every variant of each, interleaved, in this one process.
//
// Variants:
//   handler       await r.call('df', 'increment', msg): a sync handler that
//                 increments a counter it closes over → {value}
//   actor         await r.actors.send(counter, msg): one counter, a sync
//                 method (context.state.value++ → {value})
//   actor-async   the same counter type with an async method
//   actor-spread  the sync method, each worker on its own counter (100
//                 actors): what one actor's one-turn-at-a-time costs
// Prints one JSON line per trial and a summary table (see harness.js).

const path = require('node:path');
const { trials, table, option, textOption } = require('./harness');

const PACKAGES = textOption('packages', path.resolve(__dirname, '../../bindings-node'))
  .split(',')
  .map((dir) => path.resolve(dir));

const N = option('n', 100000);
const INFLIGHT = option('inflight', 100);
const TRIALS = option('trials', 5);
const WARMUP = Math.min(N, 20000);
// A subset of the variants (for profiling one path).
const ONLY = textOption('only', '');

const increment = (data, context) => {
  context.state.value += 1;
  return { value: context.state.value };
};

/** The variants on one build of the package; `check()` verifies the counts. */
async function setup(dir, suffix) {
  const { Reactor } = require(dir);
  const r = new Reactor({ name: 'bench-actors' });
  let handled = 0;
  r.register('df', 'increment', () => ({ value: ++handled }));
  r.actors.registerBehavior('counter', {
    increment,
    increment_async: async (data, context) => increment(data, context),
  });
  const counter = await r.actors.create('counter', { value: 0 });
  const spread = await Promise.all(Array.from({ length: INFLIGHT }, () => r.actors.create('counter', { value: 0 })));
  const msg = { type: 'increment' };
  const asyncMsg = { type: 'increment_async' };
  let next = 0;
  const all = {
    handler: async () => (await r.call('df', 'increment', msg)).value > 0,
    actor: async () => (await r.actors.send(counter, msg)).value > 0,
    'actor-async': async () => (await r.actors.send(counter, asyncMsg)).value > 0,
    'actor-spread': async () => (await r.actors.send(spread[next++ % spread.length], msg)).value > 0,
  };
  const names = ONLY ? ONLY.split(',') : Object.keys(all);
  const variants = Object.fromEntries(names.map((name) => [`${name}${suffix}`, all[name]]));
  async function check() {
    // Every message to the one counter was applied exactly once.
    const total = (await r.actors.send(counter, { type: 'increment' })).value - 1;
    const expected = (WARMUP + N * TRIALS) * names.filter((name) => name === 'actor' || name === 'actor-async').length;
    if (total !== expected) throw new Error(`the counter is at ${total}, expected ${expected}`);
    await r.stop();
  }
  return { variants, check };
}

async function main() {
  const builds = [];
  for (const dir of PACKAGES) {
    builds.push(await setup(dir, PACKAGES.length > 1 ? `@${path.basename(dir)}` : ''));
  }
  const variants = Object.assign({}, ...builds.map((b) => b.variants));
  const measured = await trials(variants, { n: N, inflight: INFLIGHT, trials: TRIALS, warmup: WARMUP });
  for (const build of builds) await build.check();
  table(measured, Object.keys(variants)[0]);
  console.log(`\nnode ${process.version}, N=${N}, inflight=${INFLIGHT}, trials=${TRIALS}, ` +
    `PACKETFLOW_WORKER_THREADS=${process.env.PACKETFLOW_WORKER_THREADS || '(default)'}; ` +
    `packages ${PACKAGES.join(', ')}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
