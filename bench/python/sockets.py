"""Where a Python node's connections run, measured per handler kind: the
reactor's `sockets="loop"` (the asyncio loop drives them, its selector
watching their sockets) against `sockets="thread"` (the runtime's threads
do), interleaved in one run.

    python bench/python/sockets.py [--trials 5] [--n 100000] [--seq-n 2000]
        [--kinds async,sync,async-heavy,sync-heavy,sync-client]

Each job starts bench/python/net_server.py fresh (its own session) with one
handler kind (`async def` or `def`, plain or `-heavy`: about 200 µs of
pure-Python CPU per call) and one `sockets` option, then drives it with the
CLI: `packetflow bench --mode seq` (500 warm-up, then N round trips one
after another: p50/p99) and `--mode pipe` (1 connection x 100 in flight:
packets/s). Jobs run in shuffled order per trial. Besides the client's
figures, the server's CPU per packet (pipelined run, /proc) and its context
switches per round trip (sequential run, every thread's, /proc) are
recorded. Prints one JSON line per job and a table of medians (min-max).

`sync-client` turns it around: `packetflow serve` answers, and the Python
side is the client, bench/python/sync_client.py: a reactor whose loop runs
in a thread of its own (it connected from there), called through
`call_sync` from the main thread one call after another (seq p50/p99), then
from 8 threads at once (calls/s, in the pipe column).

Needs the CLI (`cargo build --release -p packetflow-cli`) and the package
in the Python running this.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

NET_SERVER = Path(__file__).resolve().parent / "net_server.py"
SYNC_CLIENT = Path(__file__).resolve().parent / "sync_client.py"
SOCKETS = ["loop", "thread"]


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid`."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def bench(port: int, mode: str, extra: List[str], pid: int) -> Dict[str, Any]:
    return benchlib.run_json(
        [str(benchlib.CLI), "bench", "--url", f"ws://127.0.0.1:{port}/packetflow/v1", "--mode", mode,
         "--data", '"hello world"', "--expect", '"HELLO WORLD"', "--pid", str(pid), "--json",
         "--timeout-s", "120"] + extra,
        timeout=180,
    )


def sync_client_job(sockets: str, a: argparse.Namespace) -> Dict[str, Any]:
    port = benchlib.free_port()
    proc = benchlib.start([str(benchlib.CLI), "serve", "--listen", f"127.0.0.1:{port}", "--name", "sockets-bench",
                           "--handler", "df:transform=uppercase"])
    try:
        benchlib.wait_port(port, proc)
        out = benchlib.run_json([sys.executable, str(SYNC_CLIENT), f"ws://127.0.0.1:{port}/packetflow/v1", sockets,
                                 "--n", str(a.seq_n), "--threads-n", str(a.n // 5)])
        return {"kind": "sync-client", "sockets": sockets, "p50_us": out["p50_us"], "p99_us": out["p99_us"],
                "server_switches_per_rt": None, "pps": out["threads_calls_per_s"],
                "server_cpu_us_per_packet": None, "loadavg_1m": os.getloadavg()[0]}
    finally:
        benchlib.stop(proc)


def job(kind: str, sockets: str, a: argparse.Namespace) -> Dict[str, Any]:
    if kind == "sync-client":
        return sync_client_job(sockets, a)
    port = benchlib.free_port()
    proc = benchlib.start([sys.executable, str(NET_SERVER), str(port), kind, sockets], stderr=None)
    try:
        benchlib.wait_port(port, proc)
        switches0 = context_switches(proc.pid)
        seq = bench(port, "seq", ["--seq-n", str(a.seq_n), "--warmup", "500"], proc.pid)
        switches = (context_switches(proc.pid) - switches0) / (a.seq_n + 500)
        pipe = bench(port, "pipe", ["--conns", "1", "--inflight", "100", "--n", str(a.n)], proc.pid)
        return {"kind": kind, "sockets": sockets, "p50_us": seq["seq_p50_us"], "p99_us": seq["seq_p99_us"],
                "server_switches_per_rt": switches, "pps": pipe["pipe_packets_per_s"],
                "server_cpu_us_per_packet": pipe.get("server_cpu_us_per_packet"),
                "loadavg_1m": os.getloadavg()[0]}
    finally:
        benchlib.stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seq-n", type=int, default=2000)
    ap.add_argument("--kinds", default="async,sync,async-heavy,sync-heavy")
    a = ap.parse_args()
    jobs: List[Tuple[str, str]] = [(k, s) for k in a.kinds.split(",") for s in SOCKETS]
    rows: List[Dict[str, Any]] = []
    for trial in range(a.trials):
        order = jobs[:]
        random.shuffle(order)
        for kind, sockets in order:
            row = {"trial": trial, **job(kind, sockets, a)}
            print(json.dumps(row), flush=True)
            rows.append(row)

    def cell(kind: str, sockets: str, key: str, digits: int = 0) -> str:
        return benchlib.median_range([r[key] for r in rows if r["kind"] == kind and r["sockets"] == sockets], digits)

    print(f"\n{a.trials} trials; pipe: 1 connection x 100 in flight, {a.n:,} packets; seq: {a.seq_n:,} round "
          f"trips after 500; load average (1 min) {min(r['loadavg_1m'] for r in rows):.1f}-"
          f"{max(r['loadavg_1m'] for r in rows):.1f}. Medians (min-max).\n")
    print("| handler | sockets | pipe packets/s | server CPU µs/packet | seq p50 µs | seq p99 µs | "
          "server context switches per round trip |")
    print("|---|---|---|---|---|---|---|")
    for kind in a.kinds.split(","):
        for sockets in SOCKETS:
            print(f"| {kind} | {sockets} | {cell(kind, sockets, 'pps')} | "
                  f"{cell(kind, sockets, 'server_cpu_us_per_packet', 1)} | {cell(kind, sockets, 'p50_us')} | "
                  f"{cell(kind, sockets, 'p99_us')} | {cell(kind, sockets, 'server_switches_per_rt', 1)} |")


if __name__ == "__main__":
    main()
