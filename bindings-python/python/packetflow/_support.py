"""Support code the native module calls into (not public API)."""

from __future__ import annotations

from typing import Any, Coroutine, Generator


class _Resume:
    """Continues a coroutine that was started outside any task.

    An ``async def`` handler is started eagerly: when it finishes without
    suspending, no task is ever made. When it suspends, what it waits on
    (``pending``) is handed to a task running :func:`continue_coroutine`,
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


async def continue_coroutine(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """Runs the rest of an eagerly started coroutine inside a task."""
    return await _Resume(coro, pending)
