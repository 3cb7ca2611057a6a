#!/usr/bin/env bash
# The actor benchmarks of core/benches/actors.rs, each memory variant in a
# process of its own: turns and creation, then resident memory per idle
# actor for PacketFlow actors and for one tokio task + mpsc per actor.
#   bash bench/actors/run.sh [N]     (N actors for create/memory; default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000000}"
bench() { cargo bench -q -p packetflow --bench actors -- "$@"; }
cargo bench --no-run -q -p packetflow --bench actors
bench --only turns --n 2000000
bench --only create --n "$n" --reps 1
bench --only memory-actors --n "$n"
bench --only memory-tasks --n "$n"
