"""Actors in the Python binding: behaviours as classes and mappings, `def`
and `async def` methods, one turn at a time, transactional turns,
effectively-once repeats, passivation, and durable state across `kill -9`
of a real process. The rules themselves are the core's (tested there);
these tests hold the bridge to them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import packetflow
from packetflow import ActorContext, ActorRef, Reactor

from .conftest import wait_for

HERE = Path(__file__).parent


def counter_methods() -> Dict[str, Callable[..., Any]]:
    """The counter of the issue, as a mapping of `def` functions."""

    def increment(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
        ctx.state["value"] += message.get("by", 1)
        return {"value": ctx.state["value"]}

    def get_value(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
        return {"value": ctx.state["value"]}

    return {"increment": increment, "get_value": get_value}


def async_counter_methods() -> Dict[str, Callable[..., Any]]:
    """The same counter with `async def` functions that suspend once."""

    async def increment(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
        before = ctx.state["value"]
        await asyncio.sleep(0)
        ctx.state["value"] = before + message.get("by", 1)
        return {"value": ctx.state["value"]}

    async def get_value(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
        return {"value": ctx.state["value"]}

    return {"increment": increment, "get_value": get_value}


KINDS = {"def": counter_methods, "async def": async_counter_methods}


def type_stats(r: Reactor, actor_type: str) -> Dict[str, Any]:
    return next(s for s in r.stats()["actors"] if s["actor_type"] == actor_type)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits for `condition` (checked every 10 ms), failing the test past
    `timeout` instead of hanging."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_the_counter_of_the_issue(reactor: Reactor) -> None:
    reactor.actors.register_behavior("counter", counter_methods())
    counter = await reactor.actors.create("counter", {"value": 0})
    assert isinstance(counter, ActorRef)
    assert counter.type == "counter" and len(counter.id) == 36
    await reactor.actors.send(counter, {"type": "increment"})
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 1}
    assert counter == ActorRef("counter", counter.id) and hash(counter) == hash(ActorRef("counter", counter.id))
    assert type_stats(reactor, "counter") == {
        "actor_type": "counter",
        "active": 1,
        "passivated": 0,
        "activations": 1,
        "passivations": 0,
        "tells_failed": 0,
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_a_thousand_concurrent_senders_to_one_counter(reactor: Reactor, kind: str) -> None:
    reactor.actors.register_behavior("counter", KINDS[kind]())
    counter = await reactor.actors.create("counter", {"value": 0}, id="busy")
    answers = await asyncio.gather(*(reactor.actors.send(counter, {"type": "increment"}) for _ in range(1000)))
    # One turn at a time: every turn saw the one before it.
    assert sorted(a["value"] for a in answers) == list(range(1, 1001))
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 1000}


@pytest.mark.parametrize("kind", KINDS)
def test_senders_on_many_loops_and_threads(kind: str) -> None:
    """One counter, registered outside any loop, messaged at once from
    coroutines on four loops in threads of their own and from two threads
    without a loop: every message is answered once, and the turns ran one
    at a time (the answers are exactly 1..N). `async def` turns run on the
    reactor's home loop (the first loop that used it) whoever sent them;
    no loop ends before every sender is done."""
    loops, workers, per_worker, blocking_threads = 4, 10, 50, 2
    total = (loops * workers + blocking_threads) * per_worker
    r = Reactor(name="many-loops")
    answers: List[int] = []
    lock = threading.Lock()
    a_loop_sent = threading.Event()
    senders_done = threading.Barrier(loops + blocking_threads, timeout=60)
    counter = ActorRef("counter", "shared")

    def keep(answer: Dict[str, int]) -> None:
        with lock:
            answers.append(answer["value"])

    async def on_a_loop() -> None:
        async def worker() -> None:
            for _ in range(per_worker):
                keep(await r.actors.send(counter, {"type": "increment"}))
                a_loop_sent.set()

        await asyncio.gather(*(worker() for _ in range(workers)))
        await asyncio.get_running_loop().run_in_executor(None, senders_done.wait)

    def without_a_loop() -> None:
        # Started once a loop used the reactor: the home loop exists.
        assert a_loop_sent.wait(30)
        for _ in range(per_worker):
            keep(r.actors.send_sync(counter, {"type": "increment"}))
        senders_done.wait()

    try:
        r.actors.register_behavior("counter", KINDS[kind](), initial_state={"value": 0})
        threads = [threading.Thread(target=asyncio.run, args=(on_a_loop(),)) for _ in range(loops)]
        threads += [threading.Thread(target=without_a_loop) for _ in range(blocking_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert sorted(answers) == list(range(1, total + 1))
    finally:
        r.stop_sync()


async def test_the_class_form_with_def_and_async_def_methods(reactor: Reactor) -> None:
    threads: Dict[str, str] = {}

    @reactor.actor("account")
    class Account:
        initial_state = {"balance": 0}

        def deposit(self, message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
            threads["deposit"] = threading.current_thread().name
            self.state["balance"] += message["amount"]
            return self.state

        async def withdraw(self, message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
            await asyncio.sleep(0)
            threads["withdraw"] = threading.current_thread().name
            if message["amount"] > self.state["balance"]:
                raise ValueError("insufficient funds")
            self.state = {"balance": self.state["balance"] - message["amount"]}
            return self.state

        def _audit(self, message: Dict[str, Any], ctx: ActorContext) -> None:
            raise AssertionError("not a message type")

    assert Account.__name__ == "Account"  # the decorator returns the class
    account = ActorRef("account", "a1")  # virtual: its first message creates it
    assert await reactor.actors.send(account, {"type": "deposit", "amount": 10}) == {"balance": 10}
    assert await reactor.actors.send(account, {"type": "withdraw", "amount": 3}) == {"balance": 7}
    with pytest.raises(packetflow.HandlerError) as info:
        await reactor.actors.send(account, {"type": "withdraw", "amount": 100})
    assert info.value.message == "ValueError: insufficient funds"
    assert await reactor.actors.send(account, {"type": "deposit", "amount": 0}) == {"balance": 7}
    assert threads == {"deposit": "packetflow-handler", "withdraw": threading.current_thread().name}
    with pytest.raises(packetflow.InvalidPacketError) as refused:
        await reactor.actors.send(account, {"type": "_audit"})
    assert "deposit, withdraw" in refused.value.message


async def test_the_turn_context(reactor: Reactor) -> None:
    seen: List[Any] = []

    def look(message: Dict[str, Any], ctx: ActorContext) -> None:
        seen.append((ctx.actor, ctx.packet_id, isinstance(ctx, packetflow.Context), ctx.remaining_ms > 0))
        ctx.state = {"replaced": True}

    def read(message: Dict[str, Any], ctx: ActorContext) -> Any:
        return ctx.state

    reactor.actors.register_behavior("probe", {"look": look, "read": read}, initial_state={"replaced": False})
    probe = ActorRef("probe", "p")
    assert await reactor.actors.send(probe, {"type": "look"}, packet_id="look-1") is None
    assert seen == [(probe, "look-1", True, True)]
    assert await reactor.actors.send(probe, {"type": "read"}) == {"replaced": True}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_turn_leaves_the_state_unchanged(reactor: Reactor, kind: str) -> None:
    def fail(message: Dict[str, Any], ctx: ActorContext) -> None:
        ctx.state["value"] = 999
        ctx.state["extra"] = [1, 2]
        raise RuntimeError("boom")

    async def fail_async(message: Dict[str, Any], ctx: ActorContext) -> None:
        fail(message, ctx)

    def bad_reply(message: Dict[str, Any], ctx: ActorContext) -> Any:
        ctx.state["value"] = 998
        return {"not json": {1, 2}}

    def bad_state(message: Dict[str, Any], ctx: ActorContext) -> None:
        ctx.state["value"] = {3}

    methods = KINDS[kind]()
    methods.update(fail=fail if kind == "def" else fail_async, bad_reply=bad_reply, bad_state=bad_state)
    reactor.actors.register_behavior("counter", methods)
    counter = await reactor.actors.create("counter", {"value": 5})
    with pytest.raises(packetflow.HandlerError) as info:
        await reactor.actors.send(counter, {"type": "fail"})
    assert (info.value.code, info.value.message) == ("PF500", "RuntimeError: boom")
    with pytest.raises(packetflow.HandlerError) as info:
        await reactor.actors.send(counter, {"type": "bad_reply"})
    assert info.value.message == (
        'counter.bad_reply returned a value that cannot cross as JSON: result["not json"]: '
        "set is not JSON-serializable"
    )
    with pytest.raises(packetflow.HandlerError) as info:
        await reactor.actors.send(counter, {"type": "bad_state"})
    assert info.value.message == (
        'counter.bad_state left a state that cannot cross as JSON: state["value"]: set is not JSON-serializable'
    )
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 5}


async def test_a_turn_past_its_deadline_is_cancelled_and_changes_nothing(reactor: Reactor) -> None:
    cancelled = asyncio.Event()

    async def hang(message: Dict[str, Any], ctx: ActorContext) -> None:
        ctx.state["value"] = 999
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    methods = counter_methods()
    methods["hang"] = hang
    reactor.actors.register_behavior("counter", methods)
    counter = await reactor.actors.create("counter", {"value": 5})
    with pytest.raises(packetflow.PacketTimeoutError):
        await reactor.actors.send(counter, {"type": "hang"}, timeout_ms=100)
    await wait_for(cancelled)
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 5}


async def test_a_repeated_packet_id_is_applied_once(reactor: Reactor) -> None:
    gate = asyncio.Event()

    async def slow_increment(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
        await gate.wait()
        ctx.state["value"] += 1
        return {"value": ctx.state["value"]}

    methods = counter_methods()
    methods["slow_increment"] = slow_increment
    reactor.actors.register_behavior("counter", methods)
    counter = await reactor.actors.create("counter", {"value": 0})
    first = await reactor.actors.send(counter, {"type": "increment"}, packet_id="pay-1")
    again = await reactor.actors.send(counter, {"type": "increment"}, packet_id="pay-1")
    assert first == again == {"value": 1}
    # A repeat that arrives while the first copy runs gets its answer.
    running = asyncio.ensure_future(reactor.actors.send(counter, {"type": "slow_increment"}, packet_id="pay-2"))
    repeat = asyncio.ensure_future(reactor.actors.send(counter, {"type": "slow_increment"}, packet_id="pay-2"))
    await asyncio.sleep(0)
    gate.set()
    assert await running == await repeat == {"value": 2}
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 2}


async def test_lifecycle_errors_are_the_binding_exceptions(reactor: Reactor) -> None:
    reactor.actors.register_behavior("counter", counter_methods())
    with pytest.raises(packetflow.ActorNotFoundError) as missing:
        await reactor.actors.send(ActorRef("counter", "nope"), {"type": "get_value"})
    assert (missing.value.code, missing.value.message) == ("PF404", "no actor counter/nope: create it first")
    await reactor.actors.create("counter", {"value": 0}, id="c1")
    with pytest.raises(packetflow.DuplicatePacketError) as twice:
        await reactor.actors.create("counter", {"value": 0}, id="c1")
    assert twice.value.code == "PF409"
    with pytest.raises(packetflow.InvalidPacketError) as bad_id:
        ActorRef("counter", "")
    assert "pf.actor_id" in bad_id.value.message
    with pytest.raises(packetflow.InvalidPacketError) as bad_type:
        reactor.actors.register_behavior("no spaces", counter_methods())
    assert "actor type" in bad_type.value.message
    with pytest.raises(packetflow.InvalidPacketError) as bad_message:
        await reactor.actors.send(ActorRef("counter", "c1"), {"kind": "increment"})
    assert "data.type" in bad_message.value.message
    with pytest.raises(packetflow.InvalidPacketError) as bad_option:
        await reactor.actors.send(ActorRef("counter", "c1"), {"type": "get_value"}, priority=11)
    assert bad_option.value.message == "priority must be an integer 1-10, got 11"
    with pytest.raises(packetflow.ActorNotFoundError):
        await reactor.actors.list("unknown")
    with pytest.raises(TypeError, match=r"^actor must be an ActorRef\(type, id\), got dict$"):
        await reactor.actors.send({"type": "counter", "id": "c1"}, {"type": "get_value"})  # type: ignore[arg-type]


async def test_behaviours_of_the_wrong_shape_are_refused(reactor: Reactor) -> None:
    class Slotted:
        __slots__ = ()

        def ping(self, message: Any, ctx: ActorContext) -> None:
            pass

    class Empty:
        initial_state = 0

    cases: List[Any] = [[1, 2], {"ping": 3}, {1: print}, Slotted, Empty, {}]
    for behavior in cases:
        with pytest.raises(TypeError, match="actor type broken"):
            reactor.actors.register_behavior("broken", behavior)


async def test_stop_create_list_and_count(reactor: Reactor) -> None:
    def close(message: Dict[str, Any], ctx: ActorContext) -> Dict[str, Any]:
        ctx.stop()
        return {"closed": ctx.state["value"]}

    methods = counter_methods()
    methods["close"] = close
    reactor.actors.register_behavior("counter", methods)
    refs = [await reactor.actors.create("counter", {"value": n}, id=f"c{n}") for n in range(3)]
    assert await reactor.actors.list("counter") == ["c0", "c1", "c2"]
    assert await reactor.actors.send(refs[1], {"type": "close"}) == {"closed": 1}
    with pytest.raises(packetflow.ActorNotFoundError):
        await reactor.actors.send(refs[1], {"type": "get_value"})
    await reactor.actors.stop(refs[2])
    assert await reactor.actors.count("counter") == 1
    with pytest.raises(packetflow.ActorNotFoundError):
        await reactor.actors.stop(refs[2])


async def test_tells_keep_their_order_before_an_ask(reactor: Reactor) -> None:
    reactor.actors.register_behavior("counter", async_counter_methods())
    counter = await reactor.actors.create("counter", {"value": 0})
    for _ in range(50):
        assert reactor.actors.tell(counter, {"type": "increment"}) is None
    assert await reactor.actors.send(counter, {"type": "get_value"}) == {"value": 50}
    with pytest.raises(packetflow.InvalidPacketError):
        reactor.actors.tell(counter, {"type": "unknown"})


@pytest.mark.parametrize("kind", KINDS)
async def test_reentrancy_through_ctx_send(reactor: Reactor, kind: str) -> None:
    """ping.start waits on pong.relay, which sends back to ping: the nested
    message runs at once on ping's committed state instead of deadlocking."""

    if kind == "async def":

        async def start(self: Any, message: Dict[str, Any], ctx: ActorContext) -> Any:
            self.state["value"] = 8  # not committed until this turn returns
            return {"seen": await ctx.send(ActorRef("pong", "p"), {"type": "relay", "to": ctx.actor.id})}

        async def relay(self: Any, message: Dict[str, Any], ctx: ActorContext) -> Any:
            return await ctx.send(ActorRef("ping", message["to"]), {"type": "read"})

    else:

        def start(self: Any, message: Dict[str, Any], ctx: ActorContext) -> Any:
            self.state["value"] = 8
            return {"seen": ctx.send_sync(ActorRef("pong", "p"), {"type": "relay", "to": ctx.actor.id})}

        def relay(self: Any, message: Dict[str, Any], ctx: ActorContext) -> Any:
            return ctx.send_sync(ActorRef("ping", message["to"]), {"type": "read"})

    def read(self: Any, message: Dict[str, Any], ctx: ActorContext) -> Any:
        return self.state["value"]

    reactor.actors.register_behavior("ping", type("Ping", (), {"initial_state": {"value": 7}, "start": start, "read": read}))
    reactor.actors.register_behavior("pong", type("Pong", (), {"initial_state": {}, "relay": relay}))
    ping = ActorRef("ping", "a")
    assert await reactor.actors.send(ping, {"type": "start"}, timeout_ms=5000) == {"seen": 7}
    assert await reactor.actors.send(ping, {"type": "read"}) == 8


