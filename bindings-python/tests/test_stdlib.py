"""The standard library (docs/stdlib.md) from Python: the ``stdlib`` option
of ``Reactor`` hosts the chosen elements; the core parses the patterns and
runs the elements, and a user's handler of the same key always wins."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import packetflow
from packetflow import Context, Reactor

from .conftest import wait_for

UPPER_THEN_SHOUT = {
    "steps": [{"group": "df", "element": "upper"}, {"group": "df", "element": "shout"}],
    "input": "hi",
}


def register_steps(r: Reactor) -> None:
    r.register("df", "upper", lambda text, ctx: text.upper())

    @r.handler("df", "shout")
    async def shout(text: str, ctx: Context) -> str:
        return text + "!"


async def test_an_enabled_element_runs_steps_on_python_handlers() -> None:
    async with Reactor(name="stdlib-on", stdlib="cf:*,df:*") as r:
        register_steps(r)
        assert await r.call("cf", "seq", UPPER_THEN_SHOUT) == {"value": "HI!", "steps": 2}
        assert await r.call("df", "transform", {"items": ["a", "b"], "fn": {"group": "df", "element": "upper"}}) == [
            "A",
            "B",
        ]


def test_the_blocking_api_reaches_them_too() -> None:
    with Reactor(name="stdlib-sync", stdlib="*") as r:
        # `def` handlers: without an event loop, nothing could run `async def` ones.
        r.register("df", "upper", lambda text, ctx: text.upper())
        r.register("df", "shout", lambda text, ctx: text + "!")
        assert r.call_sync("df", "reduce", {"items": [1, 2, 3], "op": "sum"}) == 6
        assert r.call_sync("cf", "seq", UPPER_THEN_SHOUT) == {"value": "HI!", "steps": 2}


async def test_an_element_not_enabled_is_pf001() -> None:
    for stdlib in (None, "", "df:*"):
        async with Reactor(name="stdlib-off", stdlib=stdlib) as r:
            register_steps(r)
            with pytest.raises(packetflow.NoHandlerError) as info:
                await r.call("cf", "seq", UPPER_THEN_SHOUT)
            assert info.value.code == "PF001", stdlib


@pytest.mark.parametrize(
    "stdlib, message",
    [
        ("cf:sqe", 'stdlib[0] "cf:sqe": no standard element matches it'),
        ("cf:*,zz:seq", 'stdlib[1] "zz:seq": not a group'),
        ("seq", 'stdlib[0] "seq": expected group:element, group:* or *'),
    ],
)
def test_a_bad_pattern_is_pf400_naming_it(stdlib: str, message: str) -> None:
    with pytest.raises(packetflow.InvalidPacketError) as info:
        Reactor(stdlib=stdlib)
    assert info.value.code == "PF400"
    assert info.value.message.startswith(message), info.value.message


def test_a_pattern_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="stdlib"):
        Reactor(stdlib=["cf:*"])  # type: ignore[arg-type]


async def test_a_users_handler_of_the_key_wins_until_it_goes() -> None:
    async with Reactor(name="stdlib-user-wins", stdlib="cf:seq") as r:
        register_steps(r)
        r.register("cf", "seq", lambda data, ctx: "the user's seq")
        assert await r.call("cf", "seq", UPPER_THEN_SHOUT) == "the user's seq"
        assert r.unregister("cf", "seq")
        assert await r.call("cf", "seq", UPPER_THEN_SHOUT) == {"value": "HI!", "steps": 2}


async def test_gather_here_cancels_the_slowest_call_on_a_peer() -> None:
    """`co:gather` hosted by this reactor, its calls served by a peer's
    handlers: the slow one's task is cancelled once the fast one answered
    (min: 1)."""
    started, cancelled = asyncio.Event(), asyncio.Event()
    async with Reactor(name="stdlib-peer") as peer, Reactor(name="stdlib-hosting", stdlib="co:*") as hosting:

        @peer.handler("df", "fast")
        async def fast(data: Any, ctx: Context) -> str:
            await wait_for(started)
            return "fast"

        @peer.handler("df", "stall")
        async def stall(data: Any, ctx: Context) -> str:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "never cancelled"

        addr = await peer.listen("127.0.0.1:0")
        await hosting.connect(f"ws://{addr}/packetflow/v1")
        calls: List[Any] = [{"group": "df", "element": "stall"}, {"group": "df", "element": "fast"}]
        result = await hosting.call("co", "gather", {"calls": calls, "min": 1}, timeout_ms=10_000)
        assert result == [{"ok": False, "cancelled": True}, {"ok": True, "value": "fast"}]
        await wait_for(cancelled)
