"""What the benchmark scripts under bench/ share: building the CLI, starting
and stopping servers in their own sessions, waiting for their ports, running
a load generator that prints JSON, and the "median (min–max)" cells.

A script imports it with the folder above it on its path:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchlib
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CLI = TARGET / "release" / "packetflow"


def build_cli() -> Path:
    """Builds the `packetflow` CLI (release profile); returns its path."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "packetflow-cli"], cwd=ROOT, check=True)
    return CLI


def build_reference_peers(peers: Path) -> Path:
    """Builds the reference Rust peers of `peers`/rust into this tree's
    target dir (nothing is written beside them); returns their folder."""
    target = TARGET / "peers"
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", str(Path(peers) / "rust" / "Cargo.toml"),
                    "--target-dir", str(target)], check=True)
    return target / "release"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: List[str], **kwargs: Any) -> "subprocess.Popen[Any]":
    """Starts a server in a session of its own (so `stop` reaches its
    children too), output discarded unless `kwargs` says otherwise."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(cmd, start_new_session=True, **kwargs)


def wait_port(port: int, proc: "Optional[subprocess.Popen[Any]]" = None, timeout: float = 20.0) -> None:
    """Waits until something accepts connections on 127.0.0.1:`port`;
    raises if `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f} s")


def stop(proc: "subprocess.Popen[Any]") -> None:
    """Ends a server started by `start`: SIGTERM to its session, SIGKILL
    after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def run_json(cmd: List[str], timeout: float = 300) -> Dict[str, Any]:
    """Runs a load generator and returns the last JSON object it printed;
    raises with its stderr if it failed."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}): {out.stderr or out.stdout}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(map(str, cmd))} printed no JSON: {out.stdout}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def pipelined_upper(port: int, proc: "subprocess.Popen[Any]", n: int) -> Dict[str, Any]:
    """`packetflow bench` pipelined (1 connection, 100 in flight) against
    an uppercasing server that `proc` started on `port`: its JSON figures,
    the server's CPU included. Stops `proc` when done."""
    try:
        wait_port(port, proc)
        return run_json(
            [str(CLI), "bench", "--url", f"ws://127.0.0.1:{port}/packetflow/v1", "--mode", "pipe",
             "--conns", "1", "--inflight", "100", "--n", str(n), "--data", '"hello world"',
             "--expect", '"HELLO WORLD"', "--pid", str(proc.pid), "--json", "--timeout-s", "120"],
            timeout=180,
        )
    finally:
        stop(proc)


def median_range(values: Iterable[Optional[float]], digits: int = 0) -> str:
    """`median (min–max)` of the values that are there, or `–`."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(statistics.median(present))} ({f.format(min(present))}–{f.format(max(present))})"