async def test_handlers_message_actors(reactor: Reactor) -> None:
    reactor.actors.register_behavior("counter", counter_methods(), initial_state={"value": 0})

    @reactor.handler("df", "bump")
    async def bump(data: Any, ctx: packetflow.Context) -> Any:
        ctx.tell(ActorRef("counter", data), {"type": "increment"})
        return await ctx.send(ActorRef("counter", data), {"type": "increment", "by": 10})

    @reactor.handler("df", "bump_sync")
    def bump_sync(data: Any, ctx: packetflow.Context) -> Any:
        return ctx.send_sync(ActorRef("counter", data), {"type": "get_value"})

    assert await reactor.call("df", "bump", "h1") == {"value": 11}
    assert await reactor.call("df", "bump_sync", "h1") == {"value": 11}


async def test_a_handlers_messages_take_their_own_priority_and_timeout(reactor: Reactor) -> None:
    seen: List[Any] = []

    def look(message: Dict[str, Any], ctx: ActorContext) -> Any:
        seen.append((message["tag"], ctx.priority, ctx.remaining_ms <= 2000))
        return message["tag"]

    reactor.actors.register_behavior("probe", {"look": look}, initial_state={})
    probe = ActorRef("probe", "p")

    @reactor.handler("df", "fan")
    async def fan(data: Any, ctx: packetflow.Context) -> Any:
        ctx.tell(probe, {"type": "look", "tag": "told"}, priority=2, timeout_ms=2000)
        asked = await ctx.send(probe, {"type": "look", "tag": "sent"}, priority=9, timeout_ms=2000)
        inherited = await ctx.send(probe, {"type": "look", "tag": "inherited"})
        refused = []
        for options in ({"priority": 11}, {"timeout_ms": 0}, {"priority": "high"}):
            for attempt in (
                lambda: ctx.tell(probe, {"type": "look", "tag": "no"}, **options),
                lambda: ctx.send(probe, {"type": "look", "tag": "no"}, **options),
            ):
                with pytest.raises(packetflow.InvalidPacketError) as bad:
                    await attempt()  # tell raises before there is anything to await
                refused.append(bad.value.message.split(",")[0])
        return [asked, inherited, refused]

    @reactor.handler("df", "fan_sync")
    def fan_sync(data: Any, ctx: packetflow.Context) -> Any:
        return ctx.send_sync(probe, {"type": "look", "tag": "sync"}, priority=7, timeout_ms=2000)

    asked, inherited, refused = await reactor.call("df", "fan", None, priority=4, timeout_ms=30_000)
    assert (asked, inherited) == ("sent", "inherited")
    assert refused == [
        "priority must be an integer 1-10",
        "priority must be an integer 1-10",
        "timeout_ms must be a positive integer <= 86400000",
        "timeout_ms must be a positive integer <= 86400000",
        "priority must be an integer 1-10",
        "priority must be an integer 1-10",
    ]
    assert await reactor.call("df", "fan_sync", None, timeout_ms=30_000) == "sync"
    # The tell, the lowest, may run after the rest. A message without
    # options inherits the handler's priority and has what is left of its
    # 30 s.
    await wait_until(lambda: len(seen) == 4)
    assert sorted(seen) == [("inherited", 4, False), ("sent", 9, True), ("sync", 7, True), ("told", 2, True)]


