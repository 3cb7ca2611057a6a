"""Support code the native module calls into (not public API)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from contextvars import Context
from typing import Any, Callable, List, Optional, Tuple


def handler_thread(pool: Any) -> None:
    """The loop of a thread running ``def`` handlers and actor methods (and
    polling the mailbox loops of actors whose methods are all ``def``: a
    job that is no call is done inside ``next``): take a call, make it,
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


def start_handler_thread(pool: Any) -> Optional[BaseException]:
    """Starts one more handler thread (a daemon: it never holds up exit).

    ``Thread.start`` waits for the thread to run, and on the main thread
    that wait runs signal handlers: Ctrl-C there raises in here, though the
    thread runs. That exception is returned, for the caller to hand back to
    the interpreter; one raised before the thread started is raised."""
    thread = threading.Thread(target=handler_thread, args=(pool,), name="packetflow-handler", daemon=True)
    try:
        thread.start()
    except BaseException as interruption:
        if thread.ident is None:
            raise
        return interruption
    return None


def actor_methods(behavior: Any, name: str) -> Tuple[Optional[type], List[Tuple[str, Callable[..., Any]]], Any]:
    """Reads an actor behaviour: ``(class or None, [(method name,
    function)], declared initial state or None)``.

    A class contributes its public functions (static and class methods
    included; names starting with ``_`` and ``initial_state`` are left out)
    and its ``initial_state`` attribute; a mapping, its items. Raises
    ``TypeError`` naming what is wrong."""
    if isinstance(behavior, type):
        try:
            # Each turn gets an instance made like this, holding the state.
            setattr(object.__new__(behavior), "state", None)
        except (AttributeError, TypeError) as exc:
            raise TypeError(
                f"actor type {name}: an instance of {behavior.__qualname__} must accept a "
                f"`state` attribute ({exc})"
            ) from None
        methods = []
        for attr in dir(behavior):
            if attr.startswith("_") or attr == "initial_state":
                continue
            raw = inspect.getattr_static(behavior, attr)
            if inspect.isfunction(raw) or isinstance(raw, (staticmethod, classmethod)):
                methods.append((attr, getattr(behavior, attr)))
        declared = getattr(behavior, "initial_state", None)
    elif isinstance(behavior, Mapping):
        methods = []
        for key, fn in behavior.items():
            if not isinstance(key, str):
                raise TypeError(f"actor type {name}: method names must be str, got {type(key).__name__}")
            if not callable(fn):
                raise TypeError(f"actor type {name}: method {key!r} must be callable, got {type(fn).__name__}")
            methods.append((key, fn))
        declared = None
    else:
        raise TypeError(
            f"actor type {name}: the behaviour must be a class or a mapping of message types to "
            f"functions, got {type(behavior).__name__}"
        )
    if not methods:
        raise TypeError(f"actor type {name}: the behaviour has no methods (one per message type)")
    return (behavior if isinstance(behavior, type) else None), methods, declared
