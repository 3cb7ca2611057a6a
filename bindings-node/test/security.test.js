'use strict';
// listen/connect with tokens and TLS: the options reach the core, and its
// refusals (PF401, PF403, PF400, TLS failures) reject as PacketFlowErrors.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Reactor, PacketFlowError } = require('..');
const { within, tempDir, makeTls } = require('./helpers');

const CLIENT_TOKEN = 'client-token-0123456789';
const UPPER_ONLY_TOKEN = 'upper-only-token-0123456789';
const OTHER_TOKEN = 'not-a-known-token-0123456789';
const TOKENS = [
  { name: 'client', token: CLIENT_TOKEN, submit: ['df:*'] },
  { name: 'upper-only', token: UPPER_ONLY_TOKEN, submit: ['df:upper'] },
];

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/**
 * Waits (bounded) until a submit to `group:element` is answered PF001. A
 * refused connection lingers until the node closes it, and a submit racing
 * that close may be sent there and answered PF503.
 */
async function noRouteTo(client, group, element) {
  for (let i = 0; i < 500; i++) {
    const res = await within(client.submit(group, element, null, { timeoutMs: 1000 }), 5000);
    assert.equal(res.status, 'error');
    if (res.error.code === 'PF001') return;
    assert.equal(res.error.code, 'PF503', res.error.message);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`${group}:${element} stayed routed to a peer`);
}

/** A reactor serving df:upper and df:secret, stopped when `t` ends. */
function serving(t, name) {
  const server = new Reactor({ name });
  server.register('df', 'upper', (s) => s.toUpperCase());
  server.register('df', 'secret', () => 'the secret');
  t.after(() => server.stop());
  return server;
}

function reactor(t, name) {
  const r = new Reactor({ name });
  t.after(() => r.stop());
  return r;
}

test('a listener with tokens lets in the right token, refuses a wrong or missing one with PF401', async (t) => {
  const server = serving(t, 'guarded');
  const { url } = await within(server.listen('127.0.0.1:0', { tokens: TOKENS }), 5000, 'listen');
  assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/packetflow\/v1$/);

  const client = reactor(t, 'with-token');
  await within(client.connect(url, { token: CLIENT_TOKEN }), 5000, 'connect');
  assert.equal(await within(client.call('df', 'upper', 'let in'), 5000), 'LET IN');
  assert.equal(await within(client.call('df', 'secret'), 5000), 'the secret');

  for (const options of [{ token: OTHER_TOKEN }, {}, undefined]) {
    const refused = reactor(t, 'refused');
    await assert.rejects(within(refused.connect(url, options), 5000, 'connect'), (error) => {
      isPf('PF401', /refused/)(error);
      assert.ok(!error.message.includes(OTHER_TOKEN), 'the message shows no token');
      return true;
    });
    // Nothing stays connected: once the refused connection has closed, the
    // server's handlers are out of reach.
    await noRouteTo(refused, 'df', 'upper');
  }
});

test('a token without the permission for a key gets PF403 on submit', async (t) => {
  const server = serving(t, 'limiting');
  const { url } = await server.listen('127.0.0.1:0', { tokens: TOKENS });
  const client = reactor(t, 'limited');
  await within(client.connect(url, { token: UPPER_ONLY_TOKEN, msgpack: true }), 5000, 'connect');
  assert.equal(await within(client.call('df', 'upper', 'allowed'), 5000), 'ALLOWED');
  const res = await within(client.submit('df', 'secret'), 5000);
  assert.equal(res.status, 'error');
  isPf('PF403', /upper-only.*df:secret/)(res.error);
  await assert.rejects(client.call('df', 'secret'), isPf('PF403'));
  // The connection stays usable.
  assert.equal(await within(client.call('df', 'upper', 'still'), 5000), 'STILL');
});

