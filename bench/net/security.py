#!/usr/bin/env python3
"""What auth, permissions and TLS cost a `packetflow serve` hub, in one run.

    python3 bench/net/security.py [--trials 5] [--before PATH] [--n 200000]

Servers, each started fresh per trial (order shuffled), all serving
`df:transform=uppercase`:
  - before: a `packetflow` binary built before these features (--before),
  - plain: this tree, no auth, no TLS (must match `before`),
  - auth *: a token allowed everything (the per-submit check is skipped),
  - auth df:*: a token allowed `df:*` (the check runs on every submit),
  - tls: wss:// with a certificate made by openssl for this run.
One load generator drives them all: this tree's `packetflow bench`,
pipelined 1 connection x 100 in flight, with the server's CPU per packet,
then 2,000 sequential round trips (p50). Prints a Markdown table of
medians with (min-max).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import median_range as fmt, run_json  # noqa: E402

TOKEN_ALL = "bench-token-all-0123456789"
TOKEN_DF = "bench-token-df-0123456789"


def make_files(tmp):
    tokens = os.path.join(tmp, "tokens.toml")
    with open(tokens, "w") as f:
        f.write(f'[[tokens]]\nname = "all"\ntoken = "{TOKEN_ALL}"\nsubmit = ["*"]\nserve = ["*"]\n\n'
                f'[[tokens]]\nname = "df"\ntoken = "{TOKEN_DF}"\nsubmit = ["df:*", "cf:start"]\n')
    ca_key, ca, key, csr, crt = (os.path.join(tmp, n) for n in ("ca.key", "ca.crt", "node.key", "node.csr", "node.crt"))
    ext = os.path.join(tmp, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    quiet = dict(check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=bench CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", crt, "-days", "1", "-extfile", ext], **quiet)
    return tokens, ca, crt, key


def trial(cmd, port, bench, n, dial):
    p = benchlib.start(cmd)
    try:
        benchlib.wait_port(port, p)
        scheme = "wss" if "--ca" in dial else "ws"
        url = f"{scheme}://127.0.0.1:{port}/packetflow/v1"
        common = [bench, "bench", "--url", url, "--expect", '"HELLO WORLD"', "--json"] + dial
        pipe = run_json(common + ["--mode", "pipe", "--conns", "1", "--inflight", "100", "--n", str(n),
                                  "--pid", str(p.pid)])
        seq = run_json(common + ["--mode", "seq", "--seq-n", "2000", "--warmup", "500"])
        if pipe.get("errors") or seq.get("errors"):
            raise RuntimeError(f"errors in the answers: {pipe} {seq}")
        return {"pps": pipe["pipe_packets_per_s"], "cpu": pipe.get("server_cpu_us_per_packet"),
                "p50": seq["seq_p50_us"]}
    finally:
        benchlib.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--before", help="a packetflow binary built before auth/TLS, measured beside")
    ap.add_argument("--n", type=int, default=200000)
    args = ap.parse_args()
    packetflow = str(benchlib.build_cli())
    with tempfile.TemporaryDirectory() as tmp:
        tokens, ca, crt, key = make_files(tmp)
        base = ["serve", "--handler", "df:transform=uppercase"]
        servers = {}
        if args.before:
            servers["before (no auth, no TLS)"] = ([args.before] + base, [])
        servers["plain (no auth, no TLS)"] = ([packetflow] + base, [])
        servers["auth, token allowed *"] = ([packetflow] + base + ["--auth", tokens], ["--token", TOKEN_ALL])
        servers["auth, token allowed df:*"] = ([packetflow] + base + ["--auth", tokens], ["--token", TOKEN_DF])
        servers["tls (wss)"] = ([packetflow] + base + ["--tls-cert", crt, "--tls-key", key], ["--ca", ca])
        results = {name: [] for name in servers}
        for t in range(args.trials):
            order = list(servers)
            random.shuffle(order)
            for i, name in enumerate(order):
                cmd, dial = servers[name]
                port = 9410 + i
                results[name].append(trial(cmd + ["--listen", f"127.0.0.1:{port}"], port, packetflow, args.n, dial))
                print(f"trial {t + 1}/{args.trials}: {name} done", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"Machine: {os.cpu_count()} vCPU, load average {load:.1f}; {args.trials} trials; medians (min–max).\n")
    print("| server | pipe 1×100 pkt/s | server CPU µs/pkt | seq p50 µs |")
    print("|---|---|---|---|")
    for name, rs in results.items():
        print(f"| {name} | {fmt([r['pps'] for r in rs])} | {fmt([r['cpu'] for r in rs], 2)} | "
              f"{fmt([r['p50'] for r in rs], 1)} |")


if __name__ == "__main__":
    main()
