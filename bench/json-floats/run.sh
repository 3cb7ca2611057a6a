#!/usr/bin/env bash
# Builds this bench with and without serde_json's float_roundtrip, then runs
# the two binaries alternately (ROUNDS pairs) and prints each JSON line; the
# figure per build is the best of its runs.
#   bash bench/json-floats/run.sh [PAIRS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../target}/json-floats
cargo build --release -q --manifest-path "$here/Cargo.toml" --target-dir "$target/default"
cargo build --release -q --manifest-path "$here/Cargo.toml" --target-dir "$target/roundtrip" --features roundtrip
for _ in $(seq "${1:-5}"); do
  "$target/default/release/json-floats-bench" 3
  "$target/roundtrip/release/json-floats-bench" 3
done
