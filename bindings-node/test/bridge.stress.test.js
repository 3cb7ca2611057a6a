'use strict';
// Stress tests of the bridge between the core's threads and the JS thread
// (src/bridge.rs, docs/bindings.md "Node.js"): many submitters at once,
// handlers answering at once, on later ticks, after timers and from worker
// threads, packets arriving from the runtime's thread (over the network),
// and stop() during traffic. Each asserts that every packet is answered
// exactly once, that nothing hangs (every wait is bounded), and that a stop
// answers what was in flight with PF503. A change of the bridge's orderings
// (scheduling states, the re-check before going idle, settling before the
// woken tasks are polled) strands or loses packets and fails these.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const { Reactor } = require('..');
const { within, latch } = require('./helpers');

/** A few worker threads that echo what they are sent, for handlers that answer from another thread. */
function echoWorkers(t, count) {
  const code = `
    const { parentPort } = require('node:worker_threads');
    parentPort.on('message', ({ id, data }) => parentPort.postMessage({ id, data }));
  `;
  const waiting = new Map();
  let next = 0;
  const workers = Array.from({ length: count }, () => {
    const worker = new Worker(code, { eval: true });
    worker.on('message', ({ id, data }) => {
      const resolve = waiting.get(id);
      waiting.delete(id);
      resolve(data);
    });
    return worker;
  });
  t.after(() => Promise.all(workers.map((w) => w.terminate())));
  return (data) =>
    new Promise((resolve) => {
      const id = next++;
      waiting.set(id, resolve);
      workers[id % workers.length].postMessage({ id, data });
    });
}

/** Handlers answering in every way a JS handler can, each counting its calls per packet. */
function registerHandlers(t, r, seen) {
  const viaWorker = echoWorkers(t, 3);
  const count = (data) => seen.set(data.n, (seen.get(data.n) || 0) + 1);
  r.register('df', 'sync', (data) => {
    count(data);
    return data.n;
  });
  r.register('df', 'microtask', async (data) => {
    count(data);
    await null;
    return data.n;
  });
  r.register('df', 'immediate', (data) => {
    count(data);
    return new Promise((resolve) => setImmediate(() => resolve(data.n)));
  });
  r.register('df', 'timer', (data) => {
    count(data);
    return new Promise((resolve) => setTimeout(() => resolve(data.n), data.n % 3));
  });
  r.register('df', 'thread', async (data) => {
    count(data);
    return (await viaWorker(data)).n;
  });
  r.register('df', 'nested', async (data, ctx) => {
    count(data);
    // A child packet from inside a handler: its task is polled on the JS thread too.
    return (await ctx.call('df', 'leaf', data.n)) + 0;
  });
  r.register('df', 'leaf', (n) => n);
}

const KINDS = ['sync', 'microtask', 'immediate', 'timer', 'thread', 'nested'];

/** `submitters` loops submitting `each` packets (each awaiting its answer, as a client would). */
async function drive(target, submitters, each, first = 0) {
  const answers = new Map();
  const loop = async (s) => {
    for (let i = 0; i < each; i++) {
      const n = first + s * each + i;
      const result = await target.submit({ group: 'df', element: KINDS[n % KINDS.length], data: { n }, timeoutMs: 20000 });
      assert.equal(answers.has(n), false, `packet ${n} answered twice`);
      answers.set(n, result);
    }
  };
  await Promise.all(Array.from({ length: submitters }, (_, s) => loop(s)));
  return answers;
}

function assertAllAnswered(answers, seen, first, total) {
  assert.equal(answers.size, total);
  for (let n = first; n < first + total; n++) {
    const result = answers.get(n);
    assert.ok(result, `packet ${n} has no answer`);
    assert.equal(result.status, 'success', `packet ${n}: ${result.error && result.error.message}`);
    assert.equal(result.data, n, `packet ${n} got another packet's answer`);
    assert.equal(seen.get(n), 1, `the handler ran ${seen.get(n)} times for packet ${n}`);
  }
}

test('in process: 40 submitters, handlers answering at once, later, after timers and from threads', async (t) => {
  // The default maxInflight (1024): the burst below queues beyond it. (A
  // small one would let 'nested' handlers hold every slot while their
  // children wait in the queue: the core's rule, not the bridge's.)
  const r = new Reactor({ name: 'stress-local' });
  t.after(() => r.stop());
  const seen = new Map();
  registerHandlers(t, r, seen);
  // A burst too: thousands in flight at once, beyond maxInflight.
  const burst = Array.from({ length: 3000 }, (_, i) => r.call('df', KINDS[i % KINDS.length], { n: 100000 + i }));
  const answers = await within(drive(r, 40, 60), 60000, 'the submitters');
  assertAllAnswered(answers, seen, 0, 40 * 60);
  const burstAnswers = await within(Promise.all(burst), 60000, 'the burst');
  burstAnswers.forEach((value, i) => assert.equal(value, 100000 + i));
  for (let i = 0; i < 3000; i++) assert.equal(seen.get(100000 + i), 1);
});

