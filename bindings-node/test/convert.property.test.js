'use strict';
// Property tests of the value conversions (src/convert.rs), both ways, on
// values from a seeded generator (PACKETFLOW_SEED=N repeats a run; a failure
// prints its seed and the value):
// - JS → core → JS: random JSON-shaped values go through a reactor to an
//   echo handler (JS → core → JS as the handler's argument) and back as its
//   answer (JS → core → JS again); both must equal the value as the rules of
//   index.d.ts's JsonInput describe it (`undefined` dropped or `null`, `-0`
//   is `0`, a safe-range BigInt a number, a 64-bit one the same BigInt,
//   `toJSON` applied, lone surrogates U+FFFD);
// - core → JS → core: random JSON texts, parsed as the core parses a frame's
//   data, converted to JS and back, must be the same JSON value.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Reactor } = require('..');
// The probe of the core → JS → core direction: not exported by index.js.
const { jsonRoundTrip } = require(path.join(__dirname, '..', 'packetflow.node'));

const SEED = Number(process.env.PACKETFLOW_SEED || Date.now() % 1_000_000);
const CASES = 400;

/** mulberry32: a small seeded generator of floats in [0, 1). */
function generator(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (list) => list[int(list.length)];
  return { next, int, pick };
}

const TWO_53 = 2n ** 53n;
const TWO_63 = 2n ** 63n;
const TWO_64 = 2n ** 64n;
/** BigInts around every edge: the safe range, i64, u64 (and one past each). */
const BIGINT_EDGES = [
  0n, 1n, -1n,
  TWO_53 - 1n, TWO_53, TWO_53 + 1n, -(TWO_53 - 1n), -TWO_53, -(TWO_53 + 1n),
  TWO_63 - 1n, TWO_63, TWO_63 + 1n, -TWO_63, -(TWO_63 - 1n),
  TWO_64 - 1n,
];
const NUMBER_EDGES = [
  0, -0, 1, -1, 0.5, -2.5, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2 ** 53, -(2 ** 53),
  2 ** 63, 2 ** 64, 1e308, -1e308, Number.MIN_VALUE, Number.EPSILON, 1 / 3,
];
/** Code points of every UTF-8 width, controls, and both surrogate halves. */
const CODE_POINTS = [0x0, 0x1f, 0x22, 0x5c, 0x41, 0x7f, 0xe9, 0x7ff, 0x800, 0x4e2d, 0xfffd, 0xffff, 0x10000, 0x1f600, 0x10ffff];

function randomString(g) {
  const length = g.pick([0, 1, 3, 8, 30, 61, 62, 63, 64, 65, 200]);
  let out = '';
  while (out.length < length) {
    const r = g.next();
    if (r < 0.5) out += String.fromCharCode(0x20 + g.int(0x5f));
    else if (r < 0.9) out += String.fromCodePoint(g.pick(CODE_POINTS));
    else if (r < 0.95) out += String.fromCharCode(0xd800 + g.int(0x400)); // a lone high surrogate
    else out += String.fromCharCode(0xdc00 + g.int(0x400)); // a lone low surrogate
  }
  return out;
}

function randomKey(g) {
  return g.pick([() => randomString(g), () => String(g.int(20)), () => '__proto__', () => 'toJSON2', () => 'a']).call();
}

/** A random JSON-shaped JS value, `depth` levels at most. */
function randomValue(g, depth) {
  const leaf = [
    () => null,
    () => g.next() < 0.5,
    () => g.pick(NUMBER_EDGES),
    () => (g.next() - 0.5) * 10 ** g.int(20),
    () => g.int(1000) - 500,
    () => g.pick(BIGINT_EDGES),
    () => BigInt(g.int(1 << 30)) * BigInt(g.int(1 << 30)) * (g.next() < 0.5 ? -1n : 1n),
    () => randomString(g),
    () => new Date(g.int(2 ** 40)),
  ];
  const nested = [
    () => Array.from({ length: g.int(5) }, () => (g.next() < 0.1 ? undefined : randomValue(g, depth - 1))),
    () => {
      const object = {};
      for (let i = g.int(5); i > 0; i--) {
        // defineProperty: a "__proto__" key is an own property, as JSON.parse makes it.
        const value = g.next() < 0.1 ? undefined : randomValue(g, depth - 1);
        Object.defineProperty(object, randomKey(g), { value, enumerable: true, writable: true, configurable: true });
      }
      return object;
    },
  ];
  return depth > 0 && g.next() < 0.4 ? g.pick(nested)() : g.pick(leaf)();
}

const wellFormed = (s) => (typeof s.toWellFormed === 'function' ? s.toWellFormed() : s.replace(/\p{Surrogate}/gu, '\ufffd'));

