#!/usr/bin/env python3
"""Actor messages against plain handler calls through a hub, same pair.

A hub (`packetflow serve`) and one node dialed into it (`packetflow serve
--connect`) that serves `df:count` (a handler of the counter's shape:
`{"type": "increment"}` in, `{"value": n}` out, one count shared by all),
`df:transform` (uppercase) and the built-in counter actor type;
`packetflow bench` connects to the hub and sends, in each trial and in
alternating order, the handler's packets and messages to one counter
(`rm:actor.counter`, `pf.actor_id` in the metadata): so both kinds take the
same path (client -> hub -> node -> hub -> client) with the same data and
differ only in the actor's addressing and what the node does with them.
Per trial: pipelined packets/s (one connection, 100 in flight) and
sequential p50/p99, the CPU time the hub and the node spent per pipelined
packet (/proc/PID/stat around the run), and the ratio actor / handler of
the same trial. `--uppercase` also times `df:transform` with a string, the
handler of the first measurements.

    python3 bench/actors/hub.py [--trials 7] [--n 100000] [--seq-n 2000] [--uppercase]
        [--cli PATH]

`--cli` runs a given `packetflow` binary (for an A/B of two builds, run the
harness alternately with each) instead of building this tree's.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

KINDS = {
    # A handler of the counter's shape: the same message in, the same answer out.
    "handler": ["--group", "df", "--element", "count", "--data", '{"type": "increment"}'],
    "actor": ["--group", "rm", "--element", "actor.counter", "--data", '{"type": "increment"}',
              "--metadata", '{"pf.actor_id": "bench"}'],
    # The string handler the first measurements used (--uppercase).
    "uppercase": ["--group", "df", "--element", "transform", "--data", '"hello world"'],
}


def until_routed(port, keys, timeout=20.0):
    """Waits until the hub's /health lists every key in `keys` as served."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            health = json.load(r)
        served = json.dumps(health)
        if all(k in served for k in keys):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the hub never routed {keys}")


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(cli, url, kind, args, pids):
    common = [cli, "bench", "--url", url, "--json", "--warmup", "2000"]
    seq = benchlib.run_json(common + ["--mode", "seq", "--seq-n", str(args.seq_n)] + KINDS[kind])
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    pipe = benchlib.run_json(common + ["--mode", "pipe", "--n", str(args.n)] + KINDS[kind])
    # The pipelined run's warmup is counted too: CPU per packet over n + warmup.
    cpu = {f"{name}_us": (cpu_seconds(pid) - before[name]) * 1e6 / (args.n + 2000) for name, pid in pids.items()}
    if pipe["errors"]:
        raise RuntimeError(f"{kind}: {pipe['errors']} packets answered with an error")
    return {"pps": pipe["pipe_packets_per_s"], "p50": seq["seq_p50_us"], "p99": seq["seq_p99_us"], **cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=7)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seq-n", type=int, default=2000)
    ap.add_argument("--uppercase", action="store_true",
                    help="also time the string handler df:transform (uppercase), as the first figures did")
    ap.add_argument("--cli", help="the packetflow binary to run (default: build this tree's)")
    args = ap.parse_args()
    cli = args.cli or str(benchlib.build_cli())
    hub_port = benchlib.free_port()
    hub = benchlib.start([cli, "serve", "--listen", f"127.0.0.1:{hub_port}"])
    node = None
    try:
        benchlib.wait_port(hub_port, hub)
        url = f"ws://127.0.0.1:{hub_port}/packetflow/v1"
        node_port = benchlib.free_port()
        node = benchlib.start([cli, "serve", "--listen", f"127.0.0.1:{node_port}", "--connect", url,
                               "--handler", "df:count=count", "--handler", "df:transform=uppercase",
                               "--actor", "counter=counter"])
        until_routed(hub_port, ["df:count", "df:transform", "rm:actor.counter"])
        kinds = ["handler", "actor"] + (["uppercase"] if args.uppercase else [])
        rows = []
        for t in range(args.trials):
            order = kinds if t % 2 == 0 else kinds[::-1]
            row = {kind: bench(cli, url, kind, args, {"hub": hub.pid, "node": node.pid}) for kind in order}
            rows.append(row)
            print(f"trial {t + 1}: " + "  ".join(
                f"{k} {row[k]['pps']:,.0f} pkt/s p50 {row[k]['p50']:.1f} µs "
                f"(CPU µs/pkt hub {row[k]['hub_us']:.2f} node {row[k]['node_us']:.2f})" for k in kinds),
                file=sys.stderr)
    finally:
        for p in (node, hub):
            if p is not None:
                benchlib.stop(p)

    def cell(kind, key, digits=0):
        return benchlib.median_range([r[kind][key] for r in rows], digits)

    def ratio(key):
        return benchlib.median_range([r["actor"][key] / r["handler"][key] for r in rows], 3)

    print(f"\n{args.trials} trials, through a hub, one connection\n")
    print("| figure | handler `df:count` | actor `rm:actor.counter` (one actor) | actor / handler, per trial |")
    print("|---|---|---|---|")
    print(f"| pipelined 1×100 packets/s | {cell('handler', 'pps')} | {cell('actor', 'pps')} | {ratio('pps')} |")
    print(f"| sequential p50 µs | {cell('handler', 'p50', 1)} | {cell('actor', 'p50', 1)} | {ratio('p50')} |")
    print(f"| sequential p99 µs | {cell('handler', 'p99', 1)} | {cell('actor', 'p99', 1)} | {ratio('p99')} |")
    print(f"| hub CPU µs per pipelined packet | {cell('handler', 'hub_us', 2)} | {cell('actor', 'hub_us', 2)} "
          f"| {ratio('hub_us')} |")
    print(f"| node CPU µs per pipelined packet | {cell('handler', 'node_us', 2)} | {cell('actor', 'node_us', 2)} "
          f"| {ratio('node_us')} |")
    if args.uppercase:
        print(f"\n`df:transform` (uppercase, a string in and out), same trials: pipelined "
              f"{cell('uppercase', 'pps')} packets/s, p50 {cell('uppercase', 'p50', 1)} µs, CPU µs per packet "
              f"hub {cell('uppercase', 'hub_us', 2)}, node {cell('uppercase', 'node_us', 2)}")


if __name__ == "__main__":
    main()
