"""Cancellation (PF499): a submitter that gives up, ``Reactor.cancel``, and
what a handler sees (an ``async def`` handler's task is cancelled, a ``def``
handler polls ``ctx.cancelled``), down a chain of ``ctx.call``s; priority
inherited by ``ctx.call``."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import packetflow
from packetflow import ActorContext, Context, Reactor

from .conftest import wait_for

#: How long a handler may take to observe its cancellation (the issue asks
#: for 50 ms across languages; a loaded CI machine gets more room).
OBSERVED_WITHIN = 2.0


async def wait_thread_event(event: threading.Event, timeout: float = 5.0) -> None:
    """Waits on a `threading.Event` (set by a handler thread) without
    blocking the loop, failing the test instead of hanging."""
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, event.wait, timeout), "event not set in time"


def handler_stats(r: Reactor, element: str) -> Dict[str, Any]:
    return next(dict(h) for h in r.stats()["handlers"] if h["element"] == element)


async def until_idle(r: Reactor, timeout: float = 5.0) -> None:
    """Waits (a bounded number of loop turns) until nothing is in flight."""
    deadline = time.monotonic() + timeout
    while r.stats()["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert r.stats()["in_flight"] == 0


def hold_async(started: asyncio.Event, cancelled: asyncio.Event) -> Any:
    """An `async def` handler that waits until it is cancelled."""

    async def hold(data: Any, ctx: Context) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    return hold


# ---- Reactor.cancel ----


async def test_cancel_answers_pf499_and_the_async_handler_gets_cancelled_error(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "hold", hold_async(started, cancelled))
    pending = asyncio.ensure_future(reactor.submit("df", "hold", packet_id="p-1"))
    await wait_for(started)
    assert reactor.cancel("p-1") is True
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None
    assert isinstance(result.error, packetflow.PacketCancelledError)
    assert (result.error.code, result.error.message) == ("PF499", "packet p-1 was cancelled")
    await wait_for(cancelled, OBSERVED_WITHIN)
    assert reactor.stats()["in_flight"] == 0
    stats = handler_stats(reactor, "hold")
    assert (stats["count"], stats["errors"], stats["cancelled"]) == (1, 1, 1)
    # Idempotent while in flight, False once it is not.
    assert reactor.cancel("p-1") is False


async def test_call_of_a_cancelled_packet_raises_packet_cancelled_error(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "hold", hold_async(started, cancelled))
    pending = asyncio.ensure_future(reactor.call("df", "hold", packet_id="p-2"))
    await wait_for(started)
    assert reactor.cancel("p-2")
    assert reactor.cancel("p-2")  # still in flight for the core: idempotent
    with pytest.raises(packetflow.PacketCancelledError) as info:
        await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert info.value.code == "PF499"


async def test_a_handler_that_swallows_the_cancellation_is_answered_pf499_all_the_same(
    reactor: Reactor,
) -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()

    @reactor.handler("df", "stubborn")
    async def stubborn(data: Any, ctx: Context) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaned.set()
            return "cleaned up"
        return "never"

    pending = asyncio.ensure_future(reactor.submit("df", "stubborn", packet_id="p-3"))
    await wait_for(started)
    assert reactor.cancel("p-3")
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None and result.error.code == "PF499"
    await wait_for(cleaned, OBSERVED_WITHIN)


async def test_a_packet_cancelled_before_it_starts_never_runs() -> None:
    ran: List[str] = []
    started, release = asyncio.Event(), asyncio.Event()
    async with Reactor(name="cancel-queued", max_inflight=1) as r:

        @r.handler("df", "slot")
        async def slot(data: Any, ctx: Context) -> Any:
            started.set()
            await release.wait()
            return "freed"

        @r.handler("df", "queued")
        async def queued(data: Any, ctx: Context) -> Any:
            ran.append(data)
            return data

        holding = asyncio.ensure_future(r.call("df", "slot"))
        await wait_for(started)
        # Queued for a slot before submit returns.
        waiting = asyncio.ensure_future(r.submit("df", "queued", "first", packet_id="q-1"))
        assert r.stats()["queued"] == 1
        assert r.cancel("q-1")
        result = await asyncio.wait_for(waiting, OBSERVED_WITHIN)
        assert result.error is not None and result.error.code == "PF499"
        release.set()
        assert await asyncio.wait_for(holding, 5) == "freed"
        assert await r.call("df", "queued", "second") == "second"
        assert ran == ["second"]


async def test_a_def_handler_polls_ctx_cancelled(reactor: Reactor) -> None:
    started, saw = threading.Event(), threading.Event()
    polls: List[bool] = []

    @reactor.handler("df", "poll")
    def poll(data: Any, ctx: Context) -> Any:
        polls.append(ctx.cancelled)
        started.set()
        # Bounded: about 10 s of polling at most.
        for _ in range(2000):
            if ctx.cancelled:
                saw.set()
                return "stopped early"
            time.sleep(0.005)
        return "ran to the end"

    pending = asyncio.ensure_future(reactor.submit("df", "poll", packet_id="d-1"))
    await wait_thread_event(started)
    assert reactor.cancel("d-1")
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None and result.error.code == "PF499"
    await wait_thread_event(saw, OBSERVED_WITHIN)
    assert polls == [False]
    assert reactor.stats()["in_flight"] == 0


async def test_ctx_cancelled_is_false_while_a_packet_runs_and_true_once_it_is_over(reactor: Reactor) -> None:
    kept: List[Context] = []

    @reactor.handler("df", "keep")
    async def keep(data: Any, ctx: Context) -> Any:
        kept.append(ctx)
        return ctx.cancelled

    assert await reactor.call("df", "keep") is False
    # Work a handler left running beside it is not wanted once it answered.
    assert kept[0].cancelled is True


async def test_cancel_of_a_packet_not_in_flight_or_with_a_bad_id(reactor: Reactor) -> None:
    assert reactor.cancel("nobody") is False
    with pytest.raises(packetflow.InvalidPacketError) as info:
        reactor.cancel("")
    assert info.value.message == "id must be a string of 1-128 bytes, got 0 bytes"
    with pytest.raises(packetflow.InvalidPacketError):
        reactor.cancel("x" * 129)
    with pytest.raises(TypeError):
        reactor.cancel(42)  # type: ignore[arg-type]


# ---- cancelling the awaiting task ----


async def test_cancelling_the_awaiting_task_cancels_the_packet(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "hold", hold_async(started, cancelled))
    waiter = asyncio.ensure_future(reactor.call("df", "hold"))
    await wait_for(started)
    assert reactor.stats()["in_flight"] == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_for(cancelled, OBSERVED_WITHIN)
    await until_idle(reactor)
    assert handler_stats(reactor, "hold")["cancelled"] == 1


async def test_cancelling_the_awaiting_task_tells_a_def_handler(reactor: Reactor) -> None:
    started, saw = threading.Event(), threading.Event()

    @reactor.handler("df", "poll")
    def poll(data: Any, ctx: Context) -> Any:
        started.set()
        for _ in range(2000):
            if ctx.cancelled:
                saw.set()
                return None
            time.sleep(0.005)
        return None

    waiter = asyncio.ensure_future(reactor.submit("df", "poll"))
    await wait_thread_event(started)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_thread_event(saw, OBSERVED_WITHIN)
    await until_idle(reactor)


async def test_wait_for_timing_out_cancels_the_packet(reactor: Reactor) -> None:
    """`asyncio.wait_for` cancels what it awaits when it times out: the
    packet goes with it."""
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "hold", hold_async(started, cancelled))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reactor.call("df", "hold"), 0.05)
    await wait_for(cancelled, OBSERVED_WITHIN)
    await until_idle(reactor)


# ---- down a chain of ctx.call ----


async def test_cancelling_the_first_packet_cancels_the_chain(reactor: Reactor) -> None:
    first_cancelled = asyncio.Event()
    second_started, second_cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "second", hold_async(second_started, second_cancelled))
    seen: List[str] = []

    @reactor.handler("df", "first")
    async def first(data: Any, ctx: Context) -> Any:
        try:
            return await ctx.call("df", "second")
        except asyncio.CancelledError:
            seen.append("first: CancelledError")
            first_cancelled.set()
            raise
        except packetflow.PacketCancelledError:
            seen.append("first: PacketCancelledError")
            first_cancelled.set()
            raise

    pending = asyncio.ensure_future(reactor.submit("df", "first", packet_id="chain-1"))
    await wait_for(second_started)
    assert reactor.stats()["in_flight"] == 2
    assert reactor.cancel("chain-1")
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None and result.error.code == "PF499"
    await wait_for(first_cancelled, OBSERVED_WITHIN)
    await wait_for(second_cancelled, OBSERVED_WITHIN)
    assert seen == ["first: CancelledError"]
    await until_idle(reactor)
    assert handler_stats(reactor, "first")["cancelled"] == 1
    assert handler_stats(reactor, "second")["cancelled"] == 1


async def test_cancelling_the_awaiting_task_cancels_a_chain_of_three(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "third", hold_async(started, cancelled))

    @reactor.handler("df", "second")
    async def second(data: Any, ctx: Context) -> Any:
        return await ctx.call("df", "third")

    @reactor.handler("df", "first")
    def first(data: Any, ctx: Context) -> Any:
        # A def handler blocked in call_sync: its child is cancelled with it.
        return ctx.call_sync("df", "second")

    waiter = asyncio.ensure_future(reactor.call("df", "first"))
    await wait_for(started)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_for(cancelled, OBSERVED_WITHIN)
    await until_idle(reactor)
    for element in ("first", "second", "third"):
        assert handler_stats(reactor, element)["cancelled"] == 1, element


async def test_call_sync_in_a_cancelled_def_handler_raises_packet_cancelled_error(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    reactor.register("df", "child", hold_async(started, cancelled))
    raised: List[BaseException] = []
    done = threading.Event()

    @reactor.handler("df", "parent")
    def parent(data: Any, ctx: Context) -> Any:
        try:
            return ctx.call_sync("df", "child")
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    pending = asyncio.ensure_future(reactor.submit("df", "parent", packet_id="sync-parent"))
    await wait_for(started)
    assert reactor.cancel("sync-parent")
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None and result.error.code == "PF499"
    await wait_thread_event(done, OBSERVED_WITHIN)
    assert len(raised) == 1 and isinstance(raised[0], packetflow.PacketCancelledError)
    await wait_for(cancelled, OBSERVED_WITHIN)


# ---- tasks that serve one call after another ----


async def test_a_task_serves_the_next_call_normally_after_a_cancelled_one(reactor: Reactor) -> None:
    started = asyncio.Event()
    tasks: List["asyncio.Task[Any]"] = []

    @reactor.handler("df", "maybe")
    async def maybe(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        if data == "hold":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return "swallowed"  # returns normally: its task must not serve again cancelled
        for _ in range(3):
            await asyncio.sleep(0)
        cancelling = task.cancelling() if sys.version_info >= (3, 11) else 0
        return [data, ctx.cancelled, cancelling]

    # A parked task, then a call in it that is cancelled.
    assert await reactor.call("df", "maybe", 0) == [0, False, 0]
    pending = asyncio.ensure_future(reactor.submit("df", "maybe", "hold", packet_id="reuse-1"))
    await wait_for(started)
    assert reactor.cancel("reuse-1")
    result = await asyncio.wait_for(pending, OBSERVED_WITHIN)
    assert result.error is not None and result.error.code == "PF499"
    # Calls one after the other, then several at once: all answered, none
    # cancelled by what was meant for the call before.
    for i in range(1, 6):
        assert await asyncio.wait_for(reactor.call("df", "maybe", i), 5) == [i, False, 0]
    answers = await asyncio.wait_for(asyncio.gather(*(reactor.call("df", "maybe", i) for i in range(10))), 5)
    assert answers == [[i, False, 0] for i in range(10)]
    await until_idle(reactor)


async def test_cancelling_many_calls_leaves_later_calls_unharmed(reactor: Reactor) -> None:
    """Cancels arrive for calls served by tasks that may have moved on to
    another call: only the call meant is cancelled."""
    gate = asyncio.Event()

    @reactor.handler("df", "gated")
    async def gated(data: Any, ctx: Context) -> Any:
        if data % 2:
            await gate.wait()
        await asyncio.sleep(0)
        return data

    waiters = [asyncio.ensure_future(reactor.call("df", "gated", i)) for i in range(40)]
    await asyncio.sleep(0)
    for i, waiter in enumerate(waiters):
        if i % 4 == 1:
            waiter.cancel()
    gate.set()
    done = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    for i, outcome in enumerate(done):
        if i % 4 == 1:
            assert isinstance(outcome, asyncio.CancelledError), (i, outcome)
        else:
            assert outcome == i, (i, outcome)
    assert [await reactor.call("df", "gated", i) for i in range(6)] == list(range(6))
    await until_idle(reactor)


# ---- actors ----


async def test_an_async_actor_method_is_cancelled_and_changes_nothing(reactor: Reactor) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(message: Dict[str, Any], ctx: ActorContext) -> None:
        ctx.state["value"] = 999
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def get(message: Dict[str, Any], ctx: ActorContext) -> Any:
        return ctx.state

    reactor.actors.register_behavior("box", {"hang": hang, "get": get})
    box = await reactor.actors.create("box", {"value": 1})
    waiter = asyncio.ensure_future(reactor.actors.send(box, {"type": "hang"}))
    await wait_for(started)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_for(cancelled, OBSERVED_WITHIN)
    assert await asyncio.wait_for(reactor.actors.send(box, {"type": "get"}), 5) == {"value": 1}

    # The same by packet id, through Reactor.cancel.
    started.clear()
    cancelled.clear()
    pending = asyncio.ensure_future(reactor.actors.send(box, {"type": "hang"}, packet_id="turn-1"))
    await wait_for(started)
    assert reactor.cancel("turn-1")
    with pytest.raises(packetflow.PacketCancelledError):
        await asyncio.wait_for(pending, OBSERVED_WITHIN)
    await wait_for(cancelled, OBSERVED_WITHIN)
    assert await asyncio.wait_for(reactor.actors.send(box, {"type": "get"}), 5) == {"value": 1}
    await until_idle(reactor)


async def test_a_def_actor_method_polls_ctx_cancelled(reactor: Reactor) -> None:
    started, saw = threading.Event(), threading.Event()

    class Worker:
        def grind(self, message: Dict[str, Any], ctx: ActorContext) -> Any:
            self.state["ground"] = True
            started.set()
            for _ in range(2000):
                if ctx.cancelled:
                    saw.set()
                    return "stopped"
                time.sleep(0.005)
            return "ran to the end"

        def get(self, message: Dict[str, Any], ctx: ActorContext) -> Any:
            return self.state

    reactor.actors.register_behavior("worker", Worker)
    worker = await reactor.actors.create("worker", {"ground": False})
    pending = asyncio.ensure_future(reactor.actors.send(worker, {"type": "grind"}, packet_id="grind-1"))
    await wait_thread_event(started)
    assert reactor.cancel("grind-1")
    with pytest.raises(packetflow.PacketCancelledError):
        await asyncio.wait_for(pending, OBSERVED_WITHIN)
    await wait_thread_event(saw, OBSERVED_WITHIN)
    assert await asyncio.wait_for(reactor.actors.send(worker, {"type": "get"}), 5) == {"ground": False}


async def test_a_turn_run_from_the_mailbox_is_cancelled_too(reactor: Reactor) -> None:
    """A message that waited behind another runs in the actor's mailbox
    loop, not in its sender's call: cancelling it still cancels its turn,
    and the turn's state is not kept."""
    gate, started, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first(message: Dict[str, Any], ctx: ActorContext) -> None:
        await gate.wait()

    async def hang(message: Dict[str, Any], ctx: ActorContext) -> None:
        ctx.state["value"] = 999
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def get(message: Dict[str, Any], ctx: ActorContext) -> Any:
        return ctx.state

    reactor.actors.register_behavior("queue", {"first": first, "hang": hang, "get": get})
    box = await reactor.actors.create("queue", {"value": 1})
    for how in ("task", "packet id"):
        gate.clear()
        started.clear()
        cancelled.clear()
        holding = asyncio.ensure_future(reactor.actors.send(box, {"type": "first"}))
        if how == "task":
            waiter = asyncio.ensure_future(reactor.actors.send(box, {"type": "hang"}))
        else:
            waiter = asyncio.ensure_future(reactor.actors.send(box, {"type": "hang"}, packet_id="queued-turn"))
        assert reactor.stats()["in_flight"] == 2
        gate.set()
        await asyncio.wait_for(holding, 5)
        await wait_for(started)
        if how == "task":
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        else:
            assert reactor.cancel("queued-turn")
            with pytest.raises(packetflow.PacketCancelledError):
                await asyncio.wait_for(waiter, OBSERVED_WITHIN)
        await wait_for(cancelled, OBSERVED_WITHIN)
        assert await asyncio.wait_for(reactor.actors.send(box, {"type": "get"}), 5) == {"value": 1}, how
        await until_idle(reactor)


