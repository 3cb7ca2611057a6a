"""Values cross as JSON; anything else is refused with its type and place."""

from __future__ import annotations

import enum
import math
from typing import Any, Dict

import pytest

import packetflow
from packetflow import Context, Reactor


@pytest.fixture
async def echo(reactor: Reactor) -> Reactor:
    reactor.register("cf", "echo", lambda data, ctx: data)
    return reactor


ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    1e300,
    "",
    "héllo ✓ 𝄞",
    [],
    {},
    [1, [2, [3, [4]]]],
    {"a": {"b": [1, 2, {"c": None}]}, "z": "last", "m": 1},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
async def test_json_values_round_trip(echo: Reactor, value: Any) -> None:
    out = await echo.call("cf", "echo", value)
    assert out == value
    assert type(out) is type(value)


async def test_key_order_is_kept(echo: Reactor) -> None:
    value = {"z": 1, "a": 2, "m": 3}
    assert list((await echo.call("cf", "echo", value)).keys()) == ["z", "a", "m"]


async def test_tuples_cross_as_lists_and_subclasses_as_their_base(echo: Reactor) -> None:
    class Color(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert await echo.call("cf", "echo", (1, (2, 3))) == [1, [2, 3]]
    assert await echo.call("cf", "echo", {"c": Color.RED, "l": Level.HIGH}) == {"c": "red", "l": 3}


class Custom:
    pass


BAD_VALUES = [
    ({"a": [0, 1, {1, 2}]}, TypeError, 'data["a"][2]: set is not JSON-serializable'),
    ([b"raw"], TypeError, "data[0]: bytes is not JSON-serializable"),
    ({"obj": Custom()}, TypeError, 'data["obj"]: Custom is not JSON-serializable'),
    ({"x": math.nan}, ValueError, 'data["x"]: float NaN is not allowed in JSON'),
    ([math.inf], ValueError, "data[0]: float inf is not allowed in JSON"),
    ({"n": 2**64}, ValueError, 'data["n"]: int 18446744073709551616 does not fit in 64 bits'),
    ({"n": -(2**63) - 1}, ValueError, 'data["n"]: int -9223372036854775809 does not fit in 64 bits'),
    ({1: "one"}, TypeError, "data: dict key 1 is int, but JSON object keys must be str"),
    (1j, TypeError, "data: complex is not JSON-serializable"),
]


@pytest.mark.parametrize("value, exc, message", BAD_VALUES, ids=lambda v: repr(v)[:30])
async def test_bad_values_are_refused_at_the_call_site(echo: Reactor, value: Any, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        echo.submit("cf", "echo", value)
    assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(exc):
        echo.submit_sync("cf", "echo", value)


async def test_a_value_that_contains_itself_is_refused(echo: Reactor) -> None:
    loop: Dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="nested deeper than 200 levels"):
        echo.submit("cf", "echo", loop)


async def test_bad_metadata_values_are_refused_like_data(echo: Reactor) -> None:
    # Metadata is a JSON value like data: converted here, judged by the core
    # (tests/test_errors.py) once it is one.
    with pytest.raises(TypeError, match='metadata\\["k"\\]: set is not JSON-serializable'):
        echo.submit("cf", "echo", 1, metadata={"k": {1}})


async def test_dependencies_may_be_a_tuple(echo: Reactor) -> None:
    res = await echo.submit("cf", "echo", 1, dependencies=("never-ran",), timeout_ms=50)
    assert res.error is not None and res.error.code in ("PF408", "PF424")


async def test_ctx_call_refuses_bad_values(reactor: Reactor) -> None:
    @reactor.handler("df", "outer")
    async def outer(data: Any, ctx: Context) -> Any:
        try:
            ctx.call("df", "inner", {"s": {1}})
        except TypeError as e:
            return str(e)
        return "accepted"

    assert await reactor.call("df", "outer") == 'data["s"]: set is not JSON-serializable'


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_returning_a_non_json_value_fails_with_pf500(reactor: Reactor, kind: str) -> None:
    if kind == "sync":
        reactor.register("df", "bad", lambda d, c: {"ok": [1, {2}]})
    else:

        async def bad(d: Any, c: Context) -> Any:
            return {"ok": [1, {2}]}

        reactor.register("df", "bad", bad)
    res = await reactor.submit("df", "bad")
    assert isinstance(res.error, packetflow.HandlerError)
    assert res.error.message == (
        'df:bad returned a value that cannot cross as JSON: result["ok"][1]: set is not JSON-serializable'
    )


async def test_sync_handler_returning_a_coroutine_is_explained(reactor: Reactor) -> None:
    class Sneaky:
        async def run(self) -> int:
            return 1

        def __call__(self, data: Any, ctx: Context) -> Any:
            return self.run()

    reactor.register("df", "sneaky", Sneaky())
    res = await reactor.submit("df", "sneaky")
    assert res.error is not None and "returned a coroutine" in res.error.message
