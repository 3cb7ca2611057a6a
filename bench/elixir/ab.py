"""A/B of two (or more) builds of the Elixir package, interleaved: each round
runs every build in turn (the order alternates between rounds) through the
in-process harness (inprocess.exs: Reactor.call and submit, 100 in flight)
and the served-over-the-network one (net_server.exs, an Elixir handler under
the CLI's pipelined load, as in network.py).

    python3 bench/elixir/ab.py --lib before=/tmp/a.so --lib after=/tmp/b.so \\
        [--rounds 4] [--n 200000] [--net-n 200000]
    python3 bench/elixir/ab.py --lib before=/tmp/old/bindings-elixir --lib after=bindings-elixir
    python3 bench/elixir/ab.py --harness actors --lib before=/tmp/a.so --lib after=/tmp/b.so

`--harness actors` runs actors.exs (messages to one actor beside plain
handler calls, 100 in flight) instead, and nothing over the network.

A build is either a `libpacketflow_nif.so` (installed in turn into this
tree's package, whose Elixir code runs it: a library may lack NIFs the code
declares, never have more; the library that was installed is put back at
the end), or the folder of a package compiled with `MIX_ENV=prod` (its own
Elixir code and library, e.g. an older commit's `bindings-elixir` extracted
with `git archive`, its library copied into `priv/native/` and compiled
with `PACKETFLOW_SKIP_NIF_BUILD=1`). The harness scripts are this tree's.
Prints one JSON line per measurement, then a Markdown table of medians
(min-max).
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
import network  # noqa: E402  (its build, server start/stop and CLI)

ROOT = network.ROOT
ELIXIR = network.ELIXIR
INSTALLED = ELIXIR / "priv" / "native" / "libpacketflow_nif.so"
PROD = {"MIX_ENV": "prod", "PACKETFLOW_SKIP_NIF_BUILD": "1"}


def inprocess(package: Path, n: int, harness: str = "inprocess") -> List[dict]:
    out = subprocess.run(
        ["mix", "run", "--no-compile", str(ROOT / f"bench/elixir/{harness}.exs"), "--n", str(n),
         "--inflight", "100", "--trials", "1", "--json"],
        cwd=package, env={**os.environ, **PROD}, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def served(package: Path, port: int, n: int) -> Dict[str, float]:
    """An Elixir handler behind a node, under `packetflow bench` (network.py's load)."""
    command = ["mix", "run", "--no-compile", str(ROOT / "bench/elixir/net_server.exs"), str(port)]
    proc, url, pid = network.start(command, package, PROD)
    try:
        return network.pipelined(url, pid, n)
    finally:
        network.stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", required=True,
                    help="NAME=PATH: a libpacketflow_nif.so, or a compiled package folder")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--net-n", type=int, default=200_000, help="0: in process only")
    ap.add_argument("--harness", choices=["inprocess", "actors"], default="inprocess")
    args = ap.parse_args()
    builds = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.lib)}
    if args.harness == "inprocess" and args.net_n > 0:
        network.build()
    else:  # no CLI needed
        subprocess.run(["mix", "compile"], cwd=ELIXIR, env={**os.environ, "MIX_ENV": "prod"}, check=True)
    saved = INSTALLED.with_suffix(".ab-saved")
    shutil.copy2(INSTALLED, saved)
    rows: Dict[str, Dict[str, List[float]]] = {name: {} for name in builds}
    port = 9700
    try:
        for rnd in range(args.rounds):
            order = list(builds) if rnd % 2 == 0 else list(reversed(list(builds)))
            for name in order:
                build = builds[name]
                if build.is_dir():
                    package = build
                else:
                    shutil.copy2(build, INSTALLED)
                    package = ELIXIR
                for fig in inprocess(package, args.n, args.harness):
                    print(json.dumps({"lib": name, "round": rnd, **fig}), flush=True)
                    key = fig["variant"].strip("*")
                    rows[name].setdefault(f"{key}: calls/s", []).append(fig["calls_per_s"])
                    rows[name].setdefault(f"{key}: CPU µs/call", []).append(fig["cpu_us_per_call"])
                if args.harness != "inprocess" or args.net_n == 0:
                    continue
                port += 1
                fig = served(package, port, args.net_n)
                print(json.dumps({"lib": name, "round": rnd, "server": "net_server.exs", **fig}), flush=True)
                rows[name].setdefault("network, Elixir handler: packets/s", []).append(
                    float(fig["pipe_packets_per_s"]))
                if fig.get("server_cpu_us_per_packet") is not None:
                    rows[name].setdefault("network, Elixir handler: server CPU µs/packet", []).append(
                        float(fig["server_cpu_us_per_packet"]))
    finally:
        shutil.copy2(saved, INSTALLED)
        saved.unlink()
    names = list(builds)
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
