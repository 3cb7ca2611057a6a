#!/usr/bin/env node
'use strict';
// Served over the network: a JS handler behind a PacketFlow node (the Node
// binding's reactor listening, bench/node/net_server.js) beside the plain
// Node `ws` server of the reference peers doing the same work, both under
// the CLI's pipelined load, in one run.
//
//   node bench/node/network.js [--trials 5] [--n 200000] [--conns 1] [--inflight 100]
//                              [--threads 1] [--peers ../shared/peers] [--with-hub]
//                              [--packages DIR[,DIR...]]
//
// `--threads` lists the binding's runtime settings to measure, comma
// separated (PACKETFLOW_WORKER_THREADS: 0 = current-thread runtime on one
// thread, N = multi-thread with N workers); the default is the package's
// default. Needs the addon built (`npm install` in bindings-node), `npm
// install` in bench/node (the `ws` package for the baseline), and cargo
// (the CLI is built here). Per trial, every server starts fresh and the
// order is shuffled. Prints one JSON line per measurement, then a Markdown
// table of medians (min–max); the ratio is taken within each trial.
// `--with-hub` adds `packetflow serve` with its built-in (Rust, sync)
// uppercase handler: the ceiling for any binding of this core.
// `--packages` measures several builds of the package (folders with
// index.js and packetflow.node) side by side, each a server of every trial.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '../..');
const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
}
const TRIALS = Number(option('trials', 5));
const N = Number(option('n', 200000));
const CONNS = Number(option('conns', 1));
const INFLIGHT = Number(option('inflight', 100));
const THREADS = String(option('threads', 'default')).split(',');
const PEERS = path.resolve(option('peers', path.join(root, '..', 'shared', 'peers')));
const WITH_HUB = args.includes('--with-hub');
const PACKAGES = option('packages', '')
  .split(',')
  .filter(Boolean)
  .map((dir) => path.resolve(dir));

function fail(message) {
  console.error(`network.js: ${message}`);
  process.exit(1);
}

function buildCli() {
  const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  const build = spawnSync('cargo', ['build', '--release', '-q', '-p', 'packetflow-cli'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, CARGO_TARGET_DIR: target },
  });
  if (build.status !== 0) fail('cargo build -p packetflow-cli failed');
  return path.join(target, 'release', 'packetflow');
}

/** Starts a server; resolves to the child once `ready` appears on its stderr. */
function startServer(command, argv, env, ready, ms = 15000) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not print ${JSON.stringify(ready)} within ${ms} ms: ${stderr}`));
    }, ms);
    const onData = (chunk) => {
      stderr += chunk;
      if (stderr.includes(ready)) {
        clearTimeout(timer);
        child.stderr.off('data', onData);
        child.stderr.resume();
        resolve(child);
      }
    };
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before it was ready: ${stderr}`));
    });
  });
}

/** Stops a server: SIGTERM, then SIGKILL (and a warning) if it has not exited within 5 s. */
function stopServer(child, name) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      console.error(`warning: ${name} did not exit within 5 s of SIGTERM; killed`);
      child.kill('SIGKILL');
    }, 5000);
    child.removeAllListeners('exit');
    child.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** GNU time, when installed: the load generator's own CPU time is measured too. */
const TIME = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

function load(cli, url, pid) {
  const argv = ['bench', '--url', url, '--mode', 'pipe', '--conns', String(CONNS), '--inflight', String(INFLIGHT),
    '--n', String(N), '--pid', String(pid), '--expect', '"HELLO WORLD"', '--json'];
  const run = TIME
    ? spawnSync(TIME, ['-f', 'loadgen-cpu %U %S', cli, ...argv], { encoding: 'utf8', timeout: 300000 })
    : spawnSync(cli, argv, { encoding: 'utf8', timeout: 300000 });
  if (run.status !== 0) throw new Error(`packetflow bench failed: ${run.stderr}${run.stdout}`);
  const lines = run.stdout.trim().split('\n');
  const figures = JSON.parse(lines[lines.length - 1]);
  const cpu = /loadgen-cpu ([\d.]+) ([\d.]+)/.exec(run.stderr);
  if (cpu) {
    // Its warm-up round (a tenth of n) is in this time too.
    figures.loadgen_cpu_us_per_packet = ((Number(cpu[1]) + Number(cpu[2])) * 1e6) / (N * 1.1);
  }
  return figures;
}

