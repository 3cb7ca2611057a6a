"""A Python handler behind a PacketFlow node: `df:transform` uppercases a
string, like the plain `websockets` server in shared/peers/python/server.py.

    python bench/python/net_server.py PORT [async|sync]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import packetflow


async def main(port: int, kind: str) -> None:
    r = packetflow.Reactor(name="python-bench")
    if kind == "async":

        async def transform(data: Any, ctx: packetflow.Context) -> Any:
            return data.upper()

    else:

        def transform(data: Any, ctx: packetflow.Context) -> Any:  # type: ignore[misc]
            return data.upper()

    r.register("df", "transform", transform)
    bound = await r.listen(f"127.0.0.1:{port}")
    print(f"listening on ws://{bound}/packetflow/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await r.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "async"))
