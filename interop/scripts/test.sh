#!/usr/bin/env bash
# The interop suite: real processes in every language, talking through real
# nodes on loopback. Installs what it needs (npm `ws`, pip `websockets` and
# `pytest`), builds the CLI, runs pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

(cd "$root" && cargo build --release -q -p packetflow-cli)
(cd "$here/seed" && npm install --silent --no-audit --no-fund)
python3 -m pip install -q --disable-pip-version-check websockets pytest 2>&1 | grep -v "as the 'root' user" || true

cd "$here"
python3 -m pytest -q -p no:cacheprovider .
