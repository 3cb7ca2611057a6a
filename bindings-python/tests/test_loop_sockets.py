"""Network connections run on the asyncio loop (``sockets="loop"``, the
default): the loop's selector watches their sockets (``add_reader`` /
``add_writer``), a frame is read, decoded and handed to its ``async def``
handler on the loop's thread, and the answer is written there, with no
other thread waking. Where no loop can drive them, the runtime does."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Set, Tuple

import pytest

import packetflow
from packetflow import Context, Reactor
from packetflow import _native

WAIT = 10.0


def code(result: packetflow.Result) -> str:
    """The result's PF code, or "ok"."""
    return result.error.code if result.error is not None else "ok"


def socket_stats() -> Dict[str, int]:
    return dict(_native._socket_stats())


def since(before: Dict[str, int]) -> Dict[str, int]:
    now = socket_stats()
    return {k: now[k] - before[k] for k in now}


def watched_fds(loop: asyncio.AbstractEventLoop) -> Set[int]:
    """The descriptors the loop's selector watches."""
    return set(loop._selector.get_map().keys())  # type: ignore[attr-defined]


async def until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Waits (bounded turns of the loop) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


async def serve_pair(**options: Any) -> Tuple[Reactor, Reactor, str]:
    server = Reactor(name="server", **options)
    client = Reactor(name="client", **options)
    addr = await server.listen("127.0.0.1:0")
    return server, client, addr


async def test_connections_run_on_the_loop_and_wake_no_other_thread() -> None:
    loop = asyncio.get_running_loop()
    server, client, addr = await serve_pair()
    before_fds = watched_fds(loop)  # the loop's own, and PacketFlow's wake-up
    threads: Set[int] = set()

    @server.handler("df", "upper")
    async def upper(data: Any, ctx: Context) -> Any:
        threads.add(threading.get_ident())
        return data.upper()

    try:
        await client.connect(f"ws://{addr}/packetflow/v1")
        # Warm up once (connection set-up, first watches), then measure.
        assert await client.call("df", "upper", "x") == "X"
        before = socket_stats()
        n = 200
        for i in range(n):
            assert await client.call("df", "upper", f"m{i}") == f"M{i}"
        got = since(before)
        assert threads == {threading.get_ident()}, "the handler ran on the loop's thread"
        assert got["callbacks"] >= n, f"the loop reported the sockets ready: {got}"
        assert got["read_waits"] >= 2 * n, f"both connections waited on the loop: {got}"
        assert got["on_runtime"] == 0, got
        # Timers of the runtime (heartbeats) may wake the loop now and then;
        # frames never do.
        assert got["cross_thread_wakes"] < n // 10, f"no thread hop per round trip: {got}"
        assert len(watched_fds(loop) - before_fds) == 2, "one watch per connection's socket"
    finally:
        await client.stop()
        await server.stop()
    await until("the loop watches no socket of theirs", lambda: watched_fds(loop) <= before_fds)


async def test_sockets_thread_keeps_connections_on_the_runtime() -> None:
    server, client, addr = await serve_pair(sockets="thread")

    @server.handler("df", "upper")
    async def upper(data: Any, ctx: Context) -> Any:
        return data.upper()

    try:
        await client.connect(f"ws://{addr}/packetflow/v1")
        before = socket_stats()
        n = 50
        for _ in range(n):
            assert await client.call("df", "upper", "x") == "X"
        got = since(before)
        assert got["watches"] == 0 and got["callbacks"] == 0, got
        assert got["cross_thread_wakes"] >= n, f"the runtime's threads wake the loop: {got}"
    finally:
        await client.stop()
        await server.stop()


def test_the_sockets_option_is_checked() -> None:
    with pytest.raises(ValueError, match="sockets must be 'loop' or 'thread'"):
        Reactor(sockets="uv")
    with pytest.raises(ValueError, match="cannot busy-poll"):
        Reactor(sockets="loop", busy_poll_us=100)
    Reactor(sockets="thread", busy_poll_us=100).stop_sync()
    Reactor(busy_poll_us=100).stop_sync()


