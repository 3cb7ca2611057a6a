'use strict';
// The standard library (docs/stdlib.md) from Node.js: the `stdlib` option of
// `new Reactor` hosts the chosen elements; the core parses the patterns and
// runs the elements, and a user's handler of the same key always wins.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor, PacketFlowError } = require('..');
const { within, aborted } = require('./helpers');

const T = { timeout: 30000 };

const UPPER_THEN_SHOUT = {
  steps: [{ group: 'df', element: 'upper' }, { group: 'df', element: 'shout' }],
  input: 'hi',
};

/** A reactor with the steps' handlers, stopped when the test ends. */
function reactor(t, options) {
  const r = new Reactor(options);
  t.after(() => r.stop());
  r.register('df', 'upper', (text) => text.toUpperCase());
  r.register('df', 'shout', async (text) => `${text}!`);
  return r;
}

/** Asserts `error` is a PacketFlowError with `code` (and a message matching `message`). */
function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

test('an enabled element runs its steps on JS handlers', T, async (t) => {
  const r = reactor(t, { stdlib: 'cf:*,df:*' });
  assert.deepEqual(await r.call('cf', 'seq', UPPER_THEN_SHOUT), { value: 'HI!', steps: 2 });
  const items = { items: ['a', 'b'], fn: { group: 'df', element: 'upper' } };
  assert.deepEqual(await r.call('df', 'transform', items), ['A', 'B']);
  assert.equal(await r.call('df', 'reduce', { items: [1, 2, 3], op: 'sum' }), 6);
});

test('an element not enabled is PF001', T, async (t) => {
  for (const stdlib of [undefined, '', 'df:*']) {
    const r = reactor(t, stdlib === undefined ? {} : { stdlib });
    await assert.rejects(r.call('cf', 'seq', UPPER_THEN_SHOUT), isPf('PF001', /no handler for cf:seq/), String(stdlib));
  }
});

test('a bad pattern is PF400 naming it; a value that is not a string is a TypeError', () => {
  assert.throws(() => new Reactor({ stdlib: 'cf:sqe' }), isPf('PF400', /^stdlib\[0\] "cf:sqe": no standard element matches it/));
  assert.throws(() => new Reactor({ stdlib: 'cf:*,zz:seq' }), isPf('PF400', /^stdlib\[1\] "zz:seq": not a group/));
  assert.throws(() => new Reactor({ stdlib: /** @type {any} */ (['cf:*']) }), {
    name: 'TypeError',
    message: 'stdlib must be a string, got array',
  });
});

test("a user's handler of the key wins until it goes", T, async (t) => {
  const r = reactor(t, { stdlib: 'cf:seq' });
  r.register('cf', 'seq', () => "the user's seq");
  assert.equal(await r.call('cf', 'seq', UPPER_THEN_SHOUT), "the user's seq");
  assert.equal(r.unregister('cf', 'seq'), true);
  assert.deepEqual(await r.call('cf', 'seq', UPPER_THEN_SHOUT), { value: 'HI!', steps: 2 });
});

test('co:gather cancels the slowest call: its ctx.signal aborts', T, async (t) => {
  const r = reactor(t, { stdlib: 'co:*' });
  /** @type {AbortSignal | undefined} */
  let stalled;
  let started;
  const running = new Promise((resolve) => (started = resolve));
  r.register('df', 'stall', (data, ctx) => {
    stalled = ctx.signal;
    started();
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve('never cancelled'), 30000);
      ctx.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
    });
  });
  r.register('df', 'fast', async () => {
    await within(running, 5000, 'the stalling call');
    return 'fast';
  });
  const calls = [{ group: 'df', element: 'stall' }, { group: 'df', element: 'fast' }];
  const result = await r.call('co', 'gather', { calls, min: 1 });
  assert.deepEqual(result, [{ ok: false, cancelled: true }, { ok: true, value: 'fast' }]);
  const reason = await aborted(/** @type {AbortSignal} */ (stalled), 5000, 'the stalled call');
  assert.ok(isPf('PF499', /was cancelled/)(reason));
});
