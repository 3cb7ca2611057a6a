#!/usr/bin/env python3
"""What the dashboard costs a node, in CPU time, measured without the noise
of a throughput test: a `packetflow serve` node with three handlers, a
history of traffic and a full list of failures (the largest event it sends),
is left running for WINDOW seconds at a time with 0 and with N clients
reading its event stream (/ui/api/events), alternately, ROUNDS times; its
CPU time over each window comes from /proc/PID/stat. With --base BINARY, an
older build (one without the dashboard's sampler) is measured the same way,
for the cost of sampling with no dashboard open.

    python3 bench/net/dashboard_cost.py [--streams 10] [--window 20] [--rounds 3] [--base BINARY]

Prints the CPU milliseconds per second each setting took, median (min-max),
and the bytes per second one stream received. A node under full pipelined
load spends 1,000 ms of CPU per second; what the dashboard adds to that is
the share of throughput it costs.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import median_range as fmt  # noqa: E402
from compare import DashboardStreams  # noqa: E402

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def start_node(binary, port):
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--handler", "df:echo=echo",
           "--handler", "df:upper=uppercase", "--handler", "df:fail=fail"]
    p = benchlib.start(cmd)
    benchlib.wait_port(port, p)
    url = f"ws://127.0.0.1:{port}/packetflow/v1"
    # A history for each key and more failures than an event lists (50).
    for element in ("echo", "upper"):
        subprocess.run([binary, "bench", "--url", url, "--element", element, "--mode", "pipe", "--n", "20000",
                        "--warmup", "0"], capture_output=True, check=True)
    subprocess.run([binary, "bench", "--url", url, "--element", "fail", "--mode", "pipe", "--n", "200",
                    "--warmup", "0"], capture_output=True)
    return p


def measure(p, port, streams, window):
    clients = DashboardStreams(port, streams) if streams else None
    try:
        before = cpu_seconds(p.pid)
        time.sleep(window)  # the measurement window itself
        return (cpu_seconds(p.pid) - before) / window * 1000.0
    finally:
        if clients:
            clients.close()


def stream_bytes_per_second(port, seconds=5):
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /ui/api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
    got = b""
    while b"event: snapshot" not in got or not got.endswith(b"\n\n"):
        got += s.recv(1 << 20)
    s.settimeout(0.5)
    received, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            received += len(s.recv(1 << 20))
        except socket.timeout:
            pass
    s.close()
    return received / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", help="an older packetflow binary, measured idle beside this tree's")
    args = ap.parse_args()
    binary = str(benchlib.build_cli())
    nodes = {"this tree": start_node(binary, 9401)}
    ports = {"this tree": 9401}
    if args.base:
        nodes["base"] = start_node(args.base, 9402)
        ports["base"] = 9402
    results = {}
    try:
        time.sleep(2)  # let the populating connections close
        for r in range(args.rounds):
            for label, streams in (("this tree, no stream", 0), (f"this tree, {args.streams} streams", args.streams)):
                results.setdefault(label, []).append(measure(nodes["this tree"], 9401, streams, args.window))
            if args.base:
                results.setdefault("base, idle", []).append(measure(nodes["base"], 9402, 0, args.window))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        per_stream = stream_bytes_per_second(9401)
    finally:
        for p in nodes.values():
            benchlib.stop(p)
    print(f"Machine: {os.cpu_count()} vCPU; {args.rounds} rounds of {args.window:.0f} s; CPU ms per second, median (min–max).\n")
    print("| node | CPU ms/s |")
    print("|---|---|")
    for label, values in results.items():
        print(f"| {label} | {fmt(values, 2)} |")
    print(f"\nOne stream received {per_stream / 1024:.1f} KiB/s.")


if __name__ == "__main__":
    main()
