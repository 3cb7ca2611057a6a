'use strict';
// Connections served on the JS thread (`sockets: 'loop'`, the default):
// their sockets are watched by node's event loop (libuv poll handles), and
// frames are read, handed to handlers and answered there. The addon's
// `socketStats()` (not exported by index.js) counts what the poll handles
// did, so each test can tell that its connections took that path. The
// peers that misbehave are raw WebSocket endpoints written here on `net`.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');
const { Reactor, PacketFlowError } = require('..');
const http = require('node:http');
const { within, latch, until, aborted, startUntil, stopChild, cliPath } = require('./helpers');

const { socketStats } = require(path.join(__dirname, '..', 'packetflow.node'));

const WAIT = 10000;

/** Poll handles open now. */
function open() {
  const { watches, closed } = socketStats();
  return watches - closed;
}

/** What `socketStats()` counted since `before`. */
function since(before) {
  const now = socketStats();
  return Object.fromEntries(Object.keys(now).map((key) => [key, now[key] - before[key]]));
}

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/** A server reactor with an echo handler, and a client connected to it. */
async function pair(t, options = {}) {
  const server = new Reactor({ name: 'server', ...options });
  const client = new Reactor({ name: 'client', ...options });
  t.after(() => Promise.all([client.stop(), server.stop()]));
  server.register('df', 'echo', (data) => data);
  server.register('df', 'later', async (data) => {
    await new Promise((resolve) => setImmediate(resolve));
    return data;
  });
  const { url } = await within(server.listen('127.0.0.1:0'), WAIT, 'listen');
  await within(client.connect(url), WAIT, 'connect');
  return { server, client, url };
}

// --- a raw WebSocket endpoint (RFC 6455, text frames only) ---------------

/** One frame, unmasked (a server's) or masked (a client's). */
function frame(text, masked, opcode = 0x1) {
  const payload = Buffer.from(text);
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (n >= 126 && n < 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else if (n >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  if (!masked) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((byte, i) => byte ^ key[i % 4]));
  return Buffer.concat([head, key, body]);
}

/**
 * Reads whole frames from `socket` (after the handshake, `rest` being what
 * came behind it): `next()` resolves to the next frame's text.
 */
function frameReader(socket, rest) {
  let buffer = rest;
  const waiting = [];
  const frames = [];
  const parse = () => {
    for (;;) {
      if (buffer.length < 2) return;
      let len = buffer[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buffer.length < 4) return;
        len = buffer.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buffer.length < 10) return;
        len = Number(buffer.readBigUInt64BE(2));
        at = 10;
      }
      const masked = (buffer[1] & 0x80) !== 0;
      const key = masked ? buffer.subarray(at, at + 4) : null;
      if (masked) at += 4;
      if (buffer.length < at + len) return;
      let payload = Buffer.from(buffer.subarray(at, at + len));
      if (key) payload = Buffer.from(payload.map((byte, i) => byte ^ key[i % 4]));
      buffer = buffer.subarray(at + len);
      frames.push(payload.toString());
      while (waiting.length > 0 && frames.length > 0) waiting.shift()(frames.shift());
    }
  };
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    parse();
  });
  parse();
  return {
    next: () =>
      new Promise((resolve) => {
        if (frames.length > 0) resolve(frames.shift());
        else waiting.push(resolve);
      }),
  };
}

