#!/usr/bin/env bash
# The interop suite: real processes in every language, talking through real
# nodes on loopback. Builds the CLI and the three packages as their users
# install them, installs the seed peers' needs (npm `ws`, pip `websockets`),
# pytest, and for the dashboard's browser tests Debian's `chromium` and the
# `playwright` package that drives it (it uses that Chromium, never a
# browser of its own), and runs every test.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

bash "$root/scripts/build-bindings.sh" "$here/participants/pf_elixir"
# test_nats.py starts a cluster of real nats-server processes.
bash "$root/scripts/ensure-nats-server.sh"
(cd "$here/seed" && npm install --silent --no-audit --no-fund)
python3 -m pip install -q --disable-pip-version-check websockets pytest playwright 2>&1 | grep -v "as the 'root' user" || true
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Chromium from Debian (the dashboard's browser tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

cd "$here"
# Every language must take part: a participant that cannot start is a failure.
export PACKETFLOW_INTEROP_REQUIRE_ALL=1
python3 -m pytest -q -p no:cacheprovider .
