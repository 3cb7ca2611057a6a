"""A process hosting actor type `counter` on a durable store, driven by
test_actors.py (not a test module itself).

    python actor_process.py STORE_FILE

Prints `{"ready": true}` once the type is registered, then answers each
JSON line read on stdin, `{"id", "message", "packet_id"?}`, with one JSON
line: `{"answer": ...}` or `{"code", "message"}`. Exits when stdin closes.
"""

import asyncio
import json
import sys

import packetflow


async def main(store: str) -> None:
    async with packetflow.Reactor(name="durable", actor_store=store) as r:

        @r.actor("counter")
        class Counter:
            initial_state = {"value": 0}

            def increment(self, message, ctx):
                self.state["value"] += 1
                return {"value": self.state["value"]}

            async def get_value(self, message, ctx):
                return {"value": self.state["value"]}

        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            request = json.loads(line)
            actor = packetflow.ActorRef("counter", request["id"])
            try:
                answer = await r.actors.send(actor, request["message"], packet_id=request.get("packet_id"))
                out = {"answer": answer}
            except packetflow.PacketFlowError as e:
                out = {"code": e.code, "message": e.message}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
