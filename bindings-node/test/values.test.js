'use strict';
// Bad values and bad arguments: a TypeError naming the type and where it was.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor } = require('..');
const { countingEcho } = require('./helpers');

function typeError(message) {
  return (error) => {
    assert.ok(error instanceof TypeError, `expected a TypeError, got ${error && error.stack}`);
    assert.equal(error.message, message);
    return true;
  };
}

test('values that are not JSON-shaped raise a TypeError with type and path', async () => {
  const echo = countingEcho();
  const r = echo.reactor;
  const cases = [
    [{ a: [1, 2, () => 1] }, 'data.a[2]: Function is not JSON-serializable'],
    [class {}, 'data: Function is not JSON-serializable'],
    [{ f: () => 1 }, 'data.f: Function is not JSON-serializable'],
    [[Symbol('s')], 'data[0]: Symbol is not JSON-serializable'],
    [{ n: NaN }, 'data.n: NaN is not JSON-serializable'],
    [{ deep: { x: [Infinity] } }, 'data.deep.x[0]: Infinity is not JSON-serializable'],
    [[-Infinity], 'data[0]: -Infinity is not JSON-serializable'],
    [{ 'odd key': { 'a-b': Symbol.iterator } }, 'data["odd key"]["a-b"]: Symbol is not JSON-serializable'],
  ];
  for (const [data, message] of cases) {
    await assert.rejects(r.submit({ group: 'df', element: 'echo', data }), typeError(message));
    await assert.rejects(r.call('df', 'echo', data), typeError(message));
  }
  assert.equal(echo.ran, 0, 'nothing was submitted');
  await r.stop();
});

test('circular references are refused, naming where the cycle closes', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (d) => d);
  const self = { name: 'loop' };
  self.self = self;
  await assert.rejects(
    r.call('df', 'echo', self),
    typeError('data.self: circular reference (Object) is not JSON-serializable (it refers back to data)'),
  );
  const list = [1];
  const holder = { inner: { list } };
  list.push(holder);
  await assert.rejects(
    r.call('df', 'echo', holder),
    typeError('data.inner.list[1]: circular reference (Object) is not JSON-serializable (it refers back to data)'),
  );
  const arr = [];
  arr.push({ back: arr });
  await assert.rejects(
    r.call('df', 'echo', { arr }),
    typeError('data.arr[0].back: circular reference (Array) is not JSON-serializable (it refers back to data.arr)'),
  );
  // The same object twice, not nested in itself, is fine (as in JSON.stringify).
  const shared = { v: 1 };
  assert.deepEqual(await r.call('df', 'echo', { a: shared, b: shared }), { a: { v: 1 }, b: { v: 1 } });
  await r.stop();
});

test('metadata must be a JSON object', async () => {
  const r = new Reactor();
  r.register('df', 'x', () => 1);
  // JSON-shaped but not an object: the core's rule and words (PF400).
  await assert.rejects(r.submit({ group: 'df', element: 'x', metadata: [1] }), { name: 'PacketFlowError', code: 'PF400', message: 'metadata must be an object, got an array' });
  // Not JSON-shaped: the conversion's TypeError.
  await assert.rejects(r.submit({ group: 'df', element: 'x', metadata: { k: NaN } }), typeError('metadata.k: NaN is not JSON-serializable'));
  await r.stop();
});

test('a getter or toJSON that throws rejects with what it threw', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (d) => d);
  const boom = new Error('getter boom');
  const data = {
    get bad() {
      throw boom;
    },
  };
  await assert.rejects(r.call('df', 'echo', data), (e) => e === boom);
  r.register('df', 'bad-result', () => ({
    toJSON() {
      throw new Error('toJSON boom');
    },
  }));
  await assert.rejects(r.call('df', 'bad-result', null), { code: 'PF500', message: 'toJSON boom' });
  await r.stop();
});

test('nesting beyond the limit is refused, not a crash', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (d) => d);
  let deep = 1;
  for (let i = 0; i < 10000; i++) deep = [deep];
  await assert.rejects(r.call('df', 'echo', deep), (e) => e instanceof TypeError && /nesting deeper than 512 levels/.test(e.message));
  let ok = 1;
  for (let i = 0; i < 500; i++) ok = { k: ok };
  assert.ok(await r.call('df', 'echo', ok));
  await r.stop();
});

test('bad arguments of the wrong JS type raise TypeErrors naming the argument', async () => {
  const r = new Reactor();
  r.register('df', 'x', () => 1);
  await assert.rejects(r.submit(null), typeError('packet must be an object, got null'));
  await assert.rejects(r.call('df', 'x', 1, 'opts'), typeError('options must be an object, got string'));
  assert.throws(() => r.register('df', 'x', 'not a function'), typeError('handler must be a function, got string'));
  assert.throws(() => r.register('df', 5, () => 1), typeError('element must be a string, got number'));
  assert.throws(() => new Reactor({ name: 1 }), typeError('name must be a string, got number'));
  assert.throws(() => new Reactor({ busyPollUs: -1 }), typeError('busyPollUs must be an integer from 0 to 4294967295, got -1'));
  assert.throws(() => new Reactor({ maxQueue: 1.5 }), typeError('maxQueue must be an integer from 0 to 4294967295, got 1.5'));
  assert.throws(() => new Reactor({ maxInFlight: 1 }), (e) => e instanceof TypeError && /unknown option "maxInFlight"/.test(e.message));
  await r.stop();
});

