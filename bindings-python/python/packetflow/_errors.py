"""PacketFlow's exceptions: one base class with the protocol's error code,
and a subclass per code family, some also deriving from the builtin a
Python programmer would catch (a deadline is also a ``TimeoutError``)."""

from __future__ import annotations

from typing import Dict, Type

__all__ = [
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
]


class PacketFlowError(Exception):
    """A packet failed, or a PacketFlow operation was refused.

    ``code`` is the protocol's error code (``"PF500"``), ``message`` says
    what went wrong. ``str(err)`` is ``"PF500: message"``. A handler may
    raise one to fail its packet with that code.
    """

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class NoHandlerError(PacketFlowError, LookupError):
    """PF001: no handler for ``group:element`` here or on any reachable peer."""


class InvalidPacketError(PacketFlowError, ValueError):
    """PF400: a malformed packet or frame; the message names the field."""


class AuthenticationError(PacketFlowError, PermissionError):
    """PF401: missing or wrong credentials."""


class PermissionDeniedError(PacketFlowError, PermissionError):
    """PF403: credentials valid, but not allowed for this ``group:element``."""


class ActorNotFoundError(PacketFlowError, LookupError):
    """PF404: no actor with that id, and its type declares no initial state."""


class PacketTimeoutError(PacketFlowError, TimeoutError):
    """PF408: the packet's ``timeout_ms`` elapsed before a result."""


class DuplicatePacketError(PacketFlowError):
    """PF409: a conflict: a packet with the same id is already in flight, an actor
    with that id already exists, or a reentrant message tried to change its
    actor's state."""


class PacketTooLargeError(PacketFlowError, ValueError):
    """PF413: the frame is larger than the node accepts."""


class DependencyFailedError(PacketFlowError):
    """PF424: a dependency of the packet failed or timed out."""


class OverloadedError(PacketFlowError):
    """PF429: overloaded (queue full, window exhausted, rate limit); retry later."""


class PacketCancelledError(PacketFlowError):
    """PF499: the packet was cancelled: by its submitter, by the connection it
    came through going away, or with the packet that called it."""


class HandlerError(PacketFlowError):
    """PF500: the handler raised, or returned something JSON cannot carry.

    The message starts with the exception's type, e.g. ``"ValueError: bad input"``.
    """


class UnavailableError(PacketFlowError, ConnectionError):
    """PF503: the reactor is stopping, or the peer holding the packet went away."""


class RoutingLoopError(PacketFlowError):
    """PF508: the packet exceeded the hop limit (a routing loop)."""


_BY_CODE: Dict[str, Type[PacketFlowError]] = {
    "PF001": NoHandlerError,
    "PF400": InvalidPacketError,
    "PF401": AuthenticationError,
    "PF403": PermissionDeniedError,
    "PF404": ActorNotFoundError,
    "PF408": PacketTimeoutError,
    "PF409": DuplicatePacketError,
    "PF413": PacketTooLargeError,
    "PF424": DependencyFailedError,
    "PF429": OverloadedError,
    "PF499": PacketCancelledError,
    "PF500": HandlerError,
    "PF503": UnavailableError,
    "PF508": RoutingLoopError,
}


def error_class(code: str) -> Type[PacketFlowError]:
    """The exception class used for ``code`` (``PacketFlowError`` if unknown)."""
    return _BY_CODE.get(code, PacketFlowError)


