#!/usr/bin/env node
'use strict';
// Builds the native addon from source with cargo and copies it to
// packetflow.node beside index.js. Run by scripts/install.js (npm's install
// script) where no prebuilt addon fits, and by `npm run build`.
//
// The crate is laid out one of two ways:
// - in the repository, a member of the PacketFlow Cargo workspace (it uses
//   the core crate in ../core); cargo's target dir is CARGO_TARGET_DIR when
//   set, else the workspace's `target/`;
// - in the npm package (made by `make dist`, see scripts/dist.sh), a crate
//   of its own beside the vendored core crate native/packetflow_core, with a
//   Cargo.lock that cargo must follow (--locked); the target dir is
//   CARGO_TARGET_DIR when set, else `target/` in the package, removed once
//   the addon is copied out.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { builtAddon: output } = require('../platform.js');

const pkgDir = path.resolve(__dirname, '..');
const workspace = path.resolve(pkgDir, '..');
const inPackage = fs.existsSync(path.join(pkgDir, 'native', 'packetflow_core', 'Cargo.toml'));

/**
 * @param {string} message
 * @returns {never}
 */
function fail(message) {
  console.error(`packetflow: ${message}`);
  process.exit(1);
}

function findCargo() {
  const candidates = [process.env.CARGO, 'cargo', path.join(os.homedir(), '.cargo', 'bin', 'cargo')];
  for (const candidate of candidates.filter(Boolean)) {
    const probe = spawnSync(/** @type {string} */ (candidate), ['--version'], { stdio: 'ignore' });
    if (probe.status === 0) return /** @type {string} */ (candidate);
  }
  return fail('cargo was not found. Install Rust (https://rustup.rs) and run `npm rebuild packetflow`.');
}

if (!inPackage && (!fs.existsSync(path.join(workspace, 'Cargo.toml')) || !fs.existsSync(path.join(workspace, 'core')))) {
  fail(
    `neither the vendored crates of the npm package nor the PacketFlow Cargo workspace (${workspace}) ` +
      'were found: install the npm package, or install from a checkout of the repository ' +
      '(`npm install ./bindings-node`).',
  );
}

const cargo = findCargo();
const ownTargetDir = inPackage && !process.env.CARGO_TARGET_DIR ? path.join(pkgDir, 'target') : null;
const args = inPackage
  ? ['build', '--release', '--lib', '--locked', '--manifest-path', path.join(pkgDir, 'Cargo.toml')]
  : ['build', '--release', '--package', 'packetflow-node'];
if (ownTargetDir) args.push('--target-dir', ownTargetDir);
args.push('--message-format=json-render-diagnostics');
const build = spawnSync(cargo, args, {
  cwd: pkgDir,
  stdio: ['ignore', 'pipe', 'inherit'],
  maxBuffer: 256 * 1024 * 1024,
  encoding: 'utf8',
});
if (build.error) fail(`cargo could not run: ${build.error.message}`);
if (build.status !== 0) fail(`cargo build failed (exit code ${build.status})`);

// The library's path comes from cargo's own report, whatever the target
// dir and the library's name (the package's carries its version): the one
// cdylib of the build.
let library = null;
for (const line of build.stdout.split('\n')) {
  if (!line.startsWith('{')) continue;
  const message = JSON.parse(line);
  if (message.reason === 'compiler-artifact' && message.target && message.target.crate_types.includes('cdylib')) {
    library = message.filenames.find((/** @type {string} */ f) => /\.(so|dylib|dll)$/.test(f)) || library;
  }
}
if (!library) fail('cargo did not report the addon library');

// Remove, then copy: overwriting a library that a running process has
// loaded would corrupt that process; a new file leaves it untouched.
fs.rmSync(output, { force: true });
fs.copyFileSync(library, output);
console.error(`packetflow: built ${path.relative(process.cwd(), output) || output}`);
if (ownTargetDir) fs.rmSync(ownTargetDir, { recursive: true, force: true });
