"""A typed tour of the API; `mypy --strict` checks it against the stubs
(scripts/test.sh), and running it exercises it for real."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional

import packetflow
from packetflow import (
    ActorContext,
    ActorRef,
    ActorTypeStats,
    Context,
    PacketFlowError,
    Reactor,
    ReactorStats,
    Result,
    TokenSpec,
)


def shout(data: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    return {"text": str(data["text"]).upper(), "id": ctx.packet_id}


async def main() -> List[str]:
    seen: List[str] = []
    async with Reactor(name="typed", max_inflight=64) as r:
        r.register("df", "shout", shout)

        @r.handler("df", "words")
        async def words(data: str, ctx: Context) -> List[str]:
            remaining: int = ctx.remaining_ms
            trace: str = ctx.trace_id
            meta: Optional[Dict[str, Any]] = ctx.metadata
            seen.append(f"{trace}:{remaining > 0}:{meta}")
            loud: Dict[str, Any] = await ctx.call("df", "shout", {"text": data}, priority=ctx.priority)
            return str(loud["text"]).split()

        # Cancelling: a def handler polls ctx.cancelled; the awaiting task's
        # cancel (or r.cancel with the id) cancels the packet.
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def patient(data: Any, ctx: Context) -> Optional[str]:
            loop.call_soon_threadsafe(started.set)
            for _ in range(5000):  # about 5 s at most
                if ctx.cancelled:
                    return None
                time.sleep(0.001)
            return "gave up waiting"

        r.register("df", "patient", patient)
        waiting = asyncio.ensure_future(r.submit("df", "patient", packet_id="typed-cancel"))
        await asyncio.wait_for(started.wait(), 5)
        cancelled_now: bool = r.cancel("typed-cancel")
        gone: Result = await waiting
        assert cancelled_now and isinstance(gone.error, packetflow.PacketCancelledError)

        result: Result = await r.submit("df", "words", "hello typed world", priority=7, timeout_ms=2_000)
        if result.ok:
            seen.extend(result.data)
        status: str = result.status
        duration: int = result.duration_ms
        err: Optional[PacketFlowError] = result.error
        assert err is None and status == "success" and duration >= 0

        try:
            await r.call("df", "missing", None)
        except packetflow.NoHandlerError as e:
            seen.append(e.code)
        except PacketFlowError as e:
            seen.append(f"unexpected {e.code}: {e.message}")

        # Two reactors over loopback: this one serves, `client` routes to it
        # and hosts the standard library, whose steps reach `r`'s handlers.
        bound: str = await r.listen("127.0.0.1:0")
        async with Reactor(name="client", stdlib="cf:*,co:gather") as client:
            await client.connect(f"ws://{bound}/packetflow/v1", msgpack=True)
            remote: List[str] = await client.call("df", "words", "over the wire")
            seen.extend(remote)
            seq: Dict[str, Any] = await client.call(
                "cf", "seq", {"steps": [{"group": "df", "element": "words"}], "input": "in steps"}
            )
            seen.extend(seq["value"])

        # A listener that wants a token; this one may only submit df:*.
        tokens: List[TokenSpec] = [{"name": "typed", "token": "typed-example-token-01", "submit": ["df:*"]}]
        guarded: str = await r.listen("127.0.0.1:0", tokens=tokens)
        async with Reactor(name="token-client") as client:
            await client.connect(f"ws://{guarded}/packetflow/v1", token="typed-example-token-01", tls_ca=None)
            seen.extend(await client.call("df", "words", "with a token"))

        # An actor type: a class whose methods are its message types.
        @r.actor("counter")
        class Counter:
            state: Dict[str, int]

            def increment(self, message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
                self.state["value"] += int(message.get("by", 1))
                return {"value": self.state["value"]}

            async def get_value(self, message: Dict[str, Any], ctx: ActorContext) -> Dict[str, int]:
                here: ActorRef = ctx.actor
                assert here.type == "counter"
                return {"value": self.state["value"]}

        counter: ActorRef = await r.actors.create("counter", {"value": 0}, id="typed")
        await r.actors.send(counter, {"type": "increment", "by": 2}, timeout_ms=1_000)
        r.actors.tell(counter, {"type": "increment"})
        value: Dict[str, int] = await r.actors.send(counter, {"type": "get_value"})
        ids: List[str] = await r.actors.list("counter")
        seen.append(f"counter:{value['value']}:{ids}")

        stats: ReactorStats = r.stats()
        cancelled: int = sum(h["cancelled"] for h in stats["handlers"]) + stats["forwards_cancelled"]
        assert cancelled == 1
        actor_stats: List[ActorTypeStats] = stats["actors"]
        seen.append(f"{stats['name']}:{len(stats['handlers'])}:{actor_stats[0]['active']}")
        removed: bool = r.unregister("df", "shout")
        assert removed
    return seen


def blocking() -> Any:
    with Reactor() as r:
        r.register("cf", "echo", lambda data, ctx: data)
        res: Result = r.submit_sync("cf", "echo", [1, 2, 3], metadata={"k": "v"})
        value: Any = r.call_sync("cf", "echo", {"ok": True}, dependencies=[res.packet_id])

        # An actor type as a mapping of message types to functions.
        def bump(message: Dict[str, Any], ctx: ActorContext) -> int:
            ctx.state = int(ctx.state) + 1
            return int(ctx.state)

        r.actors.register_behavior("tally", {"bump": bump}, initial_state=0)
        tally = ActorRef("tally", "t1")
        bumped: int = r.actors.send_sync(tally, {"type": "bump"})
        assert bumped == 1 and r.actors.count_sync("tally") == 1
        return value


if __name__ == "__main__":
    print(asyncio.run(main()))
    print(blocking())
