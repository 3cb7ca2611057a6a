#!/usr/bin/env python3
"""Idle connections side by side: what N idle WebSocket connections cost
`packetflow serve`, the plain Node `ws` peer and the reference
tokio-tungstenite peer, in one run.

    python3 bench/conns/conns.py [--n 1000,10000,50000] [--trials 1]
        [--servers packetflow,node,reference] [--also NAME=BINARY ...]
        [--peers ../shared/peers]

Per trial, N and server (started fresh in its own session, servers in a
shuffled order), the client `conns-bench` (this folder's crate) opens N
connections over 8 source addresses (127.0.0.2-9), 128 handshakes at a
time, and reports the server's RSS growth per connection (VmRSS, settled),
the connect rate, a round trip on 200 of them one at a time (p50/p99), a
round trip on every connection at the end, and the server's RSS once all
closed (as a multiple of its RSS before they came). Prints a Markdown
table and writes the raw rows to target/conns/results-DATE.jsonl.

A server or client that cannot hold N (its descriptor limit, say) is
reported with its error instead of figures.

--also NAME=BINARY measures another `packetflow` binary (an older build)
beside this tree's, in the same trials.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

HERE = Path(__file__).resolve().parent
CONNS_TARGET = benchlib.TARGET / "conns"
CLIENT = CONNS_TARGET / "release" / "conns-bench"
NODE_MODULES = CONNS_TARGET / "peers-node" / "node_modules"


def build(peers: Path, want_node: bool, want_reference: bool) -> dict:
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", str(HERE / "Cargo.toml"),
                    "--target-dir", str(CONNS_TARGET)], check=True)
    built = {"packetflow": str(benchlib.build_cli())}
    if want_reference:
        built["reference"] = str(benchlib.build_reference_peers(peers) / "wsserver")
    if want_node and not (NODE_MODULES / "ws").exists():
        # the same dependency as peers/node/package.json, installed here
        spec = json.loads((peers / "node" / "package.json").read_text())["dependencies"]["ws"]
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(NODE_MODULES.parent), f"ws@{spec}"], check=True)
    return built


def server_command(kind: str, binary: str, port: int, n: int, peers: Path):
    """(argv, env, URL path) of one server."""
    if kind == "node":
        return ["node", str(peers / "node" / "server.js"), str(port)], {"NODE_PATH": str(NODE_MODULES)}, "/"
    if kind == "reference":
        return [binary, str(port), "0"], {}, "/"
    limit = max(n + 16, 1024)
    return ([binary, "serve", "--listen", f"127.0.0.1:{port}", "--threads", "0", "--max-connections", str(limit),
             "--handler", "df:transform=uppercase"], {}, "/packetflow/v1")


def measure(name: str, kind: str, binary: str, n: int, peers: Path) -> dict:
    port = benchlib.free_port()
    argv, env, path = server_command(kind, binary, port, n, peers)
    server = benchlib.start(argv, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    row = {"server": name, "n": n, "command": " ".join(argv)}
    try:
        try:
            benchlib.wait_port(port, server)
        except RuntimeError:
            err = server.stderr.read() if server.poll() is not None else ""
            row["error"] = (err.strip().splitlines() or ["the server did not start"])[-1]
            return row
        time.sleep(1.0)  # let the server reach its idle state
        out = subprocess.run([str(CLIENT), f"ws://127.0.0.1:{port}{path}", "--n", str(n), "--pid", str(server.pid)],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            row["error"] = (out.stderr.strip().splitlines() or [f"client exited {out.returncode}"])[-1]
        else:
            row.update(json.loads(out.stdout.strip().splitlines()[-1]))
        if server.poll() is not None:
            row["error"] = "server exited: " + (server.stderr.read().strip().splitlines() or ["?"])[-1]
        return row
    finally:
        benchlib.stop(server)


def cell(rows, key, digits=0, scale=1.0):
    return benchlib.median_range([r[key] * scale for r in rows if r.get(key) is not None], digits)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="1000,10000,50000", help="comma-separated connection counts")
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--servers", default="packetflow,node,reference")
    ap.add_argument("--peers", default=str(benchlib.ROOT.parent / "shared" / "peers"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another packetflow binary to measure beside this tree's")
    args = ap.parse_args()
    peers = Path(args.peers)
    kinds = args.servers.split(",")
    built = build(peers, "node" in kinds, "reference" in kinds)
    servers = []
    labels = {"packetflow": "packetflow serve", "node": "Node ws (peers/node)",
              "reference": "reference tokio-tungstenite (peers/rust wsserver, current_thread)"}
    for kind in kinds:
        servers.append((labels[kind], kind, built.get(kind, "")))
    for also in args.also:
        label, _, binary = also.partition("=")
        if not binary:
            sys.exit(f"--also wants NAME=BINARY, got {also!r}")
        servers.append((label, "packetflow", binary))
    counts = [int(x) for x in args.n.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"descriptor limit of this shell: soft {soft}, hard {hard}", file=sys.stderr)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    CONNS_TARGET.mkdir(parents=True, exist_ok=True)
    raw = CONNS_TARGET / f"results-{stamp}.jsonl"
    rows = []
    with raw.open("w") as f:
        for t in range(args.trials):
            for n in counts:
                order = list(servers)
                random.shuffle(order)
                for name, kind, binary in order:
                    row = measure(name, kind, binary, n, peers)
                    row["trial"] = t
                    rows.append(row)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    brief = row.get("error") or (f"{row['bytes_per_conn']:.0f} B/conn, "
                                                 f"{row['connects_per_s']:.0f} conn/s, answered {row['answered']}")
                    print(f"trial {t + 1} n={n} {name}: {brief}", file=sys.stderr, flush=True)

    print(f"\nraw rows: {raw}\n")
    print("| server | N | held | RSS per idle conn (B) | connects/s | RTT p50 / p99 (µs, 200 sampled) "
          "| answered at the end | RSS before → held → after close (MiB) | after close / before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in counts:
        for name, _, _ in servers:
            rs = [r for r in rows if r["server"] == name and r["n"] == n]
            ok = [r for r in rs if "error" not in r]
            if not ok:
                print(f"| {name} | {n:,} | – | – | – | – | – | {rs[0].get('error', '?') if rs else '?'} | – |")
                continue
            mib = 1 / 1024
            print(f"| {name} | {n:,} | {cell(ok, 'opened')} | {cell(ok, 'bytes_per_conn')} | {cell(ok, 'connects_per_s')} "
                  f"| {cell(ok, 'rtt_p50_us')} / {cell(ok, 'rtt_p99_us')} | {cell(ok, 'answered')} "
                  f"| {cell(ok, 'rss_start_kib', 1, mib)} → {cell(ok, 'rss_held_kib', 1, mib)} → "
                  f"{cell(ok, 'rss_after_close_kib', 1, mib)} | {cell(ok, 'after_close_vs_start', 2)} |")


if __name__ == "__main__":
    main()