async def test_idle_actors_are_passivated_and_come_back() -> None:
    async with Reactor(name="passivating", actor_passivate_after_ms=50) as r:
        r.actors.register_behavior("counter", counter_methods())
        counter = await r.actors.create("counter", {"value": 0})
        assert await r.actors.send(counter, {"type": "increment"}) == {"value": 1}
        await wait_until(lambda: type_stats(r, "counter")["passivated"] == 1)
        stats = type_stats(r, "counter")
        assert (stats["active"], stats["passivations"]) == (0, 1)
        assert await r.actors.list("counter") == [counter.id]
        assert await r.actors.send(counter, {"type": "increment"}) == {"value": 2}
        stats = type_stats(r, "counter")
        assert (stats["active"], stats["passivated"], stats["activations"]) == (1, 0, 2)


async def test_actor_options_are_checked_by_the_core(tmp_path: Path) -> None:
    with pytest.raises(packetflow.InvalidPacketError) as zero:
        Reactor(actor_passivate_after_ms=0)
    assert zero.value.message == "actor_passivate_after_ms must be at least 1, got 0"
    with pytest.raises(packetflow.InvalidPacketError) as folder:
        Reactor(actor_store=tmp_path)
    assert folder.value.message.startswith(f"cannot open the actor store {tmp_path}")
    with pytest.raises(TypeError, match="actor_store must be a str or os.PathLike, got int"):
        Reactor(actor_store=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
async def test_stop_answers_every_message_of_a_busy_actor(kind: str) -> None:
    """The actor's mailbox loop runs on the handler threads (`def`) or the
    loop (`async def`); a stop in the middle of a queue leaves no message
    unanswered."""
    release = threading.Event()
    entered = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold(message: Dict[str, Any], ctx: ActorContext) -> None:
        loop.call_soon_threadsafe(entered.set)
        release.wait(10)

    async def hold_async(message: Dict[str, Any], ctx: ActorContext) -> None:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)

    methods = KINDS[kind]()
    methods["hold"] = hold if kind == "def" else hold_async
    r = Reactor(name="stopping")
    try:
        r.actors.register_behavior("counter", methods, initial_state={"value": 0})
        counter = ActorRef("counter", "busy")
        held = asyncio.ensure_future(r.actors.send(counter, {"type": "hold"}))
        await wait_for(entered)
        queued = [asyncio.ensure_future(r.actors.send(counter, {"type": "increment"})) for _ in range(20)]
        await r.stop()
        outcomes = await asyncio.wait_for(asyncio.gather(held, *queued, return_exceptions=True), 5)
        assert all(isinstance(o, packetflow.UnavailableError) for o in outcomes), outcomes
    finally:
        release.set()
        await r.stop()


