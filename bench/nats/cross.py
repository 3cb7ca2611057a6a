#!/usr/bin/env python3
"""NATS across languages: PacketFlow reactors on NATS beside the official
NATS clients, Python -> Node.js and Node.js -> Python, through one
nats-server, in one run.

    python3 bench/nats/cross.py [--trials 3] [--pairs py-node,node-py]
        [--impls packetflow,official] [--peers ../shared/peers/nats]
        [--seq-n 2000] [--seq-warmup 500] [--pipe-warmup 5000] [--inflight 100]
        [--pipe-n-py 50000] [--pipe-n-node 100000] [--no-build] [--out FILE.jsonl]

A pair is SUBMITTER-HANDLER (py or node). For every trial, every (pair,
implementation) job runs in an order shuffled per trial, on processes
started fresh: a nats-server on 127.0.0.1 and a free port, the handler,
then the submitter's two modes, each a process of its own:

- seq: WARMUP unmeasured round trips, then N one after another: p50/p99 µs;
- pipe: INFLIGHT requests in flight on one connection, WARMUP unmeasured,
  then N: requests/s (N / wall time of the measured part).

Implementations, both answering "hello world" with "HELLO WORLD":

- packetflow: the handler is a `packetflow` reactor serving `df:transform`
  (bench/matrix/handler.{py,js}) and the submitter another reactor calling
  it (bench/matrix/submit.{py,js}), both `connect`ed to `nats://...`: a
  request is a NATS request carrying a PacketFlow `submit` frame, answered
  by a `result` frame (docs/protocol.md, "NATS").
- official: the peers of ../shared/peers/nats (nats-py 2.16, nats.js
  2.29): responder.{py,js} in a queue group, requester.{py,js} calling
  `request()` with a JSON packet and checking every reply. Their
  dependencies must be installed there (its README, "Setup").

N for pipe is the official requester's default for the submitter's
language (Python 50,000, Node.js 100,000), the same for both
implementations. CPU per request: the submitter's own over its measured
part (what it reports), the handler's and the nats-server's from
/proc/PID/stat (utime + stime, every thread) around the whole submitter
process, divided by every request it sent (warm-up included). Every
process is started in this script's session (as the peers' harness does by
default) and stopped by its own PID.

Prints the Markdown tables and the load average, and writes every raw row
to --out (default target/nats-bench/raw-STAMP.jsonl under CARGO_TARGET_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
MATRIX = ROOT / "bench" / "matrix"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUBJECT, QUEUE = "pf.df.transform", "workers"
LANG = {"py": "Python", "node": "Node.js"}
STARTED: List["subprocess.Popen[Any]"] = []
SUBMITTER_LIMIT_S = 200  # bound on one submitter process


def python_bin() -> str:
    """The venv the Python package is installed in (scripts/build-bindings.sh)."""
    venv = os.environ.get("PACKETFLOW_PYTHON_VENV", str(benchlib.TARGET / "python-venv"))
    return str(Path(venv) / "bin" / "python")


def nats_server_bin() -> str:
    for candidate in (os.environ.get("NATS_SERVER_BIN"), "/usr/sbin/nats-server", "/usr/local/sbin/nats-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = subprocess.run(["which", "nats-server"], capture_output=True, text=True).stdout.strip()
    if not found:
        sys.exit("nats-server not found: run scripts/ensure-nats-server.sh or set NATS_SERVER_BIN")
    return found


# ---------------------------------------------------------------- processes

def start(cmd: List[str], cwd: Optional[Path] = None, stdout: Any = subprocess.DEVNULL) -> "subprocess.Popen[Any]":
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=stdout, stderr=err)
    proc.err_file = err  # type: ignore[attr-defined]
    STARTED.append(proc)
    return proc


def err_tail(proc: "subprocess.Popen[Any]") -> str:
    f = proc.err_file  # type: ignore[attr-defined]
    f.seek(0)
    return str(f.read().decode(errors="replace")[-1500:])


def stop(proc: "subprocess.Popen[Any]") -> None:
    """SIGTERM this one PID, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all(*_: Any) -> None:
    for proc in list(STARTED):
        stop(proc)
    if _:
        sys.exit(130)


def read_line(proc: "subprocess.Popen[Any]", timeout: float) -> str:
    """The first line `proc` prints on stdout, within `timeout` s."""
    deadline, line = time.monotonic() + timeout, b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no ready line ({line!r}); stderr: {err_tail(proc)}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"stdout closed ({line!r}); stderr: {err_tail(proc)}")
            line += chunk
    return line.decode().splitlines()[0]


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


