"""The Python participant of the interop suite (see README.md here), built
on the `packetflow` Python package.

    python pf_python.py serve HUB_URL NAME [json|msgpack]
    python pf_python.py listen NAME
    python pf_python.py submit HUB_URL [json|msgpack]
    python pf_python.py dial URL
"""
import asyncio
import json
import os
import sys
import time

import packetflow


async def connect(r: packetflow.Reactor, url: str, codec: str) -> None:
    if codec not in ("json", "msgpack"):
        raise SystemExit(f"unknown codec {codec!r} (expected json or msgpack)")
    await r.connect(url, msgpack=(codec == "msgpack"), **nats_options(url))


def nats_options(url: str) -> dict:
    """For a nats:// URL, the NATS options the suite asks for:
    PF_NATS_NAMESPACE, the subjects' namespace; PF_NATS_ACTOR_STORE, actor
    state in the members' bucket (membership with it); PF_NATS_HEARTBEAT_MS,
    the members' heartbeat."""
    if not url.startswith("nats://"):
        return {}
    options: dict = {}
    if os.environ.get("PF_NATS_NAMESPACE"):
        options["namespace"] = os.environ["PF_NATS_NAMESPACE"]
    if os.environ.get("PF_NATS_ACTOR_STORE"):
        options["actor_store"] = True
    if os.environ.get("PF_NATS_HEARTBEAT_MS"):
        options["membership_heartbeat_ms"] = int(os.environ["PF_NATS_HEARTBEAT_MS"])
    return options


def limits() -> dict:
    """The reactor limits the suite asks for (PF_MAX_INFLIGHT, PF_MAX_QUEUE)."""
    wanted = {"max_inflight": os.environ.get("PF_MAX_INFLIGHT"), "max_queue": os.environ.get("PF_MAX_QUEUE")}
    return {k: int(v) for k, v in wanted.items() if v}


async def serve(url: str, name: str, codec: str) -> None:
    """Serves the handlers on a hub at `url`, or, with `url` None, listens
    on a free loopback port and prints `ready URL`."""
    async with packetflow.Reactor(name=f"interop-{name}", **limits()) as r:

        @r.handler("df", f"echo_{name}")
        async def echo(data, ctx):
            return data

        @r.handler("df", f"fail_{name}")
        def fail(data, ctx):
            raise RuntimeError(f"boom from {name}")

        @r.handler("df", f"slow_{name}")
        async def slow(ms, ctx):
            await asyncio.sleep(ms / 1000)
            return ms

        register_rule_handlers(r, name)
        register_stdlib_steps(r, name)
        # Actor state in NATS: the types come after joining, so that their
        # store is the members' bucket.
        in_nats = url is not None and nats_options(url).get("actor_store", False)
        if not in_nats:
            register_counter(r)
        if url is None:
            bound = await r.listen("127.0.0.1:0")
            print(f"ready ws://{bound}/packetflow/v1", flush=True)
        else:
            await connect(r, url, codec)
            if in_nats:
                register_counter(r)
                register_shared_counter(r, name)
            print("ready", flush=True)
        # Serve until the suite closes stdin (or kills the process).
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def register_rule_handlers(r: packetflow.Reactor, name: str) -> None:
    """The handlers of test_rules.py: a context kept past its answer, and a
    handler replaced while a packet runs it."""
    kept = {}

    @r.handler("df", f"keep_{name}")
    def keep(data, ctx):
        kept["ctx"] = ctx
        return "kept"

    @r.handler("df", f"late_{name}")
    async def late(data, ctx):
        try:
            return {"data": await kept["ctx"].call("df", f"echo_{name}", data)}
        except packetflow.PacketFlowError as e:
            return {"code": e.code, "message": e.message}

    @r.handler("df", f"version_{name}")
    async def first(ms, ctx):
        await asyncio.sleep(ms / 1000)
        return "v1"

    @r.handler("df", f"replace_{name}")
    async def replace(data, ctx):
        r.register("df", f"version_{name}", lambda ms, ctx: "v2")
        return "replaced"


