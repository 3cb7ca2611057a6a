#!/usr/bin/env bash
# Runs one fuzz target on the stable toolchain for a while, at the lowest
# CPU priority: bash core/fuzz/fuzz.sh TARGET [SECONDS] [extra libFuzzer flags].
# The corpus grows in core/fuzz/corpus/TARGET (not checked in), starting
# from the checked-in seeds; a crash leaves its input in
# core/fuzz/artifacts/TARGET. See docs/fuzzing.md.
set -euo pipefail
target=${1:?usage: fuzz.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
case $target in
  node_session) max_len=16384 ;;
  *) max_len=4096 ;;
esac
mkdir -p "$here/corpus/$target"
cd "$here/.."
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and friends);
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
RUSTC_BOOTSTRAP=1 exec nice -n 19 cargo fuzz run --release \
  --target-dir "${FUZZ_TARGET_DIR:-$root/target/fuzz}" \
  "$target" "$here/corpus/$target" "$here/seeds/$target" -- \
  -max_total_time="$seconds" -max_len="$max_len" -timeout=20 \
  -dict="$here/dict/packetflow.dict" -print_final_stats=1 "$@"
