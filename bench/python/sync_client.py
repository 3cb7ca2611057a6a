"""A Python client that calls through `_sync` methods from threads while the
reactor's loop runs in a thread of its own (its connection made from that
loop): `call_sync` one after another from the main thread (p50), then from
8 threads at once (calls/s).

    python bench/python/sync_client.py URL loop|thread [--n 2000] [--threads-n 20000]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

import packetflow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("sockets", choices=["loop", "thread"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads-n", type=int, default=20000)
    a = ap.parse_args()
    r = packetflow.Reactor(name="sync-client", sockets=a.sockets)
    loop = asyncio.new_event_loop()
    connected = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await r.connect(a.url)
        connected.set()
        await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert connected.wait(20), "not connected"
    for _ in range(500):
        r.call_sync("df", "transform", "hello world")
    lat: List[int] = []
    for _ in range(a.n):
        t0 = time.perf_counter_ns()
        out = r.call_sync("df", "transform", "hello world")
        lat.append(time.perf_counter_ns() - t0)
        assert out == "HELLO WORLD", out
    lat.sort()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: r.call_sync("df", "transform", "hello world"), range(a.threads_n)))
    wall = time.perf_counter() - t0
    assert all(o == "HELLO WORLD" for o in outs)
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
    print(json.dumps({"p50_us": lat[len(lat) // 2] / 1000, "p99_us": lat[len(lat) * 99 // 100] / 1000,
                      "threads_calls_per_s": a.threads_n / wall}), flush=True)


if __name__ == "__main__":
    main()