/** What the value becomes in JS after crossing the core (index.d.ts's rules). */
function expected(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'number') return Object.is(value, -0) ? 0 : value;
  if (typeof value === 'bigint') {
    return value >= -BigInt(Number.MAX_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (typeof value === 'string') return wellFormed(value);
  if (value instanceof Date) return value.toJSON();
  if (Array.isArray(value)) return value.map(expected);
  if (typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value)) {
      if (value[key] === undefined) continue;
      Object.defineProperty(out, wellFormed(key), { value: expected(value[key]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

function show(value) {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
}

test(`JS → core → JS: random JSON-shaped values round trip exactly (seed ${SEED})`, async () => {
  const g = generator(SEED);
  const r = new Reactor({ name: 'property' });
  const seenByHandler = [];
  r.register('df', 'echo', (data) => {
    seenByHandler.push(data);
    return data;
  });
  try {
    for (let i = 0; i < CASES; i++) {
      const value = randomValue(g, 4);
      const want = expected(value);
      seenByHandler.length = 0;
      const back = await r.call('df', 'echo', value);
      const context = `seed ${SEED}, case ${i}: ${show(value)}`;
      assert.deepStrictEqual(seenByHandler[0], want, `the handler's argument, ${context}`);
      assert.deepStrictEqual(back, want, `the answer, ${context}`);
      // The Result of submit is settled by another path (kind 0 entries).
      const result = await r.submit({ group: 'df', element: 'echo', data: value });
      assert.deepStrictEqual(result.data, want, `submit's Result, ${context}`);
    }
  } finally {
    await r.stop();
  }
});

test(`JS → core → JS through an actor: messages, replies and states cross exactly (seed ${SEED})`, async () => {
  // Plain data crosses as JSON text (jsonText in index.js), anything else
  // through the converter: both must give what the rules above say.
  const g = generator(SEED + 1);
  const r = new Reactor({ name: 'property-actor' });
  const seenByTurn = [];
  r.actors.registerBehavior('keeper', {
    keep: (data, context) => {
      seenByTurn.push(data.value);
      context.state = { kept: data.value };
      return data.value;
    },
    read: (data, context) => context.state,
  });
  const keeper = await r.actors.create('keeper', null);
  try {
    for (let i = 0; i < CASES; i++) {
      const value = g.next() < 0.2 ? Object.assign(Object.create(null), { n: randomValue(g, 3) }) : randomValue(g, 4);
      const want = expected(value);
      seenByTurn.length = 0;
      const context = `seed ${SEED + 1}, case ${i}: ${show(value)}`;
      assert.deepStrictEqual(await r.actors.send(keeper, { type: 'keep', value }), want, `the reply, ${context}`);
      assert.deepStrictEqual(seenByTurn[0], want, `the message, ${context}`);
      assert.deepStrictEqual(await r.actors.send(keeper, { type: 'read' }), { kept: want }, `the state, ${context}`);
    }
  } finally {
    await r.stop();
  }
});

test('JS → core: a BigInt one past 64 bits is a RangeError, at every edge', async () => {
  const r = new Reactor({ name: 'property-range' });
  r.register('df', 'echo', (data) => data);
  try {
    for (const big of [TWO_64, -TWO_63 - 1n, TWO_64 * TWO_64, -(TWO_64 * 3n)]) {
      await assert.rejects(r.call('df', 'echo', { n: [big] }), (e) => e instanceof RangeError && /^data\.n\[0\]: BigInt /.test(e.message));
    }
  } finally {
    await r.stop();
  }
});

test('JS → core → JS: nesting up to the limit round trips; one level more is refused', async () => {
  const r = new Reactor({ name: 'property-deep' });
  r.register('df', 'echo', (data) => data);
  const nest = (levels, leaf) => {
    let value = leaf;
    for (let i = 0; i < levels; i++) value = i % 2 ? [value] : { k: value };
    return value;
  };
  try {
    // The root is level 1: 512 objects and arrays are accepted.
    const deepest = nest(512, 'ü🎉');
    assert.deepStrictEqual(await r.call('df', 'echo', deepest), deepest);
    await assert.rejects(r.call('df', 'echo', nest(513, 1)), (e) => e instanceof TypeError && /nesting deeper than 512 levels/.test(e.message));
  } finally {
    await r.stop();
  }
});

/** A random JSON text as a peer could send it (no integral floats: see below). */
function randomJson(g, depth) {
  const leaf = [
    () => 'null',
    () => 'true',
    () => 'false',
    () => String(g.int(2000) - 1000),
    () => g.pick(BIGINT_EDGES).toString(),
    () => `${g.int(1000)}.${1 + g.int(999)}e${g.int(600) - 300}`,
    () => JSON.stringify(wellFormed(randomString(g))),
    () => '"\\ud83d\\ude00 \\u00e9 \\u0000 \\n"',
  ];
  if (depth > 0 && g.next() < 0.4) {
    if (g.next() < 0.5) return `[${Array.from({ length: g.int(5) }, () => randomJson(g, depth - 1)).join(',')}]`;
    const keys = new Set(Array.from({ length: g.int(5) }, () => wellFormed(randomKey(g))));
    return `{${[...keys].map((k) => `${JSON.stringify(k)}:${randomJson(g, depth - 1)}`).join(',')}}`;
  }
  const text = g.pick(leaf)();
  // A float the core holds that is a whole number comes back as an integer
  // (JS has one number type): the generator makes none, the test below
  // checks that rule on its own.
  return /^-?\d+\.\d+e/.test(text) && Number.isInteger(Number(text)) ? '0.5' : text;
}

test(`core → JS → core: random JSON values round trip exactly (seed ${SEED})`, () => {
  const g = generator(SEED ^ 0x5bd1e995);
  for (let i = 0; i < CASES; i++) {
    const text = randomJson(g, 4);
    const trip = jsonRoundTrip(text);
    assert.ok(trip.same, `seed ${SEED}, case ${i}: ${text}\n before ${trip.before}\n after  ${trip.after}`);
  }
});

test('core → JS → core: the edges of integers and the one normalisation of floats', () => {
  for (const n of BIGINT_EDGES) {
    const trip = jsonRoundTrip(n.toString());
    assert.ok(trip.same, `${n}: ${trip.after}`);
    assert.equal(trip.after, n.toString());
  }
  // Whole floats become integers, and -0.0 is 0: JS cannot tell them apart.
  assert.equal(jsonRoundTrip('1.0').after, '1');
  assert.equal(jsonRoundTrip('-0.0').after, '0');
  // Beyond the safe range a whole float stays a float (a double it was).
  assert.equal(jsonRoundTrip('1e300').after, jsonRoundTrip('1e300').before);
  assert.throws(() => jsonRoundTrip('{'), TypeError);
});
