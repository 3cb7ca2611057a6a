'use strict';
// Reactors on the network: two reactors of this process over loopback
// WebSocket, reactors in child processes (node stays up while on the
// network, exits by itself once stopped), and a `packetflow serve` hub.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { Reactor, PacketFlowError } = require('..');
const { within, latch, runNode, startUntil, stopChild, cliPath } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/** A reactor listening on a free loopback port, and one connected to it. */
async function pair(t, serverOptions = {}, clientOptions = {}, connectOptions = undefined) {
  const server = new Reactor({ name: 'server', ...serverOptions });
  const client = new Reactor({ name: 'client', ...clientOptions });
  t.after(() => Promise.all([client.stop(), server.stop()]));
  return { server, client, listen: () => server.listen('127.0.0.1:0'), connect: (url) => client.connect(url, connectOptions) };
}

test('listen resolves to {host, port, url}; a handler on each side serves the other', async (t) => {
  const { server, client, listen, connect } = await pair(t);
  server.register('df', 'upper', async (s, ctx) => ({ upper: s.toUpperCase(), meta: ctx.metadata }));
  server.register('df', 'echo', (d) => d);
  client.register('cf', 'client-side', (n) => n + 1);
  // (Handlers are registered before connecting: connect resolves once the
  // peer's routes are known; later registrations reach peers a moment later.)
  const bound = await within(listen(), 5000, 'listen');
  assert.deepEqual(Object.keys(bound), ['host', 'port', 'url']);
  assert.equal(bound.host, '127.0.0.1');
  assert.ok(Number.isInteger(bound.port) && bound.port > 0, `port ${bound.port}`);
  assert.equal(bound.url, `ws://127.0.0.1:${bound.port}/packetflow/v1`);
  assert.equal(await within(connect(bound.url), 5000, 'connect'), undefined);

  // The client has no df:upper: the packet goes to the server and back.
  const res = await within(client.submit({ group: 'df', element: 'upper', data: 'hello', metadata: { tenant: 'acme' } }), 5000);
  assert.equal(res.status, 'success', res.error && res.error.message);
  assert.equal(res.data.upper, 'HELLO');
  assert.equal(res.data.meta.tenant, 'acme');
  assert.deepEqual(Object.keys(res), ['packetId', 'status', 'data', 'error', 'durationMs']);
  // The other way: the server learned the client's handlers in its hello.
  assert.equal(await within(server.call('cf', 'client-side', 41), 5000), 42);
  // Values of every JSON kind cross unchanged.
  const value = { s: 'héllo ✓ 𝄞', n: -3.5, big: 2 ** 53, t: true, f: false, z: null, list: [1, [2, { x: [] }]], o: {} };
  assert.deepEqual(await within(client.call('df', 'echo', value), 5000), value);
});

test('many concurrent submits over the network are all answered', async (t) => {
  const { server, client, listen, connect } = await pair(t);
  server.register('df', 'double', async (n) => n * 2);
  await connect((await listen()).url);
  const all = await within(Promise.all(Array.from({ length: 2000 }, (_, i) => client.call('df', 'double', i))), 20000, '2,000 calls');
  assert.equal(all.length, 2000);
  all.forEach((v, i) => assert.equal(v, i * 2));
});

test('busy-polling reactors (busyPollUs) serve each other both ways', async (t) => {
  const { server, client, listen, connect } = await pair(t, { busyPollUs: 500 }, { busyPollUs: 500 });
  server.register('df', 'double', async (n) => n * 2);
  client.register('df', 'triple', (n) => n * 3);
  await connect((await listen()).url);
  for (let i = 0; i < 200; i++) {
    assert.equal(await within(client.call('df', 'double', i), 5000), i * 2);
  }
  const all = await within(Promise.all(Array.from({ length: 500 }, (_, i) => server.call('df', 'triple', i))), 10000);
  all.forEach((v, i) => assert.equal(v, i * 3));
});

test('MessagePack connections carry the same values', async (t) => {
  const { server, client, listen, connect } = await pair(t, {}, {}, { msgpack: true });
  server.register('df', 'echo', (d) => d);
  await connect((await listen()).url);
  const value = { list: [1, 'two', null, { deep: [true, 2.5] }], text: 'ünïcødé' };
  assert.deepEqual(await within(client.call('df', 'echo', value), 5000), value);
});

