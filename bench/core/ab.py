#!/usr/bin/env python3
"""Interleaved A/B of two builds of the core benchmarks (core/benches/core.rs).

Each round runs A and B one after the other (the order alternates between
rounds) on the sections asked for. Every line of the harness that reports
ns/packet is collected, and each build's figure is reported as its median
over the rounds, with B/A; the machine is shared and drifts, so B/A is
also given for each figure divided by the floor of its own section and run
(the section's first line), which the drift moves alike.

    cargo bench -p packetflow --bench core --features bench-hooks --no-run   # the binary's path
    python3 bench/core/ab.py BINARY_A BINARY_B [--rounds 8] [--n 2000000] [--reps 5]
                             [--sections dispatch,frame,submit]
"""

import argparse
import re
import statistics
import subprocess

LINE = re.compile(r"^(\S.*?)\s+([\d.]+) ns/packet", re.M)


def run(binary, section, n, reps):
    out = subprocess.run(
        [binary, "--only", section, "--n", str(n), "--reps", str(reps)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [(name.strip(), float(ns)) for name, ns in LINE.findall(out)]
    floor = rows[0][1]
    return {name: (ns, ns / floor) for name, ns in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sections", default="dispatch,frame,submit")
    args = parser.parse_args()
    sections = args.sections.split(",")
    results = {"A": {}, "B": {}}
    for round_ in range(args.rounds):
        order = [("A", args.a), ("B", args.b)]
        if round_ % 2:
            order.reverse()
        for section in sections:
            for name, binary in order:
                for line, figures in run(binary, section, args.n, args.reps).items():
                    results[name].setdefault((section, line), []).append(figures)
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    print()
    print(f"{'section / line':<72} {'A ns':>8} {'B ns':>8} {'B/A':>6} {'B/A vs floor':>13}")
    for key in results["A"]:
        a, b = results["A"][key], results["B"].get(key)
        if not b:
            continue
        a_ns, b_ns = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        a_rel, b_rel = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
        label = f"{key[0]}: {key[1]}"[:72]
        print(f"{label:<72} {a_ns:>8.1f} {b_ns:>8.1f} {b_ns / a_ns:>6.3f} {b_rel / a_rel:>13.3f}")


if __name__ == "__main__":
    main()
