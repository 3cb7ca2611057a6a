#!/usr/bin/env python3
"""How long a frozen handler node stays a black hole for its route keys.

A hub (`packetflow serve`) and two handler nodes (`packetflow serve
--connect HUB --handler df:echo=echo`); a `packetflow stream` client sends
rounds of 16 route-keyed submits (`timeout_ms` 2000) through the hub. One
handler node is stopped with SIGSTOP. Two figures: the time from the stop
to the end of the first round in which every key succeeded again
(rerouted), and to the hub's `/health` listing the node under `dead_peers`
(declared dead). Then the node gets SIGCONT and the next run starts from
fresh processes.

    python3 bench/liveness/detect.py [--runs 10]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

KEYS = [f"key-{i}" for i in range(16)]


def serve(port: int, *extra: str) -> "subprocess.Popen[bytes]":
    return benchlib.start([str(benchlib.CLI), "serve", "--listen", f"127.0.0.1:{port}", *extra])


def rounds(stream: "subprocess.Popen[str]", round_no: int) -> bool:
    """Sends one round; true if every key succeeded."""
    for i, key in enumerate(KEYS):
        request = {"id": f"{round_no}-{i}", "group": "df", "element": "echo", "data": i,
                   "timeout_ms": 2000, "metadata": {"pf.route_key": key}}
        stream.stdin.write(json.dumps(request) + "\n")
    stream.stdin.flush()
    ok = 0
    for _ in KEYS:
        line = json.loads(stream.stdout.readline())
        ok += line.get("result", {}).get("status") == "success"
    return ok == len(KEYS)


def dead_peers(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return len(json.load(response)["dead_peers"])


def one_run() -> "tuple[float, float]":
    hub_port = benchlib.free_port()
    hub = serve(hub_port)
    benchlib.wait_port(hub_port, hub)
    url = f"ws://127.0.0.1:{hub_port}/packetflow/v1"
    services = []
    for _ in range(2):
        port = benchlib.free_port()
        services.append(serve(port, "--connect", url, "--handler", "df:echo=echo"))
        benchlib.wait_port(port, services[-1])
    stream = subprocess.Popen([str(benchlib.CLI), "stream", "--url", url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not rounds(stream, 0):
            if time.monotonic() > deadline:
                raise RuntimeError("the handler nodes never served every key")
        os.kill(services[0].pid, signal.SIGSTOP)
        stopped = time.monotonic()
        n = 1
        while not rounds(stream, n):
            n += 1
            if time.monotonic() - stopped > 120:
                raise RuntimeError("not rerouted within 120 s")
        rerouted = time.monotonic() - stopped
        while dead_peers(hub_port) == 0:
            if time.monotonic() - stopped > 120:
                raise RuntimeError("not declared dead within 120 s")
            time.sleep(0.01)
        dead = time.monotonic() - stopped
        os.kill(services[0].pid, signal.SIGCONT)
        return rerouted, dead
    finally:
        stream.stdin.close()
        benchlib.stop(stream)
        for p in services + [hub]:
            os.kill(p.pid, signal.SIGCONT)
            benchlib.stop(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    benchlib.build_cli()
    rerouted, dead = [], []
    for i in range(args.runs):
        r, d = one_run()
        rerouted.append(r)
        dead.append(d)
        print(f"run {i + 1}: rerouted {r:.2f} s, declared dead {d:.2f} s after SIGSTOP", flush=True)
    for name, times in (("rerouted", rerouted), ("declared dead", dead)):
        print(f"{name}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"
              f" over {args.runs} runs")


if __name__ == "__main__":
    main()
