#!/usr/bin/env bash
# Runs one language suite: <folder>/scripts/test.sh, which installs its own
# dependencies. Prints a clear note when that suite does not exist yet.
set -euo pipefail
suite="$1"
case "$suite" in
  python) dir=bindings-python ;;
  node) dir=bindings-node ;;
  elixir) dir=bindings-elixir ;;
  interop) dir=interop ;;
  *) echo "unknown suite: $suite" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
script="$root/$dir/scripts/test.sh"
if [[ ! -f "$script" ]]; then
  echo "== $suite: no suite yet ($dir/scripts/test.sh absent)"
  exit 0
fi
echo "== $suite suite"
exec bash "$script"
