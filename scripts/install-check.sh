#!/usr/bin/env bash
# The install check (`make test-install`, part of `make test`, after
# `make dist`): the artifacts in dist/ install and work where there is no
# Rust toolchain.
#
# With cargo off the PATH (every PATH directory holding cargo, rustc or
# rustup is left out, HOME is an empty directory so ~/.cargo/bin is not
# found, CARGO and friends are unset):
#   1. a fresh venv: pip installs the wheel (binary only, no index);
#   2. a fresh npm project: npm installs the tarball, whose install script
#      must take the prebuilt addon;
#   3. a fresh Mix project: the Hex tarball is checked and unpacked as
#      `mix deps.get` does, and depended on; its compiler must take the
#      prebuilt NIF;
#   4. a round trip through a hub of the packetflow command from dist/:
#      Python -> Elixir -> Node.js -> Python, and the same from the command
#      (scripts/install_check/roundtrip.py).
# Before that, a source build is asked for in the npm and Mix projects and
# must fail for want of cargo: the check would fail if an artifact needed it.
# Last, with cargo, the fallbacks: the npm package built from the crate it
# carries, the Python package from the sdist (the Hex package's source
# build is in the Elixir suite).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$root/dist"
here="$root/scripts/install_check"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export LANG="${LANG:-C.UTF-8}" LC_ALL="${LC_ALL:-C.UTF-8}"
version="$(bash "$root/scripts/version.sh")"

echo "== install check: dist/ (version $version)"
(cd "$dist" && sha256sum --quiet -c SHA256SUMS)
wheel="$(ls "$dist"/packetflow-"$version"-cp39-abi3-manylinux*_x86_64.whl)"
tgz="$dist/packetflow-$version.tgz"
hex="$dist/packetflow-$version.tar"
cli="$dist/packetflow-$version-x86_64-linux-gnu"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/bin"

# A PATH without the Rust toolchain.
no_rust_path=""
IFS=: read -r -a path_dirs <<< "$PATH"
for dir in "${path_dirs[@]}"; do
  [[ -z "$dir" || -e "$dir/cargo" || -e "$dir/rustc" || -e "$dir/rustup" ]] && continue
  no_rust_path="${no_rust_path:+$no_rust_path:}$dir"
done
# The packetflow command as a user installs it: `packetflow` on the PATH.
install -m 755 "$cli" "$work/bin/packetflow"
no_rust_path="$work/bin:$no_rust_path"
without_cargo() {
  env -u CARGO -u CARGO_HOME -u RUSTUP_HOME -u RUSTC -u CARGO_TARGET_DIR -u RUSTFLAGS \
    HOME="$work/home" PATH="$no_rust_path" "$@"
}
if without_cargo bash -c 'command -v cargo || command -v rustc'; then
  echo "the install check could not take cargo off the PATH" >&2
  exit 1
fi
packetflow_version="$(without_cargo packetflow --version)"
test "$packetflow_version" = "packetflow $version"
echo "packetflow command: $packetflow_version"

echo "== a fresh venv: pip install the wheel"
# The venv is made with the system's Python before HOME moves (pyenv's
# shims find their interpreter through HOME); its python is a plain one.
python3 -m venv "$work/venv"
without_cargo "$work/venv/bin/python" -m pip install -q --no-index --only-binary :all: "$wheel"
without_cargo "$work/venv/bin/python" -c '
import pathlib, packetflow, packetflow._native as native
assert packetflow.__version__ == "'"$version"'", packetflow.__version__
folder = pathlib.Path(packetflow.__file__).parent
assert (folder / "py.typed").is_file() and (folder / "_native.pyi").is_file()
print(f"packetflow {packetflow.__version__} for Python: {pathlib.Path(native.__file__).name}")
'

echo "== a fresh npm project: npm install the tarball"
mkdir "$work/npm"
(
  cd "$work/npm"
  without_cargo npm init -y >/dev/null
  # The fallback build must fail here: cargo is not to be found.
  if PACKETFLOW_BUILD_FROM_SOURCE=1 without_cargo npm install --foreground-scripts "$tgz" > "$work/npm-source.log" 2>&1; then
    cat "$work/npm-source.log" >&2
    echo "npm install built the addon from source with cargo off the PATH" >&2
    exit 1
  fi
  grep -q "cargo was not found" "$work/npm-source.log" || { cat "$work/npm-source.log" >&2; exit 1; }
  rm -rf node_modules package-lock.json
  without_cargo npm install --foreground-scripts "$tgz" 2>&1 | tee "$work/npm.log"
  grep -q "using the prebuilt addon for linux-x64-gnu" "$work/npm.log"
  without_cargo node -e "
    const { Reactor } = require('packetflow');
    const r = new Reactor();
    r.register('df', 'up', (s) => s.toUpperCase());
    r.call('df', 'up', 'npm').then((v) => { if (v !== 'NPM') process.exit(1); console.log('packetflow for Node.js: ok'); return r.stop(); });
  "
)

