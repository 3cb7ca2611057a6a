#!/usr/bin/env python3
"""A PacketFlow node beside the reference tokio-tungstenite + serde_json node,
both driven by the one reference load generator, in one run.

    python3 bench/net/compare.py [--trials 3] [--peers ../shared/peers] [--also NAME=BINARY ...]
                                 [--dashboard-streams N] [--skip-reference]

Per trial and server (started fresh, in its own session, order shuffled):
sequential RTT with server and client pinned to core 0, pipelined 1x100 and
8x100 with the server's CPU per packet and peak RSS (VmHWM: the most the
server held at any time in its run, all three loads included). Prints a
Markdown table of medians with (min-max).

--also NAME=BINARY adds another `packetflow` binary (an older build, another
allocator) as two more servers, current_thread and 2 workers, measured in the
same trials as this tree's.

--dashboard-streams N adds this tree's two servers again with N clients
reading the node's dashboard event stream (/ui/api/events, one event a
second) for the whole trial, as N open dashboards would: the dashboard's
cost, measured against the same servers without it in the same trials.
--skip-reference leaves the reference servers out.
"""
import argparse
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import median_range as fmt, run_json  # noqa: E402

ROOT = str(benchlib.ROOT)


def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


class DashboardStreams:
    """`n` clients of a node's dashboard event stream, each draining it in a
    thread, as `n` open browsers would."""

    def __init__(self, port, n):
        self.sockets = []
        self.snapshots = threading.Semaphore(0)
        self.threads = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /ui/api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
            self.sockets.append(s)
            t = threading.Thread(target=self._drain, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)
        for _ in range(n):
            if not self.snapshots.acquire(timeout=10):
                raise RuntimeError("a dashboard stream sent no snapshot within 10 s")

    def _drain(self, s):
        seen = b""
        announced = False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                if not announced:
                    seen += chunk
                    if b"event: snapshot" in seen:
                        announced = True
                        self.snapshots.release()
        except OSError:
            return

    def close(self):
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=5)


def trial(name, cmd, port, path, loadgen, dashboard_streams=0):
    p = benchlib.start(cmd)
    streams = None
    try:
        benchlib.wait_port(port, p)
        if dashboard_streams:
            streams = DashboardStreams(port, dashboard_streams)
        url = f"ws://127.0.0.1:{port}{path}"
        pid = str(p.pid)
        r = {}
        pin(p.pid, "0")
        r["seq"] = run_json(["taskset", "-c", "0", loadgen, "seq", url, "--n", "2000", "--warmup", "500"])
        pin(p.pid, "0,1")
        r["pipe1"] = run_json([loadgen, "pipe", url, "--conns", "1", "--inflight", "100", "--n", "200000", "--pid", pid])
        r["pipe8"] = run_json([loadgen, "pipe", url, "--conns", "8", "--inflight", "100", "--n", "400000", "--pid", pid])
        return r
    finally:
        if streams:
            streams.close()
        benchlib.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another packetflow binary to measure beside this tree's")
    ap.add_argument("--dashboard-streams", type=int, default=0, metavar="N",
                    help="also measure this tree's servers with N dashboard event streams open")
    ap.add_argument("--skip-reference", action="store_true", help="leave the reference servers out")
    args = ap.parse_args()
    packetflow = str(benchlib.build_cli())
    peers_bin = str(benchlib.build_reference_peers(args.peers))
    loadgen = os.path.join(peers_bin, "loadgen")
    servers = {
        "reference tokio-tungstenite, current_thread": ([os.path.join(peers_bin, "wsserver"), "9301", "0"], 9301, "/"),
        "reference tokio-tungstenite, 2 workers": ([os.path.join(peers_bin, "wsserver"), "9302", "2"], 9302, "/"),
        "packetflow serve, current_thread": ([packetflow, "serve", "--listen", "127.0.0.1:9303", "--threads", "0",
                                             "--handler", "df:transform=uppercase"], 9303, "/packetflow/v1"),
        "packetflow serve, 2 workers": ([packetflow, "serve", "--listen", "127.0.0.1:9304", "--threads", "2",
                                        "--handler", "df:transform=uppercase"], 9304, "/packetflow/v1"),
    }
    if args.skip_reference:
        for name in [n for n in servers if n.startswith("reference")]:
            del servers[name]
    streams = {}
    port = 9305
    if args.dashboard_streams:
        for threads, mode in (("0", "current_thread"), ("2", "2 workers")):
            name = f"packetflow serve, {mode}, {args.dashboard_streams} dashboard streams"
            servers[name] = ([packetflow, "serve", "--listen", f"127.0.0.1:{port}", "--threads", threads,
                              "--handler", "df:transform=uppercase"], port, "/packetflow/v1")
            streams[name] = args.dashboard_streams
            port += 1
    for also in args.also:
        label, _, binary = also.partition("=")
        if not binary:
            sys.exit(f"--also wants NAME=BINARY, got {also!r}")
        for threads, mode in (("0", "current_thread"), ("2", "2 workers")):
            servers[f"{label}, {mode}"] = ([binary, "serve", "--listen", f"127.0.0.1:{port}", "--threads", threads,
                                            "--handler", "df:transform=uppercase"], port, "/packetflow/v1")
            port += 1
    results = {n: [] for n in servers}
    for t in range(args.trials):
        order = list(servers)
        random.shuffle(order)
        for name in order:
            cmd, port, path = servers[name]
            results[name].append(trial(name, cmd, port, path, loadgen, streams.get(name, 0)))
            print(f"trial {t + 1}/{args.trials}: {name} done", file=sys.stderr)
    print(f"Machine: {os.cpu_count()} vCPU; {args.trials} trials; medians (min–max).\n")
    print("| server | seq p50 µs (same core) | seq p99 µs (same core) | pipe 1×100 pkt/s | pipe 8×100 pkt/s | CPU µs/pkt 1×100 | CPU µs/pkt 8×100 | peak RSS MiB 8×100 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in results.items():
        col = lambda mode, key: [r[mode][key] for r in rs if key in r[mode]]
        print("| " + " | ".join([
            name,
            fmt(col("seq", "p50_us"), 1), fmt(col("seq", "p99_us"), 1),
            fmt(col("pipe1", "pps")), fmt(col("pipe8", "pps")),
            fmt(col("pipe1", "server_cpu_us_per_pkt"), 2), fmt(col("pipe8", "server_cpu_us_per_pkt"), 2),
            fmt([v / 1024 for v in col("pipe8", "server_vmhwm_kb")], 1),
        ]) + " |")


if __name__ == "__main__":
    main()
