#!/usr/bin/env bash
# The interop suite: real processes in every language, talking through real
# nodes on loopback. Installs what it needs (npm `ws`, pip `websockets` and
# `pytest`), builds the CLI, runs pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

(cd "$root" && cargo build --release -q -p packetflow-cli)
# The bindings as their users install them (their own suites do the same;
# this makes the interop suite runnable on its own).
if [[ ! -x "$root/target/python-venv/bin/python" ]] || ! "$root/target/python-venv/bin/python" -c "import packetflow" 2>/dev/null; then
  python3 -m venv "$root/target/python-venv"
  (cd "$root" && CARGO_TARGET_DIR="$root/target/maturin" "$root/target/python-venv/bin/python" -m pip install -q ./bindings-python)
fi
if [[ ! -f "$root/bindings-node/packetflow.node" ]]; then
  (cd "$root/bindings-node" && npm install --silent --no-audit --no-fund)
fi
if command -v mix >/dev/null; then
  (cd "$here/participants/pf_elixir" && mix compile >/dev/null)
fi
(cd "$here/seed" && npm install --silent --no-audit --no-fund)
python3 -m pip install -q --disable-pip-version-check websockets pytest 2>&1 | grep -v "as the 'root' user" || true

cd "$here"
python3 -m pytest -q -p no:cacheprovider .
