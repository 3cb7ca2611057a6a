"""In-process round trips: handlers of both kinds, results, contexts."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, List

import pytest

import packetflow
from packetflow import Context, Reactor


async def test_submit_returns_a_result_with_every_field(reactor: Reactor) -> None:
    @reactor.handler("df", "transform")
    async def upper(data: Any, ctx: Context) -> Any:
        return {"text": data["text"].upper()}

    res = await reactor.submit("df", "transform", {"text": "hi"}, packet_id="p-1")
    assert isinstance(res, packetflow.Result)
    assert res.packet_id == "p-1"
    assert res.status == "success"
    assert res.ok
    assert res.data == {"text": "HI"}
    assert res.error is None
    assert isinstance(res.duration_ms, int) and res.duration_ms >= 0
    assert res.unwrap() == {"text": "HI"}
    assert repr(res) == "Result(packet_id='p-1', status='success', data={'text': 'HI'}, duration_ms=%d)" % res.duration_ms


async def test_call_returns_the_data(reactor: Reactor) -> None:
    reactor.register("cf", "echo", lambda data, ctx: data)
    assert await reactor.call("cf", "echo", [1, "two", 3.5, None, True]) == [1, "two", 3.5, None, True]


async def test_generated_ids_are_unique(reactor: Reactor) -> None:
    reactor.register("cf", "echo", lambda data, ctx: data)
    ids = {(await reactor.submit("cf", "echo", i)).packet_id for i in range(20)}
    assert len(ids) == 20


async def test_sync_handler_runs_off_the_loop_thread(reactor: Reactor) -> None:
    loop_thread = threading.get_ident()
    seen: List[int] = []

    def where(data: Any, ctx: Context) -> Any:
        seen.append(threading.get_ident())
        return data

    reactor.register("df", "where", where)
    assert await reactor.call("df", "where", 1) == 1
    assert seen and seen[0] != loop_thread


async def test_async_handler_runs_on_the_loop_that_registered_it(reactor: Reactor) -> None:
    loop_thread = threading.get_ident()
    seen: List[int] = []

    @reactor.handler("df", "where")
    async def where(data: Any, ctx: Context) -> Any:
        seen.append(threading.get_ident())
        await asyncio.sleep(0)
        seen.append(threading.get_ident())
        return data

    assert await reactor.call("df", "where", 7) == 7
    assert seen == [loop_thread, loop_thread]


async def test_async_handler_bound_to_another_threads_loop() -> None:
    """A handler registered inside loop A runs on A even when loop B submits."""
    r = Reactor(name="two-loops")
    other_loop = asyncio.new_event_loop()
    ready = threading.Event()
    handler_threads: List[int] = []

    async def register() -> None:
        @r.handler("df", "there")
        async def there(data: Any, ctx: Context) -> Any:
            handler_threads.append(threading.get_ident())
            await asyncio.sleep(0)
            return data * 2

    def run_other() -> None:
        asyncio.set_event_loop(other_loop)
        other_loop.run_until_complete(register())
        ready.set()
        other_loop.run_forever()

    t = threading.Thread(target=run_other, daemon=True)
    t.start()
    try:
        assert ready.wait(5)
        assert await r.call("df", "there", 21) == 42
        assert handler_threads == [t.ident]
    finally:
        await r.stop()
        other_loop.call_soon_threadsafe(other_loop.stop)
        t.join(5)
        other_loop.close()


async def test_handler_registered_outside_a_loop_runs_on_the_submitting_loop() -> None:
    holder: Dict[str, Reactor] = {}
    seen: List[int] = []

    def build() -> None:  # no loop runs in this thread
        r = Reactor(name="floating")

        @r.handler("df", "float")
        async def floating(data: Any, ctx: Context) -> Any:
            seen.append(threading.get_ident())
            await asyncio.sleep(0)
            return data

        holder["r"] = r

    t = threading.Thread(target=build)
    t.start()
    t.join(5)
    r = holder["r"]
    try:
        assert await r.call("df", "float", "x") == "x"
        assert seen == [threading.get_ident()]
    finally:
        await r.stop()


async def test_context_fields(reactor: Reactor) -> None:
    seen: Dict[str, Any] = {}

    @reactor.handler("df", "ctx")
    async def look(data: Any, ctx: Context) -> Any:
        seen.update(
            packet_id=ctx.packet_id,
            metadata=ctx.metadata,
            trace_id=ctx.trace_id,
            remaining_ms=ctx.remaining_ms,
        )
        return None

    await reactor.call("df", "ctx", None, packet_id="abc", timeout_ms=5000, metadata={"user": "ann"})
    assert seen["packet_id"] == "abc"
    assert seen["metadata"] == {"user": "ann"}
    assert seen["trace_id"] == "abc"
    assert 0 < seen["remaining_ms"] <= 5000


async def test_ctx_call_from_async_handler_inherits_trace(reactor: Reactor) -> None:
    traces: List[str] = []

    @reactor.handler("df", "inner")
    async def inner(data: Any, ctx: Context) -> Any:
        traces.append(ctx.trace_id)
        await asyncio.sleep(0)
        return data + 1

    @reactor.handler("df", "outer")
    async def outer(data: Any, ctx: Context) -> Any:
        return await ctx.call("df", "inner", data) * 10

    assert await reactor.call("df", "outer", 1, packet_id="root") == 20
    assert traces == ["root"]


async def test_ctx_call_sync_from_sync_handler(reactor: Reactor) -> None:
    reactor.register("df", "inner", lambda data, ctx: data + 1)

    def outer(data: Any, ctx: Context) -> Any:
        return ctx.call_sync("df", "inner", data) * 10

    reactor.register("df", "outer", outer)
    assert await reactor.call("df", "outer", 1) == 20


async def test_ctx_call_failure_passes_its_code_through(reactor: Reactor) -> None:
    @reactor.handler("df", "outer")
    async def outer(data: Any, ctx: Context) -> Any:
        return await ctx.call("df", "nobody-home", data)

    res = await reactor.submit("df", "outer", 1)
    assert res.status == "error"
    assert isinstance(res.error, packetflow.NoHandlerError)
    assert res.error.code == "PF001"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_thousand_concurrent_submits_are_all_answered(reactor: Reactor, kind: str) -> None:
    if kind == "async":

        async def handler(data: Any, ctx: Context) -> Any:
            await asyncio.sleep(0)
            return data * 2

    else:

        def handler(data: Any, ctx: Context) -> Any:  # type: ignore[misc]
            return data * 2

    reactor.register("df", "double", handler)
    results = await asyncio.wait_for(
        asyncio.gather(*(reactor.submit("df", "double", i) for i in range(1000))), 30
    )
    assert [r.data for r in results] == [i * 2 for i in range(1000)]
    assert all(r.status == "success" for r in results)
    assert len({r.packet_id for r in results}) == 1000


async def test_replaced_and_unregistered_handlers(reactor: Reactor) -> None:
    reactor.register("df", "h", lambda d, c: "first")
    assert await reactor.call("df", "h") == "first"
    reactor.register("df", "h", lambda d, c: "second")
    assert await reactor.call("df", "h") == "second"
    assert reactor.unregister("df", "h") is True
    assert reactor.unregister("df", "h") is False
    with pytest.raises(packetflow.NoHandlerError):
        await reactor.call("df", "h")


async def test_stats_count_per_handler(reactor: Reactor) -> None:
    reactor.register("df", "ok", lambda d, c: d)

    def fail(d: Any, c: Context) -> Any:
        raise RuntimeError("no")

    reactor.register("df", "bad", fail)
    for i in range(3):
        await reactor.submit("df", "ok", i)
    await reactor.submit("df", "bad", 0)
    await reactor.submit("df", "none", 0)
    stats = reactor.stats()
    assert stats["name"] == "test"
    assert stats["unrouted"] == 1
    assert stats["in_flight"] == 0
    by_key = {(h["group"], h["element"]): h for h in stats["handlers"]}
    assert by_key[("df", "ok")]["count"] == 3 and by_key[("df", "ok")]["errors"] == 0
    assert by_key[("df", "bad")]["count"] == 1 and by_key[("df", "bad")]["errors"] == 1
    assert by_key[("df", "ok")]["p99_us"] >= by_key[("df", "ok")]["p50_us"] > 0


async def test_priority_orders_the_queue() -> None:
    order: List[int] = []
    gate = asyncio.Event()
    r = Reactor(name="prio", max_inflight=1)
    try:

        @r.handler("df", "p")
        async def p(data: Any, ctx: Context) -> Any:
            if data == "gate":
                await gate.wait()
            else:
                order.append(data)
            return data

        first = asyncio.ensure_future(r.submit("df", "p", "gate"))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(r.submit("df", "p", prio, priority=prio)) for prio in (1, 9, 5)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
        assert order == [9, 5, 1]
    finally:
        await r.stop()


def test_sync_api_without_a_loop(sync_reactor: Reactor) -> None:
    sync_reactor.register("df", "double", lambda d, c: d * 2)
    res = sync_reactor.submit_sync("df", "double", 4)
    assert res.status == "success" and res.data == 8
    assert sync_reactor.call_sync("df", "double", 5) == 10
    with pytest.raises(packetflow.NoHandlerError):
        sync_reactor.call_sync("df", "nothing")


def test_sync_api_reaches_async_handler_on_a_background_loop() -> None:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    r = Reactor(name="bg")
    try:

        async def register() -> None:
            @r.handler("df", "bg")
            async def bg(data: Any, ctx: Context) -> Any:
                await asyncio.sleep(0)
                return [data, threading.get_ident()]

        asyncio.run_coroutine_threadsafe(register(), loop).result(5)
        assert r.call_sync("df", "bg", "x") == ["x", t.ident]
    finally:
        r.stop_sync()
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def test_with_statement_stops(sync_reactor: Reactor) -> None:
    with Reactor(name="ctx") as r:
        assert r.name == "ctx" and not r.stopped
    assert r.stopped
    assert r.submit_sync("df", "x").error.code == "PF503"  # type: ignore[union-attr]


async def test_async_with_statement_stops() -> None:
    async with Reactor(name="actx") as r:
        assert isinstance(r, Reactor) and not r.stopped
    assert r.stopped
    assert repr(r) == 'Reactor(name="actx", stopped=True)'


async def test_submit_outside_a_loop_is_refused_clearly() -> None:
    r = Reactor()
    errors: List[BaseException] = []

    def outside() -> None:
        try:
            r.submit("df", "x")
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=outside)
    t.start()
    t.join(5)
    r.stop_sync()
    assert errors and "must be called from code running in an asyncio event loop" in str(errors[0])


async def test_blocking_api_inside_a_loop_is_refused(reactor: Reactor) -> None:
    with pytest.raises(RuntimeError, match="would block the running event loop"):
        reactor.call_sync("df", "x")
