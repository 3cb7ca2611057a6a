#!/usr/bin/env python3
"""A PacketFlow node beside the reference tokio-tungstenite + serde_json node,
both driven by the one reference load generator, in one run.

    python3 bench/net/compare.py [--trials 3] [--peers ../shared/peers] [--also NAME=BINARY ...]

Per trial and server (started fresh, in its own session, order shuffled):
sequential RTT with server and client pinned to core 0, pipelined 1x100 and
8x100 with the server's CPU per packet and peak RSS (VmHWM: the most the
server held at any time in its run, all three loads included). Prints a
Markdown table of medians with (min-max).

--also NAME=BINARY adds another `packetflow` binary (an older build, another
allocator) as two more servers, current_thread and 2 workers, measured in the
same trials as this tree's.
"""
import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import median_range as fmt, run_json  # noqa: E402

ROOT = str(benchlib.ROOT)


def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


def trial(name, cmd, port, path, loadgen):
    p = benchlib.start(cmd)
    try:
        benchlib.wait_port(port, p)
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
        benchlib.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another packetflow binary to measure beside this tree's")
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
    port = 9305
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
            results[name].append(trial(name, cmd, port, path, loadgen))
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