async def test_a_def_turn_run_from_the_mailbox_sees_ctx_cancelled(reactor: Reactor) -> None:
    release, started, saw = threading.Event(), threading.Event(), threading.Event()

    class Queue:
        def first(self, message: Dict[str, Any], ctx: ActorContext) -> None:
            release.wait(5)

        def grind(self, message: Dict[str, Any], ctx: ActorContext) -> Any:
            self.state["ground"] = True
            started.set()
            for _ in range(2000):
                if ctx.cancelled:
                    saw.set()
                    return "stopped"
                time.sleep(0.005)
            return "ran to the end"

        def get(self, message: Dict[str, Any], ctx: ActorContext) -> Any:
            return self.state

    reactor.actors.register_behavior("def-queue", Queue)
    box = await reactor.actors.create("def-queue", {"ground": False})
    holding = asyncio.ensure_future(reactor.actors.send(box, {"type": "first"}))
    waiter = asyncio.ensure_future(reactor.actors.send(box, {"type": "grind"}))
    release.set()
    await asyncio.wait_for(holding, 5)
    await wait_thread_event(started)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_thread_event(saw, OBSERVED_WITHIN)
    assert await asyncio.wait_for(reactor.actors.send(box, {"type": "get"}), 5) == {"ground": False}


# ---- blocking callers ----


