'use strict';
// In-process round trips: async and sync handlers, ctx, results, stats.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor, PacketFlowError, Context } = require('..');
const { within, latch } = require('./helpers');

test('async handler round trip resolves to a camelCase Result', async () => {
  const r = new Reactor({ name: 'rt' });
  r.register('df', 'transform', async (data) => data.toUpperCase());
  const result = await within(r.submit({ group: 'df', element: 'transform', data: 'hello world' }), 5000);
  assert.equal(result.status, 'success');
  assert.equal(result.data, 'HELLO WORLD');
  assert.equal(result.error, null);
  assert.equal(typeof result.packetId, 'string');
  assert.match(result.packetId, /^[0-9a-f-]{36}$/);
  assert.equal(typeof result.durationMs, 'number');
  assert.deepEqual(Object.keys(result), ['packetId', 'status', 'data', 'error', 'durationMs']);
  await r.stop();
});

test('sync handler round trip, and call() resolves to the data', async () => {
  const r = new Reactor();
  r.register('cf', 'double', (n) => n * 2);
  assert.equal(await within(r.call({ group: 'cf', element: 'double', data: 21 }), 5000), 42);
  assert.equal(await within(r.call('cf', 'double', 4), 5000), 8, 'positional form');
  const res = await r.submit('cf', 'double', 5, { priority: 9 });
  assert.equal(res.data, 10);
  await r.stop();
});

test('a handler returning nothing answers null', async () => {
  const r = new Reactor();
  r.register('ed', 'sink', () => {});
  r.register('ed', 'async-sink', async () => {});
  assert.equal(await r.call('ed', 'sink', 1), null);
  assert.equal(await r.call('ed', 'async-sink', 1), null);
  await r.stop();
});

test('values round trip unchanged', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (data) => data);
  const values = [
    null,
    true,
    false,
    0,
    -7,
    3.5,
    2 ** 53,
    -(2 ** 53),
    1e300,
    '',
    'héllo ✓ 𝄞',
    [],
    {},
    [1, 'two', [3, [4]], { five: 5 }],
    { nested: { deep: { list: [null, { x: 'y' }] } }, 'odd key': 1, 7: 'seven' },
  ];
  for (const value of values) {
    assert.deepEqual(await r.call('df', 'echo', value), value, JSON.stringify(value));
  }
  const order = await r.call('df', 'echo', { b: 1, a: 2, 10: 'x', 2: 'y' });
  assert.deepEqual(Object.keys(order), Object.keys({ b: 1, a: 2, 10: 'x', 2: 'y' }), 'key order as JSON.stringify');
  await r.stop();
});

test('values follow JSON.stringify: undefined dropped in objects, null in arrays, toJSON used, -0 is 0', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (data) => data);
  assert.deepEqual(await r.call('df', 'echo', { a: 1, gone: undefined }), { a: 1 });
  assert.deepEqual(await r.call('df', 'echo', [1, undefined, 3]), [1, null, 3]);
  assert.equal(await r.call('df', 'echo', undefined), null);
  const date = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  assert.equal(await r.call('df', 'echo', date), date.toISOString());
  assert.deepEqual(await r.call('df', 'echo', { when: date }), { when: date.toISOString() });
  assert.deepEqual(await r.call('df', 'echo', Buffer.from([1, 2])), { type: 'Buffer', data: [1, 2] });
  assert.ok(Object.is(await r.call('df', 'echo', -0), 0));
  class Point {
    constructor() {
      this.x = 1;
      this.y = 2;
    }
  }
  assert.deepEqual(await r.call('df', 'echo', new Point()), { x: 1, y: 2 });
  const hidden = Object.defineProperty({ shown: 1 }, 'hidden', { value: 2, enumerable: false });
  assert.deepEqual(await r.call('df', 'echo', hidden), { shown: 1 });
  assert.deepEqual(await r.call('df', 'echo', { [Symbol('s')]: 1, k: 2 }), { k: 2 }, 'symbol keys skipped');
  await r.stop();
});

test('a "__proto__" key comes back as an own property, not a prototype', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (data) => data);
  const input = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}');
  const out = await r.call('df', 'echo', input);
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
  assert.equal(out.polluted, undefined);
  assert.deepEqual(Object.keys(out), ['__proto__', 'a']);
  assert.deepEqual(Object.getOwnPropertyDescriptor(out, '__proto__').value, { polluted: true });
  await r.stop();
});