# ---------------------------------------------------------------- one job

def handler_cmd(impl: str, lang: str, url: str, peers: Path) -> Tuple[List[str], Optional[Path]]:
    if impl == "packetflow":
        if lang == "py":
            return [python_bin(), str(MATRIX / "handler.py"), url], None
        return ["node", str(MATRIX / "handler.js"), url], None
    script = ["node", "responder.js"] if lang == "node" else [str(peers / ".venv" / "bin" / "python"), "responder.py"]
    return script + ["--url", url, "--subject", SUBJECT, "--queue", QUEUE, "--max-seconds", "900"], peers


def submitter_cmd(impl: str, lang: str, mode: str, url: str, n: int, warmup: int, inflight: int,
                  peers: Path) -> Tuple[List[str], Optional[Path]]:
    counts = ["--n", str(n), "--warmup", str(warmup)] + (["--inflight", str(inflight)] if mode == "pipe" else [])
    if impl == "packetflow":
        script = [python_bin(), str(MATRIX / "submit.py")] if lang == "py" else ["node", str(MATRIX / "submit.js")]
        return script + [mode, url] + counts + ["--timeout", "180"], None
    script = ["node", "requester.js"] if lang == "node" else [str(peers / ".venv" / "bin" / "python"), "requester.py"]
    return script + [mode, "--url", url, "--subject", SUBJECT] + counts + ["--req-timeout", "5", "--timeout", "180"], peers


