"""A/B of two (or more) builds of the Elixir package's NIF library under the
same Elixir code, interleaved: each round runs every library in turn
(the order alternates between rounds) through the in-process harness
(inprocess.exs: Reactor.call and submit, 100 in flight) and the
served-over-the-network one (network.py's Elixir handler under the CLI's
pipelined load).

    python3 bench/elixir/ab.py --lib before=/tmp/a.so --lib after=/tmp/b.so \\
        [--rounds 4] [--n 200000] [--net-n 200000]

The libraries are `libpacketflow_nif.so` files built beforehand (copy
`target/release/libpacketflow_nif.so` after `cargo build --release -p
packetflow_nif` at each commit). The Elixir code is this tree's: a library
may lack NIFs the code declares (their stubs stay), never have more. The
library that was installed is put back at the end. Prints one JSON line per
measurement, then a Markdown table of medians (min-max).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import network  # noqa: E402  (the served-over-the-network harness)

ROOT = network.ROOT
ELIXIR = network.ELIXIR
INSTALLED = ELIXIR / "priv" / "native" / "libpacketflow_nif.so"
NET = "PacketFlow node, Elixir handler (`Reactor.listen`)"


def inprocess(n: int) -> List[dict]:
    out = subprocess.run(
        ["mix", "run", "--no-compile", str(ROOT / "bench/elixir/inprocess.exs"), "--n", str(n),
         "--inflight", "100", "--trials", "1", "--json"],
        cwd=ELIXIR, env={**os.environ, "MIX_ENV": "prod"}, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", required=True, help="NAME=PATH of a libpacketflow_nif.so")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--net-n", type=int, default=200_000)
    args = ap.parse_args()
    libs = dict(item.split("=", 1) for item in args.lib)
    network.build()
    saved = INSTALLED.with_suffix(".ab-saved")
    shutil.copy2(INSTALLED, saved)
    rows: Dict[str, Dict[str, List[float]]] = {name: {} for name in libs}
    port = 9700
    try:
        for rnd in range(args.rounds):
            order = list(libs) if rnd % 2 == 0 else list(reversed(list(libs)))
            for name in order:
                shutil.copy2(libs[name], INSTALLED)
                for fig in inprocess(args.n):
                    print(json.dumps({"lib": name, "round": rnd, **fig}), flush=True)
                    key = fig["variant"].strip("*")
                    rows[name].setdefault(f"{key}: calls/s", []).append(fig["calls_per_s"])
                    rows[name].setdefault(f"{key}: CPU µs/call", []).append(fig["cpu_us_per_call"])
                port += 1
                fig = network.run_one(NET, port, args.net_n)
                print(json.dumps({"lib": name, "round": rnd, "server": NET, **fig}), flush=True)
                rows[name].setdefault("network, Elixir handler: packets/s", []).append(
                    float(fig["pipe_packets_per_s"]))
                if fig.get("server_cpu_us_per_packet") is not None:
                    rows[name].setdefault("network, Elixir handler: server CPU µs/packet", []).append(
                        float(fig["server_cpu_us_per_packet"]))
    finally:
        shutil.copy2(saved, INSTALLED)
        saved.unlink()
    names = list(libs)
    print()
    print(f"{args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f} at the end "
          "(medians, min-max)")
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for measure in rows[names[0]]:
        cells = []
        for name in names:
            xs = rows[name].get(measure, [])
            fmt = (lambda x: f"{x:,.0f}") if "/s" in measure else (lambda x: f"{x:.2f}")
            cells.append(f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})" if xs else "-")
        print(f"| {measure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
