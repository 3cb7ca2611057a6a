'use strict';
// Reactors on NATS (docs/protocol.md, "NATS"): `connect` with a nats:// URL
// and the NATS options, against a real nats-server on loopback.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor, PacketFlowError } = require('..');
const { within, natsServer, freePort } = require('./helpers');

function reactor(t, name) {
  const r = new Reactor({ name });
  t.after(() => r.stop());
  return r;
}

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

test('a handler is called from another reactor through nats-server', async (t) => {
  const server = await natsServer(t);
  const serving = reactor(t, 'serving');
  serving.register('df', 'upper', (data, ctx) => ({ upper: data.toUpperCase(), trace: ctx.metadata.trace }));
  await within(serving.connect(server.url, { namespace: 'node-test', name: 'node serving' }), 10000, 'connect');
  const asking = reactor(t, 'asking');
  await within(asking.connect(server.url, { namespace: 'node-test', connectTimeoutMs: 2000 }), 10000, 'connect');

  const res = await within(asking.submit('df', 'upper', 'over nats', { metadata: { trace: 't-1' }, timeoutMs: 5000 }), 10000);
  assert.equal(res.status, 'success', JSON.stringify(res.error));
  assert.deepEqual(res.data, { upper: 'OVER NATS', trace: 't-1' });
  const missing = await within(asking.submit('df', 'missing', null), 10000);
  assert.equal(missing.error.code, 'PF001');

  const nats = asking.stats().nats;
  assert.ok(nats);
  assert.equal(nats.state, 'connected');
  assert.equal(nats.server, `127.0.0.1:${server.port}`);
  assert.equal(nats.requestsSent, 2);
  assert.ok(nats.rttUs > 0);
  const served = serving.stats().nats;
  assert.equal(served.requestsServed, 1);
  assert.equal(served.servedKeys, 1);
});

test('a reactor off NATS shows nats: null', (t) => {
  assert.equal(reactor(t, 'off').stats().nats, null);
});

test('a bad option is PF400 naming it, in camelCase', async (t) => {
  const r = reactor(t, 'bad-options');
  const url = 'nats://127.0.0.1:4222';
  // Judged before any server is dialled: no server is needed.
  const cases = [
    [{ namespace: 'a.*' }, /^namespace must be/],
    [{ user: 'pf' }, /^user and password must be given together/],
    [{ tlsCert: '/nonexistent/c.pem' }, /^tlsCert and tlsKey must be given together/],
    [{ tlsCa: '/nonexistent/ca.pem' }, /^tlsCa \/nonexistent\/ca\.pem/],
    [{ credentialsFile: '/nonexistent/x.creds' }, /^credentialsFile \/nonexistent\/x\.creds/],
    [{ connectTimeoutMs: 0 }, /^connectTimeoutMs must be at least 1/],
    [{ msgpack: true }, /^msgpack is an option of WebSocket peers/],
  ];
  for (const [options, message] of cases) {
    await assert.rejects(within(r.connect(url, options), 10000), isPf('PF400', message), JSON.stringify(options));
  }
  await assert.rejects(r.connect('ws://127.0.0.1:1/packetflow/v1', { nkeySeed: 'SU' }),
    isPf('PF400', /^nkeySeed is an option of NATS URLs \(nats:\/\/, tls:\/\/\), not of ws:\/\//));
  await assert.rejects(r.connect(url, { password: 1234 }), { name: 'TypeError', message: 'password must be a string, got number' });
  await assert.rejects(r.connect(url, { requireTls: 'yes' }), { name: 'TypeError', message: 'requireTls must be a boolean, got string' });
  await assert.rejects(r.connect(url, { connectTimeoutMs: -1 }), { name: 'TypeError', message: /^connectTimeoutMs must be an integer/ });
  assert.equal(r.stats().nats, null);
});

test('an unreachable server is PF503', async (t) => {
  const r = reactor(t, 'unreachable');
  const port = await freePort();
  await assert.rejects(
    within(r.connect(`nats://127.0.0.1:${port}`, { connectTimeoutMs: 2000 }), 30000, 'connect'),
    isPf('PF503', new RegExp(`127\\.0\\.0\\.1:${port}`)),
  );
  assert.equal(r.stats().nats, null);
});

test('a server refusing the credentials is PF401; the right ones join', async (t) => {
  const server = await natsServer(t, ['--user', 'pf', '--pass', 'right-password']);
  const r = reactor(t, 'credentials');
  await assert.rejects(within(r.connect(server.url, { user: 'pf', password: 'wrong-password' }), 10000), (error) => {
    isPf('PF401')(error);
    assert.doesNotMatch(error.message, /wrong-password/);
    return true;
  });
  await within(r.connect(server.url, { user: 'pf', password: 'right-password' }), 10000);
  assert.equal(r.stats().nats.state, 'connected');
});