def test_cancel_from_another_thread_ends_a_blocking_submit(sync_reactor: Reactor) -> None:
    started, saw = threading.Event(), threading.Event()

    def poll(data: Any, ctx: Context) -> Any:
        started.set()
        for _ in range(2000):
            if ctx.cancelled:
                saw.set()
                return None
            time.sleep(0.005)
        return None

    sync_reactor.register("df", "poll", poll)
    results: List[Any] = []
    submitter = threading.Thread(
        target=lambda: results.append(sync_reactor.submit_sync("df", "poll", packet_id="blocking-1"))
    )
    submitter.start()
    assert started.wait(5)
    assert sync_reactor.cancel("blocking-1")
    submitter.join(OBSERVED_WITHIN)
    assert not submitter.is_alive()
    assert results[0].error.code == "PF499"
    assert saw.wait(OBSERVED_WITHIN)

    # call_sync raises PacketCancelledError instead.
    started.clear()
    canceller = threading.Thread(target=lambda: started.wait(5) and sync_reactor.cancel("blocking-2"))
    canceller.start()
    try:
        with pytest.raises(packetflow.PacketCancelledError):
            sync_reactor.call_sync("df", "poll", packet_id="blocking-2")
    finally:
        canceller.join(5)


# ---- priority ----


async def test_ctx_call_inherits_the_priority_unless_it_names_one(reactor: Reactor) -> None:
    @reactor.handler("df", "leaf")
    async def leaf(data: Any, ctx: Context) -> Any:
        return ctx.priority

    @reactor.handler("df", "parent")
    async def parent(data: Any, ctx: Context) -> Any:
        return [ctx.priority, await ctx.call("df", "leaf"), await ctx.call("df", "leaf", priority=data)]

    @reactor.handler("df", "sync-parent")
    def sync_parent(data: Any, ctx: Context) -> Any:
        return [ctx.call_sync("df", "leaf"), ctx.call_sync("df", "leaf", priority=data)]

    assert await reactor.call("df", "parent", 2, priority=8) == [8, 8, 2]
    assert await reactor.call("df", "parent", None) == [5, 5, 5]
    assert await reactor.call("df", "sync-parent", 10, priority=3) == [3, 10]


async def test_a_bad_priority_in_ctx_call_is_refused_by_the_core(reactor: Reactor) -> None:
    errors: List[Optional[str]] = []

    @reactor.handler("df", "leaf")
    async def leaf(data: Any, ctx: Context) -> Any:
        return None

    @reactor.handler("df", "parent")
    async def parent(data: Any, ctx: Context) -> Any:
        # A bad key and a bad option: the key is named, as the call judges it.
        with pytest.raises(packetflow.InvalidPacketError, match="^PF400: element must be 1-64 characters"):
            await ctx.call("df", "no spaces", priority=11)
        for bad in (11, 0, "high", 2.5, True):
            try:
                await ctx.call("df", "leaf", priority=bad)
                errors.append(None)
            except packetflow.InvalidPacketError as exc:
                errors.append(exc.message)
        return None

    await reactor.call("df", "parent")
    assert errors == [
        "priority must be an integer 1-10, got 11",
        "priority must be an integer 1-10, got 0",
        'priority must be an integer 1-10, got "high"',
        "priority must be an integer 1-10, got 2.5",
        "priority must be an integer 1-10, got true",
    ]
