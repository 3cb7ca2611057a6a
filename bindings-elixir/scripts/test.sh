#!/usr/bin/env bash
# The Elixir suite: installs Elixir/OTP from Debian when missing, builds the
# NIF through Mix, runs the ExUnit tests and Dialyzer, then checks that a
# fresh Mix project depending on this package by path compiles and runs.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export LANG="${LANG:-C.UTF-8}" LC_ALL="${LC_ALL:-C.UTF-8}"

if ! command -v mix >/dev/null 2>&1; then
  echo "== elixir: installing Elixir and Erlang/OTP from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends elixir erlang-dev
fi

# The TLS tests make their certificates with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  echo "== elixir: installing openssl from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends openssl
fi

# The NATS tests start real nats-server processes.
bash "$root/scripts/ensure-nats-server.sh"

cd "$here"
echo "== elixir: mix format --check-formatted"
mix format --check-formatted

echo "== elixir: mix test"
MIX_ENV=test mix compile --warnings-as-errors
MIX_ENV=test mix test

echo "== elixir: dialyzer (@spec checks)"
MIX_ENV=test bash "$here/scripts/dialyzer.sh"

# A fresh Mix project APP (module MODULE) in the current directory that
# depends on the package at PATH by path; leaves the shell inside it.
new_consumer() {
  mix new "$1" --module "$2" >/dev/null
  cd "$1"
  cat > mix.exs <<MIX
defmodule $2.MixProject do
  use Mix.Project

  def project do
    [app: :$1, version: "0.1.0", elixir: "~> 1.14", deps: [{:packetflow, path: "$3"}]]
  end

  def application, do: [extra_applications: [:logger]]
end
MIX
}

echo "== elixir: a fresh Mix project with {:packetflow, path: ...}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
new_consumer consumer Consumer "$here"
# Without CARGO_TARGET_DIR the package asks cargo where its target
# directory is (the workspace's, the same one as above). When the suite
# was given a target dir of its own, the project keeps it: built in the
# workspace's instead, the library it copies into this package's priv/
# would not be the one the last check below compares with.
consumer_env=(env)
if [[ "$CARGO_TARGET_DIR" == "$root/target" ]]; then consumer_env=(env -u CARGO_TARGET_DIR); fi
"${consumer_env[@]}" mix compile
"${consumer_env[@]}" mix run -e '
{:ok, r} = PacketFlow.Reactor.start_link(name: Consumer.Reactor)
:ok = PacketFlow.Reactor.register(r, "df", "upper", fn data, _ctx -> String.upcase(data) end)
{:ok, "FROM A FRESH PROJECT"} = PacketFlow.Reactor.call(r, "df", "upper", "from a fresh project")
:ok = PacketFlow.Reactor.stop(r)
IO.puts("fresh project: ok")
'

echo "== elixir: the Hex package, assembled outside the repository and built from there"
pkg="$scratch/package"
(cd "$here" && mix packetflow.publish --no-publish --out "$pkg")
nif_manifest="$pkg/native/packetflow_nif/Cargo.toml"
# Standalone crates: nothing inherited, cargo stops at the NIF's own
# workspace, the core is the vendored copy, versions come from the lock.
if grep -nE '(\.workspace|workspace *= *true)' "$nif_manifest" "$pkg/native/packetflow_core/Cargo.toml"; then
  echo "the package's manifests still inherit from the repository's workspace" >&2; exit 1
