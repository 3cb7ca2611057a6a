"""Every error code a user can meet in-process, surfaced with the right code
and exception class."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, List

import pytest

import packetflow
from packetflow import Context, Reactor

from .conftest import wait_for


async def test_pf001_no_handler(reactor: Reactor) -> None:
    res = await reactor.submit("df", "missing", 1)
    assert res.status == "error" and not res.ok and res.data is None
    assert isinstance(res.error, packetflow.NoHandlerError)
    assert res.error.code == "PF001"
    assert res.error.message == "no handler for df:missing"
    with pytest.raises(packetflow.NoHandlerError) as info:
        await reactor.call("df", "missing")
    assert info.value.code == "PF001"
    assert isinstance(info.value, LookupError)
    with pytest.raises(packetflow.NoHandlerError):
        res.unwrap()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"group": "zz"}, "group must be one of"),
        ({"element": "has space"}, "element must be"),
        ({"priority": 11}, "priority must be an integer 1-10, got 11"),
        ({"priority": 0}, "priority must be an integer 1-10, got 0"),
        ({"timeout_ms": 0}, "timeout_ms must be a positive integer"),
        ({"timeout_ms": -5}, "timeout_ms must be a positive integer"),
        ({"timeout_ms": 86_400_001}, "timeout_ms must be a positive integer"),
        ({"packet_id": ""}, "id must be a string of 1-128 bytes"),
        ({"packet_id": "x" * 129}, "id must be a string of 1-128 bytes"),
        ({"dependencies": [""]}, "dependencies[0] must be a string of 1-128 bytes, got 0 bytes"),
        ({"dependencies": ["a", 2]}, "dependencies[1] must be a packet id string, got 2"),
        ({"dependencies": "abc"}, 'dependencies must be an array of packet ids, got "abc"'),
        ({"dependencies": {"a"}}, "dependencies must be an array of packet ids, got a set"),
        ({"priority": "high"}, 'priority must be an integer 1-10, got "high"'),
        ({"priority": 2.5}, "priority must be an integer 1-10, got 2.5"),
        ({"timeout_ms": "1s"}, 'timeout_ms must be a positive integer <= 86400000, got "1s"'),
        ({"packet_id": 5}, "id must be a string of 1-128 bytes, got 5"),
        ({"group": None}, "group must be one of cf, df, ed, co, mc, rm, got null"),
        ({"element": b"raw"}, "element must be 1-64 characters of [A-Za-z0-9_.-], got binary data"),
        ({"metadata": [1]}, "metadata must be an object, got an array"),
        ({"dependencies": [str(i) for i in range(65)]}, "at most 64 packet ids"),
        ({"metadata": {"pf.hops": "three"}}, 'metadata["pf.hops"] must be a non-negative integer'),
    ],
)
async def test_pf400_bad_arguments_raise_at_the_call_site(reactor: Reactor, kwargs: Any, fragment: str) -> None:
    args = {"group": "df", "element": "ok"}
    args.update(kwargs)
    group, element = args.pop("group"), args.pop("element")
    with pytest.raises(packetflow.InvalidPacketError) as info:
        reactor.submit(group, element, None, **args)
    assert info.value.code == "PF400"
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)
    with pytest.raises(packetflow.InvalidPacketError):
        reactor.submit_sync(group, element, None, **args)


async def test_pf400_on_register(reactor: Reactor) -> None:
    with pytest.raises(packetflow.InvalidPacketError, match="group must be one of"):
        reactor.register("nope", "x", lambda d, c: d)
    with pytest.raises(TypeError, match="must be callable, got int"):
        reactor.register("df", "x", 3)  # type: ignore[arg-type]


async def test_pf408_timeout_is_also_a_timeout_error(reactor: Reactor) -> None:
    cancelled = asyncio.Event()

    @reactor.handler("df", "slow")
    async def slow(data: Any, ctx: Context) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    res = await reactor.submit("df", "slow", None, timeout_ms=50)
    assert res.status == "error"
    assert isinstance(res.error, packetflow.PacketTimeoutError)
    assert res.error.code == "PF408"
    assert 40 <= res.duration_ms < 2000
    with pytest.raises(TimeoutError) as info:
        await reactor.call("df", "slow", None, timeout_ms=30)
    assert isinstance(info.value, packetflow.PacketFlowError)
    assert info.value.code == "PF408"
    # The handler's task is cancelled once its packet timed out.
    await wait_for(cancelled)


async def test_pf408_for_a_sync_handler(reactor: Reactor) -> None:
    import time

    reactor.register("df", "sleepy", lambda d, c: time.sleep(0.3))
    res = await reactor.submit("df", "sleepy", None, timeout_ms=50)
    assert res.error is not None and res.error.code == "PF408"


async def test_pf409_duplicate_id_in_flight(reactor: Reactor) -> None:
    gate = asyncio.Event()

    @reactor.handler("df", "hold")
    async def hold(data: Any, ctx: Context) -> Any:
        await gate.wait()
        return data

    first = reactor.submit("df", "hold", 1, packet_id="same")
    second = await reactor.submit("df", "hold", 2, packet_id="same")
    assert isinstance(second.error, packetflow.DuplicatePacketError)
    assert second.error.code == "PF409"
    assert "same" in second.error.message
    gate.set()
    assert (await asyncio.wait_for(first, 5)).data == 1


async def test_pf424_failed_dependency(reactor: Reactor) -> None:
    def fails(d: Any, c: Context) -> Any:
        raise ValueError("nope")

    reactor.register("df", "fails", fails)
    reactor.register("df", "after", lambda d, c: "ran")
    first = await reactor.submit("df", "fails", None, packet_id="dep-1")
    assert first.error is not None and first.error.code == "PF500"
    res = await reactor.submit("df", "after", None, dependencies=["dep-1"])
    assert isinstance(res.error, packetflow.DependencyFailedError)
    assert res.error.code == "PF424"
    assert "dep-1" in res.error.message


async def test_dependencies_wait_for_success(reactor: Reactor) -> None:
    order: List[str] = []
    gate = asyncio.Event()

    @reactor.handler("df", "step")
    async def step(data: Any, ctx: Context) -> Any:
        if data == "a":
            await gate.wait()
        order.append(data)
        return data

    a = reactor.submit("df", "step", "a", packet_id="a")
    b = reactor.submit("df", "step", "b", dependencies=("a",))
    await asyncio.sleep(0.01)
    assert order == []
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(a, b), 5)
    assert [r.data for r in results] == ["a", "b"]
    assert order == ["a", "b"]


async def test_pf429_queue_full() -> None:
    r = Reactor(name="small", max_inflight=1, max_queue=1)
    gate = asyncio.Event()
    try:

        @r.handler("df", "hold")
        async def hold(data: Any, ctx: Context) -> Any:
            await gate.wait()
            return data

        running = r.submit("df", "hold", 1)
        queued = r.submit("df", "hold", 2)
        refused = await r.submit("df", "hold", 3)
        assert isinstance(refused.error, packetflow.OverloadedError)
        assert refused.error.code == "PF429"
        gate.set()
        done = await asyncio.wait_for(asyncio.gather(running, queued), 5)
        assert [d.data for d in done] == [1, 2]
    finally:
        await r.stop()


async def test_pf500_handler_exception_carries_type_and_message(reactor: Reactor) -> None:
    def boom(data: Any, ctx: Context) -> Any:
        raise ValueError("bad input")

    async def aboom(data: Any, ctx: Context) -> Any:
        await asyncio.sleep(0)
        raise KeyError("k")

    reactor.register("df", "boom", boom)
    reactor.register("df", "aboom", aboom)
    res = await reactor.submit("df", "boom", 1)
    assert isinstance(res.error, packetflow.HandlerError)
    assert res.error.code == "PF500"
    assert res.error.message == "ValueError: bad input"
    with pytest.raises(packetflow.HandlerError, match="KeyError: 'k'"):
        await reactor.call("df", "aboom", 1)


async def test_handler_may_fail_with_its_own_code(reactor: Reactor) -> None:
    def busy(data: Any, ctx: Context) -> Any:
        raise packetflow.OverloadedError("PF429", "come back later")

    reactor.register("df", "busy", busy)
    res = await reactor.submit("df", "busy")
    assert isinstance(res.error, packetflow.OverloadedError)
    assert (res.error.code, res.error.message) == ("PF429", "come back later")


async def test_pf503_stop_answers_in_flight_and_later_packets() -> None:
    r = Reactor(name="stopping")

    @r.handler("df", "hold")
    async def hold(data: Any, ctx: Context) -> Any:
        await asyncio.Event().wait()

    pending = r.submit("df", "hold")
    await asyncio.sleep(0)
    await r.stop()
    res = await asyncio.wait_for(pending, 5)
    assert isinstance(res.error, packetflow.UnavailableError)
    assert res.error.code == "PF503"
    later = await r.submit("df", "hold")
    assert later.error is not None and later.error.code == "PF503"
    assert r.stopped
    await r.stop()  # idempotent


def test_error_classes_and_pickling() -> None:
    e = packetflow.PacketTimeoutError("PF408", "late")
    assert str(e) == "PF408: late"
    assert repr(e) == "PacketTimeoutError('PF408', 'late')"
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is packetflow.PacketTimeoutError and back.code == "PF408" and back.message == "late"
    assert packetflow.error_class("PF503") is packetflow.UnavailableError
    assert packetflow.error_class("PF999") is packetflow.PacketFlowError
    for cls in (
        packetflow.NoHandlerError,
        packetflow.InvalidPacketError,
        packetflow.PacketTimeoutError,
        packetflow.DuplicatePacketError,
        packetflow.DependencyFailedError,
        packetflow.OverloadedError,
        packetflow.HandlerError,
        packetflow.UnavailableError,
    ):
        assert issubclass(cls, packetflow.PacketFlowError)


def test_the_exception_table_covers_every_code_of_the_core() -> None:
    """One class per code the core knows (packetflow._native.error_codes()),
    none for a code it does not: a code added to the core fails here until
    it has its class."""
    from packetflow import _errors, _native

    core = dict(_native.error_codes())
    assert core, "the core lists no codes"
    assert set(_errors._BY_CODE) == set(core)
    for code, description in core.items():
        cls = packetflow.error_class(code)
        assert cls is not packetflow.PacketFlowError, code
        assert issubclass(cls, packetflow.PacketFlowError)
        assert cls.__name__ in packetflow.__all__, cls
        # The class says which code it stands for, first thing.
        assert (cls.__doc__ or "").startswith(f"{code}: "), (code, cls.__doc__)
        assert description
    # Each class stands for one code.
    assert len(set(_errors._BY_CODE.values())) == len(core)


def test_reactor_options_are_checked_by_the_core() -> None:
    with pytest.raises(packetflow.InvalidPacketError) as info:
        Reactor(max_inflight=0)
    assert (info.value.code, info.value.message) == ("PF400", "max_inflight must be at least 1, got 0")
    with pytest.raises(ValueError, match="handler_threads must be at least 1, got 0"):
        Reactor(handler_threads=0)