def run_submitter(cmd: List[str], cwd: Optional[Path], watch: Dict[str, int], total: int) -> Dict[str, Any]:
    """One submitter process to completion: its JSON figures, and the CPU
    per request of the watched processes over its whole life."""
    before = {k: cpu_ticks(pid) for k, pid in watch.items()}
    out = tempfile.TemporaryFile()
    proc = start(cmd, cwd, stdout=out)
    try:
        proc.wait(SUBMITTER_LIMIT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"{' '.join(cmd)} ran past {SUBMITTER_LIMIT_S} s: {err_tail(proc)}")
    after = {k: cpu_ticks(pid) for k, pid in watch.items()}
    STARTED.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err_tail(proc)}")
    out.seek(0)
    lines = [line for line in out.read().decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON")
    row: Dict[str, Any] = json.loads(lines[-1])
    for k in watch:
        row[f"{k}_cpu_us_per_req"] = (after[k] - before[k]) * 1e6 / CLK_TCK / total
    # One name per figure whatever printed it.
    row["rps"] = row.get("rps", row.get("pps"))
    row["submitter_cpu_us_per_req"] = row.get("self_cpu_us_per_req", row.get("cpu_us_per_packet"))
    return row


def job(impl: str, pair: str, trial: int, a: argparse.Namespace) -> List[Dict[str, Any]]:
    submitter, handler = pair.split("-")
    port = benchlib.free_port()
    server = start([nats_server_bin(), "-a", "127.0.0.1", "-p", str(port)])
    rows = []
    try:
        benchlib.wait_port(port, server)
        url = f"nats://127.0.0.1:{port}"
        cmd, cwd = handler_cmd(impl, handler, url, a.peers)
        handler_proc = start(cmd, cwd, stdout=subprocess.PIPE)
        try:
            ready = read_line(handler_proc, 30)
            if not (ready.startswith("ready") or (ready.startswith("{") and json.loads(ready).get("ready"))):
                raise RuntimeError(f"handler said {ready!r}")
            watch = {"handler": handler_proc.pid, "server": server.pid}
            pipe_n = a.pipe_n_py if submitter == "py" else a.pipe_n_node
            base = {"impl": impl, "pair": pair, "trial": trial, "load_before": os.getloadavg()[0]}
            for mode, n, warmup in (("seq", a.seq_n, a.seq_warmup), ("pipe", pipe_n, a.pipe_warmup)):
                cmd, cwd = submitter_cmd(impl, submitter, mode, url, n, warmup, a.inflight, a.peers)
                row = run_submitter(cmd, cwd, watch, n + warmup)
                rows.append({**base, "mode": mode, **row, "load_after": os.getloadavg()[0]})
        finally:
            stop(handler_proc)
    finally:
        stop(server)
    return rows


# ---------------------------------------------------------------- report

def cell(values: List[Optional[float]], digits: int = 0) -> str:
    return benchlib.median_range(values, digits)


def median(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def report(rows: List[Dict[str, Any]], a: argparse.Namespace) -> str:
    out = []
    loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
    out.append(f"{len(set(r['trial'] for r in rows))} trial(s); load average (1 min) during the run: "
               f"{min(loads):.2f}-{max(loads):.2f}\n")
    out.append("| pair | implementation | seq p50 µs | seq p99 µs | pipe req/s | pipe CPU µs/req: submitter + handler "
               "+ nats-server = total |")
    out.append("|---|---|---|---|---|---|")
    ratios = []
    for pair in a.pairs:
        s, h = pair.split("-")
        figures = {}
        for impl in a.impls:
            seq = [r for r in rows if r["pair"] == pair and r["impl"] == impl and r["mode"] == "seq"]
            pipe = [r for r in rows if r["pair"] == pair and r["impl"] == impl and r["mode"] == "pipe"]
            if not seq or not pipe:
                continue
            cpu = {k: [r[f"{k}_cpu_us_per_req"] for r in pipe] for k in ("submitter", "handler", "server")}
            total = [sum(parts) for parts in zip(*cpu.values())]
            name = "PacketFlow reactors" if impl == "packetflow" else "official clients"
            out.append(
                f"| {LANG[s]} → {LANG[h]} | {name} | {cell([r['p50_us'] for r in seq])} | "
                f"{cell([r['p99_us'] for r in seq])} | {cell([r['rps'] for r in pipe])} | "
                f"{cell(cpu['submitter'], 1)} + {cell(cpu['handler'], 1)} + {cell(cpu['server'], 1)} = "
                f"{cell(total, 1)} |")
            figures[impl] = (median([r["p50_us"] for r in seq]), median([r["rps"] for r in pipe]))
        if "packetflow" in figures and "official" in figures:
            (pf_p50, pf_rps), (of_p50, of_rps) = figures["packetflow"], figures["official"]
            ratios.append(f"- {LANG[s]} → {LANG[h]}: {pf_rps / of_rps:.2f}x the official clients' req/s "
                          f"(target >= 3x), p50 {pf_p50:.0f} against {of_p50:.0f} µs ({pf_p50 / of_p50:.2f}x)")
    return "\n".join(out + [""] + ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--pairs", default="py-node,node-py")
    ap.add_argument("--impls", default="packetflow,official")
    ap.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers" / "nats")
    ap.add_argument("--seq-n", type=int, default=2000)
    ap.add_argument("--seq-warmup", type=int, default=500)
    ap.add_argument("--pipe-warmup", type=int, default=5000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--pipe-n-py", type=int, default=50000)
    ap.add_argument("--pipe-n-node", type=int, default=100000)
    ap.add_argument("--no-build", action="store_true", help="the CLI and the packages are built already")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    a.pairs = a.pairs.split(",")
    a.impls = a.impls.split(",")
    for pair in a.pairs:
        if pair not in ("py-node", "node-py", "py-py", "node-node"):
            sys.exit(f"unknown pair {pair!r}")
    installed = (a.peers / ".venv").is_dir() and (a.peers / "node_modules" / "nats").is_dir()
    if "official" in a.impls and not installed:
        sys.exit(f"the official clients are not installed in {a.peers}: see its README, 'Setup'")
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    if not a.no_build:
        subprocess.run(["bash", str(ROOT / "scripts" / "build-bindings.sh")], check=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_path = a.out or benchlib.TARGET / "nats-bench" / f"raw-{stamp}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    server_version = subprocess.run([nats_server_bin(), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.node()}: {os.cpu_count()} CPUs, "
          f"{platform.platform()}; {server_version}; node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"Python {platform.python_version()}", flush=True)
    rows: List[Dict[str, Any]] = []
    try:
        with out_path.open("w") as raw:
            for trial in range(1, a.trials + 1):
                jobs = [(impl, pair) for pair in a.pairs for impl in a.impls]
                random.shuffle(jobs)
                for impl, pair in jobs:
                    for row in job(impl, pair, trial, a):
                        raw.write(json.dumps(row) + "\n")
                        raw.flush()
                        rows.append(row)
                        print(f"trial {trial} {impl} {pair} {row['mode']}: p50 {row.get('p50_us')} "
                              f"rps {row.get('rps')} load {row['load_after']:.2f}", flush=True)
    finally:
        stop_all()
    print()
    print(report(rows, a))
    print(f"\nraw rows: {out_path}")


if __name__ == "__main__":
    main()
