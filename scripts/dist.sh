#!/usr/bin/env bash
# `make dist`: the release artifacts, in dist/, that users install without
# a Rust toolchain (README, "Install"):
#
#   packetflow-V-cp39-abi3-manylinux_2_17_x86_64...whl  Python wheel (abi3,
#       CPython >= 3.9; glibc >= 2.17 through zig, checked by auditwheel),
#       with the .pyi stubs and py.typed
#   packetflow-V.tar.gz   Python sdist (builds from source with cargo)
#   packetflow-V.tgz      npm package: the prebuilt addon for linux-x64-gnu,
#       and the Rust sources for a build on any other platform
#   packetflow-V.tar      Hex package: the prebuilt NIF for x86_64-linux-gnu,
#       and the vendored crates for a build anywhere else
#   packetflow-V-x86_64-linux-gnu   the `packetflow` command, stripped
#   SHA256SUMS            the SHA-256 of each of them
#
# Built again from the same commit in the same directory, every artifact is
# the same byte for byte: SOURCE_DATE_EPOCH (the commit's time unless set)
# fixes the timestamps of the archives and of the wheel's SBOM, which
# would otherwise carry the build's time and a random serial number. The
# SBOM names this repository's two crates by their path on the build
# machine, so a build elsewhere differs there (and only there).
#
# The Node addon, the NIF and the CLI are the builds the test suites make
# in the release target dir (the same cargo commands, so no-ops after the
# suites), stripped into the packages; they need glibc >= 2.34 (that of the
# build machine's symbols), and the packages build from source where it is
# older. The wheel is built by maturin with zig for manylinux2014, in its
# own target dir (target/maturin/x86_64-unknown-linux-gnu).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export LANG="${LANG:-C.UTF-8}" LC_ALL="${LC_ALL:-C.UTF-8}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 315532800)}"
export SOURCE_DATE_EPOCH
target="$CARGO_TARGET_DIR"
dist="$root/dist"
stage="$target/dist-stage"
version="$(bash "$root/scripts/version.sh")"
rm -rf "$dist" "$stage"
mkdir -p "$dist" "$stage"

# Runs a command with its output in LOG, shown only when it fails.
quietly() {
  local log="$1"
  shift
  "$@" >>"$log" 2>&1 || { tail -n 60 "$log" >&2; echo "failed: $* (log: $log)" >&2; return 1; }
}
apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v node >/dev/null && command -v npm >/dev/null || { echo "== installing nodejs, npm"; apt_install nodejs npm; }
command -v mix >/dev/null || { echo "== installing elixir, erlang-dev"; apt_install elixir erlang-dev; }
# hex_core, which writes the Hex tarball, comes inside Debian's rebar3.
command -v rebar3 >/dev/null || { echo "== installing rebar3"; apt_install rebar3; }
command -v strip >/dev/null || { echo "== installing binutils"; apt_install binutils; }

echo "== build tools (maturin, zig, auditwheel) in target/dist-venv"
venv="$target/dist-venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
fi
"$venv/bin/python" -m pip install -q "maturin>=1.9,<2" "ziglang>=0.13,<0.18" "auditwheel>=6,<7"
# maturin finds zig through `python3 -m ziglang` of the first python3.
export PATH="$venv/bin:$PATH"

echo "== the packetflow command"
(cd "$root" && nice -n 10 cargo build --release -q -p packetflow-cli)
cli="$dist/packetflow-$version-x86_64-linux-gnu"
strip -o "$cli" "$target/release/packetflow"
test "$("$cli" --version)" = "packetflow $version"