test('errors cross the network with their codes', async (t) => {
  const { server, client, listen, connect } = await pair(t, { maxInflight: 1, maxQueue: 0 });
  const release = latch();
  const holding = latch();
  server.register('df', 'throws', () => {
    throw new Error('server-side boom');
  });
  server.register('df', 'coded', async () => {
    throw new PacketFlowError('PF424', 'passed on from an inner call');
  });
  server.register('df', 'hold', () => {
    holding.open();
    return release.opened;
  });
  const late = latch();
  server.register('df', 'slow', () => late.opened);
  await connect((await listen()).url);

  const failed = await within(client.submit('df', 'throws', null), 5000);
  assert.equal(failed.status, 'error');
  isPf('PF500', /^server-side boom$/)(failed.error);
  await assert.rejects(client.call('df', 'coded', null), isPf('PF424', /^passed on from an inner call$/));
  await assert.rejects(client.call('df', 'nowhere', null), isPf('PF001', /df:nowhere/));

  // The server's only slot is taken and its queue holds nothing: PF429.
  const held = client.call('df', 'hold', 'first');
  await within(holding.opened, 5000, 'the held handler to start');
  await assert.rejects(client.call('df', 'hold', 'second'), isPf('PF429'));
  release.open('released');
  assert.equal(await within(held, 5000), 'released');
  // A deadline shorter than the handler: PF408 (the server gets what is
  // left of the deadline, and the client gives up at it too).
  const started = Date.now();
  await assert.rejects(within(client.call({ group: 'df', element: 'slow', timeoutMs: 150 }), 5000), isPf('PF408'));
  assert.ok(Date.now() - started < 1500, 'answered at the deadline');
  late.open('too late');
});

test('PF503 when the serving side stops mid-request; stop closes the connection', async (t) => {
  const { server, client, listen, connect } = await pair(t);
  const started = latch();
  const never = latch();
  server.register('df', 'hang', () => {
    started.open();
    return never.opened;
  });
  await connect((await listen()).url);
  const pending = client.submit('df', 'hang', null);
  await within(started.opened, 5000, 'the handler to start');
  await within(server.stop(), 8000, 'server.stop()');
  assert.equal(server.stopped, true);
  const res = await within(pending, 5000, 'the answer to the pending submit');
  assert.equal(res.status, 'error');
  isPf('PF503')(res.error);
  // The server is gone: nothing routes there any more.
  await assert.rejects(within(client.call('df', 'hang', null), 5000), (e) => e instanceof PacketFlowError && ['PF001', 'PF503'].includes(e.code));
  // A stopped reactor does not go back on the network.
  await assert.rejects(server.listen('127.0.0.1:0'), isPf('PF503', /stopped/));
  await assert.rejects(server.connect('ws://127.0.0.1:1/packetflow/v1'), isPf('PF503', /stopped/));
  never.open('too late');
});

test('listen and connect failures reject with a clear error', async (t) => {
  const r = new Reactor();
  t.after(() => r.stop());
  const other = new Reactor();
  t.after(() => other.stop());
  const { port } = await other.listen('127.0.0.1:0');
  await assert.rejects(r.listen(`127.0.0.1:${port}`), isPf('PF503', /cannot listen on 127\.0\.0\.1:\d+/));
  await assert.rejects(r.listen('not an address'), isPf('PF503', /cannot listen on not an address/));
  // A free port nobody listens on: grab one, then close it.
  const probe = new Reactor();
  const { url: closed } = await probe.listen('127.0.0.1:0');
  await probe.stop();
  await assert.rejects(within(r.connect(closed), 10000), isPf('PF503', /cannot connect to ws:\/\/127\.0\.0\.1/));
  await assert.rejects(r.connect('not a url'), isPf('PF400', /invalid peer URL/));
  await assert.rejects(r.listen(8443), { name: 'TypeError', message: 'addr must be a string, got number' });
  await assert.rejects(r.connect(undefined), { name: 'TypeError', message: 'url must be a string, got undefined' });
  await assert.rejects(r.connect(closed, { msgpack: 'yes' }), { name: 'TypeError', message: 'msgpack must be a boolean, got string' });
  await assert.rejects(r.connect(closed, { codec: 'msgpack' }), { name: 'TypeError', message: /unknown option "codec"/ });
  await assert.rejects(r.connect(closed, 'msgpack'), { name: 'TypeError', message: 'options must be an object, got string' });
});