async def raw_websocket(addr: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain WebSocket client of `addr` (a seed peer: it never sends hello)."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET /packetflow/v1 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def masked_text_frame(payload: bytes) -> bytes:
    """A client's text frame (masked with zeros: the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def read_frame(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
    """The opcode and payload of a server's (unmasked) frame."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def test_large_frames_take_many_reads_and_writes_that_block() -> None:
    """A peer that sends large submits and reads the answers only later:
    the server reads each frame in many pieces, and its answers fill both
    socket buffers, so its writes wait for the loop to report the socket
    writable again."""
    loop = asyncio.get_running_loop()
    server = Reactor(name="server")
    addr = await server.listen("127.0.0.1:0")
    before_fds = watched_fds(loop)

    @server.handler("df", "echo")
    async def echo(data: Any, ctx: Context) -> Any:
        return data

    try:
        reader, writer = await raw_websocket(addr)
        before = socket_stats()
        n, size = 12, 600_000  # 7.2 MB of answers: more than the buffers hold
        for i in range(n):
            packet = {"version": "1.0", "id": f"big-{i}", "group": "df", "element": "echo", "data": chr(97 + i) * size}
            frame = {"type": "submit", "seq": i + 1, "payload": packet}
            writer.write(masked_text_frame(json.dumps(frame).encode()))
        await writer.drain()
        await until("the server's writes wait for the socket", lambda: since(before)["write_waits"] > 0)
        got: Dict[int, Any] = {}
        while len(got) < n:
            opcode, payload = await asyncio.wait_for(read_frame(reader), WAIT)
            message = json.loads(payload) if opcode == 1 else {}
            if message.get("type") == "result":
                got[message["seq"]] = message["payload"]
        for i in range(n):
            assert got[i + 1]["packet_id"] == f"big-{i}"
            assert got[i + 1]["data"] == chr(97 + i) * size
        stats = since(before)
        # Each write that blocked was resumed by the loop's writer callback.
        assert stats["callbacks"] >= 2 and stats["read_waits"] >= 1, stats
        assert stats["on_runtime"] == 0, stats
        writer.close()
        await until("the connection ended and its watches are gone", lambda: watched_fds(loop) <= before_fds)
    finally:
        await server.stop()


async def test_a_peer_closing_mid_frame_ends_its_connection_only() -> None:
    loop = asyncio.get_running_loop()
    server, client, addr = await serve_pair()
    before_fds = watched_fds(loop)  # the loop's own, and PacketFlow's wake-up

    @server.handler("df", "upper")
    async def upper(data: Any, ctx: Context) -> Any:
        return data.upper()

    try:
        reader, writer = await raw_websocket(addr)
        # A masked text frame announcing 1000 bytes, of which 10 come.
        frame = bytes([0x81, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4]) + b"x" * 10
        before = socket_stats()
        writer.write(frame)
        await writer.drain()
        await until("the server's connection waits on the loop", lambda: since(before)["read_waits"] > 0)
        writer.close()
        await until("the connection ended and its watch is gone", lambda: since(before)["removed"] >= 1)
        # The server goes on serving others.
        await client.connect(f"ws://{addr}/packetflow/v1")
        assert await client.call("df", "upper", "still") == "STILL"
    finally:
        await client.stop()
        await server.stop()
    await until("the loop watches no socket of theirs", lambda: watched_fds(loop) <= before_fds)


async def test_stopping_with_connections_open_answers_every_packet() -> None:
    loop = asyncio.get_running_loop()
    server, client, addr = await serve_pair()
    before_fds = watched_fds(loop)  # the loop's own, and PacketFlow's wake-up
    started = 0
    all_started = asyncio.Event()
    n = 20

    @server.handler("df", "hold")
    async def hold(data: Any, ctx: Context) -> Any:
        nonlocal started
        started += 1
        if started == n:
            all_started.set()
        await asyncio.Event().wait()

    @server.handler("df", "upper")
    async def upper(data: Any, ctx: Context) -> Any:
        return data.upper()

    try:
        await client.connect(f"ws://{addr}/packetflow/v1")
        held = [asyncio.ensure_future(client.submit("df", "hold", i)) for i in range(n)]
        await asyncio.wait_for(all_started.wait(), WAIT)
        quick = [asyncio.ensure_future(client.submit("df", "upper", f"q{i}")) for i in range(n)]
        await asyncio.wait_for(server.stop(), WAIT)
        results = await asyncio.wait_for(asyncio.gather(*held, *quick), WAIT)
        for r in results[:n]:
            assert code(r) == "PF503", r.error
        for i, r in enumerate(results[n:]):
            assert r.data == f"Q{i}" if code(r) == "ok" else code(r) == "PF503", r.error
    finally:
        await client.stop()
        await server.stop()
    await until("the loop watches no socket of theirs", lambda: watched_fds(loop) <= before_fds)


async def test_a_closed_loop_hands_its_connections_to_the_runtime() -> None:
    """The server's loop (`asyncio.run` in a thread) ends with a connection
    open and calls in flight, its reactor not stopped: the `async def`
    calls are cancelled with their loop (PF500), the `def` calls still
    running answer through the connection, which the runtime now drives,
    and it goes on serving (PF503 for an `async def` handler of the closed
    loop)."""
    loop = asyncio.get_running_loop()
    ready: "asyncio.Future[str]" = loop.create_future()
    closing, release = threading.Event(), threading.Event()
    started = threading.Semaphore(0)
    server = Reactor(name="server")
    n = 5

    async def hold(data: Any, ctx: Context) -> Any:
        started.release()
        await asyncio.Event().wait()

    def block(data: Any, ctx: Context) -> Any:
        started.release()
        assert release.wait(WAIT)
        return data

    server.register("df", "block", block)
    server.register("df", "sync_upper", lambda data, ctx: data.upper())

    async def serve() -> None:
        server.register("df", "hold", hold)
        addr = await server.listen("127.0.0.1:0")
        loop.call_soon_threadsafe(ready.set_result, addr)
        await asyncio.get_running_loop().run_in_executor(None, closing.wait, WAIT)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    client = Reactor(name="client")
    try:
        addr = await asyncio.wait_for(ready, WAIT)
        await client.connect(f"ws://{addr}/packetflow/v1")
        assert await client.call("df", "sync_upper", "before") == "BEFORE"
        before = socket_stats()
        held = [asyncio.ensure_future(client.submit("df", "hold", i)) for i in range(n)]
        blocked = [asyncio.ensure_future(client.submit("df", "block", i)) for i in range(n)]
        for _ in range(2 * n):
            assert await loop.run_in_executor(None, started.acquire, True, WAIT)
        closing.set()
        await loop.run_in_executor(None, thread.join, WAIT)
        assert not thread.is_alive()
        release.set()
        results = await asyncio.wait_for(asyncio.gather(*held, *blocked), WAIT)
        assert [code(r) for r in results[:n]] == ["PF500"] * n, [r.error for r in results[:n]]
        assert [r.data for r in results[n:]] == list(range(n)), [r.error for r in results[n:]]
        for i in range(20):
            assert await client.call("df", "sync_upper", f"after{i}") == f"AFTER{i}"
        assert since(before)["on_runtime"] >= 1
        res = await client.submit("df", "hold", "late")
        assert code(res) == "PF503" and "closed" in str(res.error), res.error
    finally:
        release.set()
        closing.set()
        await client.stop()
        server.stop_sync()


@pytest.mark.parametrize("sockets", [None, "loop"])
def test_sync_calls_after_the_loop_stopped_running_do_not_wait_for_it(sockets: Any) -> None:
    """Connected from a loop, then used through `_sync` methods on the same
    thread while that loop does not run: the connection moves to the
    runtime instead of waiting for the loop (even with sockets='loop')."""
    server = Reactor(name="server", sockets="thread")
    server.register("df", "sync_upper", lambda data, ctx: data.upper())
    addr = server.listen_sync("127.0.0.1:0")
    client = Reactor(name="client", sockets=sockets)
    loop = asyncio.new_event_loop()
    try:
        before = socket_stats()

        async def connect() -> None:
            await client.connect(f"ws://{addr}/packetflow/v1")
            assert await client.call("df", "sync_upper", "on the loop") == "ON THE LOOP"

        loop.run_until_complete(connect())
        assert since(before)["watches"] == 1
        for i in range(20):
            assert client.call_sync("df", "sync_upper", f"s{i}") == f"S{i}"
        assert since(before)["on_runtime"] == 1
        # The loop may run again: the connection stays where it is now.
        async def call_again() -> Any:
            return await client.call("df", "sync_upper", "again")

        assert loop.run_until_complete(call_again()) == "AGAIN"
        client.stop_sync()
    finally:
        loop.close()
        server.stop_sync()


@pytest.mark.parametrize("sockets", [None, "loop"])
def test_sync_calls_from_another_thread_while_the_loop_runs(sockets: Any) -> None:
    """The client's loop runs in a thread of its own (it connected from
    there) while the main thread calls `call_sync`: by default the first
    such call moves the connection to the runtime's threads (a blocking
    caller of another thread waits less there); with sockets='loop' it
    stays on the loop. Both answer every call."""
    server = Reactor(name="server", sockets="thread")
    server.register("df", "sync_upper", lambda data, ctx: data.upper())
    addr = server.listen_sync("127.0.0.1:0")
    client = Reactor(name="client", sockets=sockets)
    loop = asyncio.new_event_loop()
    connected, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        await client.connect(f"ws://{addr}/packetflow/v1")
        assert await client.call("df", "sync_upper", "async") == "ASYNC"
        connected.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait, WAIT)
        # The loop's own calls work whichever thread drives the connection.
        assert await client.call("df", "sync_upper", "async again") == "ASYNC AGAIN"

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    before = socket_stats()
    thread.start()
    try:
        assert connected.wait(WAIT)
        for i in range(20):
            assert client.call_sync("df", "sync_upper", f"s{i}") == f"S{i}"
        moved = since(before)["on_runtime"]
        assert moved == (1 if sockets is None else 0), since(before)
    finally:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        loop.close()
        client.stop_sync()
        server.stop_sync()


