#!/usr/bin/env bash
# The Python suite: builds the package with pip (maturin as the PEP 517
# backend, as a user's `pip install ./bindings-python` would), installs it
# into a private venv, runs pytest (+ pytest-asyncio) and checks the typed
# example with `mypy --strict`. Exits non-zero on any failure.
#
# Everything it builds lives under CARGO_TARGET_DIR (default: the
# repository's target/): the venv in python-venv/, maturin's build in
# maturin/. PACKETFLOW_PYTHON_VENV and PACKETFLOW_MATURIN_TARGET_DIR move
# either elsewhere.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${PACKETFLOW_PYTHON_VENV:-$target/python-venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# maturin gets a target dir of its own inside the shared one: alternating
# its builds with plain cargo builds in one dir would rebuild pyo3 each time.
export CARGO_TARGET_DIR="${PACKETFLOW_MATURIN_TARGET_DIR:-$target/maturin}"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "python3 is needed" >&2
  exit 1
fi

# The NATS tests start real nats-server processes.
bash "$root/scripts/ensure-nats-server.sh"

if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$(dirname "$venv")"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian ships venv support separately.
    rm -rf "$venv"
    echo "== installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi
py="$venv/bin/python"

echo "== python test tools"
"$py" -m pip install -q "pytest>=7,<10" "pytest-asyncio>=0.23,<2" "mypy>=1.8,<3" "trustme>=1.1,<2"

echo "== pip install ./bindings-python (maturin build, release profile)"
(cd "$root" && "$py" -m pip install -q --force-reinstall --no-deps ./bindings-python)

# The installed extension must be the stable-ABI build.
"$py" - <<'PY'
import pathlib, packetflow, packetflow._native as native
so = pathlib.Path(native.__file__).name
assert ".abi3." in so, f"expected an abi3 extension, got {so}"
print(f"packetflow {packetflow.__version__} ({so})")
PY

echo "== pytest"
cd "$here"
timeout 900 "$py" -m pytest -q -p no:cacheprovider tests

echo "== mypy --strict on the typed example, stubtest against the built module"
timeout 300 "$py" -m mypy --strict --no-incremental examples/typed_usage.py
# From outside the source tree, so the installed package is the one checked.
mkdir -p "$target"
(cd "$target" && timeout 300 "$py" -m mypy.stubtest packetflow --ignore-missing-stub)
timeout 60 "$py" examples/typed_usage.py >/dev/null
echo "python suite passed"
