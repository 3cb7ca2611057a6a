"""Support code the native module calls into (not public API)."""

from __future__ import annotations

import threading
from typing import Any, Coroutine, Generator


class _Resume:
    """Continues a coroutine that was started outside any task.

    An ``async def`` handler is started eagerly: when it finishes without
    suspending, no task is ever made. When it suspends, what it waits on
    (``pending``) is handed to a task running :func:`run_handler`,
    which keeps stepping the same coroutine: values and exceptions sent in
    by the task (wake-ups, cancellation) go on to the coroutine.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        pending = self._pending
        self._pending = None
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # noqa: BLE001 - forwarded as is
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


NOT_STARTED = object()
"""Passed as ``pending`` when the coroutine has not been started."""


async def run_handler(coro: Coroutine[Any, Any, Any], pending: Any, reply: Any) -> None:
    """The task of an ``async def`` handler: runs the coroutine (the rest of
    it, if it was started eagerly and is waiting on ``pending``) and hands
    its value or exception to ``reply`` (a native object)."""
    try:
        if pending is NOT_STARTED:
            value = await coro
        else:
            value = await _Resume(coro, pending)
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
    native frame is on the stack while user code runs."""
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
            value = fn(data, ctx)
        except BaseException as exc:  # noqa: BLE001 - becomes the packet's error
            fail(exc)
        else:
            finish(value)
        # Drop this call's objects before waiting for the next one.
        fn = data = ctx = value = None


def start_handler_thread(pool: Any) -> None:
    """Starts one more handler thread (a daemon: it never holds up exit)."""
    threading.Thread(target=handler_thread, args=(pool,), name="packetflow-handler", daemon=True).start()
