#!/usr/bin/env bash
# `make demo`: the in-process demo (no outside servers).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo run --release --quiet -p packetflow --example demo