def test_an_actor_whose_loop_closed_is_answered_at_once() -> None:
    """An actor type with `async def` methods registered on a loop that has
    since closed: its messages are answered PF503 at once (the mailbox loop
    moves to the runtime), not left waiting for their deadline."""
    r = Reactor(name="closed-loop")

    async def register() -> None:
        r.actors.register_behavior("counter", async_counter_methods(), initial_state={"value": 0})
        assert await r.actors.send(ActorRef("counter", "c"), {"type": "increment"}) == {"value": 1}

    t = threading.Thread(target=asyncio.run, args=(register(),))
    t.start()
    t.join(10)
    assert not t.is_alive()
    try:
        start = time.monotonic()
        with pytest.raises(packetflow.UnavailableError) as info:
            r.actors.send_sync(ActorRef("counter", "c"), {"type": "increment"}, timeout_ms=20_000)
        assert info.value.message == "the event loop counter.increment runs on is closed"
        assert time.monotonic() - start < 5
    finally:
        r.stop_sync()


def test_blocking_api_without_a_loop(sync_reactor: Reactor) -> None:
    sync_reactor.actors.register_behavior("counter", counter_methods())
    counter = sync_reactor.actors.create_sync("counter", {"value": 0}, id="s1")
    assert sync_reactor.actors.send_sync(counter, {"type": "increment", "by": 2}) == {"value": 2}
    assert sync_reactor.actors.list_sync("counter") == ["s1"]
    assert sync_reactor.actors.count_sync("counter") == 1
    sync_reactor.actors.stop_sync(counter)
    assert sync_reactor.actors.count_sync("counter") == 0


