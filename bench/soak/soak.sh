#!/usr/bin/env bash
# Builds what the soak run needs (the CLI, the Python, Node and Elixir
# packages as scripts/build-bindings.sh installs them, the Elixir interop
# participant, and the Node participant's JSON reader from interop/seed),
# then runs bench/soak/soak.py with the arguments given. Not part of
# `make test`: it takes a few minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
bash "$root/scripts/build-bindings.sh" "$root/interop/participants/pf_elixir"
(cd "$root/interop/seed" && npm install --silent --no-audit --no-fund)
exec python3 "$root/bench/soak/soak.py" "$@"
