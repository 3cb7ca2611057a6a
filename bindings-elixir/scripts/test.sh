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

cd "$here"
echo "== elixir: mix test"
MIX_ENV=test mix compile --warnings-as-errors
MIX_ENV=test mix test

echo "== elixir: dialyzer (@spec checks)"
MIX_ENV=test bash "$here/scripts/dialyzer.sh"

echo "== elixir: a fresh Mix project with {:packetflow, path: ...}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
mix new consumer >/dev/null
cd consumer
cat > mix.exs <<MIX
defmodule Consumer.MixProject do
  use Mix.Project

  def project do
    [app: :consumer, version: "0.1.0", elixir: "~> 1.14", deps: [{:packetflow, path: "$here"}]]
  end

  def application, do: [extra_applications: [:logger]]
end
MIX
# Without CARGO_TARGET_DIR the package asks cargo where its target
# directory is (the workspace's, the same one as above).
env -u CARGO_TARGET_DIR mix compile
env -u CARGO_TARGET_DIR mix run -e '
{:ok, r} = PacketFlow.Reactor.start_link(name: Consumer.Reactor)
:ok = PacketFlow.Reactor.register(r, "df", "upper", fn data, _ctx -> String.upcase(data) end)
{:ok, "FROM A FRESH PROJECT"} = PacketFlow.Reactor.call(r, "df", "upper", "from a fresh project")
:ok = PacketFlow.Reactor.stop(r)
IO.puts("fresh project: ok")
'
echo "== elixir: all passed"
