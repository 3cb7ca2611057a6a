// A PacketFlow peer written from the seed specification alone
// (seeds/003-protocol-spec-v1.md): a plain `ws` client, JSON frames, no
// `hello`, heartbeat on open and every 30 s, results answered with `seq: 0`.
//
//   node seed_peer.js serve HUB_URL NAME   serve df:echo_NAME, df:fail_NAME, df:slow_NAME
//   node seed_peer.js submit HUB_URL       JSON requests on stdin, one result per line on stdout
'use strict';

const { WebSocket } = require('ws');
const { randomUUID } = require('crypto');
const readline = require('readline');

class SeedReactor {
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.handlers = new Map();
    this.pending = new Map();
    this.sequence = 0;
  }

  start() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.endpoint);
      this.ws.on('message', (data) => this.handleMessage(data));
      this.ws.on('open', () => {
        this.sendHeartbeat();
        // As the seed's reactor does: a heartbeat every 30 seconds (unref'd,
        // so it never keeps the process alive on its own).
        this.beat = setInterval(() => this.sendHeartbeat(), 30000);
        this.beat.unref();
        resolve();
      });
      this.ws.on('error', reject);
      this.ws.on('close', () => {
        clearInterval(this.beat);
        for (const [, p] of this.pending) p.reject(new Error('connection closed'));
        this.pending.clear();
      });
    });
  }

  stop() {
    if (this.ws) this.ws.close();
  }

  register(group, element, handler) {
    this.handlers.set(`${group}:${element}`, handler);
  }

  submit(packet) {
    const full = { version: '1.0', id: randomUUID(), priority: 5, ...packet };
    const seq = ++this.sequence;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, id: full.id });
      this.ws.send(JSON.stringify({ type: 'submit', seq, payload: full }));
    });
  }

  handleMessage(data) {
    let message;
    try {
      message = JSON.parse(data.toString());
    } catch (e) {
      console.error('seed peer: undecodable frame', e);
      return;
    }
    switch (message.type) {
      case 'submit':
        this.processPacket(message.payload);
        break;
      case 'result':
        this.settle(message.seq, message.payload.packet_id, (p) => p.resolve(message.payload));
        break;
      case 'error':
        this.settle(message.seq, message.payload.packet_id, (p) =>
          p.resolve({ status: 'error', error: { code: message.payload.code, message: message.payload.message } }));
        break;
    }
  }

  settle(seq, packetId, fn) {
    let key = this.pending.has(seq) ? seq : undefined;
    if (key === undefined) {
      for (const [k, p] of this.pending) if (p.id === packetId) key = k;
    }
    if (key === undefined) return;
    const p = this.pending.get(key);
    this.pending.delete(key);
    fn(p);
  }

  async processPacket(packet) {
    const key = `${packet.group}:${packet.element}`;
    const handler = this.handlers.get(key);
    if (!handler) {
      this.sendResult({ packet_id: packet.id, status: 'error', error: { code: 'PF001', message: `No handler for ${key}` }, duration_ms: 0 });
      return;
    }
    const start = Date.now();
    try {
      const data = await handler(packet.data);
      this.sendResult({ packet_id: packet.id, status: 'success', data, duration_ms: Date.now() - start });
    } catch (error) {
      this.sendResult({ packet_id: packet.id, status: 'error', error: { code: 'PF500', message: error instanceof Error ? error.message : 'Unknown error' }, duration_ms: Date.now() - start });
    }
  }

  sendResult(result) {
    this.ws.send(JSON.stringify({ type: 'result', seq: 0, payload: result }));
  }

  sendHeartbeat() {
    this.ws.send(JSON.stringify({ type: 'heartbeat', seq: ++this.sequence, payload: { timestamp: Date.now() } }));
  }
}

async function serve(url, name) {
  const r = new SeedReactor(url);
  r.register('df', `echo_${name}`, async (data) => data);
  r.register('df', `fail_${name}`, async () => { throw new Error(`boom from ${name}`); });
  r.register('df', `slow_${name}`, (ms) => new Promise((resolve) => setTimeout(() => resolve(ms), ms)));
  await r.start();
  r.ws.on('close', () => process.exit(0));
  process.stdout.write('ready\n');
}

async function submit(url) {
  const r = new SeedReactor(url);
  await r.start();
  const lines = readline.createInterface({ input: process.stdin });
  const work = [];
  for await (const line of lines) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    const packet = { group: req.group, element: req.element, data: req.data };
    if (req.timeout_ms) packet.timeout_ms = req.timeout_ms;
    if (req.metadata) packet.metadata = req.metadata;
    work.push(r.submit(packet).then(
      (result) => process.stdout.write(JSON.stringify({ id: req.id, result }) + '\n'),
      (e) => process.stdout.write(JSON.stringify({ id: req.id, result: { status: 'error', error: { code: 'LOST', message: e.message } } }) + '\n')));
  }
  await Promise.all(work);
  r.stop();
}

const [mode, url, name] = process.argv.slice(2);
if (mode === 'serve') serve(url, name).catch((e) => { console.error(e); process.exit(1); });
else if (mode === 'submit') submit(url).catch((e) => { console.error(e); process.exit(1); });
else { console.error('usage: seed_peer.js serve URL NAME | submit URL'); process.exit(2); }
