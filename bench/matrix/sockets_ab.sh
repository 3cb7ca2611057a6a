#!/usr/bin/env bash
# The Python reactors' sockets A/B, interleaved: per round, the matrix with
# `--python-sockets loop`, then with `thread`, then the NATS pairs of
# ../shared/peers/nats (run from a copy in target/, set up as its README
# says). Then one table of both (bench/matrix/ab_table.py).
#
#   bash bench/matrix/sockets_ab.sh [ROUNDS] [matrix.py options...]
#
# Default matrix options: the Python and Rust pairs through a hub and direct,
# with the Python and Node baselines. Needs what `matrix.py` builds (run it
# once without --no-build) and, for NATS, `nats-server`, and the copy
# target/nats-peers/nats with its .venv and node_modules.
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
rounds="${1:-5}"
shift || true
opts=("$@")
if [[ ${#opts[@]} -eq 0 ]]; then
  opts=(--submitters python,rust --handlers python,rust --baselines python,node --topologies hub,direct)
fi
out="$root/target/sockets-ab-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
nats="$root/target/nats-peers/nats"
for round in $(seq "$rounds"); do
  for mode in loop thread; do
    echo "== round $round $mode $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/log"
    timeout 1200 python3 "$root/bench/matrix/matrix.py" --no-build --trials 1 --python-sockets "$mode" "${opts[@]}" \
      > "$out/matrix-$mode-$round.md" 2> "$out/matrix-$mode-$round.err"
    grep -o "raw rows: .*" "$out/matrix-$mode-$round.err" | cut -d' ' -f3 >> "$out/raw-files"
  done
  if [[ -d "$nats/.venv" ]]; then
    echo "== round $round nats $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/log"
    (cd "$nats" && timeout 900 python3 bench.py --trials 1 --configs py-py,py-node,node-py,node-node \
      --out "$out/nats-$round/NATS.md" > "$out/nats-$round.log" 2>&1)
  fi
done
echo "== done $(date +%T)" | tee -a "$out/log"
python3 "$root/bench/matrix/ab_table.py" $(cat "$out/raw-files") --nats "$out"/nats-*/nats-raw-*.jsonl | tee "$out/table.md"
