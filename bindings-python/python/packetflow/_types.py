"""Typed shapes of the plain dicts the API takes and returns."""

from __future__ import annotations

from typing import List, Optional, Tuple, TypedDict

__all__ = ["ActorTypeStats", "HandlerStats", "NatsStats", "ReactorStats", "RouteCounts", "TokenSpec"]


class HandlerStats(TypedDict):
    """Counters of one ``group:element`` handler (latencies in µs)."""

    group: str
    element: str
    count: int
    errors: int
    #: Packets cancelled (answered PF499, or abandoned by their submitter
    #: or with the packet that called them); counted among ``errors`` too.
    cancelled: int
    sum_us: int
    p50_us: int
    p99_us: int
    latency_buckets: List[Tuple[int, int]]


class ActorTypeStats(TypedDict):
    """Counters of one actor type hosted by a reactor."""

    actor_type: str
    #: Actors in memory.
    active: int
    #: Actors in the store and not in memory.
    passivated: int
    #: Times an actor came into memory (created, loaded or activated).
    activations: int
    #: Times an idle actor left memory.
    passivations: int
    #: Told messages whose turn failed (nobody awaited their answer).
    tells_failed: int


class RouteCounts(TypedDict):
    """Packets by the route that took them."""

    #: Answered by a local handler.
    local: int
    #: Sent to a WebSocket peer.
    websocket: int
    #: Sent as a NATS request.
    nats: int


class NatsStats(TypedDict):
    """The node's connection to NATS."""

    #: ``connected``, ``disconnected`` or ``connecting``.
    state: str
    #: ``host:port`` of the server in use.
    server: str
    #: The last round trip to the server, µs.
    rtt_us: int
    #: Keys served on NATS (the reactor's and its peers').
    served_keys: int
    #: Of those, the keys of WebSocket peers served there for them.
    bridged_keys: int
    requests_sent: int
    requests_served: int
    #: The live members of the cluster (node ids, this node's among them,
    #: sorted); ``None`` unless it joined with ``membership`` or
    #: ``actor_store``.
    members: Optional[List[str]]


class ReactorStats(TypedDict):
    """What :meth:`Reactor.stats` returns."""

    name: str
    in_flight: int
    queued: int
    unrouted: int
    #: Packets cancelled while forwarded to a peer (those run here are
    #: counted per handler).
    forwards_cancelled: int
    handlers: List[HandlerStats]
    actors: List[ActorTypeStats]
    routed: RouteCounts
    #: ``None`` unless the reactor's node joined NATS.
    nats: Optional[NatsStats]


class _TokenName(TypedDict):
    name: str


class TokenSpec(_TokenName, total=False):
    """One token a listener accepts (``Reactor.listen(..., tokens=[...])``).

    ``name`` (required) is shown in error messages, never the token. Give
    exactly one of ``token`` (the secret, at least 16 bytes of visible
    ASCII) and ``token_sha256`` (its SHA-256 in hex, so the code need not
    hold the secret). ``submit`` and ``serve`` are the ``group:element``
    patterns a peer with this token may submit and serve: ``"*"``,
    ``"df:*"``, ``"df:transform"``, ``"df:user.*"``; a missing list allows
    nothing. ``dashboard`` (default ``False``) lets the token open the
    node's dashboard (``/ui/``). The same fields as an entry of a tokens
    file.
    """

    token: str
    token_sha256: str
    submit: List[str]
    serve: List[str]
    dashboard: bool