test('ctx gives packet id, metadata, remaining time and trace id', async () => {
  const r = new Reactor();
  let seen;
  r.register('mc', 'inspect', (data, ctx) => {
    seen = { ctx, id: ctx.packetId, meta: ctx.metadata, remaining: ctx.remainingMs, trace: ctx.traceId };
    return 'ok';
  });
  const res = await r.submit({
    group: 'mc',
    element: 'inspect',
    id: 'packet-1',
    timeoutMs: 5000,
    metadata: { tenant: 'acme' },
  });
  assert.equal(res.status, 'success');
  assert.ok(seen.ctx instanceof Context);
  assert.equal(seen.id, 'packet-1');
  assert.equal(res.packetId, 'packet-1');
  assert.deepEqual(seen.meta, { tenant: 'acme' });
  assert.ok(seen.remaining > 0 && seen.remaining <= 5000, `remaining ${seen.remaining}`);
  assert.equal(seen.trace, 'packet-1', 'a packet that starts a trace is its own trace id');
  await r.stop();
});

test('ctx.call reaches another handler and passes on the trace id', async () => {
  const r = new Reactor();
  const traces = [];
  r.register('df', 'inner', (data, ctx) => {
    traces.push(ctx.traceId);
    return data + 1;
  });
  r.register('df', 'outer', async (data, ctx) => {
    const a = await ctx.call('df', 'inner', data);
    const b = await ctx.call('df', 'inner', a);
    return b * 10;
  });
  const res = await within(r.submit({ group: 'df', element: 'outer', data: 1, id: 'root-7' }), 5000);
  assert.equal(res.data, 30);
  assert.deepEqual(traces, ['root-7', 'root-7']);
  await r.stop();
});

test('ctx.call failures reject with PacketFlowError and can be passed on', async () => {
  const r = new Reactor();
  r.register('df', 'outer', async (data, ctx) => {
    try {
      await ctx.call('df', 'missing', data);
    } catch (error) {
      assert.ok(error instanceof PacketFlowError);
      assert.equal(error.code, 'PF001');
      throw error;
    }
    return 'unreachable';
  });
  const res = await r.submit('df', 'outer', 1);
  assert.equal(res.error.code, 'PF001', 'a rethrown PacketFlowError keeps its code');
  await r.stop();
});

test("ctx.call after the handler answered rejects with the core's PF503", async () => {
  const r = new Reactor();
  let kept;
  let innerRuns = 0;
  r.register('df', 'leak', (data, ctx) => {
    kept = ctx;
    return 1;
  });
  r.register('df', 'inner', () => {
    innerRuns += 1;
    return 2;
  });
  const late = { name: 'PacketFlowError', code: 'PF503', message: 'ctx.call to df:inner after the handler answered; call before returning' };
  await r.call('df', 'leak', null);
  await assert.rejects(kept.call('df', 'inner', null), late);

  // A handler still running when its packet ended (PF408): the core refuses
  // the call in the same words, and no child packet is made.
  const { opened: ended, open: end } = latch();
  const { opened: called, open: call } = latch();
  r.register('df', 'slow', async (data, ctx) => {
    await ended;
    try {
      await ctx.call('df', 'inner', null);
      call(null);
    } catch (error) {
      call(error);
    }
  });
  const result = await r.submit({ group: 'df', element: 'slow', timeoutMs: 20 });
  assert.equal(result.error.code, 'PF408');
  end();
  const error = await within(called, 5000, 'the late ctx.call');
  assert.ok(error instanceof PacketFlowError);
  assert.deepEqual({ code: error.code, message: error.message }, { code: late.code, message: late.message });
  assert.equal(innerRuns, 0, 'no child packet was made');
  await r.stop();
});

test('1,000 concurrent submits are all answered, in async and sync handlers', async () => {
  const r = new Reactor({ name: 'many' });
  r.register('df', 'async', async (n) => {
    await null;
    return n * 2;
  });
  r.register('df', 'sync', (n) => n + 1);
  const submits = [];
  for (let i = 0; i < 1000; i++) {
    submits.push(r.submit({ group: 'df', element: i % 2 ? 'async' : 'sync', data: i }));
  }
  const results = await within(Promise.all(submits), 20000, '1,000 submits');
  results.forEach((res, i) => {
    assert.equal(res.status, 'success', `packet ${i}: ${res.error && res.error.message}`);
    assert.equal(res.data, i % 2 ? i * 2 : i + 1);
  });
  assert.equal(new Set(results.map((x) => x.packetId)).size, 1000);
  const stats = r.stats();
  const counts = Object.fromEntries(stats.handlers.map((h) => [h.element, h.count]));
  assert.deepEqual(counts, { async: 500, sync: 500 });
  await r.stop();
});

