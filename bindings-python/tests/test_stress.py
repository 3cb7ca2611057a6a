"""Stress tests of the bridge (docs/bindings.md, "Python"): many submitters
on several threads and loops at once, handlers answering from other threads,
and a stop in the middle of the traffic. Each checks that every packet gets
exactly one answer and that nothing hangs; a wake-up lost to a changed
ordering in the drain, a handler call lost between threads, or a packet
answered twice fails them."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, Callable, Counter, Dict, List, Tuple

import packetflow
from packetflow import Context, Reactor

LOOP_THREADS = 3
SYNC_THREADS = 2
PER_SUBMITTER = 1000
WORKERS = 20
DEADLINE_S = 30.0


class Tally:
    """How many times each packet's handler ran, thread-safely."""

    def __init__(self) -> None:
        self.ran: Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def count(self, ctx: Context) -> None:
        with self.lock:
            self.ran[ctx.packet_id] += 1


def serve_every_kind(r: Reactor, tally: Tally, main_loop: asyncio.AbstractEventLoop) -> threading.Thread:
    """Registers one handler of each way a handler can answer:

    - ``df:on-loop``: ``async def`` on the main loop, answering at once;
    - ``df:suspends``: ``async def`` on the main loop that suspends twice;
    - ``df:from-thread``: ``async def`` whose answer is completed by another
      thread (``call_soon_threadsafe`` on a future of its loop);
    - ``df:pool``: ``def``, on the handler threads;
    - ``df:elsewhere``: ``async def`` bound to a loop of its own thread.

    Returns the thread of that last loop (stopped by ``stop_elsewhere``).
    """

    async def on_loop(data: Any, ctx: Context) -> Any:
        tally.count(ctx)
        return ["on-loop", data]

    async def suspends(data: Any, ctx: Context) -> Any:
        tally.count(ctx)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return ["suspends", data]

    async def from_thread(data: Any, ctx: Context) -> Any:
        tally.count(ctx)
        loop = asyncio.get_running_loop()
        answer: "asyncio.Future[Any]" = loop.create_future()
        threading.Thread(target=lambda: loop.call_soon_threadsafe(answer.set_result, ["from-thread", data])).start()
        return await answer

    def pool(data: Any, ctx: Context) -> Any:
        tally.count(ctx)
        return ["pool", data]

    r.register("df", "on-loop", on_loop)
    r.register("df", "suspends", suspends)
    r.register("df", "from-thread", from_thread)
    r.register("df", "pool", pool)

    ready = threading.Event()
    other = asyncio.new_event_loop()

    async def register_elsewhere() -> None:
        @r.handler("df", "elsewhere")
        async def elsewhere(data: Any, ctx: Context) -> Any:
            tally.count(ctx)
            await asyncio.sleep(0)
            return ["elsewhere", data]

    def run_other() -> None:
        other.run_until_complete(register_elsewhere())
        ready.set()
        other.run_forever()
        other.close()

    t = threading.Thread(target=run_other, name="elsewhere-loop", daemon=True)
    t.start()
    assert ready.wait(5)
    t.loop = other  # type: ignore[attr-defined]
    return t


def stop_elsewhere(t: threading.Thread) -> None:
    loop = t.loop  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    assert not t.is_alive()


ELEMENTS = ["on-loop", "suspends", "from-thread", "pool", "elsewhere"]

Answer = Tuple[str, Any, str]  # (packet id, data or error code, element)


async def submit_many(r: Reactor, label: str, answers: List[Answer], on_each: Callable[[], None] = lambda: None) -> None:
    """PER_SUBMITTER packets over every element, from WORKERS coroutines
    each submitting one after the other: sustained traffic, so that answers
    keep crossing threads while the loops drain."""

    async def worker(w: int) -> None:
        for i in range(w, PER_SUBMITTER, WORKERS):
            element = ELEMENTS[i % len(ELEMENTS)]
            res = await r.submit("df", element, [label, i])
            answers.append((res.packet_id, res.data if res.ok else res.error.code, element))  # type: ignore[union-attr]
            on_each()

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))


def submit_from_a_new_loop(r: Reactor, label: str, answers: List[Answer]) -> None:
    asyncio.run(asyncio.wait_for(submit_many(r, label, answers), DEADLINE_S))