test('a reactor that only listens keeps node up as a server, and node exits once it stops', async () => {
  const { child, match } = await startUntil(process.execPath, [fixture('net-server.js')], /listening on (\S+)/);
  try {
    // The child's script has ended: only its listening reactor keeps it up.
    const client = new Reactor();
    try {
      await within(client.connect(match[1]), 5000, 'connect');
      assert.equal(await within(client.call('df', 'up', 'served'), 5000), 'SERVED');
    } finally {
      await client.stop();
    }
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exit = await stopChild(child, 'SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(out.trim(), 'stopped');
  } finally {
    child.kill('SIGKILL');
  }
});

test('a reactor that only connects keeps node up, and node exits once it stops', async (t) => {
  const server = new Reactor();
  t.after(() => server.stop());
  const { url } = await server.listen('127.0.0.1:0');
  const { child } = await startUntil(process.execPath, [fixture('net-client.js'), url], /connected/);
  try {
    assert.equal(await within(server.call('df', 'client-side', 'x'), 5000), 'client saw x');
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exit = await stopChild(child, 'SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(out.trim(), 'stopped');
  } finally {
    child.kill('SIGKILL');
  }
});

test('node exits by itself once networked reactors are stopped', async () => {
  const { child, seen } = await startUntil(process.execPath, [fixture('net-stopped.js')], /BYE bye/);
  const exit = await stopChild(child, undefined, 10000);
  assert.deepEqual(exit, { code: 0, signal: null }, seen.stderr);
});

function cli(args) {
  return new Promise((resolve) => {
    execFile(cliPath(), args, { timeout: 15000 }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}

test('against a `packetflow serve` hub: Rust handlers, JS handlers, and JS to JS through the hub', async (t) => {
  const { child: hub, match } = await startUntil(
    cliPath(),
    ['serve', '--listen', '127.0.0.1:0', '--handler', 'df:transform=uppercase', '--handler', 'cf:broken=fail'],
    /listening on (ws:\/\/\S+)/,
    { stream: 'stderr' },
  );
  t.after(() => stopChild(hub, 'SIGTERM'));
  const url = match[1];

  const a = new Reactor({ name: 'js-a' });
  t.after(() => a.stop());
  a.register('df', 'js-upper', async (s, ctx) => `${s.toUpperCase()} (via ${ctx.packetId.length > 0 ? 'js-a' : '?'})`);
  await within(a.connect(url), 5000, 'connect to the hub');

  // The hub's own (Rust) handlers serve a JS reactor.
  assert.equal(await within(a.call('df', 'transform', 'hello hub'), 5000), 'HELLO HUB');
  await assert.rejects(a.call('cf', 'broken', 7), isPf('PF500', /failed on purpose with 7/));

  // The hub's CLI client reaches the JS handler through the hub.
  const submitted = await cli(['submit', '--url', url, 'df', 'js-upper', '"from cli"']);
  assert.equal(submitted.code, 0, submitted.stderr);
  const result = JSON.parse(submitted.stdout.trim());
  assert.equal(result.status, 'success');
  assert.equal(result.data, 'FROM CLI (via js-a)');

  // A second JS reactor reaches the first one through the hub.
  const b = new Reactor({ name: 'js-b' });
  t.after(() => b.stop());
  await within(b.connect(url, { msgpack: true }), 5000, 'connect to the hub (msgpack)');
  assert.equal(await within(b.call('df', 'js-upper', 'b to a'), 5000), 'B TO A (via js-a)');

  // The hub stops: every JS reactor sees it go (the packets it held, PF503),
  // and stopping them still ends cleanly.
  const exit = await stopChild(hub, 'SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null });
  await assert.rejects(within(b.call('df', 'transform', 'x'), 10000), (e) => e instanceof PacketFlowError && ['PF001', 'PF503'].includes(e.code));
});

test('terminating a worker thread whose reactor listens: its peer gets errors, the process exits cleanly', async () => {
  const { child, seen } = await startUntil(process.execPath, [fixture('net-worker.js')], /^error (PF001|PF503)$/m);
  const exit = await stopChild(child, undefined, 10000);
  assert.deepEqual(exit, { code: 0, signal: null }, seen.stderr);
  assert.deepEqual(seen.stdout.trim().split('\n').slice(0, 2), ['in the worker', 'terminated']);
});

test('a listening reactor that JS no longer references keeps serving through garbage collections', async () => {
  const out = await runNode(fixture('net-orphan.js'), 15000, {}, ['--expose-gc']);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'STILL SERVING');
});
