// The Node.js participant of the interop suite (see README.md here), built
// on the `packetflow` npm package.
//
//   node pf_node.js serve HUB_URL NAME [json|msgpack]
//   node pf_node.js submit HUB_URL [json|msgpack]
//   node pf_node.js dial URL
'use strict';

const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');
const { Reactor } = require(process.env.PACKETFLOW_NODE || 'packetflow');

// connect's options for `url` and `codec`; for a nats:// URL, the NATS
// options the suite asks for (PF_NATS_NAMESPACE: the subjects' namespace;
// PF_NATS_ACTOR_STORE: actor state in the members' bucket, membership with
// it; PF_NATS_HEARTBEAT_MS: the members' heartbeat).
function connectOptions(url, codec) {
  const options = { msgpack: codec === 'msgpack' };
  if (!url.startsWith('nats://')) return options;
  if (process.env.PF_NATS_NAMESPACE) options.namespace = process.env.PF_NATS_NAMESPACE;
  if (process.env.PF_NATS_ACTOR_STORE) options.actorStore = true;
  if (process.env.PF_NATS_HEARTBEAT_MS) options.membershipHeartbeatMs = Number(process.env.PF_NATS_HEARTBEAT_MS);
  return options;
}

// The reactor limits the suite asks for (PF_MAX_INFLIGHT, PF_MAX_QUEUE).
function limits() {
  const out = {};
  if (process.env.PF_MAX_INFLIGHT) out.maxInflight = Number(process.env.PF_MAX_INFLIGHT);
  if (process.env.PF_MAX_QUEUE) out.maxQueue = Number(process.env.PF_MAX_QUEUE);
  return out;
}

// Requests and results are JSON lines whose integers may exceed 2^53:
// JSON.parse would round them, and JSON.stringify throws on the BigInts the
// binding hands back for them. lossless-json (installed with ../seed's
// packages) reads an integer beyond the safe range as an exact BigInt, which
// the binding sends as that exact integer, and writes BigInts as digits.
let lossless;
try {
  lossless = createRequire(path.join(__dirname, '..', 'seed', 'package.json'))('lossless-json');
} catch (e) {
  throw new Error(`pf_node.js needs lossless-json: run \`npm install\` in interop/seed (${e.message})`);
}

/** A JSON number's text as a number, or as a BigInt for an unsafe integer. */
function parseNumber(text) {
  const n = Number(text);
  return lossless.isInteger(text) && !Number.isSafeInteger(n) ? BigInt(text) : n;
}

const parseLine = (line) => lossless.parse(line, null, parseNumber);
const toLine = (value) => lossless.stringify(value);

async function serve(url, name, codec) {
  const r = new Reactor({ name: `interop-${name}`, ...limits() });
  r.register('df', `echo_${name}`, async (data) => data);
  r.register('df', `fail_${name}`, () => { throw new Error(`boom from ${name}`); });
  r.register('df', `slow_${name}`, (ms) => new Promise((resolve) => setTimeout(() => resolve(ms), ms)));
  // A relay for the chain topology: calls df:echo_<to> through ctx.call.
  r.register('df', `relay_${name}`, async (data, ctx) => ({
    via: name,
    answer: await ctx.call('df', `echo_${data.to}`, data.data),
  }));
  registerRuleHandlers(r, name);
  registerCancelChain(r, name);
  registerStdlibSteps(r, name);
  // Actor state in NATS: the types come after joining, so that their store
  // is the members' bucket.
  const options = connectOptions(url, codec);
  if (!options.actorStore) registerCounter(r);
  await r.connect(url, options);
  if (options.actorStore) {
    registerCounter(r);
    registerSharedCounter(r, name);
  }
  process.stdout.write('ready\n');
  // Serve until the suite closes stdin (or kills the process).
  process.stdin.on('end', () => r.stop());
  process.stdin.resume();
}

// A line about a handler's packet, for test_cancel.py: `{event, element,
// at_us}` with the wall clock in µs (the processes of a test share it).
function event(fields) {
  const atUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
  process.stdout.write(`${JSON.stringify({ ...fields, at_us: atUs })}\n`);
}

// The first link of test_cancel.py's chain: calls `data.next` and reports
// when its `ctx.signal` aborts, then when its reactor has nothing in flight.
function registerCancelChain(r, name) {
  const element = `cancel_chain_${name}`;
  r.register('df', element, async (data, ctx) => {
    ctx.signal.addEventListener('abort', () => {
      event({ event: 'cancelled', element, code: ctx.signal.reason && ctx.signal.reason.code });
      const idle = (left) => {
        if (r.stats().inFlight === 0) event({ event: 'idle', element });
        else if (left > 0) setTimeout(() => idle(left - 1), 5);
        else event({ event: 'busy', element, inFlight: r.stats().inFlight });
      };
      idle(1000);
    }, { once: true });
    event({ event: 'started', element });
    return ctx.call('df', data.next, data);
  });
}

