"""In-process actor throughput: `await r.actors.send(counter, {"type":
"increment"})` to one active counter with a fixed number of messages in
flight, beside plain handler calls of the same shape (`await r.call` of a
handler that increments a count kept in a dict and answers it), measured in
the same run, variants interleaved trial by trial.

    python bench/python/actors.py [--n 100000] [--inflight 100] [--trials 5] [--only SUBSTRING]

Prints one JSON line per (variant, trial) and a summary table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import packetflow
from inprocess import drive

INCREMENT = {"type": "increment"}


async def handler_run(n: int, inflight: int, is_async: bool) -> Tuple[float, float]:
    """Plain handler calls: the count lives in a dict the handler closes over."""
    r = packetflow.Reactor(name="bench-handler")
    state = {"value": 0}

    def increment(data: Any, ctx: Any) -> Any:
        state["value"] += 1
        return {"value": state["value"]}

    async def increment_async(data: Any, ctx: Any) -> Any:
        return increment(data, ctx)

    r.register("df", "counter", increment_async if is_async else increment)
    call = r.call

    async def one() -> Any:
        return await call("df", "counter", INCREMENT)

    try:
        await drive(max(n // 50, inflight), inflight, one)  # warm-up
        return await drive(n, inflight, one)
    finally:
        await r.stop()


async def actor_run(n: int, inflight: int, is_async: bool) -> Tuple[float, float]:
    """One counter actor; its state is the actor's, one turn at a time."""
    r = packetflow.Reactor(name="bench-actor")

    def increment(message: Any, ctx: Any) -> Any:
        ctx.state["value"] += 1
        return {"value": ctx.state["value"]}

    async def increment_async(message: Any, ctx: Any) -> Any:
        return increment(message, ctx)

    r.actors.register_behavior("counter", {"increment": increment_async if is_async else increment})
    counter = await r.actors.create("counter", {"value": 0})
    send = r.actors.send

    async def one() -> Any:
        return await send(counter, INCREMENT)

    try:
        await drive(max(n // 50, inflight), inflight, one)  # warm-up
        rate = await drive(n, inflight, one)
        done = (max(n // 50, inflight) // inflight + n // inflight) * inflight
        assert await send(counter, {"type": "increment"}) == {"value": done + 1}
        return rate
    finally:
        await r.stop()


VARIANTS: Dict[str, Callable[[int, int], Awaitable[Tuple[float, float]]]] = {
    "handler, def": lambda n, k: handler_run(n, k, False),
    "actor, def method": lambda n, k: actor_run(n, k, False),
    "handler, async def": lambda n, k: handler_run(n, k, True),
    "actor, async def method": lambda n, k: actor_run(n, k, True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--only", default="", help="substring filter on variant names")
    args = ap.parse_args()
    rates: Dict[str, List[float]] = {}
    cpu: Dict[str, List[float]] = {}
    for trial in range(args.trials):
        for name, run in VARIANTS.items():
            if args.only and args.only not in name:
                continue
            rate, cpu_us = asyncio.run(run(args.n, args.inflight))
            rates.setdefault(name, []).append(rate)
            cpu.setdefault(name, []).append(cpu_us)
            row = {"variant": name, "trial": trial, "n": args.n, "inflight": args.inflight,
                   "messages_per_s": round(rate), "cpu_us_per_message": round(cpu_us, 2)}
            print(json.dumps(row), flush=True)
    print()
    print(f"python {sys.version.split()[0]}, packetflow {packetflow.__version__}, "
          f"{args.inflight} in flight, {args.trials} trials")
    print("| variant | messages/s, median (min-max) | process CPU µs/message, median |")
    print("|---|---|---|")
    for name, got in rates.items():
        print(f"| {name} | {statistics.median(got):,.0f} ({min(got):,.0f}-{max(got):,.0f}) "
              f"| {statistics.median(cpu[name]):.2f} |")


if __name__ == "__main__":
    main()
