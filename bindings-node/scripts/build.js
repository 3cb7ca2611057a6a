#!/usr/bin/env node
'use strict';
// Builds the native addon from source with cargo and copies it to
// packetflow.node beside index.js. Run by npm as the package's install
// script, and by `npm run build`.
//
// The crate is a member of the PacketFlow Cargo workspace (it uses the core
// crate by path), so this runs inside a checkout of that workspace. Cargo's
// target dir is CARGO_TARGET_DIR when set, else the workspace's `target/`.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const pkgDir = path.resolve(__dirname, '..');
const workspace = path.resolve(pkgDir, '..');
const output = path.join(pkgDir, 'packetflow.node');

function fail(message) {
  console.error(`packetflow: ${message}`);
  process.exit(1);
}

function findCargo() {
  const candidates = [process.env.CARGO, 'cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')];
  for (const candidate of candidates.filter(Boolean)) {
    const probe = spawnSync(candidate, ['--version'], { stdio: 'ignore' });
    if (probe.status === 0) return candidate;
  }
  return fail('cargo was not found. Install Rust (https://rustup.rs) and run `npm rebuild packetflow`.');
}

if (!fs.existsSync(path.join(workspace, 'Cargo.toml')) || !fs.existsSync(path.join(workspace, 'core'))) {
  fail(
    `the PacketFlow Cargo workspace was not found at ${workspace}. Install the package from a ` +
      'checkout of the repository (`npm install ./bindings-node`), which builds it from source.',
  );
}

const cargo = findCargo();
const build = spawnSync(
  cargo,
  ['build', '--release', '--package', 'packetflow-node', '--message-format=json-render-diagnostics'],
  { cwd: pkgDir, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
);
if (build.error) fail(`cargo could not run: ${build.error.message}`);
if (build.status !== 0) fail(`cargo build failed (exit code ${build.status})`);

// The library's path comes from cargo's own report, whatever the target dir.
let library = null;
for (const line of build.stdout.split('\n')) {
  if (!line.startsWith('{')) continue;
  const message = JSON.parse(line);
  if (message.reason === 'compiler-artifact' && message.target && message.target.name === 'packetflow_node') {
    library = message.filenames.find((f) => /\.(so|dylib|dll)$/.test(f)) || library;
  }
}
if (!library) fail('cargo did not report the packetflow_node library');

// Remove, then copy: overwriting a library that a running process has
// loaded would corrupt that process; a new file leaves it untouched.
fs.rmSync(output, { force: true });
fs.copyFileSync(library, output);
console.error(`packetflow: built ${path.relative(process.cwd(), output) || output}`);
