#!/usr/bin/env python3
"""Interleaved A/B of two builds of the actor benchmarks (core/benches/actors.rs).

Each round runs A and B one after the other (the order alternates between
rounds), each for the turns (`Actors::send` beside its tokio baseline, in
the same process) and for creation; the machine is shared, so a turn is
compared by its ratio to the baseline of its own run.

    cargo bench --no-run -p packetflow --bench actors   # prints the binary's path
    python3 bench/actors/ab.py BINARY_A BINARY_B [--rounds 5] [--n 1000000]
"""

import argparse
import re
import statistics
import subprocess


def run(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    return out


def turns(binary, n):
    out = run(binary, "--only", "turns", "--variant", "send", "--n", str(n), "--reps", "3")
    ns = [float(x) for x in re.findall(r"^\S.*?\s([\d.]+) ns/message", out, re.M)]
    return {"baseline_ns": ns[0], "send_ns": ns[1], "ratio": ns[1] / ns[0]}


def create(binary, n):
    out = run(binary, "--only", "create", "--n", str(n), "--reps", "1")
    return {"create_s": float(re.search(r"created in ([\d.]+) s", out).group(1))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    results = {"A": [], "B": []}
    for round_ in range(args.rounds):
        order = [("A", args.a), ("B", args.b)]
        if round_ % 2:
            order.reverse()
        for name, binary in order:
            figures = {**turns(binary, args.n), **create(binary, args.n)}
            results[name].append(figures)
            print(
                f"round {round_ + 1} {name}: send {figures['send_ns']:.0f} ns, baseline "
                f"{figures['baseline_ns']:.0f} ns, ratio {figures['ratio']:.2f}; "
                f"create {figures['create_s']:.3f} s",
                flush=True,
            )
    print()
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    for name in ("A", "B"):
        m = median[name]
        print(
            f"median {name}: send {m['send_ns']:.0f} ns, baseline {m['baseline_ns']:.0f} ns, "
            f"ratio {m['ratio']:.2f}; create {m['create_s']:.3f} s"
        )
    print(
        f"B/A: send ratio {median['B']['ratio'] / median['A']['ratio']:.2f}, "
        f"create {median['B']['create_s'] / median['A']['create_s']:.2f}"
    )


if __name__ == "__main__":
    main()
