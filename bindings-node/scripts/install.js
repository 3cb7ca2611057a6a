#!/usr/bin/env node
'use strict';
// npm's install script. The npm package ships a prebuilt addon for
// linux-x64-gnu (prebuilds/linux-x64-gnu/packetflow.node); where it fits
// this machine and loads, nothing is built and cargo is not needed.
// Elsewhere (another platform, a C library too old for it), or when asked
// with `npm install --build-from-source` (or PACKETFLOW_BUILD_FROM_SOURCE=1),
// the addon is built from the Rust sources the package carries
// (scripts/build.js), which needs cargo. A checkout of the repository has
// no prebuilt addon: `npm install ./bindings-node` always builds.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { platformKey, builtAddon, prebuiltAddon } = require('../platform.js');

/** @param {string | undefined} value */
const truthy = (value) => value !== undefined && !['', '0', 'false'].includes(value.toLowerCase());
const fromSource =
  truthy(process.env.PACKETFLOW_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source);

/**
 * Whether the addon at `file` loads in a node process of its own (a load
 * that fails, say for a missing C library symbol, cannot be undone in this
 * one). Returns the failure's message, or null when it loads.
 * @param {string} file
 * @returns {string | null}
 */
function loadFailure(file) {
  const script = `try { require(${JSON.stringify(file)}); } catch (e) { process.stderr.write(String(e.message)); process.exit(1); }`;
  const probe = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  if (probe.status === 0) return null;
  return (probe.stderr || probe.error?.message || `exit status ${probe.status}`).trim().split('\n')[0];
}

function main() {
  const prebuilt = prebuiltAddon();
  if (!fromSource && fs.existsSync(prebuilt)) {
    const failure = loadFailure(prebuilt);
    if (failure === null) {
      // A source build left from an earlier install would be loaded first.
      fs.rmSync(builtAddon, { force: true });
      console.error(`packetflow: using the prebuilt addon for ${platformKey()}`);
      return;
    }
    console.error(`packetflow: the prebuilt addon for ${platformKey()} does not load here (${failure}); building from source`);
  } else if (!fromSource && fs.existsSync(path.join(__dirname, '..', 'prebuilds'))) {
    console.error(`packetflow: no prebuilt addon for ${platformKey()}; building from source`);
  }
  require('./build.js');
}

main();
