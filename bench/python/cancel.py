"""Cancelling many packets in flight from Python: `--n` submits to an
`async def` handler that waits until it is cancelled, then every one of
them cancelled at once, either with `Reactor.cancel(packet_id)` or by
cancelling the tasks that await them.

    python bench/python/cancel.py [--n 10000] [--trials 5]

Reports, per way and trial, the time from the first cancel to (a) every
submitter having its answer (PF499, or its task cancelled), (b) every
handler having seen `asyncio.CancelledError` and the reactor's in-flight
count back at 0. One JSON line per (way, trial), then medians. The floor
beside them: as many plain asyncio tasks (a "handler" task awaiting an
event, a "submitter" task awaiting it), all cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any, Dict, List

import packetflow


async def one_trial(n: int, way: str) -> Dict[str, float]:
    async with packetflow.Reactor(name="bench-cancel", max_inflight=n) as r:
        started = 0
        observed = 0
        all_started, all_observed = asyncio.Event(), asyncio.Event()

        async def hold(data: Any, ctx: Any) -> Any:
            nonlocal started, observed
            started += 1
            if started == n:
                all_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                observed += 1
                if observed == n:
                    all_observed.set()
                raise

        r.register("df", "hold", hold)
        waiters: List["asyncio.Future[Any]"] = [
            asyncio.ensure_future(r.submit("df", "hold", i, packet_id=f"c-{i}", timeout_ms=60_000))
            for i in range(n)
        ]
        await asyncio.wait_for(all_started.wait(), 60)
        assert r.stats()["in_flight"] == n
        start = time.perf_counter()
        if way == "Reactor.cancel":
            for i in range(n):
                r.cancel(f"c-{i}")
        else:
            for waiter in waiters:
                waiter.cancel()
        cancel_calls = time.perf_counter() - start
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        answered = time.perf_counter() - start
        await asyncio.wait_for(all_observed.wait(), 60)
        while r.stats()["in_flight"]:
            await asyncio.sleep(0)
        observed_at = time.perf_counter() - start
        if way == "Reactor.cancel":
            assert all(o.error.code == "PF499" for o in outcomes)
        else:
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        return {
            "cancel_calls_ms": cancel_calls * 1e3,
            "answered_ms": answered * 1e3,
            "handlers_observed_ms": observed_at * 1e3,
        }


async def plain_asyncio(n: int) -> Dict[str, float]:
    """The floor: `n` plain tasks awaiting an event (one per handler), each
    awaited by another (one per submitter), the awaiting ones cancelled."""
    observed = 0
    all_observed = asyncio.Event()

    async def hold() -> None:
        nonlocal observed
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            observed += 1
            if observed == n:
                all_observed.set()
            raise

    handlers = [asyncio.ensure_future(hold()) for _ in range(n)]
    waiters = [asyncio.ensure_future(asyncio.shield(h)) for h in handlers]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    start = time.perf_counter()
    for waiter, handler in zip(waiters, handlers):
        waiter.cancel()
        handler.cancel()
    cancel_calls = time.perf_counter() - start
    await asyncio.gather(*waiters, return_exceptions=True)
    answered = time.perf_counter() - start
    await all_observed.wait()
    observed_at = time.perf_counter() - start
    return {
        "cancel_calls_ms": cancel_calls * 1e3,
        "answered_ms": answered * 1e3,
        "handlers_observed_ms": observed_at * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    ways = ["Reactor.cancel", "task.cancel()", "plain asyncio"]
    figures: Dict[str, List[Dict[str, float]]] = {way: [] for way in ways}
    for trial in range(args.trials):
        for way in ways:
            fig = asyncio.run(plain_asyncio(args.n) if way == "plain asyncio" else one_trial(args.n, way))
            figures[way].append(fig)
            print(json.dumps({"way": way, "trial": trial, "n": args.n, **fig}), flush=True)
    print()
    print(f"| way ({args.n} packets) | cancel calls, ms | all answered, ms | all handlers told, in flight 0, ms |")
    print("|---|---|---|---|")
    for way in ways:
        med = {k: statistics.median(f[k] for f in figures[way]) for k in figures[way][0]}
        print(
            f"| {way} | {med['cancel_calls_ms']:.1f} | {med['answered_ms']:.1f} | "
            f"{med['handlers_observed_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