test('tokens from a file and inline add up; bad files and tokens are PF400', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'tokens.json');
  fs.writeFileSync(file, JSON.stringify({ tokens: [{ name: 'from-file', token: 'from-the-file-0123456789', submit: ['*'] }] }));
  const server = serving(t, 'file-auth');
  const { url } = await server.listen('127.0.0.1:0', { authFile: file, tokens: TOKENS.slice(0, 1) });
  for (const token of ['from-the-file-0123456789', CLIENT_TOKEN]) {
    const client = reactor(t, 'file-client');
    await within(client.connect(url, { token }), 5000, 'connect');
    assert.equal(await within(client.call('df', 'upper', 'f'), 5000), 'F');
  }

  const r = reactor(t, 'bad-files');
  await assert.rejects(r.listen('127.0.0.1:0', { authFile: path.join(dir, 'missing.toml') }), isPf('PF400', /cannot read tokens file .*missing\.toml/));
  const typo = path.join(dir, 'typo.toml');
  fs.writeFileSync(typo, '[[tokens]]\nname = "t"\ntoken = "0123456789abcdefgh"\nsumbit = ["*"]\n');
  await assert.rejects(r.listen('127.0.0.1:0', { authFile: typo }), isPf('PF400', /typo\.toml: tokens\[0\]: unknown field "sumbit"/));
  await assert.rejects(r.listen('127.0.0.1:0', { tokens: [{ name: 'short', token: 'tiny' }] }), (error) => {
    isPf('PF400', /at least 16 bytes/)(error);
    assert.ok(!error.message.includes('tiny'));
    return true;
  });
  await assert.rejects(r.listen('127.0.0.1:0', { tokens: [{ name: 'none' }] }), isPf('PF400', /exactly one of token and tokenSha256/));
  await assert.rejects(
    r.listen('127.0.0.1:0', { tokens: [{ name: 'p', token: CLIENT_TOKEN, serve: ['zz:x'] }] }),
    isPf('PF400', /serve/),
  );
  // A token given by its SHA-256 works like the token.
  const sha = require('node:crypto').createHash('sha256').update(CLIENT_TOKEN).digest('hex');
  const hashed = serving(t, 'hashed');
  const { url: hashedUrl } = await hashed.listen('127.0.0.1:0', { tokens: [{ name: 'hashed', tokenSha256: sha, submit: ['df:upper'] }] });
  const client = reactor(t, 'hashed-client');
  await within(client.connect(hashedUrl, { token: CLIENT_TOKEN }), 5000, 'connect');
  assert.equal(await within(client.call('df', 'upper', 'h'), 5000), 'H');
  // A token that cannot travel in an HTTP header.
  await assert.rejects(r.connect('ws://127.0.0.1:1/packetflow/v1', { token: 'has a\nnewline' }), isPf('PF400', /visible ASCII/));
});

test('options of the wrong shape are TypeErrors naming the option; token lists are judged by the core', async (t) => {
  const r = reactor(t, 'shapes');
  const listenCases = [
    [{ authFile: 5 }, 'authFile must be a string, got number'],
    [{ tlsCert: Buffer.from('x') }, 'tlsCert must be a string, got object'],
    [{ tlsKey: ['k'] }, 'tlsKey must be a string, got array'],
    [{ tokens: [{ name: 'a', token: () => 1 }] }, 'tokens[0].token: Function is not JSON-serializable'],
    [{ auth_file: 'x.toml' }, 'unknown option "auth_file" (expected authFile, tokens, tlsCert, tlsKey)'],
  ];
  for (const [options, message] of listenCases) {
    await assert.rejects(r.listen('127.0.0.1:0', options), { name: 'TypeError', message }, JSON.stringify(options));
  }
  // The core's TokenSpec::parse_list, with the JS spelling tokenSha256.
  const tokenCases = [
    ['abc', 'tokens must be a list of token maps, got a string'],
    [{ name: 'x' }, 'tokens must be a list of token maps, got a map'],
    [['x'], 'tokens[0] must be a map (name, token or tokenSha256, submit, serve, dashboard), got a string'],
    [[null], 'tokens[0] must be a map (name, token or tokenSha256, submit, serve, dashboard), got null'],
    [[{ token: CLIENT_TOKEN }], 'tokens[0].name is missing'],
    [[{ name: 'a', sumbit: [] }], 'tokens[0]: unknown field "sumbit"; expected name, token or tokenSha256, submit, serve, dashboard'],
    [[{ name: 'a', token_sha256: 'ab' }], 'tokens[0]: unknown field "token_sha256"; expected name, token or tokenSha256, submit, serve, dashboard'],
    [[{ name: 1 }], 'tokens[0].name must be a string, got 1'],
    [[{ name: 'a', token: 12345 }], 'tokens[0].token must be a string, got a number'],
    [[{ name: 'a', submit: 'df:*' }], 'tokens[0].submit must be an array of patterns, got "df:*"'],
    [[{ name: 'a', serve: ['df:*', 7] }], 'tokens[0].serve must hold strings, got 7'],
  ];
  for (const [tokens, message] of tokenCases) {
    await assert.rejects(r.listen('127.0.0.1:0', { tokens }), { name: 'PacketFlowError', code: 'PF400', message }, JSON.stringify(tokens));
  }
  await assert.rejects(r.listen('127.0.0.1:0', 'tls'), { name: 'TypeError', message: 'options must be an object, got string' });
  const url = 'ws://127.0.0.1:1/packetflow/v1';
  await assert.rejects(r.connect(url, { token: 123456789 }), { name: 'TypeError', message: 'token must be a string, got number' });
  await assert.rejects(r.connect(url, { tlsCa: 3 }), { name: 'TypeError', message: 'tlsCa must be a string, got number' });
  await assert.rejects(r.connect(url, { tls_ca: 'ca.pem' }), { name: 'TypeError', message: /unknown option "tls_ca" \(expected msgpack, token, tlsCa, namespace, name, user, password, nkeySeed, credentialsFile, tlsCert, tlsKey, requireTls, connectTimeoutMs, membership, membershipHeartbeatMs, actorStore\)/ });
  // The reactor is unharmed.
  r.register('df', 'ok', () => 'ok');
  assert.equal(await r.call('df', 'ok'), 'ok');
});

