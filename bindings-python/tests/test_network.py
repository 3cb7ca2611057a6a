"""Two reactors over loopback WebSocket: listen, connect, route, answer."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, AsyncIterator, List, Tuple

import pytest

import packetflow
from packetflow import Context, Reactor

from .conftest import wait_for


@pytest.fixture
async def pair() -> AsyncIterator[Tuple[Reactor, Reactor, str]]:
    """A server reactor listening on a free loopback port and a client
    reactor connected to it."""
    server = Reactor(name="server")
    client = Reactor(name="client")
    try:

        @server.handler("df", "upper")
        async def upper(data: Any, ctx: Context) -> Any:
            return data.upper()

        @server.handler("df", "slow_upper")
        async def slow_upper(data: Any, ctx: Context) -> Any:
            await asyncio.sleep(0)
            return data.upper()

        server.register("df", "sync_upper", lambda data, ctx: data.upper())

        def fails(data: Any, ctx: Context) -> Any:
            raise ValueError(f"cannot take {data!r}")

        server.register("df", "fails", fails)
        addr = await server.listen("127.0.0.1:0")
        host, port = addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        await client.connect(f"ws://{addr}/packetflow/v1")
        yield server, client, addr
    finally:
        await client.stop()
        await server.stop()


async def test_calls_cross_the_network(pair: Tuple[Reactor, Reactor, str]) -> None:
    server, client, _ = pair
    assert await client.call("df", "upper", "hi") == "HI"
    assert await client.call("df", "slow_upper", "there") == "THERE"
    assert await client.call("df", "sync_upper", "yo") == "YO"
    res = await client.submit("df", "upper", "x", packet_id="net-1")
    assert (res.packet_id, res.status, res.data) == ("net-1", "success", "X")
    counts = {h["element"]: h["count"] for h in server.stats()["handlers"]}
    assert counts["upper"] == 2 and counts["sync_upper"] == 1


async def test_errors_keep_their_codes_over_the_network(pair: Tuple[Reactor, Reactor, str]) -> None:
    _, client, _ = pair
    res = await client.submit("df", "fails", 7)
    assert isinstance(res.error, packetflow.HandlerError)
    assert res.error.message == "ValueError: cannot take 7"
    missing = await client.submit("df", "nowhere")
    assert isinstance(missing.error, packetflow.NoHandlerError)
    with pytest.raises(packetflow.NoHandlerError):
        await client.call("cf", "nowhere")


async def test_timeouts_over_the_network(pair: Tuple[Reactor, Reactor, str]) -> None:
    server, client, _ = pair
    cancelled = asyncio.Event()

    @server.handler("df", "hang")
    async def hang(data: Any, ctx: Context) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    # The server announces its new handler to the client.
    for _ in range(200):
        res = await client.submit("df", "hang", None, timeout_ms=100)
        if res.error is None or res.error.code != "PF001":
            break
        await asyncio.sleep(0.01)
    assert isinstance(res.error, packetflow.PacketTimeoutError), res
    await wait_for(cancelled)


async def test_cancelling_an_await_cancels_the_packet_and_its_calls_on_the_peer() -> None:
    """The client gives up (its awaiting task is cancelled, or it cancels
    the packet by id): a cancel frame reaches the server, whose handler and
    the handler it called are cancelled, and nothing is left in flight on
    either side."""
    relay_cancelled, hang_started, hang_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with Reactor(name="cancel-server") as server, Reactor(name="cancel-client") as client:

        @server.handler("df", "hang")
        async def hang(data: Any, ctx: Context) -> Any:
            hang_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                hang_cancelled.set()
                raise

        @server.handler("df", "relay")
        async def relay(data: Any, ctx: Context) -> Any:
            try:
                return await ctx.call("df", "hang")
            except asyncio.CancelledError:
                relay_cancelled.set()
                raise

        addr = await server.listen("127.0.0.1:0")
        await client.connect(f"ws://{addr}/packetflow/v1")

        async def idle(r: Reactor) -> None:
            for _ in range(500):
                if r.stats()["in_flight"] == 0:
                    return
                await asyncio.sleep(0.01)
            assert r.stats()["in_flight"] == 0, r.name

        # The awaiting task cancelled, then the packet cancelled by its id
        # on the submitting reactor (its submitter then gets PF499).
        for round in (1, 2):
            for event in (relay_cancelled, hang_started, hang_cancelled):
                event.clear()
            if round == 1:
                waiter = asyncio.ensure_future(client.call("df", "relay"))
            else:
                waiter = asyncio.ensure_future(client.submit("df", "relay", packet_id="net-cancel"))
            await wait_for(hang_started)
            if round == 1:
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            else:
                assert client.cancel("net-cancel")
                result = await asyncio.wait_for(waiter, 5)
                assert result.error is not None and result.error.code == "PF499"
            await wait_for(relay_cancelled)
            await wait_for(hang_cancelled)
            await idle(client)
            await idle(server)
            assert client.stats()["forwards_cancelled"] == round
            cancelled = {h["element"]: h["cancelled"] for h in server.stats()["handlers"]}
            assert cancelled == {"hang": round, "relay": round}


async def test_a_thousand_concurrent_calls_over_the_network(pair: Tuple[Reactor, Reactor, str]) -> None:
    _, client, _ = pair
    for element in ("upper", "slow_upper", "sync_upper"):
        words = [f"w{i}" for i in range(1000)]
        out = await asyncio.wait_for(asyncio.gather(*(client.call("df", element, w) for w in words)), 60)
        assert out == [w.upper() for w in words]


async def test_wakeups_are_never_lost_under_sustained_load(pair: Tuple[Reactor, Reactor, str]) -> None:
    """Every answer crosses threads twice (network task -> handler loop ->
    network task); a lost wake-up would leave packets hanging here."""
    _, client, _ = pair

    async def worker(k: int) -> None:
        for i in range(150):
            assert await client.call("df", "upper" if i % 2 else "sync_upper", f"k{k}i{i}") == f"K{k}I{i}"

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(100))), 120)


async def test_stopping_the_server_answers_pf503() -> None:
    server = Reactor(name="stopping-server")
    client = Reactor(name="stopping-client")
    started = asyncio.Event()
    try:
        # Registered before the client connects, so its route is known at once.
        @server.handler("df", "block")
        async def block(data: Any, ctx: Context) -> Any:
            started.set()
            await asyncio.Event().wait()

        addr = await server.listen("127.0.0.1:0")
        await client.connect(f"ws://{addr}/packetflow/v1")
        pending = client.submit("df", "block", None, timeout_ms=10_000)
        await wait_for(started)
        await server.stop()
        res = await asyncio.wait_for(pending, 10)
        assert isinstance(res.error, packetflow.UnavailableError), res
    finally:
        await client.stop()
        await server.stop()


# Values of every JSON kind, with the integer edges that MessagePack encodes
# in different widths (fixint, 8/16/32/64-bit, signed and unsigned).
MSGPACK_VALUES: List[Any] = [
    None,
    True,
    False,
    0,
    127,
    128,
    -32,
    -33,
    255,
    65536,
    -(2**31),
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    -3.5,
    1e300,
    "",
    "héllo ✓ 𝄞",
    "x" * 70000,
    [],
    {},
    [1, "two", [3, [4]], {"five": 5.0}],
    {"nested": {"deep": {"list": [None, {"x": "y"}]}}, "odd key": 1, "7": "seven"},
]


async def test_busy_polling_reactors_serve_each_other() -> None:
    server = Reactor(name="busy-server", busy_poll_us=500)
    client = Reactor(name="busy-client", busy_poll_us=500)
    try:
        server.register("df", "double", lambda data, ctx: data * 2)
        client.register("df", "triple", lambda data, ctx: data * 3)
        addr = await server.listen("127.0.0.1:0")
        await client.connect(f"ws://{addr}/packetflow/v1")
        for i in range(200):
            assert await asyncio.wait_for(client.call("df", "double", i), 10) == i * 2
        many = await asyncio.wait_for(asyncio.gather(*(server.call("df", "triple", i) for i in range(500))), 20)
        assert many == [i * 3 for i in range(500)]
    finally:
        await client.stop()
        await server.stop()


def test_busy_poll_us_is_a_non_negative_int() -> None:
    with pytest.raises(OverflowError, match="busy_poll_us"):
        Reactor(busy_poll_us=-1)
    with pytest.raises(TypeError, match="busy_poll_us"):
        Reactor(busy_poll_us="fast")  # type: ignore[arg-type]


async def test_msgpack_connections_carry_the_same_values() -> None:
    server = Reactor(name="msgpack-server")
    client = Reactor(name="msgpack-client")
    try:
        server.register("df", "echo", lambda data, ctx: data)

        def fails(data: Any, ctx: Context) -> Any:
            raise ValueError(f"cannot take {data!r}")

        server.register("df", "fails", fails)

        @client.handler("cf", "client_side")
        async def client_side(data: Any, ctx: Context) -> Any:
            return {"got": data}

        addr = await server.listen("127.0.0.1:0")
        await client.connect(f"ws://{addr}/packetflow/v1", msgpack=True)
        for value in MSGPACK_VALUES:
            out = await asyncio.wait_for(client.call("df", "echo", value), 10)
            assert out == value and type(out) is type(value), (value, out)
        # Key order survives too.
        ordered = await client.call("df", "echo", {"b": 1, "a": 2, "10": 3})
        assert list(ordered) == ["b", "a", "10"]
        # Errors cross with their codes; the other direction works too.
        with pytest.raises(packetflow.HandlerError, match="ValueError: cannot take 7"):
            await client.call("df", "fails", 7)
        assert await asyncio.wait_for(server.call("cf", "client_side", 2**64 - 1), 10) == {"got": 2**64 - 1}
    finally:
        await client.stop()
        await server.stop()


def test_msgpack_connect_sync() -> None:
    server = Reactor(name="msgpack-sync-server")
    client = Reactor(name="msgpack-sync-client")
    try:
        server.register("df", "echo", lambda d, c: d)
        addr = server.listen_sync("127.0.0.1:0")
        client.connect_sync(f"ws://{addr}/packetflow/v1", msgpack=True)
        value = {"big": -(2**63), "list": [1.5, "two", None]}
        assert client.call_sync("df", "echo", value) == value
    finally:
        client.stop_sync()
        server.stop_sync()


async def _handshake_of(connect: Any) -> str:
    """The HTTP upgrade request that `connect(url)` sends to a bare TCP
    listener (which then hangs up, so the connect fails)."""
    seen: "asyncio.Future[str]" = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not seen.done():
            seen.set_result(head.decode("latin-1").lower())
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        with pytest.raises(packetflow.PacketFlowError):
            await asyncio.wait_for(connect(f"ws://127.0.0.1:{port}/packetflow/v1"), 10)
        return await asyncio.wait_for(seen, 10)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_msgpack_asks_the_peer_for_the_msgpack_subprotocol(reactor: Reactor) -> None:
    head = await _handshake_of(lambda url: reactor.connect(url, msgpack=True))
    assert "sec-websocket-protocol: packetflow.v1.msgpack" in head, head
    head = await _handshake_of(reactor.connect)
    assert "packetflow.v1.msgpack" not in head, head


async def test_msgpack_is_keyword_only_and_a_bool(reactor: Reactor) -> None:
    with pytest.raises(TypeError):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", True)  # type: ignore[misc]
    with pytest.raises(TypeError, match="msgpack must be bool, got str"):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", msgpack="yes")  # type: ignore[arg-type]
    with pytest.raises(packetflow.PacketFlowError):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", msgpack=True)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"msgpak": True}, TypeError, "connect_sync\\(\\) got an unexpected keyword argument 'msgpak'"),
        ({"require_tls": 1}, TypeError, "require_tls must be bool, got int"),
        ({"connect_timeout_ms": "5"}, TypeError, "connect_timeout_ms must be int, got str"),
        ({"connect_timeout_ms": True}, TypeError, "connect_timeout_ms must be int, got bool"),
        ({"membership_heartbeat_ms": -1}, ValueError, "membership_heartbeat_ms must be a number of milliseconds from 0 up, got -1"),
    ],
)
def test_connect_options_are_checked_by_name(options: dict, error: type, message: str) -> None:
    reactor = Reactor()
    try:
        with pytest.raises(error, match=message):
            reactor.connect_sync("nats://127.0.0.1:1", **options)
    finally:
        reactor.stop_sync()


async def test_connect_refuses_a_keyword_it_does_not_take(reactor: Reactor) -> None:
    with pytest.raises(TypeError, match=r"connect\(\) got an unexpected keyword argument 'tls'"):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", tls=True)  # type: ignore[call-arg]


async def test_listen_and_connect_failures(reactor: Reactor) -> None:
    with pytest.raises(packetflow.UnavailableError, match="cannot listen"):
        await reactor.listen("256.0.0.1:1")
    with pytest.raises(packetflow.PacketFlowError):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1")
    with pytest.raises(packetflow.InvalidPacketError, match="invalid peer URL"):
        await reactor.connect("not a url")


def test_sync_faces_of_the_network() -> None:
    server = Reactor(name="sync-server")
    client = Reactor(name="sync-client")
    try:
        server.register("df", "upper", lambda d, c: d.upper())
        addr = server.listen_sync("127.0.0.1:0")
        client.connect_sync(f"ws://{addr}/packetflow/v1")
        assert client.call_sync("df", "upper", "sync") == "SYNC"
    finally:
        client.stop_sync()
        server.stop_sync()


def test_a_node_served_from_a_background_loop() -> None:
    """A server whose loop runs in another thread answers a client that
    only uses the blocking API."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    server = Reactor(name="bg-server")
    client = Reactor(name="bg-client")
    try:

        async def setup() -> str:
            @server.handler("df", "where")
            async def where(data: Any, ctx: Context) -> Any:
                return threading.get_ident()

            return await server.listen("127.0.0.1:0")

        addr = asyncio.run_coroutine_threadsafe(setup(), loop).result(10)
        client.connect_sync(f"ws://{addr}/packetflow/v1")
        start = time.monotonic()
        seen: List[int] = [client.call_sync("df", "where") for _ in range(50)]
        assert set(seen) == {t.ident}
        assert time.monotonic() - start < 10
    finally:
        client.stop_sync()
        async def teardown() -> None:
            await server.stop()

        asyncio.run_coroutine_threadsafe(teardown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()
