"""The rules the core decides for every binding (docs/protocol.md, "Handlers
and their context"), seen from Python."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, List

import pytest

import packetflow
from packetflow import Context, Reactor

from .conftest import wait_for

LATE = "ctx.call to df:child after the handler answered; call before returning"


def child_count(r: Reactor) -> int:
    return sum(h["count"] for h in r.stats()["handlers"] if h["element"] == "child")


# ---- Rule: a packet runs the registration it was routed to ----


@pytest.mark.parametrize("change", ["replace", "unregister"])
async def test_a_queued_packet_runs_the_handler_it_was_routed_to(change: str) -> None:
    """The second packet waits in the core's queue (one slot) while its
    handler is replaced or removed: it still runs the one it was routed to."""
    async with Reactor(name="rule-1-queue", max_inflight=1) as r:
        release = asyncio.Event()
        started = asyncio.Event()

        @r.handler("df", "h")
        async def old(data: Any, ctx: Context) -> Any:
            if data == "first":
                started.set()
                await release.wait()
            return f"old {data}"

        first = asyncio.ensure_future(r.call("df", "h", "first"))
        await wait_for(started)
        second = asyncio.ensure_future(r.call("df", "h", "second"))
        assert r.stats()["queued"] == 1
        if change == "replace":
            r.register("df", "h", lambda d, c: f"new {d}")
        else:
            assert r.unregister("df", "h")
        release.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 5) == ["old first", "old second"]


async def test_a_call_waiting_for_a_handler_thread_runs_the_handler_it_was_routed_to() -> None:
    """With one handler thread busy, the second call waits in the binding's
    pool queue while the handler is replaced: it runs the old one."""
    async with Reactor(name="rule-1-pool", handler_threads=1) as r:
        release = threading.Event()
        started = threading.Event()

        def old(data: Any, ctx: Context) -> Any:
            if data == "first":
                started.set()
                assert release.wait(5)
            return f"old {data}"

        r.register("df", "h", old)
        first = asyncio.ensure_future(r.call("df", "h", "first"))
        assert await asyncio.to_thread(started.wait, 5)
        second = asyncio.ensure_future(r.call("df", "h", "second"))
        r.register("df", "h", lambda d, c: f"new {d}")
        release.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 5) == ["old first", "old second"]
        assert await r.call("df", "h", "third") == "new third"


async def test_a_call_on_its_way_to_a_busy_loop_runs_the_handler_it_was_routed_to() -> None:
    """The handler's loop (another thread's) is busy while the call waits in
    its inbox and the handler is replaced: it runs the old one."""
    r = Reactor(name="rule-1-inbox")
    other = asyncio.new_event_loop()
    registered = threading.Event()
    busy = threading.Event()
    release = threading.Event()

    async def register_old() -> None:
        @r.handler("df", "h")
        async def old(data: Any, ctx: Context) -> Any:
            return f"old {data}"

    def block_the_loop() -> None:
        busy.set()
        assert release.wait(5)

    def run_other() -> None:
        other.run_until_complete(register_old())
        registered.set()
        other.run_forever()

    t = threading.Thread(target=run_other, daemon=True)
    t.start()
    try:
        assert registered.wait(5)
        other.call_soon_threadsafe(block_the_loop)
        assert await asyncio.to_thread(busy.wait, 5)
        pending = asyncio.ensure_future(r.call("df", "h", "queued"))
        assert not pending.done()
        r.register("df", "h", lambda d, c: f"new {d}")
        release.set()
        assert await asyncio.wait_for(pending, 5) == "old queued"
    finally:
        release.set()
        await r.stop()
        other.call_soon_threadsafe(other.stop)
        t.join(5)
        other.close()


# ---- Rule: ctx.call works while its packet runs, and never after ----


async def test_ctx_call_after_an_async_handler_answered_is_pf503(reactor: Reactor) -> None:
    kept: Dict[str, Context] = {}

    @reactor.handler("df", "keep")
    async def keep(data: Any, ctx: Context) -> Any:
        kept["ctx"] = ctx
        return "answered"

    reactor.register("df", "child", lambda d, c: "ran")
    assert await reactor.call("df", "keep") == "answered"
    with pytest.raises(packetflow.UnavailableError) as info:
        await kept["ctx"].call("df", "child")
    assert (info.value.code, info.value.message) == ("PF503", LATE)
    assert child_count(reactor) == 0


async def test_ctx_call_from_a_task_left_behind_by_a_handler_is_pf503(reactor: Reactor) -> None:
    outcome: List[BaseException] = []
    done = asyncio.Event()

    async def later(ctx: Context) -> None:
        await asyncio.sleep(0.01)
        try:
            await ctx.call("df", "child")
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)
        done.set()

    @reactor.handler("df", "spawn")
    async def spawn(data: Any, ctx: Context) -> Any:
        asyncio.ensure_future(later(ctx))
        return "answered"

    reactor.register("df", "child", lambda d, c: "ran")
    assert await reactor.call("df", "spawn") == "answered"
    await wait_for(done)
    assert [(type(e), getattr(e, "message", None)) for e in outcome] == [(packetflow.UnavailableError, LATE)]
    assert child_count(reactor) == 0


async def test_ctx_call_sync_after_a_def_handler_answered_is_pf503(reactor: Reactor) -> None:
    kept: Dict[str, Context] = {}

    def keep(data: Any, ctx: Context) -> Any:
        kept["ctx"] = ctx
        return "answered"

    reactor.register("df", "keep", keep)
    reactor.register("df", "child", lambda d, c: "ran")
    assert await reactor.call("df", "keep") == "answered"
    with pytest.raises(packetflow.UnavailableError) as info:
        await asyncio.to_thread(kept["ctx"].call_sync, "df", "child")
    assert (info.value.code, info.value.message) == ("PF503", LATE)
    assert child_count(reactor) == 0


async def test_ctx_call_while_the_packet_runs_still_works(reactor: Reactor) -> None:
    @reactor.handler("df", "parent")
    async def parent(data: Any, ctx: Context) -> Any:
        await asyncio.sleep(0)
        return await ctx.call("df", "child", data)

    reactor.register("df", "child", lambda d, c: d + 1)
    assert await reactor.call("df", "parent", 1) == 2
