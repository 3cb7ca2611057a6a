"""PacketFlow for Python: register handlers, submit packets, get results.

A :class:`Reactor` routes packets addressed to ``group:element`` to the
handler registered there. Handlers are ``def`` or ``async def`` functions
called with ``(data, ctx)``; data crosses as JSON-shaped values (dict, list,
tuple, str, int, float, bool, None).

    import asyncio
    import packetflow

    async def main() -> None:
        async with packetflow.Reactor(name="demo") as r:
            @r.handler("df", "transform")
            async def upper(data, ctx):
                return {"text": data["text"].upper()}

            result = await r.submit("df", "transform", {"text": "hi"})
            print(result.status, result.data)      # success {'text': 'HI'}
            print(await r.call("df", "transform", {"text": "yo"}))

    asyncio.run(main())

Actors are stateful addresses served one message at a time; their state
is a JSON value, kept only when a turn succeeds:

    @r.actor("counter")
    class Counter:
        def increment(self, message, ctx):
            self.state["value"] += 1
            return {"value": self.state["value"]}

    counter = await r.actors.create("counter", {"value": 0})
    await r.actors.send(counter, {"type": "increment"})   # {'value': 1}

The runtime is PacketFlow's Rust core: scheduling, deadlines, dependencies
and error codes are decided there; this package converts values, maps
errors to exceptions and bridges asyncio to the core without ever blocking
the event loop.
"""

from __future__ import annotations

import atexit as _atexit

from ._errors import (
    AuthenticationError,
    DependencyFailedError,
    DuplicatePacketError,
    HandlerError,
    InvalidPacketError,
    NoHandlerError,
    OverloadedError,
    PacketCancelledError,
    PacketFlowError,
    PacketTimeoutError,
    PacketTooLargeError,
    PermissionDeniedError,
    ActorNotFoundError,
    RoutingLoopError,
    UnavailableError,
    error_class,
)
from ._native import ActorContext, ActorRef, Actors, Context, Reactor, Result, __version__
from ._native import _shutdown as _native_shutdown
from ._types import ActorTypeStats, HandlerStats, NatsStats, ReactorStats, RouteCounts, TokenSpec

__all__ = [
    "Reactor",
    "Context",
    "Result",
    "Actors",
    "ActorRef",
    "ActorContext",
    "NatsStats",
    "ReactorStats",
    "HandlerStats",
    "ActorTypeStats",
    "RouteCounts",
    "NatsStats",
    "TokenSpec",
    "PacketFlowError",
    "NoHandlerError",
    "InvalidPacketError",
    "AuthenticationError",
    "PermissionDeniedError",
    "ActorNotFoundError",
    "PacketTimeoutError",
    "DuplicatePacketError",
    "PacketTooLargeError",
    "DependencyFailedError",
    "OverloadedError",
    "PacketCancelledError",
    "HandlerError",
    "UnavailableError",
    "RoutingLoopError",
    "error_class",
    "__version__",
]

# At exit, the runtime's threads must stop touching the interpreter before
# it is torn down; without this, a handler thread could wake during
# finalization.
_atexit.register(_native_shutdown)