test("packet fields and option values are the core's to judge: PF400 in its words", async () => {
  const r = new Reactor();
  r.register('df', 'x', () => 1);
  const pf400 = (message) => ({ name: 'PacketFlowError', code: 'PF400', message });
  const cases = [
    [['df'], 'element is required'],
    [[{ group: 5, element: 'x' }], 'group must be one of cf, df, ed, co, mc, rm, got 5'],
    [[{ group: () => 1, element: 'x' }], 'group must be one of cf, df, ed, co, mc, rm, got a function'],
    [[{ group: 'df', element: Buffer.from('x') }], 'element must be 1-64 characters of [A-Za-z0-9_.-], got binary data'],
    [[{ group: 'df', element: 'x', priority: 'high' }], 'priority must be an integer 1-10, got "high"'],
    [[{ group: 'df', element: 'x', priority: 2.5 }], 'priority must be an integer 1-10, got 2.5'],
    [[{ group: 'df', element: 'x', priority: 1n << 200n }], 'priority must be an integer 1-10, got a BigInt beyond 128 bits'],
    [[{ group: 'df', element: 'x', timeoutMs: -5 }], 'timeout_ms must be a positive integer <= 86400000, got -5'],
    [[{ group: 'df', element: 'x', id: 7 }], 'id must be a string of 1-128 bytes, got 7'],
    [[{ group: 'df', element: 'x', dependencies: 'a' }], 'dependencies must be an array of packet ids, got "a"'],
    [[{ group: 'df', element: 'x', dependencies: ['a', 2] }], 'dependencies[1] must be a packet id string, got 2'],
    [[{ group: 'df', element: 'x', dependencies: ['a', ['b']] }], 'dependencies[1] must be a packet id string, got an array'],
  ];
  for (const [args, message] of cases) {
    await assert.rejects(r.submit(...args), pf400(message), message);
  }
  // A BigInt is an exact integer, and null is the default, as on the wire.
  assert.equal((await r.submit({ group: 'df', element: 'x', priority: 5n, id: null })).status, 'success');
  assert.throws(() => new Reactor({ maxInflight: 0 }), pf400('maxInflight must be at least 1, got 0'));
  await r.stop();
});

test('ids and element names are read whole at every length and width (short and long paths)', async () => {
  // A field's string up to 59 bytes is read into a stack buffer, a longer
  // one into the heap: both sides of that edge, with 1- to 4-byte characters.
  const r = new Reactor();
  const pf400 = (message) => ({ name: 'PacketFlowError', code: 'PF400', message });
  const bytes = (s) => Buffer.byteLength(s, 'utf8');
  for (const piece of ['i', 'é', '✓', '𝄞']) {
    for (let n = 1; bytes(piece.repeat(n)) <= 132; n++) {
      const id = piece.repeat(n);
      if (bytes(id) <= 128) {
        const result = await r.submit({ group: 'df', element: 'none', id });
        assert.equal(result.packetId, id, `${JSON.stringify(piece)} x ${n}`);
      } else {
        const message = `id must be a string of 1-128 bytes, got ${bytes(id)} bytes`;
        await assert.rejects(r.submit({ group: 'df', element: 'none', id }), pf400(message));
      }
    }
  }
  for (let n = 1; n <= 65; n++) {
    const element = 'e'.repeat(n);
    if (n <= 64) {
      r.register('df', element, () => n);
      assert.equal(await r.call('df', element, null), n);
    } else {
      const message = `element must be 1-64 characters of [A-Za-z0-9_.-], got "${'e'.repeat(40)}"...`;
      await assert.rejects(r.submit('df', element, null), pf400(message));
    }
  }
  await r.stop();
});

test('ctx.call refuses bad values with a TypeError', async () => {
  const r = new Reactor();
  r.register('df', 'inner', (d) => d);
  r.register('df', 'outer', async (d, ctx) => {
    try {
      await ctx.call('df', 'inner', { big: () => 1 });
      return 'no error';
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  });
  assert.equal(await r.call('df', 'outer', null), 'TypeError: data.big: Function is not JSON-serializable');
  await r.stop();
});

test('strings of every length and width round trip (short and long paths)', async () => {
  const r = new Reactor();
  r.register('df', 'echo', (d) => d);
  const pieces = ['a', 'é', '✓', '𝄞'];
  for (const piece of pieces) {
    for (let n = 0; n <= 70; n++) {
      const s = piece.repeat(n);
      assert.equal(await r.call('df', 'echo', s), s, `${JSON.stringify(piece)} x ${n}`);
      assert.deepEqual(await r.call('df', 'echo', { [s]: s }), { [s]: s });
    }
  }
  const mixed = 'x'.repeat(58) + '𝄞' + 'y';
  assert.equal(await r.call('df', 'echo', mixed), mixed);
  assert.equal(await r.call('df', 'echo', '\ud800'), '\ufffd', 'a lone surrogate becomes U+FFFD');
  const long = 'long ✓ '.repeat(10000);
  assert.equal(await r.call('df', 'echo', long), long);
  await r.stop();
});
