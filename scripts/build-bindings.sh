#!/usr/bin/env bash
# Builds what the multi-language programs (the demo, the interop suite) run,
# the way a user installs each package: the CLI; the Python package with pip
# into python-venv/ of the target dir (CARGO_TARGET_DIR, default target/;
# PACKETFLOW_PYTHON_VENV moves it); the Node addon through its install script; the
# Elixir package through `mix compile` of each Mix project given as an
# argument (installing Elixir from Debian when it is missing). Each cargo
# build is a no-op when current.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export LANG="${LANG:-C.UTF-8}" LC_ALL="${LC_ALL:-C.UTF-8}"

echo "== building the CLI"
(cd "$root" && cargo build --release -q -p packetflow-cli)

venv="${PACKETFLOW_PYTHON_VENV:-$CARGO_TARGET_DIR/python-venv}"
echo "== installing the Python package into ${venv#"$root"/}"
if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
# maturin's own target dir, as in the Python suite (pyo3 is built differently).
(cd "$root" && CARGO_TARGET_DIR="${PACKETFLOW_MATURIN_TARGET_DIR:-$CARGO_TARGET_DIR/maturin}" \
  "$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./bindings-python)

echo "== building the Node addon"
(cd "$root/bindings-node" && node scripts/build.js >/dev/null)

if [[ $# -gt 0 ]]; then
  if ! command -v mix >/dev/null 2>&1; then
    echo "== installing Elixir and Erlang/OTP from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends elixir erlang-dev >/dev/null
  fi
  for project in "$@"; do
    echo "== mix compile in ${project#"$root"/}"
    (cd "$project" && mix compile >/dev/null)
  done
fi