class ActorProcess:
    """`actor_process.py` on a store file: a real process to `kill -9`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, store: Path) -> "ActorProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "actor_process.py"),
            str(store),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        assert await child.read() == {"ready": True}
        return child

    async def read(self) -> Any:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, "the actor process ended"
        return json.loads(line)

    async def send(self, actor_id: str, message: Dict[str, Any], packet_id: str | None = None) -> Any:
        assert self.proc.stdin is not None
        request = {"id": actor_id, "message": message, "packet_id": packet_id}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def kill9(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(self.proc.wait(), 30) == -signal.SIGKILL


@pytest.fixture
async def processes() -> Any:
    started: List[ActorProcess] = []

    async def start(store: Path) -> ActorProcess:
        child = await ActorProcess.start(store)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            if child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()


async def test_durable_state_survives_kill_9_and_restart(tmp_path: Path, processes: Any) -> None:
    store = tmp_path / "actors.redb"
    first = await processes(store)
    for n in range(1, 4):
        assert await first.send("c1", {"type": "increment"}) == {"answer": {"value": n}}
    await first.kill9()  # right after the acknowledgement
    second = await processes(store)
    assert await second.send("c1", {"type": "get_value"}) == {"answer": {"value": 3}}
    assert await second.send("c1", {"type": "increment"}) == {"answer": {"value": 4}}
    await second.kill9()


async def test_a_repeat_after_kill_9_and_restart_is_applied_once(tmp_path: Path, processes: Any) -> None:
    store = tmp_path / "actors.redb"
    first = await processes(store)
    assert await first.send("c1", {"type": "increment"}, packet_id="pay-1") == {"answer": {"value": 1}}
    assert await first.send("c1", {"type": "increment"}, packet_id="pay-2") == {"answer": {"value": 2}}
    await first.kill9()
    # A client unsure whether pay-2 ran sends it again, to the restarted process.
    second = await processes(store)
    assert await second.send("c1", {"type": "increment"}, packet_id="pay-2") == {"answer": {"value": 2}}
    assert await second.send("c1", {"type": "get_value"}) == {"answer": {"value": 2}}
    await second.kill9()