echo "== Python wheel (maturin --zig, manylinux2014) and sdist"
(
  cd "$root/bindings-python"
  export CARGO_TARGET_DIR="$target/maturin"
  quietly "$stage/maturin.log" nice -n 10 maturin build --release --strip --zig \
    --compatibility manylinux2014 --auditwheel check --out "$dist"
  quietly "$stage/maturin.log" maturin sdist --out "$dist"
)
wheel="$(ls "$dist"/packetflow-"$version"-cp39-abi3-manylinux*_x86_64.whl)"
sdist="$dist/packetflow-$version.tar.gz"
test -s "$sdist"
# auditwheel's own verdict on the wheel, besides maturin's check.
auditwheel show "$wheel" > "$stage/auditwheel.txt"
grep -q '"manylinux_2_17_x86_64"' "$stage/auditwheel.txt" || { cat "$stage/auditwheel.txt" >&2; exit 1; }
"$venv/bin/python" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for needed in ("packetflow/_native.abi3.so", "packetflow/_native.pyi", "packetflow/py.typed", "packetflow/__init__.py"):
    assert needed in names, f"the wheel lacks {needed}"
sdist = tarfile.open(sys.argv[2]).getnames()
# The sdist carries the core crate it builds (a path dependency) and the lock.
for suffix in ("/pyproject.toml", "/core/src/lib.rs", "/Cargo.lock"):
    assert any(n.endswith(suffix) for n in sdist), f"the sdist lacks *{suffix}"
PY

echo "== npm package (prebuilt linux-x64-gnu addon, sources for the fallback)"
(cd "$root/bindings-node" && nice -n 10 cargo build --release -q --package packetflow-node)
npm_stage="$stage/npm"
mkdir -p "$npm_stage"
# The files package.json selects, as `npm pack` would pack the folder...
(cd "$root/bindings-node" && npm pack --dry-run --json 2>/dev/null) |
  node -e 'for (const f of JSON.parse(require("fs").readFileSync(0, "utf8"))[0].files) console.log(f.path)' |
  while read -r file; do
    mkdir -p "$npm_stage/$(dirname "$file")"
    cp "$root/bindings-node/$file" "$npm_stage/$file"
  done
# ... with the crate written out of the workspace (Cargo.toml, Cargo.lock,
# native/packetflow_core) and the prebuilt addon.
rm -rf "$npm_stage/prebuilds" "$npm_stage/native"
python3 "$root/scripts/standalone_crate.py" "$root/bindings-node" "$npm_stage"
mkdir -p "$npm_stage/prebuilds/linux-x64-gnu"
strip --strip-unneeded -o "$npm_stage/prebuilds/linux-x64-gnu/packetflow.node" "$target/release/libpacketflow_node.so"
(cd "$npm_stage" && npm pack --silent --pack-destination "$dist" >/dev/null)
tgz="$dist/packetflow-$version.tgz"
tar -tzf "$tgz" > "$stage/npm-files.txt"
for needed in package/prebuilds/linux-x64-gnu/packetflow.node package/native/packetflow_core/Cargo.toml \
  package/Cargo.lock package/scripts/install.js package/index.d.ts; do
  grep -qx "$needed" "$stage/npm-files.txt" || { echo "the npm package lacks $needed" >&2; exit 1; }
done

echo "== Hex package (prebuilt x86_64-linux-gnu NIF, vendored crates)"
nif_manifest="$root/bindings-elixir/native/packetflow_nif/Cargo.toml"
# The command the package's Mix compiler runs in the repository.
(cd "$root" && nice -n 10 cargo build --release -q --lib --manifest-path "$nif_manifest" --target-dir "$target")
strip --strip-unneeded -o "$stage/libpacketflow_nif.so" "$target/release/libpacketflow_nif.so"
(cd "$root/bindings-elixir" && quietly "$stage/hex.log" mix packetflow.publish --no-publish \
  --out "$stage/hex/packetflow-$version" --prebuilt "$stage/libpacketflow_nif.so" \
  --tarball "$dist/packetflow-$version.tar")

echo "== SHA256SUMS"
(cd "$dist" && sha256sum -- * > "$stage/SHA256SUMS" && mv "$stage/SHA256SUMS" SHA256SUMS)
echo "dist/ (version $version):"
(cd "$dist" && ls -l -- * | awk '{ printf "  %10d  %s\n", $5, $9 }')