def event(fields: dict) -> None:
    """A line about a handler's packet, `{event, element, tag, at_us}`."""
    print(json.dumps({**fields, "at_us": time.time_ns() // 1000}), flush=True)


def register_stdlib_steps(r: packetflow.Reactor, name: str) -> None:
    """The steps of test_stdlib.py: `append_NAME` appends NAME to a list;
    `wait_NAME` ({"tag"}) reports it started, then waits until
    `release_NAME` (the tag) releases it or its packet is cancelled, and
    reports which (at most 30 s)."""
    waiting: dict = {}

    @r.handler("df", f"append_{name}")
    def append(items, ctx):
        return [*items, name]

    @r.handler("df", f"wait_{name}")
    async def wait(data, ctx):
        element, tag = f"wait_{name}", data["tag"]
        released = waiting[tag] = asyncio.get_running_loop().create_future()
        event({"event": "started", "element": element, "tag": tag})
        try:
            await asyncio.wait_for(released, 30)
        except asyncio.CancelledError:
            event({"event": "cancelled", "element": element, "tag": tag})
            raise
        except asyncio.TimeoutError:
            return "never released"
        finally:
            waiting.pop(tag, None)
        event({"event": "released", "element": element, "tag": tag})
        return tag

    @r.handler("df", f"release_{name}")
    async def release(tag, ctx):
        released = waiting.get(tag)
        if released is None or released.done():
            return False
        released.set_result(None)
        return True


def register_counter(r: packetflow.Reactor) -> None:
    """Actor type counter_python: virtual counters starting at 0."""

    @r.actor("counter_python")
    class Counter:
        initial_state = {"value": 0}

        def increment(self, message, ctx):
            self.state["value"] += message.get("by", 1)
            return {"value": self.state["value"]}

        def get_value(self, message, ctx):
            return {"value": self.state["value"]}


def register_shared_counter(r: packetflow.Reactor, name: str) -> None:
    """Actor type counter_shared, hosted by every language on a NATS
    cluster: counter_python's, its answers naming the language that ran
    the turn (`host`)."""

    @r.actor("counter_shared")
    class Shared:
        initial_state = {"value": 0}

        def increment(self, message, ctx):
            self.state["value"] += message.get("by", 1)
            return {"value": self.state["value"], "host": name}

        def get_value(self, message, ctx):
            return {"value": self.state["value"], "host": name}


async def dial(url: str) -> None:
    """Dials `url` and prints how that ended, as {"code", "message"}."""
    async with packetflow.Reactor(name="interop-python-dialer") as r:
        try:
            await r.connect(url)
            print(json.dumps({"code": None, "message": "connected"}), flush=True)
        except packetflow.PacketFlowError as e:
            print(json.dumps({"code": e.code, "message": e.message}), flush=True)


async def submit(url: str, codec: str) -> None:
    # PF_STDLIB: the standard elements this reactor hosts (test_stdlib.py).
    async with packetflow.Reactor(name="interop-python-submitter", stdlib=os.environ.get("PF_STDLIB")) as r:
        await connect(r, url, codec)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        pending = []

        async def one(req):
            if "cancel" in req:
                # test_cancel.py: withdraws the packet with that id.
                at_us = time.time_ns() // 1000
                cancelled = r.cancel(req["cancel"])
                out = {"cancelled": cancelled, "at_us": at_us}
                sys.stdout.write(json.dumps({"id": req["id"], "result": out}) + "\n")
                sys.stdout.flush()
                return
            options = {"packet_id": req["packet_id"]} if "packet_id" in req else {}
            result = await r.submit(
                req["group"], req["element"], req.get("data"), timeout_ms=req.get("timeout_ms"),
                metadata=req.get("metadata"), **options
            )
            out = {"status": result.status, "data": result.data} if result.ok else {
                "status": "error", "error": {"code": result.error.code, "message": result.error.message}}
            sys.stdout.write(json.dumps({"id": req["id"], "result": out}) + "\n")
            sys.stdout.flush()

        while line := await reader.readline():
            if line.strip():
                pending.append(asyncio.create_task(one(json.loads(line))))
        await asyncio.gather(*pending)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    codec = "json"
    if mode == "serve":
        if len(args) > 2:
            codec = args[2]
        asyncio.run(serve(args[0], args[1], codec))
    elif mode == "listen":
        asyncio.run(serve(None, args[0], codec))
    elif mode == "dial":
        asyncio.run(dial(args[0]))
    elif mode == "submit":
        if len(args) > 1:
            codec = args[1]
        asyncio.run(submit(args[0], codec))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