test('over the network: packets from the runtime thread, several clients at once, one in a worker', async (t) => {
  const server = new Reactor({ name: 'stress-server' });
  t.after(() => server.stop());
  const seen = new Map();
  registerHandlers(t, server, seen);
  const { url } = await within(server.listen('127.0.0.1:0'), 10000, 'listen');

  // A client reactor in a worker thread: another JS thread with its own bridge.
  const workerCode = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { Reactor } = require(workerData.pkg);
    (async () => {
      const r = new Reactor({ name: 'stress-worker-client' });
      await r.connect(workerData.url);
      const firsts = [];
      await Promise.all(Array.from({ length: 10 }, async (_, s) => {
        for (let i = 0; i < 40; i++) {
          const n = workerData.first + s * 40 + i;
          const kinds = ${JSON.stringify(KINDS)};
          const result = await r.submit({ group: 'df', element: kinds[n % kinds.length], data: { n }, timeoutMs: 20000 });
          firsts.push([n, result.status, result.data]);
        }
      }));
      await r.stop();
      parentPort.postMessage(firsts);
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack) }));
  `;
  const worker = new Worker(workerCode, { eval: true, workerData: { pkg: require.resolve('..'), url, first: 50000 } });
  t.after(() => worker.terminate());
  const fromWorker = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });

  const clients = await Promise.all(
    [false, true, false].map(async (msgpack, i) => {
      const client = new Reactor({ name: `stress-client-${i}` });
      t.after(() => client.stop());
      await within(client.connect(url, { msgpack }), 10000, 'connect');
      return client;
    }),
  );
  const all = await within(
    Promise.all(clients.map((client, i) => drive(client, 15, 40, i * 15 * 40))),
    90000,
    'the network submitters',
  );
  all.forEach((answers, i) => assertAllAnswered(answers, seen, i * 15 * 40, 15 * 40));

  const workerAnswers = await within(fromWorker, 90000, 'the worker client');
  assert.ok(Array.isArray(workerAnswers), `the worker failed: ${workerAnswers.error}`);
  assert.equal(workerAnswers.length, 400);
  for (const [n, status, data] of workerAnswers) {
    assert.equal(status, 'success');
    assert.equal(data, n);
    assert.equal(seen.get(n), 1);
  }
});

test('stop() during traffic: each packet answered once, the ones in flight PF503, no hang', async (t) => {
  for (const onNetwork of [false, true]) {
    const server = new Reactor({ name: `stress-stop-${onNetwork}`, maxInflight: 16 });
    const { opened: enough, open: reached } = latch();
    const release = latch();
    let started = 0;
    server.register('df', 'slow', async (n) => {
      started += 1;
      if (started === 20) reached();
      // Half answer on their own (later ticks), half only once released, after the stop.
      if (n % 2 === 0) await new Promise((resolve) => setTimeout(resolve, n % 7));
      else await release.opened;
      return n;
    });
    let target = server;
    let client;
    if (onNetwork) {
      const { url } = await server.listen('127.0.0.1:0');
      client = new Reactor({ name: 'stress-stop-client' });
      await within(client.connect(url), 10000, 'connect');
      target = client;
    }
    const total = 400;
    const answers = new Map();
    const submits = Array.from({ length: total }, (_, n) =>
      target.submit({ group: 'df', element: 'slow', data: n, timeoutMs: 30000 }).then((result) => {
        assert.equal(answers.has(n), false, `packet ${n} answered twice`);
        answers.set(n, result);
      }),
    );
    await within(enough, 20000, 'handlers starting');
    await within(server.stop(), 20000, 'stop');
    release.open();
    await within(Promise.all(submits), 20000, 'the answers after stop');
    assert.equal(answers.size, total);
    let stopped = 0;
    for (const [n, result] of answers) {
      if (result.status === 'success') {
        assert.equal(result.data, n);
      } else {
        assert.equal(result.error.code, 'PF503', `packet ${n}: ${result.error.code} ${result.error.message}`);
        stopped += 1;
      }
    }
    assert.ok(stopped > 0, 'the stop found packets in flight');
    // A submit after the stop is answered PF503 at once.
    const late = await within(server.submit({ group: 'df', element: 'slow', data: -1 }), 5000, 'a late submit');
    assert.equal(late.error.code, 'PF503');
    if (client) await within(client.stop(), 20000, 'client stop');
  }
});
