"""A/B comparison of two builds of the `packetflow` package, interleaved in
one run (the machine is shared and noisy: A and B alternate, trial by
trial, in a shuffled order).

Each build is a folder holding a `packetflow` package (e.g. a copy of the
installed one, `cp -r $(site-packages)/packetflow /tmp/base/`), put first on
`PYTHONPATH` for the processes that measure it.

    python bench/python/ab.py --a before=/tmp/base --b after=/tmp/new \\
        [--c baseline=/tmp/older] [--harness inprocess|network] [--trials 5] [--n 200000]

An optional third build (`--c`) joins the same interleaving (say, an older
baseline the other two are compared against).

`inprocess` runs `inprocess.py --trials 1` once per build and trial (the
packetflow variants only); `network` starts `net_server.py` per build and
trial and drives it with the CLI's pipelined load, as `network.py` does.
Prints one JSON line per run and a table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

HERE = Path(__file__).resolve().parent


def env_for(path: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def inprocess(path: str, n: int, only: str) -> List[Dict[str, float]]:
    out = subprocess.run(
        [sys.executable, str(HERE / "inprocess.py"), "--trials", "1", "--n", str(n), "--only", only],
        env=env_for(path), capture_output=True, text=True, timeout=900, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def network(path: str, n: int, kind: str) -> Dict[str, float]:
    port = benchlib.free_port()
    proc = benchlib.start([sys.executable, str(HERE / "net_server.py"), str(port), kind], env=env_for(path))
    return benchlib.pipelined_upper(port, proc, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="LABEL=FOLDER holding a packetflow package")
    ap.add_argument("--b", required=True, help="LABEL=FOLDER holding a packetflow package")
    ap.add_argument("--c", help="optional third build, LABEL=FOLDER")
    ap.add_argument("--harness", choices=["inprocess", "network"], default="inprocess")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--only", default="packetflow", help="inprocess: substring filter on variant names")
    args = ap.parse_args()
    given = [x for x in (args.a, args.b, args.c) if x]
    builds: List[Tuple[str, str]] = [tuple(x.split("=", 1)) for x in given]  # type: ignore[misc]
    rate: Dict[Tuple[str, str], List[float]] = {}
    cpu: Dict[Tuple[str, str], List[float]] = {}
    for trial in range(args.trials):
        order = list(builds)
        random.shuffle(order)
        for label, path in order:
            if args.harness == "inprocess":
                for row in inprocess(path, args.n, args.only):
                    key = (row["variant"], label)
                    rate.setdefault(key, []).append(row["calls_per_s"])
                    cpu.setdefault(key, []).append(row["cpu_us_per_call"])
                    print(json.dumps({"build": label, **row}), flush=True)
            else:
                for kind in ("async", "sync"):
                    fig = network(path, args.n, kind)
                    key = (f"node, {'async def' if kind == 'async' else 'def'} handler", label)
                    rate.setdefault(key, []).append(float(fig["pipe_packets_per_s"]))
                    if fig.get("server_cpu_us_per_packet") is not None:
                        cpu.setdefault(key, []).append(float(fig["server_cpu_us_per_packet"]))
                    print(json.dumps({"build": label, "server": key[0], "trial": trial, **fig}), flush=True)
    print()
    unit = "calls/s" if args.harness == "inprocess" else "packets/s"
    cpu_unit = "process CPU µs/call" if args.harness == "inprocess" else "server CPU µs/packet"
    print(f"{args.harness}, {args.trials} trials interleaved (medians)")
    print(f"| variant | build | {unit}, median (min–max) | {cpu_unit} |")
    print("|---|---|---|---|")
    order = [label for label, _ in builds]
    for (variant, label), rates in sorted(rate.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        c = cpu.get((variant, label))
        c_cell = f"{statistics.median(c):.2f}" if c else "–"
        print(f"| {variant} | {label} | {benchlib.median_range(rates)} | {c_cell} |")


if __name__ == "__main__":
    main()
