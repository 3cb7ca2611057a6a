#!/usr/bin/env bash
# A hub relaying: `packetflow serve` (HUB_BINARY) with no handler of its own,
# a second node (HANDLER_BINARY, default the same) serving df:transform
# through it, and the CLI's pipelined load (1 x 100, 200,000 packets)
# against the hub. Prints the load generator's JSON line, with the hub's
# CPU per packet. MODE=seq measures sequential round trips through the hub
# instead (5,000 after 1,000 unmeasured: p50, p95, p99). PIN=1 runs the hub
# on CPU 0 and the handler node and load generator on CPU 1 (steadier
# figures on a shared machine; the hub then wakes for smaller batches, so
# its CPU per packet is higher than unpinned).
#   [MODE=seq] [PIN=1] bash bench/net/hub_relay.sh HUB_BINARY PORT [HANDLER_BINARY]
set -euo pipefail
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
hubbin=$1; port=$2; handler=${3:-$1}
pin_hub=(); pin_rest=()
if [ -n "${PIN:-}" ]; then pin_hub=(taskset -c 0); pin_rest=(taskset -c 1); fi
# Waits (10 s at most) for a line in a server's stderr.
wait_for() { for _ in $(seq 200); do grep -q "$1" "$2" 2>/dev/null && return; sleep 0.05; done; echo "no '$1' in $2" >&2; exit 1; }
"${pin_hub[@]}" $hubbin serve --listen 127.0.0.1:$port 2>"$tmp/hub.err" & hub=$!
wait_for "listening on" "$tmp/hub.err"
"${pin_rest[@]}" $handler serve --listen 127.0.0.1:0 --connect ws://127.0.0.1:$port/packetflow/v1 --handler df:transform=uppercase 2>"$tmp/handler.err" & h=$!
wait_for "connected to" "$tmp/handler.err"
if [ "${MODE:-pipe}" = seq ]; then
  "${pin_rest[@]}" $handler bench --url ws://127.0.0.1:$port/packetflow/v1 --mode seq --seq-n 5000 --warmup 1000 --expect '"HELLO WORLD"' --json | tail -1
else
  "${pin_rest[@]}" $handler bench --url ws://127.0.0.1:$port/packetflow/v1 --mode pipe --conns 1 --inflight 100 --n 200000 --pid $hub --expect '"HELLO WORLD"' --json | tail -1
fi
kill $h $hub; wait $h $hub 2>/dev/null || true
