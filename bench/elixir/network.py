"""Served over the network: an Elixir handler behind a PacketFlow node under
the CLI's pipelined load (1 connection x 100 in flight), beside the same
load against `packetflow serve` with its built-in Rust handler (the
ceiling of any binding of this core), in one run.

    python3 bench/elixir/network.py [--trials 5] [--n 200000]

Builds the CLI and the Elixir package (MIX_ENV=prod). Each server starts
fresh per trial, in its own session; the order is shuffled per trial.
Prints one JSON line per run, then a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CLI = TARGET / "release" / "packetflow"
ELIXIR = ROOT / "bindings-elixir"
READY = re.compile(r"listening on (\S+)(?: pid (\d+))?")


def build() -> None:
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "packetflow-cli"], cwd=ROOT, check=True)
    subprocess.run(["mix", "compile"], cwd=ELIXIR, env={**os.environ, "MIX_ENV": "prod"}, check=True)


def start(cmd: List[str], cwd: Path, env: Dict[str, str]) -> Tuple["subprocess.Popen[str]", str, int]:
    """Starts a server; returns it, its URL and the OS pid doing the work."""
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    # A server that dies prints nothing more: readline returns "" and this ends.
    for line in proc.stderr:
        found = READY.search(line)
        if found:
            return proc, found.group(1), int(found.group(2) or proc.pid)
    raise RuntimeError(f"{cmd[0]} exited ({proc.wait()}) before it was listening")


def stop(proc: "subprocess.Popen[str]") -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


SERVERS = {
    "PacketFlow node, Elixir handler (`Reactor.listen`)": (
        lambda port: ["mix", "run", "--no-compile", str(ROOT / "bench/elixir/net_server.exs"), str(port)],
        ELIXIR, {"MIX_ENV": "prod"}),
    "PacketFlow node, Elixir handler, schedulers without busy-wait": (
        lambda port: ["mix", "run", "--no-compile", str(ROOT / "bench/elixir/net_server.exs"), str(port)],
        ELIXIR, {"MIX_ENV": "prod", "ERL_FLAGS": "+sbwt none +sbwtdcpu none +sbwtdio none"}),
    "ceiling: `packetflow serve`, built-in Rust uppercase": (
        lambda port: [str(CLI), "serve", "--listen", f"127.0.0.1:{port}", "--handler", "df:transform=uppercase"],
        ROOT, {}),
}


def pipelined(url: str, pid: int, n: int) -> Dict[str, float]:
    """`packetflow bench` pipelined (1 connection, 100 in flight) against
    the uppercasing handler at `url`, whose process is `pid`."""
    out = subprocess.run(
        [str(CLI), "bench", "--url", url, "--mode", "pipe", "--conns", "1", "--inflight", "100",
         "--n", str(n), "--expect", '"HELLO WORLD"', "--pid", str(pid), "--json"],
        capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"bench failed: {out.stderr or out.stdout}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one(name: str, port: int, n: int) -> Dict[str, float]:
    command, cwd, env = SERVERS[name]
    proc, url, pid = start(command(port), cwd, env)
    try:
        return pipelined(url, pid, n)
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    build()
    rates: Dict[str, List[float]] = {name: [] for name in SERVERS}
    cpu: Dict[str, List[float]] = {name: [] for name in SERVERS}
    rss: Dict[str, List[float]] = {name: [] for name in SERVERS}
    port = 9800 + random.randrange(100)
    for trial in range(args.trials):
        for name in random.sample(list(SERVERS), len(SERVERS)):
            port += 1
            fig = run_one(name, port, args.n)
            print(json.dumps({"server": name, "trial": trial, **fig}), flush=True)
            rates[name].append(float(fig["pipe_packets_per_s"]))
            if fig.get("server_cpu_us_per_packet") is not None:
                cpu[name].append(float(fig["server_cpu_us_per_packet"]))
            if fig.get("server_peak_rss_kib") is not None:
                rss[name].append(float(fig["server_peak_rss_kib"]) / 1024)
    print()
    print(f"1 connection x 100 in flight, {args.n} packets, {args.trials} trials, load average "
          f"{os.getloadavg()[0]:.1f} at the end (medians, min-max)")
    print("| server | packets/s | server CPU µs/packet | peak RSS MiB |")
    print("|---|---|---|---|")
    for name, r in rates.items():
        c = f"{statistics.median(cpu[name]):.2f}" if cpu[name] else "-"
        m = f"{statistics.median(rss[name]):.0f}" if rss[name] else "-"
        print(f"| {name} | {statistics.median(r):,.0f} ({min(r):,.0f}-{max(r):,.0f}) | {c} | {m} |")


if __name__ == "__main__":
    main()
