'use strict';
// Shared by the tests: bounded waits, never sleeps standing in for sync.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** Rejects if `promise` does not settle within `ms`. */
function within(promise, ms, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve function exposed (a latch a test opens). */
function latch() {
  let open;
  const opened = new Promise((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/**
 * Resolves once `predicate()` is true; rejects after `ms`. For conditions
 * with no event to wait on (a passivation sweep, a count on another
 * thread): checked every few ms.
 */
async function until(predicate, ms, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Resolves to `signal.reason` once `signal` has aborted (at once if it
 * has); rejects if that has not happened within `ms`.
 */
function aborted(signal, ms, what = 'signal') {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return within(
    new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true })),
    ms,
    `${what} abort`,
  );
}

/**
 * Runs `node file` and resolves to {code, signal, stdout, stderr}; kills it
 * (and fails) if it has not exited within `ms`.
 */
function runNode(file, ms, env = {}, nodeArgs = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, file], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} did not exit within ${ms} ms (stdout: ${stdout}, stderr: ${stderr})`));
    }, ms);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Starts `command` and resolves to `{child, match}` once `pattern` matches
 * a whole line of its `stream` ('stdout' or 'stderr'); kills it and rejects if
 * that has not happened within `ms` or if it exits first. The caller stops
 * the child (see `stopChild`).
 */
function startUntil(command, args, pattern, { stream = 'stdout', ms = 10000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const seen = { stdout: '', stderr: '' };
    let done = false;
    const finish = (error, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error) {
        child.kill('SIGKILL');
        reject(error);
      } else {
        resolve(value);
      }
    };
    const timer = setTimeout(
      () => finish(new Error(`${command} printed no line matching ${pattern} within ${ms} ms (${stream}: ${seen[stream]})`)),
      ms,
    );
    for (const name of ['stdout', 'stderr']) {
      child[name].setEncoding('utf8');
      child[name].on('data', (chunk) => {
        seen[name] += chunk;
        if (name !== stream) return;
        // Whole lines only: a chunk may end in the middle of one.
        const lines = seen[name].slice(0, seen[name].lastIndexOf('\n') + 1);
        const match = lines.match(pattern);
        if (match) finish(null, { child, match, seen });
      });
    }
    child.on('error', (error) => finish(error));
    // 'close' comes after the exit and the last output (which 'exit' may precede).
    child.on('close', (code, signal) =>
      finish(new Error(`${command} exited (${code ?? signal}) before printing ${pattern}: ${seen.stderr}`)),
    );
  });
}

/**
 * Resolves to `{code, signal}` once `child` has exited; sends `signal` first
 * if given. Kills it and rejects if it has not exited within `ms`.
 */
function stopChild(child, signal, ms = 10000) {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`process ${child.pid} did not exit within ${ms} ms`));
    }, ms);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig });
    });
    if (signal) child.kill(signal);
  });
}

/**
 * The `packetflow` CLI binary (the hub): `PACKETFLOW_CLI`, else the
 * workspace's release build (scripts/test.sh builds it).
 */
function cliPath() {
  const root = path.resolve(__dirname, '..', '..');
  const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  const cli = process.env.PACKETFLOW_CLI || path.join(target, 'release', 'packetflow');
  if (!fs.existsSync(cli)) {
    throw new Error(`the packetflow CLI is not at ${cli}: build it with \`cargo build --release -p packetflow-cli\``);
  }
  return cli;
}

/** A fresh temporary folder, removed when the test `t` ends. */
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'packetflow-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Makes TLS files in `dir` with openssl (scripts/test.sh installs it): a CA
 * made for this run (`ca`), and a certificate it issued for 127.0.0.1 and
 * localhost (`cert`) with its key (`key`). P-256 keys: quick to make.
 * Returns the three paths. `name` prefixes the files.
 */
function makeTls(dir, name = 'node') {
  const file = (f) => path.join(dir, `${name}-${f}`);
  const run = (args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', `/CN=${name} test CA`]);
  run(['req', ...ec, '-keyout', file('node.key'), '-out', file('node.csr'), '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', file('node.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('node.crt'), '-days', '2', '-extfile', file('ext.cnf')]);
  return { ca: file('ca.pem'), cert: file('node.crt'), key: file('node.key') };
}

/**
 * A reactor serving `df:echo`, and how many times that handler ran: tests
 * of values refused before submitting check that it never did.
 */
function countingEcho() {
  const { Reactor } = require('..');
  const r = new Reactor();
  const counter = { reactor: r, ran: 0 };
  r.register('df', 'echo', (d) => {
    counter.ran += 1;
    return d;
  });
  return counter;
}

/**
 * The `nats-server` binary: `NATS_SERVER_BIN`, else the one on the PATH or
 * in /usr/sbin (scripts/test.sh installs it through
 * scripts/ensure-nats-server.sh).
 */
function natsServerPath() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  const dirs = (process.env.PATH || '').split(path.delimiter).concat(['/usr/sbin', '/usr/local/sbin']);
  for (const dir of dirs) {
    const candidate = path.join(dir, 'nats-server');
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  throw new Error('nats-server not found: run scripts/ensure-nats-server.sh or set NATS_SERVER_BIN');
}

/** A port that was free on 127.0.0.1 a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = require('node:net').createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a real `nats-server` on a free loopback port (with `args` added)
 * and resolves to `{url, port}` once it is ready for clients; the server
 * is killed when `t` ends. With `jetstream`, JetStream is on (`-js`), its
 * store in a temporary directory removed once the server is gone.
 */
async function natsServer(t, args = [], { jetstream = false } = {}) {
  const port = await freePort();
  const store = jetstream ? fs.mkdtempSync(path.join(os.tmpdir(), 'packetflow-nats-js-')) : null;
  const removeStore = () => store && fs.rmSync(store, { recursive: true, force: true });
  let started;
  try {
    started = await startUntil(
      natsServerPath(),
      ['-a', '127.0.0.1', '-p', String(port), ...(store ? ['-js', '-sd', store] : []), ...args],
      /Server is ready/,
      { stream: 'stderr', ms: 15000 },
    );
  } catch (error) {
    removeStore();
    throw error;
  }
  t.after(async () => {
    await stopChild(started.child, 'SIGKILL');
    removeStore();
  });
  return { url: `nats://127.0.0.1:${port}`, port };
}

module.exports = {
  countingEcho, within, until, aborted, latch, runNode, startUntil, stopChild, cliPath, tempDir, makeTls, natsServer, freePort,
};
