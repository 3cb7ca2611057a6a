'use strict';
// Integers beyond 2^53 are never silently changed: from the wire they arrive
// as exact BigInts, BigInts within 64 bits cross as exact integers, and a
// BigInt beyond that is a RangeError naming its path.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor, PacketFlowError } = require('..');
const { countingEcho, within } = require('./helpers');

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;
const SAFE = Number.MAX_SAFE_INTEGER; // 2^53 - 1

/** Exact integers beyond the safe range: they come back as these BigInts. */
const BIG = [2n ** 53n, -(2n ** 53n), 2n ** 53n + 1n, -(2n ** 53n) - 1n, I64_MIN, I64_MAX, U64_MAX, 2n ** 63n];

/** [sent, expected back]: safe integers are numbers whichever way they were sent. */
const CASES = [
  [SAFE, SAFE],
  [-SAFE, -SAFE],
  [BigInt(SAFE), SAFE],
  [-BigInt(SAFE), -SAFE],
  [0n, 0],
  [-5n, -5],
  ...BIG.map((b) => [b, b]),
  // A number beyond the safe range is a double: it stays the float it is.
  [2 ** 53, 2 ** 53],
  [2 ** 64, 2 ** 64],
  [-(2 ** 63), -(2 ** 63)],
];

/** The cases, each alone and all nested in an object and an array. */
function values() {
  const nested = {
    list: CASES.map(([sent]) => sent),
    deep: { max: I64_MAX, min: I64_MIN, u: U64_MAX, mixed: [1, 'two', { three: 2n ** 53n + 1n }] },
  };
  const expected = {
    list: CASES.map(([, back]) => back),
    deep: { max: I64_MAX, min: I64_MIN, u: U64_MAX, mixed: [1, 'two', { three: 2n ** 53n + 1n }] },
  };
  return [...CASES, [nested, expected]];
}

/** What a handler saw: each leaf's type and exact value, as text. */
function describe(value) {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number') return `${value}`;
  if (Array.isArray(value)) return value.map(describe);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, describe(v)]));
  return value;
}

/** Checks every case through `call(data)`, an echo of `data`. */
async function roundTrips(call, what) {
  for (const [sent, back] of values()) {
    const got = await call(sent);
    // deepStrictEqual tells 5 from 5n, and BigInts by value.
    assert.deepEqual(got, back, `${what}: ${describe(sent)} came back as ${JSON.stringify(describe(got))}`);
  }
}

function rangeError(path, shown) {
  return (error) => {
    assert.ok(error instanceof RangeError, `expected a RangeError, got ${error && error.stack}`);
    assert.equal(
      error.message,
      `${path}: BigInt ${shown} is outside the range of 64-bit integers (-9223372036854775808 to 18446744073709551615)`,
    );
    return true;
  };
}

test('integers round trip exactly through a handler in-process', async () => {
  const r = new Reactor();
  const seen = [];
  r.register('df', 'echo', (d) => {
    seen.push(d);
    return d;
  });
  await roundTrips((d) => r.call('df', 'echo', d), 'call');
  await roundTrips(async (d) => (await r.submit({ group: 'df', element: 'echo', data: d })).data, 'submit');
  // The handler itself got the exact values, BigInts beyond the safe range.
  assert.equal(seen[CASES.findIndex(([s]) => s === U64_MAX)], U64_MAX);
  assert.equal(typeof seen[0], 'number');
  await r.stop();
});

test('metadata and ctx.call carry big integers exactly', async () => {
  const r = new Reactor();
  r.register('df', 'inner', (d) => ({ got: d, plusOne: typeof d === 'bigint' ? d + 1n : d + 1 }));
  r.register('df', 'outer', async (d, ctx) => ({
    meta: ctx.metadata,
    inner: await ctx.call('df', 'inner', d),
    inner2: await ctx.call('df', 'inner', I64_MIN),
  }));
  const out = await r.call({ group: 'df', element: 'outer', data: 2n ** 53n, metadata: { tenant: U64_MAX, n: 7n, safe: 3 } });
  assert.deepEqual(out, {
    meta: { tenant: U64_MAX, n: 7, safe: 3 },
    inner: { got: 2n ** 53n, plusOne: 2n ** 53n + 1n },
    inner2: { got: I64_MIN, plusOne: I64_MIN + 1n },
  });
  await r.stop();
});

test('a BigInt beyond 64 bits is a RangeError naming its path', async () => {
  const echo = countingEcho();
  const r = echo.reactor;
  const cases = [
    [2n ** 64n, 'data', '18446744073709551616n'],
    [{ a: [1, U64_MAX + 1n] }, 'data.a[1]', '18446744073709551616n'],
    [[I64_MIN - 1n], 'data[0]', '-9223372036854775809n'],
    [{ 'odd key': -(2n ** 64n) }, 'data["odd key"]', '-18446744073709551616n'],
    [{ huge: 10n ** 100n }, 'data.huge', '10000000000000000000…n (101 digits)'],
  ];
  for (const [data, path, shown] of cases) {
    await assert.rejects(r.call('df', 'echo', data), rangeError(path, shown));
    await assert.rejects(r.submit({ group: 'df', element: 'echo', data }), rangeError(path, shown));
  }
  await assert.rejects(
    r.submit({ group: 'df', element: 'echo', metadata: { k: 2n ** 64n } }),
    rangeError('metadata.k', '18446744073709551616n'),
  );
  assert.equal(echo.ran, 0, 'nothing was submitted');
  // From ctx.call: the same RangeError, which the handler can catch.
  r.register('df', 'outer', async (d, ctx) => {
    try {
      await ctx.call('df', 'echo', { big: [2n ** 64n] });
      return 'no error';
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  });
  assert.match(await r.call('df', 'outer', null), /^RangeError: data\.big\[0\]: BigInt 18446744073709551616n is outside/);
  // In a handler's result: PF500 with the same message, rooted at `result`.
  r.register('df', 'too-big', () => ({ n: [U64_MAX, U64_MAX + 1n] }));
  await assert.rejects(r.call('df', 'too-big', null), (e) => {
    assert.ok(e instanceof PacketFlowError);
    assert.equal(e.code, 'PF500');
    assert.match(e.message, /^result\.n\[1\]: BigInt 18446744073709551616n is outside the range of 64-bit integers/);
    return true;
  });
  await r.stop();
});

for (const msgpack of [false, true]) {
  test(`integers round trip exactly over loopback (${msgpack ? 'MessagePack' : 'JSON'})`, async (t) => {
    const server = new Reactor({ name: 'int-server' });
    const client = new Reactor({ name: 'int-client' });
    t.after(() => Promise.all([client.stop(), server.stop()]));
    server.register('df', 'echo', (d) => d);
    server.register('df', 'meta', (d, ctx) => ctx.metadata);
    client.register('cf', 'client-echo', (d) => d);
    const bound = await within(server.listen('127.0.0.1:0'), 5000, 'listen');
    await within(client.connect(bound.url, { msgpack }), 5000, 'connect');
    // client → server's handler → back, and server → client's handler → back.
    await roundTrips((d) => within(client.call('df', 'echo', d), 5000), 'client to server');
    await roundTrips((d) => within(server.call('cf', 'client-echo', d), 5000), 'server to client');
    const meta = await within(client.call({ group: 'df', element: 'meta', metadata: { id: I64_MAX, u: U64_MAX } }), 5000);
    // (The core adds routing keys of its own, such as the hop count.)
    assert.deepEqual({ id: meta.id, u: meta.u }, { id: I64_MAX, u: U64_MAX });
  });
}