fi
grep -qx '\[workspace\]' "$nif_manifest"
grep -qx 'packetflow = { path = "../packetflow_core" }' "$nif_manifest"
test -s "$pkg/native/packetflow_nif/Cargo.lock"
lock_sum="$(sha256sum < "$pkg/native/packetflow_nif/Cargo.lock")"
# Exactly what package[:files] selects (Hex's rule: wildcards, directories
# whole), worked out here from the package's own mix.exs.
(cd "$pkg" && mix run --no-compile --no-deps-check --no-start -e '
  files = Mix.Project.config()[:package][:files]
  expand = fn expand, path ->
    if File.dir?(path), do: Enum.flat_map(File.ls!(path), &expand.(expand, Path.join(path, &1))), else: [path]
  end
  files |> Enum.flat_map(&Path.wildcard(&1, match_dot: true)) |> Enum.flat_map(&expand.(expand, &1))
  |> Enum.uniq() |> Enum.sort() |> Enum.each(&IO.puts/1)
') > "$scratch/selected.txt"
(cd "$pkg" && find . -type f ! -path "./_build/*" | sed 's|^\./||' | LC_ALL=C sort) > "$scratch/shipped.txt"
LC_ALL=C sort -o "$scratch/selected.txt" "$scratch/selected.txt"
diff -u "$scratch/selected.txt" "$scratch/shipped.txt"
rm -rf "$pkg/_build"

cd "$scratch"
new_consumer from_package FromPackage "$pkg"
# The repository's target directory is shared (its dependencies are
# compiled already); the vendored crates are built from the package.
mix compile 2>&1 | tee "$scratch/package-build.log"
grep -q "Compiling packetflow v[0-9.]* ($pkg/native/packetflow_core)" "$scratch/package-build.log"
grep -q "Compiling packetflow_nif v[0-9.]* ($pkg/native/packetflow_nif)" "$scratch/package-build.log"
test "$(sha256sum < "$pkg/native/packetflow_nif/Cargo.lock")" = "$lock_sum"
lib_name="$(sed -n 's/^name = "\(packetflow_nif_[A-Za-z0-9_]*\)"$/\1/p' "$nif_manifest")"
package_lib="$CARGO_TARGET_DIR/release/lib$lib_name.so"
cmp "$package_lib" "$pkg/priv/native/libpacketflow_nif.so"
mix run -e '
{:ok, r} = PacketFlow.Reactor.start_link([])
:ok = PacketFlow.Reactor.register(r, "df", "upper", fn data, _ctx -> String.upcase(data) end)
{:ok, "FROM THE PACKAGE"} = PacketFlow.Reactor.call(r, "df", "upper", "from the package")
{:error, %PacketFlow.Error{code: "PF001"}} = PacketFlow.Reactor.call(r, "df", "missing")
:ok = PacketFlow.Reactor.stop(r)
IO.puts("package project: ok")
'
# The repository's own library is still its own: the package's build in
# the shared target directory did not replace it, and cargo has nothing
# to redo for it.
cd "$here"
MIX_ENV=test mix compile 2>&1 | tee "$scratch/repo-rebuild.log"
if grep -q "Compiling packetflow" "$scratch/repo-rebuild.log"; then
  echo "the repository's crates were rebuilt after the package's build" >&2; exit 1
fi
cmp "$CARGO_TARGET_DIR/release/libpacketflow_nif.so" "$here/priv/native/libpacketflow_nif.so"
if cmp -s "$package_lib" "$here/priv/native/libpacketflow_nif.so"; then
  echo "the repository loads the package's library" >&2; exit 1
fi

echo "== elixir: mix packetflow.publish hands the package to hex.publish"
# Hex is not installed here: a stand-in hex.publish task records where it
# ran and with what.
cat > "$scratch/hex_stub.exs" <<'STUB'
defmodule Mix.Tasks.Hex.Publish do
  use Mix.Task
  def run(args) do
    IO.puts("hex.publish #{inspect(args)} in #{File.cwd!()} for #{Mix.Project.project_file()}")
  end
end
STUB
mix run --no-compile --no-deps-check --no-start -r "$scratch/hex_stub.exs" -e "
Mix.Task.run(\"packetflow.publish\", [\"--out\", \"$scratch/published\", \"--\", \"package\", \"--yes\"])
IO.puts(\"then in \" <> Mix.Project.project_file())
" | tee "$scratch/publish.log"
grep -qxF "hex.publish [\"package\", \"--yes\"] in $scratch/published for $scratch/published/mix.exs" "$scratch/publish.log"
grep -qxF "then in $here/mix.exs" "$scratch/publish.log"

echo "== elixir: all passed"
