'use strict';
// Reactors on NATS (docs/protocol.md, "NATS"): `connect` with a nats:// URL
// and the NATS options, against a real nats-server on loopback.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Reactor, PacketFlowError } = require('..');
const path = require('node:path');
const { within, natsServer, freePort, tempDir } = require('./helpers');

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
  assert.equal(nats.members, null); // joined without membership
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
    [{ membership: true, membershipHeartbeatMs: 0 }, /^membershipHeartbeatMs must be from 10 to 60000 ms, got 0 ms/],
    [{ actorStore: true, membershipHeartbeatMs: 60001 }, /^membershipHeartbeatMs must be from 10 to 60000 ms/],
    [{ membershipHeartbeatMs: 250 }, /^membershipHeartbeatMs is the heartbeat of membership: give membership \(or actorStore\) too/],
  ];
  for (const [options, message] of cases) {
    await assert.rejects(within(r.connect(url, options), 10000), isPf('PF400', message), JSON.stringify(options));
  }
  await assert.rejects(r.connect('ws://127.0.0.1:1/packetflow/v1', { nkeySeed: 'SU' }),
    isPf('PF400', /^nkeySeed is an option of NATS URLs \(nats:\/\/, tls:\/\/\), not of ws:\/\//));
  await assert.rejects(r.connect(url, { password: 1234 }), { name: 'TypeError', message: 'password must be a string, got number' });
  await assert.rejects(r.connect(url, { requireTls: 'yes' }), { name: 'TypeError', message: 'requireTls must be a boolean, got string' });
  await assert.rejects(r.connect(url, { connectTimeoutMs: -1 }), { name: 'TypeError', message: /^connectTimeoutMs must be an integer/ });
  await assert.rejects(r.connect(url, { membershipHeartbeatMs: 2.5 }), { name: 'TypeError', message: /^membershipHeartbeatMs must be an integer/ });
  await assert.rejects(r.connect(url, { actorStore: 1 }), { name: 'TypeError', message: 'actorStore must be a boolean, got number' });
  await assert.rejects(r.connect('ws://127.0.0.1:1/packetflow/v1', { actorStore: true }),
    isPf('PF400', /^actorStore is an option of NATS URLs/));
  assert.equal(r.stats().nats, null);
});

test('actorStore on a reactor with a file store is PF400 naming it', async (t) => {
  const r = new Reactor({ name: 'file-store', actorStore: path.join(tempDir(t), 'actors.db') });
  t.after(() => r.stop());
  // Judged before any server is dialled: the actor types would be split
  // between two stores.
  await assert.rejects(within(r.connect('nats://127.0.0.1:4222', { actorStore: true }), 10000),
    isPf('PF400', /^actorStore: actor types are registered with another store/));
});

/** The `GET /health` document of a reactor listening on `port`. */
async function health(port) {
  const response = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(response.status, 200);
  return response.json();
}

/**
 * `nats.membership` of the reactor listening on `port` once it lists
 * exactly `members` (polled every 20 ms, for at most 10 s).
 */
async function membershipShowing(port, members) {
  const wanted = JSON.stringify([...members].sort());
  const deadline = Date.now() + 10000;
  for (;;) {
    const seen = (await health(port)).nats.membership;
    if (seen && JSON.stringify([...seen.members].sort()) === wanted) return seen;
    assert.ok(Date.now() < deadline, `port ${port} never listed ${wanted}: ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('members show in each other\'s view', async (t) => {
  const server = await natsServer(t, [], { jetstream: true });
  const a = reactor(t, 'member-a');
  const b = reactor(t, 'member-b');
  const [aAt, bAt] = [await a.listen('127.0.0.1:0'), await b.listen('127.0.0.1:0')];
  const ids = [(await health(aAt.port)).node_id, (await health(bAt.port)).node_id];
  await within(a.connect(server.url, { namespace: 'node.members', membership: true, membershipHeartbeatMs: 250 }), 10000, 'connect');
  // `actorStore` implies membership.
  await within(b.connect(server.url, { namespace: 'node.members', actorStore: true }), 10000, 'connect');
  let seen = await membershipShowing(aAt.port, ids);
  // `a` made the bucket with its heartbeat: a TTL of three.
  assert.equal(seen.bucket, 'node_members_members');
  assert.deepEqual([seen.heartbeat_ms, seen.ttl_ms], [250, 750]);
  // `b` found the bucket there and beats at a third of its TTL.
  seen = await membershipShowing(bAt.port, ids);
  assert.equal(seen.heartbeat_ms, 250);
  // stats() shows the members /health shows.
  for (const member of [a, b]) assert.deepEqual(member.stats().nats.members, [...ids].sort());
  // A member that stops deletes its entry: it leaves the view.
  await b.stop();
  await membershipShowing(aAt.port, ids.slice(0, 1));
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