// The steps of test_stdlib.py: `append_NAME` appends NAME to a list;
// `wait_NAME` ({tag}) reports it started, then waits until `release_NAME`
// (the tag) releases it or its `ctx.signal` aborts, and reports which (at
// most 30 s).
function registerStdlibSteps(r, name) {
  const element = `wait_${name}`;
  const waiting = new Map();
  r.register('df', `append_${name}`, (items) => [...items, name]);
  r.register('df', element, ({ tag }, ctx) => new Promise((resolve) => {
    let timer;
    const finish = (how) => {
      if (!waiting.has(tag)) return;
      waiting.delete(tag);
      clearTimeout(timer);
      if (how !== 'timeout') event({ event: how, element, tag });
      resolve(how === 'released' ? tag : `never released (${how})`);
    };
    waiting.set(tag, () => finish('released'));
    timer = setTimeout(() => finish('timeout'), 30000);
    ctx.signal.addEventListener('abort', () => finish('cancelled'), { once: true });
    event({ event: 'started', element, tag });
  }));
  r.register('df', `release_${name}`, (tag) => {
    const release = waiting.get(tag);
    if (release) release();
    return Boolean(release);
  });
}

// The handlers of test_rules.py: a context kept past its answer, and a
// handler replaced while a packet runs it.
function registerRuleHandlers(r, name) {
  let kept;
  r.register('df', `keep_${name}`, (data, ctx) => { kept = ctx; return 'kept'; });
  r.register('df', `late_${name}`, async (data) => {
    try {
      return { data: await kept.call('df', `echo_${name}`, data) };
    } catch (e) {
      return { code: e.code, message: e.message };
    }
  });
  r.register('df', `version_${name}`, (ms) => new Promise((resolve) => setTimeout(() => resolve('v1'), ms)));
  r.register('df', `replace_${name}`, () => {
    r.register('df', `version_${name}`, () => 'v2');
    return 'replaced';
  });
}

// The actor type every participant hosts (counter_<language>): a virtual
// counter, so any id works without a create.
function registerCounter(r) {
  r.actors.registerBehavior('counter_node', {
    increment: (data, context) => {
      context.state.value += data.by === undefined ? 1 : data.by;
      return { value: context.state.value };
    },
    get_value: (data, context) => ({ value: context.state.value }),
  }, { initialState: { value: 0 } });
}

// Actor type counter_shared, hosted by every language on a NATS cluster:
// counter_node's, its answers naming the language that ran the turn (`host`).
function registerSharedCounter(r, name) {
  r.actors.registerBehavior('counter_shared', {
    increment: (data, context) => {
      context.state.value += data.by === undefined ? 1 : data.by;
      return { value: context.state.value, host: name };
    },
    get_value: (data, context) => ({ value: context.state.value, host: name }),
  }, { initialState: { value: 0 } });
}

// Dials `url` and prints how that ended, as {code, message}.
async function dial(url) {
  const r = new Reactor({ name: 'interop-node-dialer' });
  try {
    await r.connect(url);
    process.stdout.write(JSON.stringify({ code: null, message: 'connected' }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ code: e.code, message: e.message }) + '\n');
  }
  await r.stop();
}

async function submit(url, codec) {
  // PF_STDLIB: the standard elements this reactor hosts (test_stdlib.py).
  const r = new Reactor({ name: 'interop-node-submitter', stdlib: process.env.PF_STDLIB });
  await r.connect(url, connectOptions(url, codec));
  const lines = readline.createInterface({ input: process.stdin });
  const work = [];
  for await (const line of lines) {
    if (!line.trim()) continue;
    const req = parseLine(line);
    work.push(r.submit({ group: req.group, element: req.element, data: req.data, timeoutMs: req.timeout_ms, metadata: req.metadata })
      .then((res) => {
        const result = res.status === 'success'
          ? { status: 'success', data: res.data }
          : { status: 'error', error: { code: res.error.code, message: res.error.message } };
        process.stdout.write(toLine({ id: req.id, result }) + '\n');
      }, (refused) => {
        // Not submitted (a value the binding cannot send, e.g. an integer
        // beyond 64 bits): say why instead of a result.
        process.stdout.write(toLine({ id: req.id, error: `${refused.name}: ${refused.message}` }) + '\n');
      }));
  }
  await Promise.all(work);
  await r.stop();
}

const [mode, ...args] = process.argv.slice(2);
const run = mode === 'serve' ? serve(args[0], args[1], args[2] || 'json')
  : mode === 'submit' ? submit(args[0], args[1] || 'json')
  : mode === 'dial' ? dial(args[0])
  : Promise.reject(new Error('usage: pf_node.js serve URL NAME [codec] | submit URL [codec] | dial URL'));
run.catch((e) => { console.error(e); process.exit(1); });