def call_sync_many(r: Reactor, label: str, answers: List[Answer]) -> None:
    for i in range(PER_SUBMITTER // 3):
        element = ELEMENTS[i % len(ELEMENTS)]
        res = r.submit_sync("df", element, [label, i])
        answers.append((res.packet_id, res.data if res.ok else res.error.code, element))  # type: ignore[union-attr]


def start(target: Callable[..., None], *args: Any) -> Tuple[threading.Thread, List[BaseException]]:
    errors: List[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


async def join_all(threads: List[Tuple[threading.Thread, List[BaseException]]]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    for t, errors in threads:
        await asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
        assert not t.is_alive(), f"{t.name} hung"
        assert not errors, errors


async def test_many_submitters_on_many_threads_each_packet_answered_once() -> None:
    r = Reactor(name="stress", handler_threads=4)
    tally = Tally()
    elsewhere = serve_every_kind(r, tally, asyncio.get_running_loop())
    try:
        answers: Dict[str, List[Answer]] = {}
        threads = []
        for k in range(LOOP_THREADS):
            answers[f"loop{k}"] = []
            threads.append(start(submit_from_a_new_loop, r, f"loop{k}", answers[f"loop{k}"]))
        for k in range(SYNC_THREADS):
            answers[f"sync{k}"] = []
            threads.append(start(call_sync_many, r, f"sync{k}", answers[f"sync{k}"]))
        answers["main"] = []
        await asyncio.wait_for(submit_many(r, "main", answers["main"]), DEADLINE_S)
        await join_all(threads)

        expected = {label: PER_SUBMITTER // 3 if label.startswith("sync") else PER_SUBMITTER for label in answers}
        every: List[str] = []
        for label, got in answers.items():
            assert len(got) == expected[label], label
            for packet_id, data, element in got:
                every.append(packet_id)
                # The packet got its own answer, from the handler it was sent to.
                assert isinstance(data, list) and data[0] == element and data[1][0] == label, (label, data)
        assert len(every) == len(set(every)) == sum(expected.values())
        # Each packet's handler ran exactly once.
        assert set(tally.ran) == set(every)
        assert set(tally.ran.values()) == {1}
        assert r.stats()["in_flight"] == 0
    finally:
        await r.stop()
        stop_elsewhere(elsewhere)


async def test_stop_during_traffic_answers_every_packet_once_with_pf503_after() -> None:
    r = Reactor(name="stress-stop", handler_threads=4)
    tally = Tally()
    elsewhere = serve_every_kind(r, tally, asyncio.get_running_loop())
    stop_when = PER_SUBMITTER // 2
    answered = 0
    stopped = asyncio.Event()

    def count_main() -> None:
        nonlocal answered
        answered += 1
        if answered == stop_when:
            stopped.set()

    try:
        answers: Dict[str, List[Answer]] = {}
        threads = []
        for k in range(LOOP_THREADS):
            answers[f"loop{k}"] = []
            threads.append(start(submit_from_a_new_loop, r, f"loop{k}", answers[f"loop{k}"]))
        for k in range(SYNC_THREADS):
            answers[f"sync{k}"] = []
            threads.append(start(call_sync_many, r, f"sync{k}", answers[f"sync{k}"]))
        answers["main"] = []
        traffic = asyncio.ensure_future(submit_many(r, "main", answers["main"], count_main))
        # Stop in the middle of the traffic: once half the main loop's
        # packets were answered, while the other submitters are still busy.
        await asyncio.wait_for(stopped.wait(), DEADLINE_S)
        await r.stop()
        await asyncio.wait_for(traffic, DEADLINE_S)
        await join_all(threads)

        every: List[str] = []
        codes: Counter[str] = collections.Counter()
        for label, got in answers.items():
            assert len(got) == (PER_SUBMITTER // 3 if label.startswith("sync") else PER_SUBMITTER), label
            for packet_id, data, element in got:
                every.append(packet_id)
                if isinstance(data, list):
                    assert data[0] == element and data[1][0] == label
                    codes["success"] += 1
                else:
                    # A packet not answered by its handler was answered by the stop.
                    assert data == "PF503", (label, element, data)
                    codes["PF503"] += 1
        assert len(every) == len(set(every))
        assert codes["success"] >= stop_when and codes["PF503"] > 0, codes
        # No handler ran twice, and none ran for a packet answered PF503 by
        # a submit made after the stop (those never reach a handler).
        assert set(tally.ran.values()) <= {1}
        late = await r.submit("df", "on-loop", "late")
        assert late.error is not None and late.error.code == "PF503"
        assert isinstance(late.error, packetflow.UnavailableError)
        assert r.stats()["in_flight"] == 0
    finally:
        await r.stop()
        stop_elsewhere(elsewhere)


async def test_wake_ups_from_many_threads_are_never_lost() -> None:
    """Threads calling an ``async def`` handler of this loop one call after
    the other: every call is a push into this loop's inbox from another
    thread, racing the loop's drains. A wake-up lost to a changed order of
    the drain (the wake-up bytes, the pending flag, the inbox) leaves a call
    waiting forever."""
    r = Reactor(name="wake-ups")
    threads_n, calls = 6, 2000

    @r.handler("df", "here")
    async def here(data: Any, ctx: Context) -> Any:
        return data + 1

    def caller(base: int) -> None:
        for i in range(calls):
            assert r.call_sync("df", "here", base + i, timeout_ms=int(DEADLINE_S * 1000)) == base + i + 1

    try:
        threads = [start(caller, k * calls) for k in range(threads_n)]
        # The loop keeps busy too, so that drains and pushes overlap.
        for i in range(calls):
            assert await r.call("df", "here", i) == i + 1
        await join_all(threads)
    finally:
        await r.stop()
