"""Served over the network: the CLI's pipelined load (1 connection x 100 in
flight) against a Python handler behind a PacketFlow node, next to the plain
Python `websockets` server of shared/peers doing the same work, in one run.

    python bench/python/network.py [--trials 5] [--n 200000]

Needs the CLI (`cargo build --release -p packetflow-cli`) and `websockets`
(`pip install websockets`) in the Python running this. Each server starts
fresh for each trial in its own session (as shared/peers/bench.py does);
the order of servers is shuffled per trial. Prints one JSON line per run and
a table of medians.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
CLI = benchlib.CLI
PEER_SERVER = ROOT.parent / "shared" / "peers" / "python" / "server.py"
NET_SERVER = Path(__file__).resolve().parent / "net_server.py"


SERVERS = {
    "python websockets (peers/python/server.py)": lambda port: [sys.executable, str(PEER_SERVER), str(port)],
    "packetflow node, async def handler": lambda port: [sys.executable, str(NET_SERVER), str(port), "async"],
    "packetflow node, def handler": lambda port: [sys.executable, str(NET_SERVER), str(port), "sync"],
}


def run_one(name: str, n: int) -> Dict[str, float]:
    port = benchlib.free_port()
    return benchlib.pipelined_upper(port, benchlib.start(SERVERS[name](port), stderr=None), n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    rates: Dict[str, List[float]] = {}
    cpu: Dict[str, List[float]] = {}
    for trial in range(args.trials):
        names = list(SERVERS)
        random.shuffle(names)
        for name in names:
            fig = run_one(name, args.n)
            row = {"server": name, "trial": trial, **fig}
            print(json.dumps(row), flush=True)
            rates.setdefault(name, []).append(float(fig["pipe_packets_per_s"]))
            if fig.get("server_cpu_us_per_packet") is not None:
                cpu.setdefault(name, []).append(float(fig["server_cpu_us_per_packet"]))
    print()
    print(f"1 connection x 100 in flight, {args.n} packets, {args.trials} trials (medians)")
    print("| server | packets/s, median (min-max) | server CPU µs/packet |")
    print("|---|---|---|")
    base = statistics.median(rates["python websockets (peers/python/server.py)"])
    for name, r in rates.items():
        c = f"{statistics.median(cpu[name]):.1f}" if name in cpu else "-"
        print(f"| {name} | {statistics.median(r):,.0f} ({min(r):,.0f}-{max(r):,.0f}), "
              f"{statistics.median(r) / base:.2f}x | {c} |")


if __name__ == "__main__":
    main()
