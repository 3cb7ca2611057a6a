#!/usr/bin/env bash
# The release version has one source: `version` in the root Cargo.toml's
# [workspace.package] table. Every crate inherits it, the Python package
# reads it from there (pyproject.toml: dynamic = ["version"], maturin takes
# the crate's), and the two manifests that must spell it out are written
# from it here:
#
#   scripts/version.sh            prints the version
#   scripts/version.sh set X.Y.Z  sets it everywhere: Cargo.toml,
#                                 bindings-node/package.json,
#                                 bindings-elixir/mix.exs (and Cargo.lock)
#
# tests/tests/versions.rs checks that all of them agree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

current() {
  # The first `version = "..."` after the [workspace.package] header.
  sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\([^"]*\)"$/\1/p' "$root/Cargo.toml" | head -n 1
}

case "${1:-}" in
  "")
    v="$(current)"
    [[ -n "$v" ]] || { echo "no version in [workspace.package] of $root/Cargo.toml" >&2; exit 1; }
    echo "$v"
    ;;
  set)
    new="${2:-}"
    # SemVer: MAJOR.MINOR.PATCH with an optional pre-release part; the same
    # string must be valid for Cargo, PEP 440 (through maturin), npm and Hex.
    if ! [[ "$new" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]]; then
      echo "usage: scripts/version.sh set MAJOR.MINOR.PATCH[-PRE] (got '${new}')" >&2
      exit 2
    fi
    sed -i '/^\[workspace\.package\]/,/^\[/s/^version = "[^"]*"$/version = "'"$new"'"/' "$root/Cargo.toml"
    sed -i '0,/^  "version": "[^"]*",$/s//  "version": "'"$new"'",/' "$root/bindings-node/package.json"
    sed -i 's/^  @version "[^"]*"$/  @version "'"$new"'"/' "$root/bindings-elixir/mix.exs"
    (cd "$root" && cargo update --workspace --offline -q)
    echo "version $(current)"
    ;;
  *)
    echo "usage: scripts/version.sh [set X.Y.Z]" >&2
    exit 2
    ;;
esac