def test_a_reactor_used_without_a_loop_keeps_its_connections_on_the_runtime() -> None:
    before = socket_stats()
    with Reactor(name="server") as server, Reactor(name="client") as client:
        server.register("df", "sync_upper", lambda data, ctx: data.upper())
        addr = server.listen_sync("127.0.0.1:0")
        client.connect_sync(f"ws://{addr}/packetflow/v1")
        for i in range(20):
            assert client.call_sync("df", "sync_upper", f"s{i}") == f"S{i}"
    assert since(before)["watches"] == 0


async def test_cancelling_a_call_over_loop_sockets_cancels_the_remote_handler() -> None:
    server, client, addr = await serve_pair()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @server.handler("df", "hold")
    async def hold(data: Any, ctx: Context) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        await client.connect(f"ws://{addr}/packetflow/v1")
        before = socket_stats()
        task = asyncio.ensure_future(client.call("df", "hold", 1))
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(cancelled.wait(), WAIT)
        # Reactor.cancel by id, on the submitter's side.
        started.clear()
        cancelled.clear()
        pending = asyncio.ensure_future(client.submit("df", "hold", 2, packet_id="cancel-me"))
        await asyncio.wait_for(started.wait(), WAIT)
        assert client.cancel("cancel-me")
        res = await asyncio.wait_for(pending, WAIT)
        assert code(res) == "PF499", res.error
        await asyncio.wait_for(cancelled.wait(), WAIT)
    finally:
        await client.stop()
        await server.stop()
    assert since(before)["on_runtime"] == 0


def test_a_loop_that_cannot_watch_sockets_leaves_them_to_the_runtime() -> None:
    """A loop without `add_reader` (as the Windows proactor): the
    connections run on the runtime's threads, as with sockets='thread'."""

    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
            raise NotImplementedError

    async def main() -> Dict[str, int]:
        before = socket_stats()
        server, client, addr = await serve_pair()

        @server.handler("df", "upper")
        async def upper(data: Any, ctx: Context) -> Any:
            return data.upper()

        try:
            await client.connect(f"ws://{addr}/packetflow/v1")
            for i in range(20):
                assert await client.call("df", "upper", f"m{i}") == f"M{i}"
            return since(before)
        finally:
            await client.stop()
            await server.stop()

    loop = NoReaders()
    try:
        got = loop.run_until_complete(main())
    finally:
        loop.close()
    assert got["watches"] == 0 and got["callbacks"] == 0, got
