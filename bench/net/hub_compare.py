#!/usr/bin/env python3
"""Runs bench/net/hub_relay.sh for several hub binaries in turn, round after
round (so that every binary sees the same conditions on a shared machine),
and prints the median and range of each figure per binary.

    python3 bench/net/hub_compare.py [--rounds N] [--mode pipe|seq] [--pin] [--port P] HUB_BINARY...

pipe: packets/s pipelined (1 connection x 100 in flight), the hub's CPU
time per packet and its peak RSS (sampled every 10 ms); seq: p50 and p99 of sequential round trips through the hub.
The handler node is each run's hub binary too. --pin puts the hub on CPU 0
and the rest on CPU 1 (PIN=1 of hub_relay.sh). Each binary after the first
also gets the median of its per-round ratios to the first binary's figure
(each round's runs are neighbours in time, so on a shared machine that
ratio is steadier than the medians).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = {
    "pipe": [("server_cpu_us_per_packet", "hub CPU us/packet", 2), ("pipe_packets_per_s", "packets/s", 0),
             ("server_peak_rss_kib", "hub peak RSS KiB", 0)],
    "seq": [("seq_p50_us", "p50 us", 1), ("seq_p99_us", "p99 us", 1)],
}


def run(binary, port, mode, pin):
    env = dict(os.environ, MODE=mode)
    if pin:
        env["PIN"] = "1"
    done = subprocess.run(
        ["bash", os.path.join(HERE, "hub_relay.sh"), binary, str(port)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.exit(f"hub_relay.sh failed for {binary}: {done.stderr.strip()}")
    figures = json.loads(lines[-1])
    if figures.get("errors", 0):
        sys.exit(f"{binary}: {figures['errors']} packets answered wrongly")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=sorted(FIGURES), default="pipe")
    parser.add_argument("--port", type=int, default=19400)
    parser.add_argument("--pin", action="store_true")
    args = parser.parse_args()
    results = {b: [] for b in args.binaries}
    port = args.port
    for _ in range(args.rounds):
        for binary in args.binaries:
            results[binary].append(run(binary, port, args.mode, args.pin))
            port += 1
    first = results[args.binaries[0]]
    for binary, runs in results.items():
        cells = []
        for key, label, digits in FIGURES[args.mode]:
            values = [r[key] for r in runs]
            cell = (f"{label} {statistics.median(values):.{digits}f} "
                    f"({min(values):.{digits}f}-{max(values):.{digits}f})")
            if runs is not first:
                ratios = [r[key] / f[key] for r, f in zip(runs, first) if f[key]]
                cell += f" [x{statistics.median(ratios):.3f} per round]"
            cells.append(cell)
        print(f"{binary}: " + ", ".join(cells) + f" [{len(runs)} runs]")


if __name__ == "__main__":
    main()