test('wss://: a listener with a certificate, a client trusting its CA, a round trip both ways', async (t) => {
  const tls = makeTls(tempDir(t));
  const server = serving(t, 'tls-server');
  const bound = await within(server.listen('127.0.0.1:0', { tlsCert: tls.cert, tlsKey: tls.key }), 5000, 'listen');
  assert.equal(bound.url, `wss://127.0.0.1:${bound.port}/packetflow/v1`);

  const client = reactor(t, 'tls-client');
  client.register('cf', 'back', (d) => ({ back: d }));
  await within(client.connect(bound.url, { tlsCa: tls.ca }), 5000, 'connect');
  assert.equal(await within(client.call('df', 'upper', 'encrypted'), 5000), 'ENCRYPTED');
  assert.deepEqual(await within(server.call('cf', 'back', [1, 'two']), 5000), { back: [1, 'two'] });

  // MessagePack over TLS, dialled by name (the certificate names localhost too).
  const packed = reactor(t, 'tls-msgpack');
  await within(packed.connect(`wss://localhost:${bound.port}/packetflow/v1`, { tlsCa: tls.ca, msgpack: true }), 5000, 'connect');
  assert.equal(await within(packed.call('df', 'upper', 'packed'), 5000), 'PACKED');
});

test('wss:// with tokens; TLS failures reject with the reason', async (t) => {
  const dir = tempDir(t);
  const tls = makeTls(dir);
  const other = makeTls(dir, 'other');
  const server = serving(t, 'tls-auth');
  const { url, port } = await server.listen('127.0.0.1:0', { tokens: TOKENS, tlsCert: tls.cert, tlsKey: tls.key });

  const client = reactor(t, 'tls-auth-client');
  await assert.rejects(within(client.connect(url, { tlsCa: tls.ca }), 5000, 'connect'), isPf('PF401'));
  await assert.rejects(
    within(client.connect(url, { tlsCa: other.ca, token: CLIENT_TOKEN }), 5000, 'connect'),
    isPf('PF503', /TLS handshake failed.*UnknownIssuer/),
  );
  await assert.rejects(within(client.connect(`ws://127.0.0.1:${port}/packetflow/v1`, { token: CLIENT_TOKEN }), 5000, 'connect'), PacketFlowError);
  await assert.rejects(client.connect(url, { tlsCa: path.join(dir, 'nope.pem') }), isPf('PF400', /CA file/));
  // The listener still serves a good client.
  await within(client.connect(url, { tlsCa: tls.ca, token: CLIENT_TOKEN }), 5000, 'connect');
  assert.equal(await within(client.call('df', 'upper', 'both'), 5000), 'BOTH');

  // Bad TLS files for a listener are PF400 naming them.
  const r = reactor(t, 'bad-tls');
  await assert.rejects(r.listen('127.0.0.1:0', { tlsCert: path.join(dir, 'none.crt'), tlsKey: tls.key }), isPf('PF400', /cannot read TLS certificate/));
  const notPem = path.join(dir, 'plain.txt');
  fs.writeFileSync(notPem, 'not a certificate\n');
  await assert.rejects(r.listen('127.0.0.1:0', { tlsCert: notPem, tlsKey: tls.key }), isPf('PF400', /TLS certificate .*plain\.txt/));
  await assert.rejects(r.listen('127.0.0.1:0', { tlsCert: tls.cert, tlsKey: notPem }), isPf('PF400', /TLS key/));
  await assert.rejects(r.listen('127.0.0.1:0', { tlsCert: tls.cert }), isPf('PF400', /both a certificate and a key/));
});
