#!/usr/bin/env bash
# `make demo`: a hub and services in Python, Node.js and Elixir on this
# machine (loopback only), called across by a submitter. Builds what it
# needs first (see scripts/build-bindings.sh); stops by itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
log="$CARGO_TARGET_DIR/demo-build.log"
mkdir -p "$CARGO_TARGET_DIR"
echo "building the CLI and the Python, Node.js and Elixir packages (log: ${log#"$root"/})"
# Only the step lines are shown; the whole output goes to the log.
if ! bash "$root/scripts/build-bindings.sh" "$root/demo/elixir_service" 2>&1 | tee "$log" | grep --line-buffered '^=='; then
  tail -n 40 "$log" >&2
  echo "the build failed; the whole log is in $log" >&2
  exit 1
fi
exec "${PACKETFLOW_PYTHON_VENV:-$CARGO_TARGET_DIR/python-venv}/bin/python" "$root/demo/demo.py"
