"""Support code the native module calls into (not public API)."""

from __future__ import annotations

import threading
from contextvars import Context
from typing import Any, Awaitable, Callable


async def run_handler(fn: Callable[[Any, Any], Awaitable[Any]], data: Any, ctx: Any, reply: Any) -> None:
    """The task of one ``async def`` handler call: calls ``fn(data, ctx)``,
    awaits it and hands its value or exception to ``reply`` (a native
    object). The task is the handler's own, made in a fresh context."""
    try:
        value = await fn(data, ctx)
    except Exception as exc:  # noqa: BLE001 - becomes the packet's error
        reply.fail(exc)
    except BaseException as exc:
        # Cancellation, KeyboardInterrupt, SystemExit: the packet is told,
        # then the exception goes on as asyncio expects.
        reply.fail(exc)
        raise
    else:
        reply.done(value)


def handler_thread(pool: Any) -> None:
    """The loop of a thread running ``def`` handlers: take a call, make it,
    report how it went. The call is made from here, in Python, so that no
    native frame is on the stack while user code runs; each call runs in a
    fresh context, as an ``async def`` handler's task does."""
    next_call = pool.next
    finish = pool.finish
    fail = pool.fail
    while True:
        job = next_call()
        if job is None:
            return
        fn, data, ctx = job
        job = None
        try:
            value = Context().run(fn, data, ctx)
        except BaseException as exc:  # noqa: BLE001 - becomes the packet's error
            fail(exc)
        else:
            finish(value)
        # Drop this call's objects before waiting for the next one.
        fn = data = ctx = value = None


def start_handler_thread(pool: Any) -> None:
    """Starts one more handler thread (a daemon: it never holds up exit)."""
    threading.Thread(target=handler_thread, args=(pool,), name="packetflow-handler", daemon=True).start()
