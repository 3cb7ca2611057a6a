'use strict';
// Where the addon of this machine is: a source build (packetflow.node, made
// by scripts/build.js) or the prebuilt one shipped in the npm package for
// this platform (prebuilds/<platform>/packetflow.node). Shared by index.js,
// which loads it, and scripts/install.js, which decides whether to build.

const path = require('node:path');

/**
 * This machine's platform in the napi-rs naming (`linux-x64-gnu`,
 * `linux-x64-musl`, `darwin-arm64`, `win32-x64`): the prebuilt addon's
 * folder name under prebuilds/.
 * @returns {string}
 */
function platformKey() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return base;
  // A glibc process reports the C library's version; musl reports none.
  const report = /** @type {{ header?: { glibcVersionRuntime?: string } }} */ (process.report.getReport());
  return `${base}-${report.header && report.header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** The addon built from source by scripts/build.js. */
const builtAddon = path.join(__dirname, 'packetflow.node');

/**
 * The prebuilt addon for this machine's platform, whether or not the
 * package ships one.
 * @returns {string}
 */
function prebuiltAddon() {
  return path.join(__dirname, 'prebuilds', platformKey(), 'packetflow.node');
}

module.exports = { platformKey, builtAddon, prebuiltAddon };
