#!/usr/bin/env python3
"""The cross-language matrix: for each (submitter language, handler language),
sequential round trips and pipelined throughput through a `packetflow serve`
hub, beside the plain same-language pairs of ../shared/peers, in one run.

    python3 bench/matrix/matrix.py [--trials 3] [--n 200000] [--seq-n 2000]
        [--submitters python,node,elixir,rust[,rust-node]] [--handlers python,node,elixir,rust]
        [--baselines node,python,rust,node-relay] [--no-build] [--peers ../shared/peers]
        [--topologies hub,hub-only,busy-hub,busy-all,direct,busy-direct] [--busy-poll-us 200]
        [--node-sockets loop|thread] [--handler-work-us 0]
        [--python-sockets loop|thread]

Per trial, every job (one per pair, one per baseline) runs in shuffled order
with processes started fresh, each in its own session:

- pair: a hub (`packetflow serve --listen 127.0.0.1:0`), the handler of one
  language connected to it (ready once its `connect` returned: the hub then
  knows the route), then the submitter of the other: `seq` (500 warm-up, then
  N round trips one after another: p50/p99) and `pipe` (100 in flight on one
  connection, a warm-up of n/10, then n packets: packets/s). The CPU time of
  the hub and of the handler is sampled around the pipelined run.
- baseline: the plain peer server and its own client (Node `ws`, Python
  `websockets`, the Rust tokio-tungstenite server driven by the reference
  load generator), same modes and counts; and `node-relay`: the plain Node
  pair with a plain `ws` relay between them (bench/matrix/relay.js: each
  message passed on as it came), the least a two-hop path can be in plain
  Node; the pairs held to Node are then also compared with it.

Wake-ups: the context switches (voluntary and involuntary, every thread) of
each process per sequential round trip: the submitter's over its whole life
(rusage), the hub's and the handler's over the sequential run
(/proc/PID/task/*/status); the same summed over client and server (and
relay) for the baselines.

Topologies: `hub` (above; with direct paths, the default, a busy route's
packets go straight from the submitter's node to the handler's once the hub
introduced them: docs/protocol.md, "Direct paths"), `hub-only` (the same
with `packetflow serve --no-direct`: every packet crosses the hub, as before
direct paths), `direct` (the handler listens, the submitter dials
it), and with busy-polling for `--busy-poll-us` µs (a process keeps polling
its sockets instead of sleeping while traffic is sparse): `busy-hub` (the hub
only), `busy-all` (through a hub, every process that can), `busy-direct`
(direct, every process that can). The hub and the Rust handler busy-poll
through `packetflow serve --busy-poll-us`, the Node and Python reactors
through their `busyPollUs` / `busy_poll_us` option (the scripts read
MATRIX_BUSY_POLL_US). The Elixir binding runs its connections on the BEAM's
schedulers (which busy-wait by themselves, `+sbwt`) and `packetflow bench`
has no node: they run as in the other topologies.

`--node-sockets` sets the Node reactors' `sockets` option (default: the
package's default, `loop`, or `thread` when busy-polling): `loop` runs their
connections on the JS thread, driven by node's event loop; `thread` on the
addon's own thread (docs/bindings.md, "Node.js"). `--handler-work-us` makes
the Node handler keep its JS thread busy that long per call first (a
CPU-heavy handler; the others are unchanged).

`--python-sockets` sets the Python reactors' `sockets` option (default: the
package's default, `loop`, or `thread` when busy-polling): `loop` runs their
connections on the asyncio loop, its selector watching their sockets;
`thread` on the runtime's threads (docs/bindings.md, "Python").

Handlers: bench/matrix/handler.{py,js,exs}, and for Rust `packetflow serve
--connect HUB --handler df:transform=uppercase` (a second node, dialling the
hub). Submitters: bench/matrix/submit.{py,js,exs}, and for Rust `packetflow
bench` (a plain WebSocket load generator, no node of its own: it never takes
a direct path), or, as `rust-node`, `packetflow bench --node` (a node of its
own, as an application's: it does).

Prints the Markdown tables (the matrix; each cross-language pair against the
baseline of the slower of its two languages) and writes every raw row to
target/matrix/raw-STAMP.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CLI = TARGET / "release" / "packetflow"
VENV_PY = TARGET / "python-venv" / "bin" / "python"
PEERS_NODE_MODULES = TARGET / "matrix" / "peers-node" / "node_modules"
PEERS_RUST_BIN = TARGET / "peers" / "release"
ELIXIR = ROOT / "bindings-elixir"
HERE = ROOT / "bench" / "matrix"
LANGS = ["python", "node", "elixir", "rust"]
# Submitters only: `packetflow bench --node`, a Rust node submitting.
SUBMITTER_LANGS = LANGS + ["rust-node"]
EXPECT = '"HELLO WORLD"'
START_TIMEOUT = 60.0  # seconds for a process to say it is ready
RUN_TIMEOUT = 300  # seconds for one measurement process
ELIXIR_ENV = {"MIX_ENV": "prod"}


# --------------------------------------------------------------------------- build


def build(peers: Path, langs: set, baselines: List[str]) -> None:
    """Builds what the run needs (the CLI, the bindings of `langs`, the peers
    of `baselines`) into this worktree's target dir (nothing into peers)."""
    target_env = {"CARGO_TARGET_DIR": str(TARGET)}
    run(["cargo", "build", "--release", "-q", "-p", "packetflow-cli"], env=target_env)
    if "rust" in baselines:
        run(["cargo", "build", "--release", "-q", "--manifest-path", str(peers / "rust" / "Cargo.toml"),
             "--target-dir", str(TARGET / "peers")])
    if "python" in langs or "python" in baselines:
        build_python()
    if "node" in langs:
        build_node_addon(target_env)
    if "node" in baselines or "node-relay" in baselines:
        install_ws(peers)
    if "elixir" in langs:
        run(["mix", "compile"], cwd=ELIXIR, env={**target_env, **ELIXIR_ENV})


