#!/usr/bin/env bash
# The Node suite: installs what it needs, builds the addon from source
# through npm's install script, then runs every test of the package.
#   1. a consumer project runs `npm install <this folder>`: the addon is
#      built from source, and both `require` and `import` work;
#   2. `npm install` inside the folder (dev dependencies: typescript);
#   3. `node --test test/*.test.js` (round trips, error codes, values,
#      lifecycle, the network: two reactors over loopback WebSocket and a
#      `packetflow serve` hub, whose CLI binary is built here; tokens and
#      wss://, with certificates made by openssl, installed here if missing;
#      NATS, against real nats-server processes, installed here if missing);
#   4. `tsc --noEmit` twice: index.js (checkJs, JSDoc types) against
#      index.d.ts, so the two cannot drift apart, and an example of idiomatic
#      use and misuse against index.d.ts.
set -euo pipefail

pkg="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$pkg/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PATH="$PATH:$HOME/.cargo/bin"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== node/npm missing: installing them with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# The TLS tests make their certificates with openssl.
if ! command -v openssl >/dev/null; then
  echo "== openssl missing: installing it with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
# The NATS tests start real nats-server processes.
bash "$root/scripts/ensure-nats-server.sh"
echo "== node $(node --version), npm $(npm --version), $(cargo --version)"

echo "== npm install <folder> from a fresh consumer project (builds the addon)"
consumer="$(mktemp -d)"
trap 'rm -rf "$consumer"' EXIT
rm -f "$pkg/packetflow.node"
(
  cd "$consumer"
  npm init -y >/dev/null
  npm install "$pkg"
  test -f "$pkg/packetflow.node" || { echo "the install script did not build packetflow.node" >&2; exit 1; }
  node -e "
    const { Reactor } = require('packetflow');
    const r = new Reactor();
    r.register('df', 'up', (s) => s.toUpperCase());
    r.call('df', 'up', 'cjs').then((v) => { if (v !== 'CJS') process.exit(1); console.log('require: ok'); return r.stop(); });
  "
  node --input-type=module -e "
    import { Reactor } from 'packetflow';
    const r = new Reactor();
    r.register('df', 'up', (s) => s.toUpperCase());
    if ((await r.call('df', 'up', 'esm')) !== 'ESM') process.exit(1);
    console.log('import: ok');
    await r.stop();
  "
)

echo "== npm install (in the package)"
cd "$pkg"
npm install

echo "== cargo build --release -p packetflow-cli (the hub the network tests start)"
(cd "$root" && cargo build --release -p packetflow-cli)
export PACKETFLOW_CLI="$CARGO_TARGET_DIR/release/packetflow"

echo "== node --test"
node --test test/*.test.js

echo "== tsc --noEmit -p . (index.js against index.d.ts)"
npx --no-install tsc --noEmit -p .
echo "== tsc --noEmit -p test/types (index.d.ts against test/types/example.ts)"
npx --no-install tsc --noEmit -p test/types
echo "== node suite passed"