echo "== a fresh Mix project: the Hex tarball as a dependency"
# Checked (format, checksum) and unpacked as `mix deps.get` does, with the
# hex_core that Hex itself uses (bindings-elixir/mix/packetflow_hex_tarball.exs).
elixir -r "$root/bindings-elixir/mix/packetflow_hex_tarball.exs" -e "
  meta = PacketFlow.HexTarball.unpack!(\"$hex\", \"$work/hex/packetflow\")
  \"$version\" = meta[\"version\"]
  IO.puts(\"Hex tarball: #{meta[\"name\"]} #{meta[\"version\"]}, #{length(meta[\"files\"])} files\")
"
(
  cd "$work"
  without_cargo mix new install_check --module InstallCheck >/dev/null
  cd install_check
  cat > mix.exs <<MIX
defmodule InstallCheck.MixProject do
  use Mix.Project

  def project do
    [app: :install_check, version: "0.1.0", elixir: "~> 1.14", deps: [{:packetflow, path: "$work/hex/packetflow"}]]
  end

  def application, do: [extra_applications: [:logger]]
end
MIX
  # The source build must fail here: cargo is not to be found.
  if PACKETFLOW_BUILD_FROM_SOURCE=1 without_cargo mix compile > "$work/mix-source.log" 2>&1; then
    cat "$work/mix-source.log" >&2
    echo "mix compile built the NIF from source with cargo off the PATH" >&2
    exit 1
  fi
  grep -q "cargo is not on the PATH" "$work/mix-source.log" || { cat "$work/mix-source.log" >&2; exit 1; }
  without_cargo mix compile 2>&1 | tee "$work/mix.log"
  grep -q "using the prebuilt NIF library for x86_64-linux-gnu" "$work/mix.log"
  without_cargo mix run -e '
    {:ok, r} = PacketFlow.Reactor.start_link([])
    :ok = PacketFlow.Reactor.register(r, "df", "up", fn s, _ctx -> String.upcase(s) end)
    {:ok, "MIX"} = PacketFlow.Reactor.call(r, "df", "up", "mix")
    :ok = PacketFlow.Reactor.stop(r)
    IO.puts("packetflow for Elixir: ok")
  '
)

echo "== the round trip through a packetflow hub"
cp "$here/service.js" "$work/npm/service.js"
cp "$here/service.exs" "$work/install_check/service.exs"
without_cargo timeout 300 "$work/venv/bin/python" "$here/roundtrip.py" packetflow "$work/npm" "$work/install_check"
echo "== the source builds, with cargo: npm --build-from-source, pip from the sdist"
# Where no prebuilt fits, the npm package builds from the crate inside it
# and pip from the sdist. Both reuse what the suites compiled, so only the
# crates at their new paths are compiled (the npm package's library has
# its version in its name, apart from the repository's).
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir "$work/npm-source"
(
  cd "$work/npm-source"
  npm init -y >/dev/null
  CARGO_TARGET_DIR="$target" nice -n 10 npm install --foreground-scripts --build-from-source "$tgz" > "$work/npm-source.log" 2>&1 ||
    { tail -n 40 "$work/npm-source.log" >&2; exit 1; }
  grep -q "packetflow: built packetflow.node" "$work/npm-source.log" || { cat "$work/npm-source.log" >&2; exit 1; }
  node -e "
    const { Reactor } = require('packetflow');
    const r = new Reactor();
    r.register('df', 'up', (s) => s.toUpperCase());
    r.call('df', 'up', 'built').then((v) => { if (v !== 'BUILT') process.exit(1); console.log('npm package built from source: ok'); return r.stop(); });
  "
)
# The sdist's build names its library as the repository's does
# (lib_native.so, no hash in a cdylib's name), so it gets a target dir of
# its own, seeded once with a copy of the Python suite's compiled
# dependencies.
sdist_target="$target/sdist-check"
if [[ ! -d "$sdist_target/release" && -d "$target/maturin/release" ]]; then
  mkdir -p "$sdist_target"
  cp -a "$target/maturin/release" "$sdist_target/release"
fi
python3 -m venv "$work/venv-source"
CARGO_TARGET_DIR="$sdist_target" nice -n 10 "$work/venv-source/bin/python" -m pip install -q --no-cache-dir \
  --no-binary packetflow "$dist/packetflow-$version.tar.gz"
"$work/venv-source/bin/python" -c '
import packetflow
async def main():
    async with packetflow.Reactor() as r:
        r.register("df", "up", lambda s, ctx: s.upper())
        assert await r.call("df", "up", "sdist") == "SDIST"
import asyncio; asyncio.run(main()); print("Python package built from the sdist: ok")
'
echo "install check passed"
