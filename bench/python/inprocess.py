"""In-process throughput: `await r.submit` -> Python handler -> Result, with a
fixed number of submits in flight, next to a plain-asyncio dispatch (dict
lookup + await) doing the same work, measured in the same run.

    python bench/python/inprocess.py [--n 200000] [--inflight 100] [--trials 5]

Prints one JSON line per (variant, trial) and a summary table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import packetflow

DATA = {"text": "hello packetflow"}


def upper_sync(data: Any, ctx: Any) -> Any:
    return {"text": data["text"].upper()}


async def upper_async(data: Any, ctx: Any) -> Any:
    return {"text": data["text"].upper()}


async def upper_async_yield(data: Any, ctx: Any) -> Any:
    await asyncio.sleep(0)
    return {"text": data["text"].upper()}


async def drive(n: int, inflight: int, one: Callable[[], Awaitable[Any]]) -> Tuple[float, float]:
    """Runs `n` calls of `one` with `inflight` workers; returns (calls/s,
    process CPU µs per call). CPU time counts every thread of the process
    and is the steadier figure on a shared machine."""
    per_worker = n // inflight

    async def worker() -> None:
        for _ in range(per_worker):
            await one()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    done = per_worker * inflight
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


async def baseline(n: int, inflight: int, handler: Callable[..., Any]) -> Tuple[float, float]:
    """Plain asyncio: a dict of handlers keyed by group:element, awaited."""
    handlers: Dict[str, Callable[..., Any]] = {"df:transform": handler}

    async def one() -> Any:
        out = await handlers["df:transform"](DATA, None)
        assert out["text"] == "HELLO PACKETFLOW"
        return out

    return await drive(n, inflight, one)


async def packetflow_run(n: int, inflight: int, handler: Callable[..., Any]) -> Tuple[float, float]:
    r = packetflow.Reactor(name="bench")
    r.register("df", "transform", handler)
    submit = r.submit

    async def one() -> Any:
        res = await submit("df", "transform", DATA)
        assert res.data["text"] == "HELLO PACKETFLOW", res
        return res

    try:
        await drive(max(n // 50, inflight), inflight, one)  # warm-up
        return await drive(n, inflight, one)
    finally:
        await r.stop()


VARIANTS: Dict[str, Callable[[int, int], Awaitable[Tuple[float, float]]]] = {
    "asyncio-baseline (async def)": lambda n, k: baseline(n, k, upper_async),
    "asyncio-baseline (async def, sleep(0))": lambda n, k: baseline(n, k, upper_async_yield),
    "packetflow async def": lambda n, k: packetflow_run(n, k, upper_async),
    "packetflow async def, sleep(0)": lambda n, k: packetflow_run(n, k, upper_async_yield),
    "packetflow def (handler threads)": lambda n, k: packetflow_run(n, k, upper_sync),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--only", default="", help="substring filter on variant names")
    args = ap.parse_args()
    results: Dict[str, List[float]] = {}
    cpu: Dict[str, List[float]] = {}
    for trial in range(args.trials):
        for name, run in VARIANTS.items():
            if args.only and args.only not in name:
                continue
            n = args.n if "sleep" not in name and "def (" not in name else args.n // 2
            rate, cpu_us = asyncio.run(run(n, args.inflight))
            results.setdefault(name, []).append(rate)
            cpu.setdefault(name, []).append(cpu_us)
            row = {"variant": name, "trial": trial, "n": n, "inflight": args.inflight,
                   "calls_per_s": round(rate), "cpu_us_per_call": round(cpu_us, 2)}
            print(json.dumps(row), flush=True)
    print()
    print(f"python {sys.version.split()[0]}, packetflow {packetflow.__version__}, {args.inflight} in flight, {args.trials} trials")
    print("| variant | calls/s, median (min-max) | process CPU µs/call, median |")
    print("|---|---|---|")
    for name, rates in results.items():
        print(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
              f"| {statistics.median(cpu[name]):.2f} |")


if __name__ == "__main__":
    main()