function shuffle(list) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function cell(values, digits = 0, scale = 1) {
  if (values.length === 0) return '–';
  const f = (v) => (v / scale).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return `${f(median(values))} (${f(Math.min(...values))}–${f(Math.max(...values))})`;
}

async function main() {
  const serverJs = path.join(PEERS, 'node', 'server.js');
  if (!fs.existsSync(serverJs)) fail(`the reference Node server is not at ${serverJs} (use --peers)`);
  const wsModules = path.join(__dirname, 'node_modules');
  if (!fs.existsSync(path.join(wsModules, 'ws'))) fail('run `npm install` in bench/node first (the baseline needs ws)');
  if (!fs.existsSync(path.join(root, 'bindings-node', 'packetflow.node'))) {
    fail('the addon is not built: run `npm install` in bindings-node');
  }
  const cli = buildCli();

  const servers = [
    {
      name: 'plain Node `ws` server (reference peers node/server.js)',
      baseline: true,
      start: (port) => startServer(process.execPath, [serverJs, String(port)], { NODE_PATH: wsModules }, 'node ws server on'),
      path: '/',
    },
    ...(PACKAGES.length > 0 ? PACKAGES : [null]).flatMap((pkg) =>
      THREADS.map((threads) => ({
        name:
          (threads === 'default'
            ? 'PacketFlow node, JS handler (`Reactor.listen`)'
            : `PacketFlow node, JS handler, PACKETFLOW_WORKER_THREADS=${threads}`) +
          (pkg ? ` [${path.basename(pkg)}]` : ''),
        start: (port) =>
          startServer(
            process.execPath,
            [path.join(__dirname, 'net_server.js'), String(port)],
            {
              ...(threads === 'default' ? {} : { PACKETFLOW_WORKER_THREADS: threads }),
              ...(pkg ? { PACKETFLOW_PACKAGE: pkg } : {}),
            },
            'listening on',
          ),
        path: '/packetflow/v1',
      })),
    ),
    ...(WITH_HUB
      ? [
          {
            name: 'ceiling: `packetflow serve`, built-in Rust uppercase (no JS)',
            start: (port) =>
              startServer(cli, ['serve', '--listen', `127.0.0.1:${port}`, '--handler', 'df:transform=uppercase'], {}, 'listening on'),
            path: '/packetflow/v1',
          },
        ]
      : []),
  ];

  const loadBefore = os.loadavg()[0];
  const results = new Map(servers.map((s) => [s.name, []]));
  let port = 9400 + Math.floor(Math.random() * 400);
  for (let trial = 1; trial <= TRIALS; trial++) {
    const rates = new Map();
    for (const server of shuffle(servers)) {
      port += 1;
      const child = await server.start(port);
      try {
        const figures = load(cli, `ws://127.0.0.1:${port}${server.path}`, child.pid);
        figures.server = server.name;
        figures.trial = trial;
        console.log(JSON.stringify(figures));
        rates.set(server.name, figures.pipe_packets_per_s);
        results.get(server.name).push(figures);
      } finally {
        await stopServer(child, server.name);
      }
    }
    const base = rates.get(servers[0].name);
    for (const server of servers.slice(1)) {
      const last = results.get(server.name).at(-1);
      last.ratio = last.pipe_packets_per_s / base;
    }
  }

  console.log(
    `\n${os.cpus().length} vCPU, node ${process.version}; ${TRIALS} trials; pipe ${CONNS}×${INFLIGHT}, ` +
      `n=${N}; load average ${loadBefore.toFixed(2)} before, ${os.loadavg()[0].toFixed(2)} after; medians (min–max)\n`,
  );
  console.log('| server | packets/s | vs plain `ws` (same trial) | server CPU µs/packet | load generator CPU µs/packet | peak RSS MiB |');
  console.log('|---|---|---|---|---|---|');
  for (const server of servers) {
    const rs = results.get(server.name);
    const col = (key) => rs.map((r) => r[key]).filter((v) => v !== undefined);
    console.log(
      `| ${server.name} | ${cell(col('pipe_packets_per_s'))} | ${
        server.baseline ? '1.00' : cell(col('ratio'), 2)
      } | ${cell(col('server_cpu_us_per_packet'), 2)} | ${cell(col('loadgen_cpu_us_per_packet'), 2)} | ${cell(
        col('server_peak_rss_kib'),
        1,
        1024,
      )} |`,
    );
  }
}

main().catch((error) => fail(error.stack || String(error)));