def run(cmd: List[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, check=True)


def build_python() -> None:
    if not VENV_PY.exists():
        run([sys.executable, "-m", "venv", str(VENV_PY.parent.parent)])
    # Every time: the package must hold this tree's core (maturin, in a target
    # dir of its own as bindings-python/scripts/test.sh has it, rebuilds only
    # what changed).
    run([str(VENV_PY), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", "./bindings-python"],
        env={"CARGO_TARGET_DIR": str(TARGET / "maturin")})
    if subprocess.run([str(VENV_PY), "-c", "import websockets"], capture_output=True).returncode:
        run([str(VENV_PY), "-m", "pip", "install", "-q", "websockets>=17,<18"])


def build_node_addon(target_env: Dict[str, str]) -> None:
    if not (ROOT / "bindings-node" / "packetflow.node").exists():
        run(["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=ROOT / "bindings-node", env=target_env)
    else:  # the addon must hold this tree's core: cargo rebuilds what changed
        run(["node", "scripts/build.js"], cwd=ROOT / "bindings-node", env=target_env)


def install_ws(peers: Path) -> None:
    if not (PEERS_NODE_MODULES / "ws").exists():
        # the same dependency as peers/node/package.json, installed here
        spec = json.loads((peers / "node" / "package.json").read_text())["dependencies"]["ws"]
        run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PEERS_NODE_MODULES.parent),
             f"ws@{spec}"])


# --------------------------------------------------------------------------- processes


class Proc:
    """A process in its own session whose stdout and stderr are read by
    threads (so it never blocks on a full pipe); lines go to a queue."""

    def __init__(self, cmd: List[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None):
        self.cmd = cmd
        self.lines: "queue.Queue[Tuple[str, str]]" = queue.Queue()
        self.tail: List[str] = []
        self.p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        for name, stream in (("stdout", self.p.stdout), ("stderr", self.p.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream: Any) -> None:
        for line in stream:
            self.tail = (self.tail + [line.rstrip()])[-20:]
            self.lines.put((name, line))
        self.lines.put((name, ""))  # EOF

    def wait_for(self, stream: str, pattern: "re.Pattern[str]", timeout: float = START_TIMEOUT) -> "re.Match[str]":
        """Waits for a line of `stream` matching `pattern` (no sleeps: a queue get with a deadline)."""
        deadline = time.monotonic() + timeout
        eofs = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.cmd[:3]}: no {pattern.pattern!r} within {timeout:.0f}s; last lines: {self.tail}")
            try:
                name, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line == "":
                eofs += 1
                if eofs == 2:
                    raise RuntimeError(f"{self.cmd[:3]} exited ({self.p.wait()}) before {pattern.pattern!r}; "
                                       f"last lines: {self.tail}")
                continue
            if name == stream:
                m = pattern.search(line)
                if m:
                    return m

    def stop(self) -> None:
        """Closes stdin (the participants' cue to stop), then SIGTERM, then SIGKILL, to the process group."""
        if self.p.poll() is None:
            try:
                assert self.p.stdin is not None
                self.p.stdin.close()
            except OSError:
                pass
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                print(f"warning: {self.cmd[:3]} needed SIGKILL", file=sys.stderr)
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        self.p.wait(10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of a process
    so far, from /proc/PID/task/*/status (a thread's wake-ups: each time it
    slept and ran again, or was preempted)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def machine_ticks() -> Tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def busy_pct(t0: Tuple[int, int], t1: Tuple[int, int]) -> float:
    return 100.0 * (t1[0] - t0[0]) / max(1, t1[1] - t0[1])


def run_json(cmd: List[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Runs a measuring process; returns its last JSON line, plus `process_cpu_s`
    and `process_context_switches`: the CPU time and the context switches of
    its whole life (start-up included, every thread), from rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, start_new_session=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode}): {p.stderr[-2000:]}{p.stdout[-500:]}")
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cmd} printed no JSON: {p.stdout[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)
    return {**json.loads(lines[-1]), "process_cpu_s": cpu, "process_context_switches": switches}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- participants

READY = re.compile(r"^ready (\d+)(?: (ws://\S+))?")
HUB_LISTENING = re.compile(r"listening on (ws://\S+)")
RUST_CONNECTED = re.compile(r"packetflow: connected to ")


def busy_env(busy_us: int) -> Dict[str, str]:
    """What tells the Node and Python scripts to busy-poll."""
    return {"MATRIX_BUSY_POLL_US": str(busy_us)} if busy_us else {}


def start_handler(lang: str, hub: Optional[str], busy_us: int = 0) -> Tuple[Proc, int, str]:
    """Starts the handler of `lang`, connected to `hub`, or listening when `hub`
    is None (busy-polling for `busy_us` µs where it can). Returns once it is
    ready (connected: the hub knows its route), with the OS pid doing the work
    and the URL submitters dial."""
    if lang == "rust":
        busy = ["--busy-poll-us", str(busy_us)] if busy_us else []
        if hub is None:
            p = Proc([str(CLI), "serve", "--listen", "127.0.0.1:0", "--name", "matrix-rust-handler",
                      "--handler", "df:transform=uppercase"] + busy)
            return p, p.p.pid, p.wait_for("stderr", HUB_LISTENING).group(1)
        p = Proc([str(CLI), "serve", "--listen", "127.0.0.1:0", "--name", "matrix-rust-handler", "--connect", hub,
                  "--handler", "df:transform=uppercase"] + busy)
        p.wait_for("stderr", RUST_CONNECTED)
        return p, p.p.pid, hub
    where = [hub] if hub is not None else ["--listen", "127.0.0.1:0"]
    cmd = {
        "python": ([str(VENV_PY), str(HERE / "handler.py")] + where, ROOT, busy_env(busy_us)),
        "node": (["node", str(HERE / "handler.js")] + where, ROOT, busy_env(busy_us)),
        "elixir": (["mix", "run", "--no-compile", str(HERE / "handler.exs")] + where, ELIXIR, ELIXIR_ENV),
    }[lang]
    p = Proc(cmd[0], cwd=cmd[1], env=cmd[2])
    m = p.wait_for("stdout", READY)
    return p, int(m.group(1)), m.group(2) or hub or ""


def submit(lang: str, mode: str, url: str, a: argparse.Namespace, busy_us: int = 0) -> Dict[str, Any]:
    """Runs the submitter of `lang` (busy-polling for `busy_us` µs where it can);
    returns p50_us/p99_us (seq) or pps (pipe)."""
    if lang in ("rust", "rust-node"):
        cmd = [str(CLI), "bench", "--url", url, "--mode", mode, "--expect", EXPECT, "--json",
               "--timeout-s", str(RUN_TIMEOUT - 10)] + (["--node"] if lang == "rust-node" else [])
        cmd += (["--seq-n", str(a.seq_n), "--warmup", "500"] if mode == "seq"
                else ["--n", str(a.n), "--conns", "1", "--inflight", str(a.inflight), "--warmup", "1"])
        r = run_json(cmd)
        if mode == "seq":
            return {"p50_us": r["seq_p50_us"], "p95_us": r["seq_p95_us"], "p99_us": r["seq_p99_us"],
                    "process_context_switches": r["process_context_switches"]}
        # the whole process's CPU (start-up is small next to 220k packets)
        return {"pps": r["pipe_packets_per_s"], "cpu_us_per_packet": r["process_cpu_s"] * 1e6 / (a.n + a.n // 10)}
    args = [mode, url] + (["--n", str(a.seq_n), "--warmup", "500"] if mode == "seq"
                          else ["--n", str(a.n), "--inflight", str(a.inflight), "--warmup", str(a.n // 10)])
    if lang == "python":
        return run_json([str(VENV_PY), str(HERE / "submit.py")] + args, env=busy_env(busy_us))
    if lang == "node":
        return run_json(["node", str(HERE / "submit.js")] + args, env=busy_env(busy_us))
    return run_json(["mix", "run", "--no-compile", str(HERE / "submit.exs")] + args, cwd=ELIXIR, env=ELIXIR_ENV)


def pair_job(sub: str, han: str, topology: str, a: argparse.Namespace) -> Dict[str, Any]:
    """One (submitter, handler) pair: through a fresh hub, or `direct` (the
    submitter dials the handler, which listens); see TOPOLOGY_NAMES."""
    hub_busy_us = a.busy_poll_us if topology in ("busy-hub", "busy-all") else 0
    busy_us = a.busy_poll_us if topology in ("busy-all", "busy-direct") else 0
    busy = ["--busy-poll-us", str(hub_busy_us)] if hub_busy_us else []
    busy += ["--no-direct"] if topology == "hub-only" else []
    hub = (Proc([str(CLI), "serve", "--listen", "127.0.0.1:0", "--name", "matrix-hub"] + busy)
           if has_hub(topology) else None)
    handler: Optional[Proc] = None
    try:
        hub_url = hub.wait_for("stderr", HUB_LISTENING).group(1) if hub else None
        handler, handler_pid, url = start_handler(han, hub_url, busy_us)
        row: Dict[str, Any] = {"job": "pair", "topology": topology, "submitter": sub, "handler": han,
                               "busy_poll_us": a.busy_poll_us if topology.startswith("busy-") else None}
        pids = [handler_pid] + ([hub.p.pid] if hub else [])
        switches0 = [context_switches(pid) for pid in pids]
        seq = submit(sub, "seq", url, a, busy_us)
        # Wake-ups per sequential round trip (the 500 warm-up ones counted):
        # the submitter's over its whole life, the others' over its run.
        rts = a.seq_n + 500
        wakeups = [(context_switches(pid) - w0) / rts for pid, w0 in zip(pids, switches0)]
        row["wakeups_per_rt"] = {"submitter": seq.get("process_context_switches", 0) / rts,
                                 "handler": wakeups[0], "hub": wakeups[1] if hub else None}
        cpu0, m0 = [cpu_seconds(pid) for pid in pids], machine_ticks()
        pipe = submit(sub, "pipe", url, a, busy_us)
        cpu1, m1 = [cpu_seconds(pid) for pid in pids], machine_ticks()
        packets = a.n + a.n // 10  # the warm-up is inside the sampled window
        per = [(c1 - c0) * 1e6 / packets for c0, c1 in zip(cpu0, cpu1)]
        row.update({"seq": seq, "pipe": pipe, "machine_busy_pct": busy_pct(m0, m1), "handler_cpu_us_per_packet": per[0],
                    "hub_cpu_us_per_packet": per[1] if hub else None})
        return row
    finally:
        if handler is not None:
            handler.stop()
        if hub is not None:
            hub.stop()


def baseline_job(lang: str, a: argparse.Namespace, peers: Path) -> Dict[str, Any]:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    env: Dict[str, str] = {}
    relay: Optional[Proc] = None
    if lang in ("node", "node-relay"):
        env = {"NODE_PATH": str(PEERS_NODE_MODULES)}  # `ws`, installed in this target dir
        server = Proc(["node", str(peers / "node" / "server.js"), str(port)], env=env)
        client = ["node", str(peers / "node" / "client.js")]
        server.wait_for("stderr", re.compile("server on"))
        if lang == "node-relay":  # the client dials a plain relay in front of the server
            relay_port = free_port()
            relay = Proc(["node", str(HERE / "relay.js"), str(relay_port), url], env=env)
            relay.wait_for("stderr", re.compile("relay on"))
            url = f"ws://127.0.0.1:{relay_port}/"
    elif lang == "python":
        server = Proc([str(VENV_PY), str(peers / "python" / "server.py"), str(port)])
        client = [str(VENV_PY), str(peers / "python" / "client.py")]
        server.wait_for("stderr", re.compile("server on"))
    else:  # rust: the reference server, driven by the reference load generator
        server = Proc([str(PEERS_RUST_BIN / "wsserver"), str(port), "0"])
        client = [str(PEERS_RUST_BIN / "loadgen")]
        wait_port(port, server)
    try:
        pids = [server.p.pid] + ([relay.p.pid] if relay else [])
        switches0 = [context_switches(pid) for pid in pids]
        seq = run_json(client + ["seq", url, "--n", str(a.seq_n), "--warmup", "500"], env=env)
        rts = a.seq_n + 500
        wakeups = (seq["process_context_switches"] + sum(context_switches(pid) - w0
                                                          for pid, w0 in zip(pids, switches0))) / rts
        cpu0, m0 = [cpu_seconds(pid) for pid in pids], machine_ticks()
        pipe = run_json(client + ["pipe", url, "--conns", "1", "--inflight", str(a.inflight), "--n", str(a.n),
                                  "--warmup", str(a.n // 10)], env=env)
        cpu1, m1 = [cpu_seconds(pid) for pid in pids], machine_ticks()
        per = [(c1 - c0) * 1e6 / (a.n + a.n // 10) for c0, c1 in zip(cpu0, cpu1)]
        return {"job": "baseline", "lang": lang, "machine_busy_pct": busy_pct(m0, m1),
                "seq": {k: seq[k] for k in ("p50_us", "p95_us", "p99_us")}, "pipe": {"pps": pipe["pps"]},
                "wakeups_per_rt": wakeups,
                "client_cpu_us_per_packet": pipe["process_cpu_s"] * 1e6 / (a.n + a.n // 10),
                "server_cpu_us_per_packet": per[0], "relay_cpu_us_per_packet": per[1] if relay else None}
    finally:
        if relay is not None:
            relay.stop()
        server.stop()


def wait_port(port: int, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """For the one peer that prints nothing when it listens: connect attempts, each bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{proc.cmd[:2]} exited ({proc.p.returncode}); last lines: {proc.tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # retry pacing of a poll, not synchronisation
    raise RuntimeError(f"nothing listening on {port}")


# --------------------------------------------------------------------------- report


def med(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def k(x: float) -> str:
    return f"{x / 1000:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def rng_k(xs: List[float]) -> str:
    return f"{k(med(xs))} ({k(min(xs))}–{k(max(xs))})" if xs else "–"


def us(xs: List[float]) -> str:
    return f"{med(xs):,.0f}" if xs else "–"


TOPOLOGY_NAMES = {
    "hub": "through a hub (`packetflow serve`), direct paths on (the default): submitter → hub → handler, "
           "then submitter → handler once the route is busy",
    "hub-only": "through a hub with direct paths off (`packetflow serve --no-direct`): submitter → hub → handler",
    "busy-hub": "through a busy-polling hub (`--busy-poll-us`): submitter → hub → handler",
    "busy-all": "through a hub, every process that can busy-polling: submitter → hub → handler",
    "direct": "direct: the submitter dials the handler, which listens (no hub)",
    "busy-direct": "direct, every process that can busy-polling (no hub)",
}


def has_hub(topology: str) -> bool:
    return topology in ("hub", "hub-only", "busy-hub", "busy-all")

BASELINE_NAMES = {"node": "Node `ws` client → `ws` server", "python": "Python `websockets` client → server",
                  "rust": "Rust reference `loadgen` → tokio-tungstenite server (current_thread)",
                  "node-relay": "Node `ws` client → plain `ws` relay (relay.js) → `ws` server: two hops"}


def report(rows: List[Dict[str, Any]], a: argparse.Namespace, loads: List[float]) -> str:
    def vals(topology: str, sub: str, han: str, get: Callable[[Dict[str, Any]], Any]) -> List[float]:
        return [get(r) for r in rows if r["job"] == "pair" and r["topology"] == topology and r["submitter"] == sub
                and r["handler"] == han and get(r) is not None]

    def base_vals(lang: str, get: Callable[[Dict[str, Any]], float]) -> List[float]:
        return [get(r) for r in rows if r["job"] == "baseline" and r["lang"] == lang]

    pps = lambda r: r["pipe"]["pps"]  # noqa: E731
    p50 = lambda r: r["seq"]["p50_us"]  # noqa: E731
    p99 = lambda r: r["seq"]["p99_us"]  # noqa: E731
    trials = max([r["trial"] for r in rows] + [-1]) + 1
    out: List[str] = []
    out.append(f"{trials} trials (jobs shuffled per trial, every process fresh); medians with (min–max). "
               f"pipe: 1 connection × {a.inflight} in flight, {a.n:,} packets after {a.n // 10:,} warm-up; "
               f"seq: {a.seq_n:,} round trips after 500 warm-up, p50 / p99 in µs. "
               f"Load average (1 min) during the run: {min(loads):.1f}–{max(loads):.1f}; both cores busy "
               f"{med([r['machine_busy_pct'] for r in rows]):.0f}% (median over the pipelined runs, every "
               "process on the machine counted).")
    native_pps = {lang: med(base_vals(lang, pps)) for lang in a.baselines if base_vals(lang, pps)}
    native_p50 = {lang: med(base_vals(lang, p50)) for lang in a.baselines if base_vals(lang, p50)}
    native_cpu = {lang: med(base_vals(lang, lambda r: r["client_cpu_us_per_packet"] + r["server_cpu_us_per_packet"]))
                  for lang in a.baselines if base_vals(lang, pps)}

    def total_cpu(r: Dict[str, Any]) -> Optional[float]:
        parts = [r["pipe"].get("cpu_us_per_packet"), r["handler_cpu_us_per_packet"]]
        parts += [r["hub_cpu_us_per_packet"]] if has_hub(r["topology"]) else []
        return None if None in parts else sum(parts)

    header = "| submitter ↓ handler → | " + " | ".join(a.handlers) + " |\n|---|" + "---|" * len(a.handlers)

    for topology in a.topologies:
        what = TOPOLOGY_NAMES[topology]
        out.append(f"\n### Pairs {what}\n")
        out.append("Cells: pipelined packets/s; seq p50 / p99 µs.\n")
        out.append(header)
        for sub in a.submitters:
            cells = []
            for han in a.handlers:
                v = vals(topology, sub, han, pps)
                cells.append(f"{rng_k(v)}; {us(vals(topology, sub, han, p50))} / {us(vals(topology, sub, han, p99))}"
                             if v else "–")
            out.append(f"| **{sub}** | " + " | ".join(cells) + " |")
        parts = "submitter / hub / handler" if has_hub(topology) else "submitter / handler"
        out.append(f"\nCPU µs per packet during the pipelined run ({parts}; medians; the submitter's over the "
                   "measured window, except `packetflow bench`'s: its whole process; the others' over the whole "
                   "run including the warm-up):\n")
        out.append(header)
        for sub in a.submitters:
            cells = []
            for han in a.handlers:
                s_ = vals(topology, sub, han, lambda r: r["pipe"].get("cpu_us_per_packet"))
                h = vals(topology, sub, han, lambda r: r["hub_cpu_us_per_packet"])
                w = vals(topology, sub, han, lambda r: r["handler_cpu_us_per_packet"])
                f = [f"{med(s_):.1f}" if s_ else "–"] + ([f"{med(h):.1f}"] if has_hub(topology) else [])
                cells.append(" / ".join(f + [f"{med(w):.1f}"]) if w else "–")
            out.append(f"| **{sub}** | " + " | ".join(cells) + " |")
        out.append(f"\nContext switches per sequential round trip ({parts}, then their sum; medians; the "
                   "submitter's over its whole process, start-up included, the others' over the sequential run, "
                   "warm-up included):\n")
        out.append(header)
        for sub in a.submitters:
            cells = []
            for han in a.handlers:
                got = vals(topology, sub, han, lambda r: r.get("wakeups_per_rt"))
                if not got:
                    cells.append("–")
                    continue
                names = ["submitter"] + (["hub"] if has_hub(topology) else []) + ["handler"]
                each = [med([w[n] for w in got]) for n in names]
                cells.append(" / ".join(f"{x:.1f}" for x in each) + f" = {sum(each):.1f}")
            out.append(f"| **{sub}** | " + " | ".join(cells) + " |")

    out.append("\n### Baselines: the plain same-language pairs of ../shared/peers (no hub, one hop)\n")
    out.append("| pair | pipe 1×100 pkt/s | seq p50 µs | seq p99 µs | client / server CPU µs/pkt | "
               "context switches per round trip, all processes |")
    out.append("|---|---|---|---|---|---|")
    for lang in a.baselines:
        v = base_vals(lang, pps)
        if v:
            out.append(f"| {BASELINE_NAMES[lang]} | {rng_k(v)} | {us(base_vals(lang, p50))} | "
                       f"{us(base_vals(lang, p99))} | "
                       f"{med(base_vals(lang, lambda r: r['client_cpu_us_per_packet'])):.1f} / "
                       f"{med(base_vals(lang, lambda r: r['server_cpu_us_per_packet'])):.1f}"
                       + (f" + relay {med(base_vals(lang, lambda r: r['relay_cpu_us_per_packet'])):.1f}"
                          if lang == "node-relay" else "")
                       + f" | {med(base_vals(lang, lambda r: r.get('wakeups_per_rt', float('nan')))):.1f} |")

    for topology in a.topologies:
        title = {"hub": "through a hub, direct paths on (the criterion)",
                 "hub-only": "through a hub, direct paths off",
                 "busy-hub": "through a busy-polling hub (the criterion)",
                 "busy-all": "through a hub, all busy-polling (the criterion)",
                 "direct": "direct (for comparison: no hub)",
                 "busy-direct": "direct, busy-polling (for comparison: no hub)"}[topology]
        out.append(f"\n### Each pair {title} against the plain pair of its slower language\n")
        out.append("Slower = lower native packets/s (throughput) or higher native p50 (latency), from the baselines "
                   "of this run. Elixir has no plain peer in ../shared/peers: a pair of Elixir and Python or Node is "
                   "held to that language's plain pair (at least as high a bar as the true one unless a plain Elixir "
                   "pair were faster); Elixir with Rust has no bar (Elixir is the slower, and unmeasured). "
                   "Same-language pairs are listed for reference (not part of the criterion).\n")
        out.append("| submitter → handler | pkt/s | bar | ratio | | seq p50 µs | bar | bar / p50 | | "
                   "CPU µs/pkt, all processes: pair (bar's) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for sub in a.submitters:
            for han in a.handlers:
                if not vals(topology, sub, han, pps):
                    continue
                got_t, got_l = med(vals(topology, sub, han, pps)), med(vals(topology, sub, han, p50))
                name = f"{sub} → {han}" + (" (same language)" if sub == han else "")
                pair = {sub, han}
                cands = [lang for lang in pair if lang in native_pps]
                cpu = med(vals(topology, sub, han, total_cpu))
                if not cands or ("elixir" in pair and "rust" in pair):
                    out.append(f"| {name} | {k(got_t)} | no bar | | | {got_l:,.0f} | no bar | | | {cpu:.1f} |")
                    continue
                slow_t = min(cands, key=lambda lang: native_pps[lang])
                slow_l = max(cands, key=lambda lang: native_p50[lang])
                rt, rl = got_t / native_pps[slow_t], native_p50[slow_l] / got_l
                verdict = lambda r: ("pass" if r >= 1 else "**miss**") if sub != han else ""  # noqa: E731
                out.append(f"| {name} | {k(got_t)} | {slow_t} {k(native_pps[slow_t])} | {rt:.2f} | {verdict(rt)} | "
                           f"{got_l:,.0f} | {slow_l} {native_p50[slow_l]:,.0f} | {rl:.2f} | {verdict(rl)} | "
                           f"{cpu:.1f} ({native_cpu[slow_t]:.1f}) |")
    if base_vals("node-relay", pps):
        relay_pps, relay_p50 = med(base_vals("node-relay", pps)), med(base_vals("node-relay", p50))
        for topology in [t for t in a.topologies if has_hub(t)]:
            out.append(f"\n### Pairs held to Node, {TOPOLOGY_NAMES[topology].split(':')[0]}, against the plain "
                       "two-hop pair (`ws` through a plain `ws` relay)\n")
            out.append(f"The plain two-hop pair: {k(relay_pps)} packets/s, p50 {relay_p50:,.0f} µs (one hop: "
                       f"{k(native_pps['node']) if 'node' in native_pps else '–'}, "
                       f"{native_p50['node'] if 'node' in native_p50 else float('nan'):,.0f} µs).\n")
            out.append("| submitter → handler | pkt/s | ratio | | seq p50 µs | bar / p50 | |")
            out.append("|---|---|---|---|---|---|---|")
            for sub in a.submitters:
                for han in a.handlers:
                    pair = {sub, han}
                    if "node" not in pair or "python" in pair or not vals(topology, sub, han, pps):
                        continue
                    got_t, got_l = med(vals(topology, sub, han, pps)), med(vals(topology, sub, han, p50))
                    rt, rl = got_t / relay_pps, relay_p50 / got_l
                    verdict = lambda r: ("pass" if r >= 1 else "**miss**") if sub != han else ""  # noqa: E731
                    name = f"{sub} → {han}" + (" (same language)" if sub == han else "")
                    out.append(f"| {name} | {k(got_t)} | {rt:.2f} | {verdict(rt)} | {got_l:,.0f} | {rl:.2f} | "
                               f"{verdict(rl)} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--n", type=int, default=200_000, help="pipelined packets per run")
    ap.add_argument("--seq-n", type=int, default=2000, help="measured sequential round trips per run")
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--submitters", default=",".join(LANGS))
    ap.add_argument("--handlers", default=",".join(LANGS))
    ap.add_argument("--baselines", default="node,python,rust,node-relay", help="some of " + ", ".join(BASELINE_NAMES))
    ap.add_argument("--topologies", default="hub", help="some of " + ", ".join(TOPOLOGY_NAMES) + " (comma-separated)")
    ap.add_argument("--busy-poll-us", type=int, default=200, help="the busy- topologies' window")
    ap.add_argument("--node-sockets", choices=["loop", "thread"], default=None,
                    help="the Node reactors' `sockets` option (default: the package's)")
    ap.add_argument("--handler-work-us", type=int, default=0,
                    help="µs of busy JS per call in the Node handler (default 0)")
    ap.add_argument("--python-sockets", choices=["loop", "thread"], default=None,
                    help="the Python reactors' `sockets` option (default: the package's)")
    ap.add_argument("--peers", default=str(ROOT.parent / "shared" / "peers"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    ap.add_argument("--report", metavar="RAW_JSONL", help="print the tables of an earlier run's raw rows; run nothing")
    ap.add_argument("--erl-flags", default=None,
                    help="ERL_FLAGS for the Elixir processes, e.g. '+sbwt none +sbwtdcpu none +sbwtdio none'")
    a = ap.parse_args()
    if a.node_sockets is not None:
        os.environ["MATRIX_NODE_SOCKETS"] = a.node_sockets  # read by handler.js and submit.js
    if a.handler_work_us:
        os.environ["MATRIX_HANDLER_WORK_US"] = str(a.handler_work_us)  # read by handler.js
    if a.python_sockets is not None:
        os.environ["MATRIX_PYTHON_SOCKETS"] = a.python_sockets  # read by handler.py and submit.py
    if a.erl_flags is not None:
        ELIXIR_ENV["ERL_FLAGS"] = a.erl_flags
    a.submitters, a.handlers = a.submitters.split(","), a.handlers.split(",")
    a.baselines = [b for b in a.baselines.split(",") if b]
    a.topologies = a.topologies.split(",")
    if not set(a.topologies) <= set(TOPOLOGY_NAMES):
        ap.error(f"--topologies: some of {', '.join(TOPOLOGY_NAMES)}")
    for lang in a.submitters:
        if lang not in SUBMITTER_LANGS:
            ap.error(f"unknown submitter {lang!r} (expected one of {SUBMITTER_LANGS})")
    for lang in a.handlers:
        if lang not in LANGS:
            ap.error(f"unknown language {lang!r} (expected one of {LANGS})")
    for lang in a.baselines:
        if lang not in BASELINE_NAMES:
            ap.error(f"no baseline for {lang!r} ({', '.join(BASELINE_NAMES)})")
    peers = Path(a.peers).resolve()
    if a.report:
        earlier = [json.loads(line) for line in Path(a.report).read_text().splitlines() if line.strip()]
        earlier = [r for r in earlier if r.get("job") == "baseline" or
                   (r.get("job") == "pair" and r["topology"] in a.topologies)]
        for key in ("n", "seq_n", "inflight"):  # the settings of that run, when recorded
            setattr(a, key, earlier[0].get(key, getattr(a, key)) if earlier else getattr(a, key))
        print(report(earlier, a, [r["loadavg_1m"] for r in earlier]))
        return
    if not a.no_build:
        build(peers, set(a.submitters + a.handlers), a.baselines)

    jobs: List[Tuple[str, ...]] = [("pair", s, h, t) for t in a.topologies for s in a.submitters for h in a.handlers]
    jobs += [("baseline", b) for b in a.baselines]
    rng = random.Random(a.seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = TARGET / "matrix" / f"raw-{stamp}.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    loads: List[float] = []
    t_start = time.monotonic()
    with raw.open("w") as f:
        for trial in range(a.trials):
            order = jobs[:]
            rng.shuffle(order)
            for job in order:
                load = os.getloadavg()[0]
                loads.append(load)
                row = pair_job(job[1], job[2], job[3], a) if job[0] == "pair" else baseline_job(job[1], a, peers)
                row.update({"trial": trial, "loadavg_1m": load, "time": time.strftime("%H:%M:%S"), "n": a.n,
                            "node_sockets": a.node_sockets, "handler_work_us": a.handler_work_us,
                            "python_sockets": a.python_sockets,
                            "seq_n": a.seq_n, "inflight": a.inflight})
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                what = f"{job[1]} → {job[2]} ({job[3]})" if job[0] == "pair" else f"baseline {job[1]}"
                print(f"trial {trial + 1}/{a.trials} {what}: {row['pipe']['pps']:,.0f} pkt/s, "
                      f"p50 {row['seq']['p50_us']:.0f} µs, machine busy {row['machine_busy_pct']:.0f}%, load {load:.1f} ({time.monotonic() - t_start:.0f}s)",
                      file=sys.stderr, flush=True)
    loads.append(os.getloadavg()[0])
    print(f"raw rows: {raw}", file=sys.stderr)
    print(report(rows, a, loads))


if __name__ == "__main__":
    main()
