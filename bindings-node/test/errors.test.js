'use strict';
// Every error code a user can meet in-process, surfaced with its code, both
// as a Result (submit) and as a rejection (call).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Reactor, PacketFlowError } = require('..');
const { within, latch } = require('./helpers');

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error}`);
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'PacketFlowError');
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  };
}

test('PF001: no handler', async () => {
  const r = new Reactor();
  const res = await r.submit({ group: 'df', element: 'nobody' });
  assert.equal(res.status, 'error');
  assert.equal(res.data, null);
  isPf('PF001', /no handler for df:nobody/)(res.error);
  await assert.rejects(r.call('df', 'nobody', 1), isPf('PF001'));
  await r.stop();
});

test('PF500: a throw, a rejection and a non-Error throw carry the message', async () => {
  const r = new Reactor();
  r.register('df', 'throws', () => {
    throw new Error('sync boom');
  });
  r.register('df', 'rejects', async () => {
    throw new TypeError('async boom');
  });
  r.register('df', 'throws-string', () => {
    throw 'just a string';
  });
  r.register('df', 'rejects-later', () => new Promise((_, reject) => setImmediate(() => reject(new Error('later')))));
  const sync = await r.submit('df', 'throws', null);
  isPf('PF500', /^sync boom$/)(sync.error);
  await assert.rejects(r.call('df', 'rejects', null), isPf('PF500', /^async boom$/));
  await assert.rejects(r.call('df', 'throws-string', null), isPf('PF500', /^just a string$/));
  await assert.rejects(r.call('df', 'rejects-later', null), isPf('PF500', /^later$/));
  await r.stop();
});

test('PF500: a handler result that is not JSON-shaped names the type and path', async () => {
  const r = new Reactor();
  r.register('df', 'bigint', () => ({ list: [1, 2n ** 64n] }));
  r.register('df', 'fn', async () => ({ f() {} }));
  await assert.rejects(
    r.call('df', 'bigint', null),
    isPf('PF500', /^result\.list\[1\]: BigInt 18446744073709551616n is outside the range of 64-bit integers \(-9223372036854775808 to 18446744073709551615\)$/),
  );
  await assert.rejects(r.call('df', 'fn', null), isPf('PF500', /^result\.f: Function is not JSON-serializable$/));
  await r.stop();
});

test('PF408: a handler that does not answer in time', async () => {
  const r = new Reactor();
  const release = latch();
  r.register('df', 'slow', () => release.opened);
  const started = Date.now();
  const res = await within(r.submit({ group: 'df', element: 'slow', timeoutMs: 100 }), 5000);
  isPf('PF408')(res.error);
  assert.ok(Date.now() - started >= 90, 'answered at the deadline, not before');
  await assert.rejects(r.call({ group: 'df', element: 'slow', timeoutMs: 50 }), isPf('PF408'));
  release.open('late');
  await r.stop();
});

test('PF409: a packet id already in flight', async () => {
  const r = new Reactor();
  const release = latch();
  r.register('df', 'hold', () => release.opened);
  const first = r.submit({ group: 'df', element: 'hold', id: 'same-id' });
  const second = await within(r.submit({ group: 'df', element: 'hold', id: 'same-id' }), 5000);
  isPf('PF409', /same-id/)(second.error);
  release.open('done');
  assert.equal((await first).data, 'done');
  await r.stop();
});

test('PF424: a dependency that failed', async () => {
  const r = new Reactor();
  r.register('df', 'fail', () => {
    throw new Error('dep failed');
  });
  r.register('df', 'ok', () => 'ran');
  const dep = await r.submit({ group: 'df', element: 'fail', id: 'dep-1' });
  assert.equal(dep.error.code, 'PF500');
  const res = await r.submit({ group: 'df', element: 'ok', dependencies: ['dep-1'] });
  isPf('PF424', /dep-1/)(res.error);
  // A dependency that succeeded lets the packet run.
  await r.submit({ group: 'df', element: 'ok', id: 'dep-2' });
  assert.equal((await r.submit({ group: 'df', element: 'ok', dependencies: ['dep-2'] })).data, 'ran');
  await r.stop();
});

test('PF424: a packet waits for its dependency, and fails with it', async () => {
  const r = new Reactor();
  const release = latch();
  r.register('df', 'gate', async () => {
    await release.opened;
    throw new Error('gate closed');
  });
  r.register('df', 'after', () => 'ran');
  const gate = r.submit({ group: 'df', element: 'gate', id: 'gate-1' });
  const after = r.submit({ group: 'df', element: 'after', dependencies: ['gate-1'] });
  release.open();
  assert.equal((await gate).error.code, 'PF500');
  isPf('PF424')((await within(after, 5000)).error);
  await r.stop();
});

test('PF429: queue full', async () => {
  const r = new Reactor({ maxInflight: 1, maxQueue: 1 });
  const release = latch();
  r.register('df', 'hold', () => release.opened);
  const running = r.submit('df', 'hold', 1);
  const queued = r.submit('df', 'hold', 2);
  const refused = await within(r.submit('df', 'hold', 3), 5000);
  isPf('PF429', /queue is full/)(refused.error);
  release.open('ok');
  assert.equal((await running).data, 'ok');
  assert.equal((await queued).data, 'ok');
  await r.stop();
});

test('PF503: stop answers packets in flight, and later submits', async () => {
  const r = new Reactor();
  const never = latch();
  r.register('df', 'hang', () => never.opened);
  const pending = r.submit('df', 'hang', null);
  const pendingCall = r.call('df', 'hang', null);
  await within(r.stop(), 5000, 'stop');
  isPf('PF503')((await within(pending, 1000)).error);
  await assert.rejects(pendingCall, isPf('PF503'));
  isPf('PF503', /stopped/)((await r.submit('df', 'hang', null)).error);
  await assert.rejects(r.call('df', 'hang', null), isPf('PF503'));
  never.open();
});

test('PF400: a packet that breaks a protocol rule is refused before submission', async () => {
  const r = new Reactor();
  r.register('df', 'x', () => 1);
  await assert.rejects(r.submit({ group: 'zz', element: 'x' }), isPf('PF400', /^group must be one of cf, df, ed, co, mc, rm, got "zz"$/));
  await assert.rejects(r.submit({ group: 'df', element: 'bad element' }), isPf('PF400', /^element must be/));
  await assert.rejects(r.submit({ group: 'df', element: 'x', priority: 11 }), isPf('PF400', /^priority must be an integer 1-10, got 11$/));
  await assert.rejects(r.submit({ group: 'df', element: 'x', timeoutMs: 0 }), isPf('PF400', /^timeout_ms must be a positive integer/));
  await assert.rejects(r.submit({ group: 'df', element: 'x', id: '' }), isPf('PF400', /^id must be/));
  await assert.rejects(r.submit({ group: 'df', element: 'x', dependencies: [''] }), isPf('PF400', /^dependencies\[0\] must be/));
  await assert.rejects(r.submit({ group: 'df', element: 'x', metadata: { 'pf.hops': 'x' } }), isPf('PF400', /pf\.hops/));
  assert.throws(() => r.register('xx', 'y', () => 1), isPf('PF400', /group must be/));
  assert.equal(r.stats().inFlight, 0);
  await r.stop();
});

test("index.d.ts's ErrorCode lists exactly the core's codes", () => {
  const { errorCodes } = require(path.join(__dirname, '..', 'packetflow.node'));
  const core = errorCodes();
  assert.ok(core.length >= 12, 'the core lists its codes');
  for (const { code, description } of core) {
    assert.match(code, /^PF\d{3}$/);
    assert.ok(description.length > 0, `${code} has a description`);
  }
  const types = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');
  const union = /export type ErrorCode =([^;]*);/.exec(types);
  assert.ok(union, 'index.d.ts declares ErrorCode');
  const declared = [...union[1].matchAll(/'(PF\d{3})'/g)].map((m) => m[1]);
  assert.deepEqual(declared.slice().sort(), core.map((c) => c.code).sort());
});
