#!/usr/bin/env python3
"""A PacketFlow node beside the reference tokio-tungstenite + serde_json node,
both driven by the one reference load generator, in one run.

    python3 bench/net/compare.py [--trials 3] [--peers ../shared/peers]

Per trial and server (started fresh, in its own session, order shuffled):
sequential RTT with server and client pinned to core 0, pipelined 1x100 and
8x100 with the server's CPU per packet and peak RSS. Prints a Markdown table
of medians with (min-max).
"""
import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(peers):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "packetflow-cli"], cwd=ROOT, check=True)
    peers_target = os.path.join(target, "peers")
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", os.path.join(peers, "rust", "Cargo.toml"),
                    "--target-dir", peers_target], check=True)
    return os.path.join(target, "release", "packetflow"), os.path.join(peers_target, "release")


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


def trial(name, cmd, port, path, loadgen):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port)
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
        p.terminate()
        p.wait(timeout=10)


def fmt(values, nd=0):
    if not values:
        return "–"
    m = statistics.median(values)
    f = f"{{:.{nd}f}}"
    return f"{f.format(m)} ({f.format(min(values))}–{f.format(max(values))})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(ROOT), "shared", "peers"))
    args = ap.parse_args()
    packetflow, peers_bin = build(args.peers)
    loadgen = os.path.join(peers_bin, "loadgen")
    servers = {
        "reference tokio-tungstenite, current_thread": ([os.path.join(peers_bin, "wsserver"), "9301", "0"], 9301, "/"),
        "reference tokio-tungstenite, 2 workers": ([os.path.join(peers_bin, "wsserver"), "9302", "2"], 9302, "/"),
        "packetflow serve, current_thread": ([packetflow, "serve", "--listen", "127.0.0.1:9303", "--threads", "0",
                                             "--handler", "df:transform=uppercase"], 9303, "/packetflow/v1"),
        "packetflow serve, 2 workers": ([packetflow, "serve", "--listen", "127.0.0.1:9304", "--threads", "2",
                                        "--handler", "df:transform=uppercase"], 9304, "/packetflow/v1"),
    }
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
