#!/usr/bin/env bash
# Checks the package's @specs with Dialyzer (plain dialyzer from Debian's
# erlang-dialyzer; no Mix dependency). The PLT of OTP and Elixir is built
# once, about a minute and a half, and kept in _build/.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
export MIX_ENV="${MIX_ENV:-test}"

if ! command -v dialyzer >/dev/null 2>&1; then
  echo "== elixir: installing Dialyzer from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends erlang-dialyzer
fi

elixir_lib="$(elixir -e 'IO.puts(Path.expand("..", :code.lib_dir(:elixir)))')"
# Dialyzer reads Elixir's debug info through Elixir's own modules.
export ERL_LIBS="$elixir_lib"
plt="$here/_build/packetflow-otp$(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().').plt"

if [[ ! -f "$plt" ]]; then
  echo "== elixir: building the Dialyzer PLT (once)"
  mkdir -p "$(dirname "$plt")"
  dialyzer --build_plt --output_plt "$plt.tmp" --apps erts kernel stdlib \
    "$elixir_lib/elixir/ebin" "$elixir_lib/logger/ebin" >/dev/null || true
  # Building reports OTP's own unknown types as warnings; the PLT is usable.
  [[ -f "$plt.tmp" ]] && mv "$plt.tmp" "$plt"
fi

cd "$here"
mix compile >/dev/null
dialyzer --plt "$plt" --no_check_plt "_build/$MIX_ENV/lib/packetflow/ebin"
