#!/usr/bin/env python3
"""Two `packetflow` binaries under bench/net/compare.py's loads, in pairs:
each round runs both (in a random order, each started fresh) with
compare.py's own trial (sequential round trips pinned to one core, then
pipelined 1x100 and 8x100), and the figure that matters on a shared machine
is the median of the per-round ratios B/A (a round's two runs are
neighbours in time, so the machine's drift cancels out).

    python3 bench/conns/ab.py [--rounds 20] [--threads 0,2] A_BINARY B_BINARY

Prints, per thread mode and figure, A's and B's medians (min-max) and the
median of B/A per round.
"""
import argparse
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "net"))
import benchlib  # noqa: E402
from compare import trial  # noqa: E402

FIGURES = [
    ("seq", "p50_us", "seq p50 µs", 1),
    ("pipe1", "pps", "pipe 1×100 pkt/s", 0),
    ("pipe8", "pps", "pipe 8×100 pkt/s", 0),
    ("pipe1", "server_cpu_us_per_pkt", "CPU µs/pkt 1×100", 2),
    ("pipe8", "server_cpu_us_per_pkt", "CPU µs/pkt 8×100", 2),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", default="0,2")
    ap.add_argument("--peers", default=str(benchlib.ROOT.parent / "shared" / "peers"))
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    loadgen = os.path.join(str(benchlib.build_reference_peers(args.peers)), "loadgen")
    port = 9340
    for threads in args.threads.split(","):
        runs = {"A": [], "B": []}
        for r in range(args.rounds):
            order = [("A", args.a), ("B", args.b)]
            random.shuffle(order)
            for label, binary in order:
                cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--threads", threads,
                       "--handler", "df:transform=uppercase"]
                runs[label].append(trial(label, cmd, port, "/packetflow/v1", loadgen))
                port = port + 1 if port < 9399 else 9340
            print(f"threads {threads}: round {r + 1}/{args.rounds} done", file=sys.stderr)
        print(f"\n{args.rounds} rounds, --threads {threads}; A = {args.a}, B = {args.b}\n")
        print("| figure | A | B | B/A per round (median, min–max) |")
        print("|---|---|---|---|")
        for mode, key, name, digits in FIGURES:
            a = [run[mode][key] for run in runs["A"]]
            b = [run[mode][key] for run in runs["B"]]
            ratios = [y / x for x, y in zip(a, b) if x]
            print(f"| {name} | {benchlib.median_range(a, digits)} | {benchlib.median_range(b, digits)} | "
                  f"×{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
