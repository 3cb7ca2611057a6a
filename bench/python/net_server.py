"""A Python handler behind a PacketFlow node: `df:transform` uppercases a
string, like the plain `websockets` server in shared/peers/python/server.py.

    python bench/python/net_server.py PORT [async|sync|async-heavy|sync-heavy] [loop|thread]

`-heavy`: the handler also spends about HEAVY_US µs of pure-Python CPU per
call. The third argument is the reactor's `sockets` option (default: the
package's).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Optional

import packetflow

HEAVY_US = 200


def spin(us: int) -> None:
    """Holds the CPU (and the GIL) for about `us` µs."""
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def main(port: int, kind: str, sockets: Optional[str]) -> None:
    r = packetflow.Reactor(name="python-bench", sockets=sockets)  # type: ignore[arg-type]
    heavy = HEAVY_US if kind.endswith("-heavy") else 0
    if kind.startswith("async"):

        async def transform(data: Any, ctx: packetflow.Context) -> Any:
            if heavy:
                spin(heavy)
            return data.upper()

    else:

        def transform(data: Any, ctx: packetflow.Context) -> Any:  # type: ignore[misc]
            if heavy:
                spin(heavy)
            return data.upper()

    r.register("df", "transform", transform)
    bound = await r.listen(f"127.0.0.1:{port}")
    print(f"listening on ws://{bound}/packetflow/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await r.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "async",
                     sys.argv[3] if len(sys.argv) > 3 else None))
