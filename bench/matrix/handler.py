"""The Python handler of the matrix: a `packetflow.Reactor` serving
`df:transform` (uppercase a string), connected to a hub or listening.

    python bench/matrix/handler.py HUB_URL
    python bench/matrix/handler.py --listen 127.0.0.1:0

Prints `ready PID` on stdout once `connect` has returned (the hub then knows
the handler), or `ready PID URL` once listening; serves until stdin closes or
SIGTERM, then stops the reactor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Optional

import packetflow


async def main(url: str, listen: Optional[str]) -> None:
    # MATRIX_BUSY_POLL_US (set by matrix.py's busy- topologies): the reactor's
    # busy_poll_us; MATRIX_PYTHON_SOCKETS (matrix.py --python-sockets): its sockets.
    busy_poll_us = int(os.environ.get("MATRIX_BUSY_POLL_US", "0"))
    sockets = os.environ.get("MATRIX_PYTHON_SOCKETS") or None
    async with packetflow.Reactor(name="matrix-python-handler", busy_poll_us=busy_poll_us, sockets=sockets) as r:

        async def transform(data: Any, ctx: packetflow.Context) -> Any:
            return data.upper()

        r.register("df", "transform", transform)
        if listen is None:
            await r.connect(url)
            print(f"ready {os.getpid()}", flush=True)
        else:
            bound = await r.listen(listen)
            print(f"ready {os.getpid()} ws://{bound}/packetflow/v1", flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Watch stdin on the loop (no thread left blocked in a read at exit).
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        eof = asyncio.ensure_future(stdin.read())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopped, eof], return_when=asyncio.FIRST_COMPLETED)
        eof.cancel()
        stopped.cancel()


if __name__ == "__main__":
    if len(sys.argv) == 2:
        asyncio.run(main(sys.argv[1], None))
    elif len(sys.argv) == 3 and sys.argv[1] == "--listen":
        asyncio.run(main("", sys.argv[2]))
    else:
        sys.exit(__doc__)