/** Reads an HTTP head from `socket`: resolves to [head, what came after it]. */
function readHead(socket) {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const onData = (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      resolve([buffer.subarray(0, end).toString(), buffer.subarray(end + 4)]);
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

/**
 * A WebSocket server on a free loopback port that answers the upgrade as a
 * seed peer would (no `x-packetflow-node` header: the reactor takes it for
 * a default route) and hands each connection to `serve(socket, reader)`.
 */
async function rawServer(t, serve) {
  const sockets = new Set();
  const server = net.createServer(async (socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const [head, rest] = await readHead(socket);
    const key = /sec-websocket-key: *(\S+)/i.exec(head)[1];
    const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    serve(socket, frameReader(socket, rest));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return `ws://127.0.0.1:${server.address().port}/packetflow/v1`;
}

/** A result frame answering `submit` (a parsed submit frame) with `data`. */
function resultFor(submit, data) {
  return JSON.stringify({
    type: 'result',
    seq: submit.seq,
    payload: { packet_id: submit.payload.id, status: 'success', data, duration_ms: 0 },
  });
}

// --- the tests -----------------------------------------------------------

test('connections served on the JS thread: each side watched by one poll handle, handlers answer', async (t) => {
  const before = socketStats();
  const { client } = await pair(t);
  const answers = await within(
    Promise.all(Array.from({ length: 300 }, (_, i) => client.call('df', i % 2 ? 'echo' : 'later', { i }))),
    WAIT,
    'concurrent calls',
  );
  answers.forEach((answer, i) => assert.deepEqual(answer, { i }));
  for (let i = 0; i < 50; i++) assert.equal(await client.call('df', 'later', i), i);
  const seen = since(before);
  assert.equal(seen.watches, 2, 'one poll handle per socket: the accepted one and the dialed one');
  assert.ok(seen.callbacks >= 50, `libuv reported the sockets ready (${seen.callbacks} times)`);
  assert.ok(seen.readWaits >= 50, 'reads that would block waited for libuv');
});

test("sockets: 'thread' keeps the connections on the addon's thread", async (t) => {
  const before = socketStats();
  const { client } = await pair(t, { sockets: 'thread' });
  for (let i = 0; i < 20; i++) assert.equal(await client.call('df', 'later', i), i);
  assert.equal(since(before).watches, 0, 'no poll handle');
});

test('frames larger than the socket buffers: writes wait for libuv, reads come in pieces', async (t) => {
  // Six submits of ~900 KB (at most 1 MiB each, the frame limit): more than
  // a loopback connection's buffers hold while the peer does not read.
  const bigs = Array.from({ length: 6 }, (_, i) => `${i}${'x'.repeat(900000)}`);
  const reading = latch();
  const url = await rawServer(t, async (socket, reader) => {
    // Reads nothing until told: the submits fill the socket buffers.
    socket.pause();
    await reading.opened;
    socket.resume();
    const submits = [];
    while (submits.length < bigs.length) {
      const got = JSON.parse(await reader.next());
      submits.push(...(Array.isArray(got) ? got : [got]));
    }
    for (const submit of submits) {
      assert.equal(submit.type, 'submit');
      // Each answer in small pieces, with a turn of the loop between them.
      const answer = frame(resultFor(submit, submit.payload.data.toUpperCase()), false);
      for (let at = 0; at < answer.length; at += 64 * 1024) {
        socket.write(answer.subarray(at, at + 64 * 1024));
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  });
  const client = new Reactor({ name: 'client' });
  t.after(() => client.stop());
  await within(client.connect(url), WAIT, 'connect');
  const before = socketStats();
  const calls = Promise.all(bigs.map((big) => client.call('df', 'big', big)));
  await until(() => since(before).writeWaits > 0, WAIT, 'a write to wait for a writable socket');
  const readsBefore = socketStats().readWaits;
  reading.open();
  const answers = await within(calls, WAIT, 'the big calls');
  answers.forEach((answer, i) => assert.equal(answer, bigs[i].toUpperCase()));
  assert.ok(socketStats().readWaits - readsBefore > bigs.length, 'the answers were read in pieces');
});

test('a peer closing mid-frame: calls waiting on it fail PF503, its handle is closed', async (t) => {
  const url = await rawServer(t, async (socket, reader) => {
    const submit = JSON.parse(await reader.next());
    const whole = frame(resultFor(submit, 'never whole'), false);
    socket.write(whole.subarray(0, whole.length - 5));
    socket.destroy();
  });
  const client = new Reactor({ name: 'client' });
  t.after(() => client.stop());
  await within(client.connect(url), WAIT, 'connect');
  const before = socketStats();
  await assert.rejects(within(client.call('df', 'half', 1), WAIT, 'the call'), isPf('PF503', /went away/));
  await until(() => since(before).closed >= 1, WAIT, 'the poll handle to close');

  // The accepted side: a client that sends half a frame and leaves.
  const { server, client: other, url: serverUrl } = await pair(t);
  const port = Number(new URL(serverUrl).port);
  const openBefore = open();
  const raw = net.connect(port, '127.0.0.1');
  raw.on('error', () => {});
  await new Promise((resolve) => raw.once('connect', resolve));
  const key = crypto.randomBytes(16).toString('base64');
  raw.write(`GET /packetflow/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  const [head] = await within(readHead(raw), WAIT, 'the upgrade');
  assert.match(head, /^HTTP\/1\.1 101/);
  // Its connection waits for a first frame: a poll handle watches it.
  await until(() => open() === openBefore + 1, WAIT, 'the connection to wait');
  const half = frame(JSON.stringify({ type: 'heartbeat', seq: 0, timestamp: 1 }), true);
  raw.write(half.subarray(0, 10));
  raw.destroy();
  await until(() => open() === openBefore, WAIT, "the server's handle for that peer to close");
  // The server serves on.
  assert.equal(await other.call('df', 'echo', 'still'), 'still');
  assert.equal(server.stopped, false);
});

test('stopping a reactor with connections open: PF503 for what waits, every handle closed', async (t) => {
  const before = socketStats();
  const server = new Reactor({ name: 'server' });
  const client = new Reactor({ name: 'client' });
  t.after(() => Promise.all([client.stop(), server.stop()]));
  const hold = latch();
  const started = latch();
  server.register('df', 'hold', async () => {
    started.open();
    await hold.opened;
    return 'late';
  });
  const { url } = await within(server.listen('127.0.0.1:0'), WAIT, 'listen');
  await within(client.connect(url), WAIT, 'connect');
  const call = assert.rejects(within(client.call('df', 'hold', null), WAIT, 'the call'), isPf('PF503'));
  await within(started.opened, WAIT, 'the handler to start');
  await within(server.stop(), WAIT, 'the server to stop');
  await call;
  hold.open();
  await within(client.stop(), WAIT, 'the client to stop');
  // Every handle this process made is closed (earlier tests' included:
  // nothing else is on the network now).
  await until(() => socketStats().closed === socketStats().watches, WAIT, 'every poll handle to close');
  assert.equal(since(before).watches, 2);
});

test('cancelling a call over the network: the cancel frame reaches the handler', async (t) => {
  const before = socketStats();
  const server = new Reactor({ name: 'server' });
  const client = new Reactor({ name: 'client' });
  t.after(() => Promise.all([client.stop(), server.stop()]));
  const started = latch();
  server.register('df', 'wait', (data, ctx) => {
    started.open(ctx);
    return new Promise(() => {});
  });
  const { url } = await within(server.listen('127.0.0.1:0'), WAIT, 'listen');
  await within(client.connect(url), WAIT, 'connect');
  const controller = new AbortController();
  const call = client.call('df', 'wait', 1, { signal: controller.signal });
  const ctx = await within(started.opened, WAIT, 'the handler to start');
  controller.abort();
  await assert.rejects(call, { name: 'AbortError' });
  assert.ok(isPf('PF499')(await aborted(ctx.signal, WAIT, "the handler's ctx.signal")));
  assert.equal(since(before).watches, 2, 'over sockets driven by the event loop');
});

test('a JS thread blocked for longer than three heartbeats: the hub keeps the node', async (t) => {
  const { child: hub, match } = await startUntil(
    cliPath(),
    ['serve', '--listen', '127.0.0.1:0', '--handler', 'df:transform=uppercase'],
    /listening on (ws:\/\/\S+)/,
    { stream: 'stderr' },
  );
  t.after(() => stopChild(hub, 'SIGTERM'));
  const url = match[1];
  const deaths = () =>
    new Promise((resolve, reject) => {
      http
        .get(url.replace('ws://', 'http://').replace('/packetflow/v1', '/metrics'), (res) => {
          let body = '';
          res.on('data', (chunk) => (body += chunk));
          res.on('end', () => resolve(Number(/^packetflow_peer_deaths_total (\d+)/m.exec(body)[1])));
        })
        .on('error', reject);
    });
  const r = new Reactor({ name: 'blocked' });
  t.after(() => r.stop());
  await within(r.connect(url), WAIT, 'connect to the hub');
  assert.equal(await r.call('df', 'transform', 'before'), 'BEFORE');
  // Peers beat every second and declare a peer dead after three silent
  // beats: the runtime's thread stands in for the blocked JS thread.
  const end = Date.now() + 4500;
  while (Date.now() < end);
  assert.equal(await within(r.call('df', 'transform', 'after'), WAIT, 'a call after the block'), 'AFTER');
  assert.equal(await deaths(), 0, 'the hub never declared the node dead');
});