test('handlers run on the JS thread, never inside submit()', async () => {
  const r = new Reactor();
  let inSubmit = false;
  let ranInside = false;
  r.register('df', 'probe', () => {
    ranInside = ranInside || inSubmit;
    return 1;
  });
  inSubmit = true;
  const pending = r.submit('df', 'probe', null);
  inSubmit = false;
  await pending;
  assert.equal(ranInside, false);
  await r.stop();
});

test('priority decides which waiting packet runs first', async () => {
  const r = new Reactor({ maxInflight: 1 });
  const release = latch();
  const order = [];
  r.register('df', 'gate', () => release.opened);
  r.register('df', 'log', (name) => {
    order.push(name);
    return name;
  });
  const gate = r.submit('df', 'gate', null);
  const waiting = [
    r.submit({ group: 'df', element: 'log', data: 'low', priority: 1 }),
    r.submit({ group: 'df', element: 'log', data: 'default' }),
    r.submit({ group: 'df', element: 'log', data: 'urgent', priority: 10 }),
  ];
  release.open('open');
  await within(Promise.all([gate, ...waiting]), 5000);
  assert.deepEqual(order, ['urgent', 'default', 'low']);
  await r.stop();
});

test('stats() reports handlers, counts, errors and latencies', async () => {
  const r = new Reactor({ name: 'stats' });
  r.register('rm', 'ok', () => 1);
  r.register('rm', 'bad', () => {
    throw new Error('no');
  });
  await r.submit('rm', 'ok', null);
  await r.submit('rm', 'ok', null);
  await r.submit('rm', 'bad', null);
  await r.submit('rm', 'absent', null);
  const s = r.stats();
  assert.equal(s.name, 'stats');
  assert.equal(s.inFlight, 0);
  assert.equal(s.queued, 0);
  assert.equal(s.unrouted, 1);
  const byName = Object.fromEntries(s.handlers.map((h) => [h.element, h]));
  assert.equal(byName.ok.count, 2);
  assert.equal(byName.ok.errors, 0);
  assert.equal(byName.bad.errors, 1);
  assert.equal(byName.ok.group, 'rm');
  assert.ok(byName.ok.p50Us > 0 && byName.ok.p99Us >= byName.ok.p50Us);
  assert.ok(Array.isArray(byName.ok.latencyBuckets[0]));
  await r.stop();
});

test('register replaces, unregister removes', async () => {
  const r = new Reactor();
  r.register('co', 'v', () => 1);
  assert.equal(await r.call('co', 'v', null), 1);
  r.register('co', 'v', () => 2);
  assert.equal(await r.call('co', 'v', null), 2);
  assert.equal(r.unregister('co', 'v'), true);
  assert.equal(r.unregister('co', 'v'), false);
  await assert.rejects(r.call('co', 'v', null), { code: 'PF001' });
  await r.stop();
});

test('a packet runs the registration it was routed to, even when replaced or removed on its way', async () => {
  const r = new Reactor();
  r.register('co', 'w', () => 'first');
  // submit hands the packet to the bridge at once; JS runs it on a later
  // turn, after the registration below changed.
  const routed = r.call('co', 'w', null);
  r.register('co', 'w', () => 'second');
  assert.equal(await routed, 'first');
  const routedAgain = r.call('co', 'w', null);
  assert.equal(r.unregister('co', 'w'), true);
  assert.equal(await routedAgain, 'second', 'no code of its own for "unregistered on its way"');
  await assert.rejects(r.call('co', 'w', null), { code: 'PF001' });
  await r.stop();
});

test('name, stopped, and stop() is idempotent', async () => {
  const r = new Reactor({ name: 'n1' });
  assert.equal(r.name, 'n1');
  assert.equal(r.stopped, false);
  await r.stop();
  assert.equal(r.stopped, true);
  await within(r.stop(), 2000);
});

test('ES module import gives the same API', async () => {
  const esm = await import('packetflow');
  assert.equal(esm.Reactor, Reactor);
  assert.equal(esm.PacketFlowError, PacketFlowError);
  assert.equal(esm.default.Reactor, Reactor);
});

test('handlers that never answer do not pile up after their deadline', async () => {
  const r = new Reactor({ maxInflight: 5000 });
  r.register('df', 'never', () => new Promise(() => {}));
  r.register('df', 'ok', () => 'ok');
  const submits = [];
  for (let i = 0; i < 3000; i++) submits.push(r.submit({ group: 'df', element: 'never', timeoutMs: 50 }));
  const results = await within(Promise.all(submits), 10000);
  assert.ok(results.every((x) => x.error && x.error.code === 'PF408'));
  assert.equal(r.stats().inFlight, 0);
  // The reactor keeps serving afterwards.
  assert.equal(await r.call('df', 'ok', null), 'ok');
  await r.stop();
});
