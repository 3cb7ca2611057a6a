"""The Python submitter of the matrix: connects a `packetflow.Reactor` to a
hub and calls `df:transform` with "hello world" (every answer must be
"HELLO WORLD").

    python bench/matrix/submit.py seq  HUB_URL [--n 2000] [--warmup 500]
    python bench/matrix/submit.py pipe HUB_URL [--n 200000] [--inflight 100] [--warmup 20000]

seq: N calls one after another (after the warm-up); round-trip p50/p95/p99
in µs. pipe: INFLIGHT calls kept in flight on the reactor's one connection
until N are answered (after a warm-up of the same shape); packets/s and the
process's CPU per packet. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any, Dict, List

import packetflow

EXPECT = "HELLO WORLD"


def pct(sorted_ns: List[int], p: float) -> float:
    """The p-th percentile (nearest rank on n-1 intervals), in µs."""
    return sorted_ns[min(len(sorted_ns) - 1, round(p / 100 * (len(sorted_ns) - 1)))] / 1000


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def seq(r: packetflow.Reactor, n: int, warmup: int) -> Dict[str, Any]:
    lat: List[int] = []
    for i in range(warmup + n):
        t0 = time.perf_counter_ns()
        out = await r.call("df", "transform", "hello world")
        dt = time.perf_counter_ns() - t0
        if out != EXPECT:
            raise RuntimeError(f"round trip {i}: unexpected answer {out!r}")
        if i >= warmup:
            lat.append(dt)
    mean = sum(lat) / len(lat) / 1000
    lat.sort()
    return {"mode": "seq", "n": n, "warmup": warmup, "p50_us": pct(lat, 50), "p95_us": pct(lat, 95),
            "p99_us": pct(lat, 99), "mean_us": mean}


async def window(r: packetflow.Reactor, n: int, inflight: int) -> None:
    """Keeps `inflight` calls outstanding until `n` are answered."""
    left = n

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            out = await r.call("df", "transform", "hello world")
            if out != EXPECT:
                raise RuntimeError(f"unexpected answer {out!r}")

    await asyncio.gather(*(lane() for _ in range(min(inflight, n))))


async def pipe(r: packetflow.Reactor, n: int, inflight: int, warmup: int) -> Dict[str, Any]:
    if warmup:
        await window(r, warmup, inflight)
    c0, t0 = cpu_s(), time.perf_counter()
    await window(r, n, inflight)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"mode": "pipe", "n": n, "inflight": inflight, "warmup": warmup, "pps": n / wall, "wall_s": wall,
            "cpu_us_per_packet": cpu * 1e6 / n}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seq", "pipe"])
    ap.add_argument("url")
    ap.add_argument("--n", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    a = ap.parse_args()
    # MATRIX_BUSY_POLL_US (set by matrix.py's busy- topologies): the reactor's
    # busy_poll_us; MATRIX_PYTHON_SOCKETS (matrix.py --python-sockets): its sockets.
    busy_poll_us = int(os.environ.get("MATRIX_BUSY_POLL_US", "0"))
    sockets = os.environ.get("MATRIX_PYTHON_SOCKETS") or None
    async with packetflow.Reactor(name="matrix-python-submitter", busy_poll_us=busy_poll_us, sockets=sockets) as r:
        await r.connect(a.url)
        if a.mode == "seq":
            work = seq(r, a.n or 2000, 500 if a.warmup is None else a.warmup)
        else:
            work = pipe(r, a.n or 200_000, a.inflight, 20_000 if a.warmup is None else a.warmup)
        out = await asyncio.wait_for(work, a.timeout)
    print(json.dumps({"submitter": "python", "url": a.url, **out}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
