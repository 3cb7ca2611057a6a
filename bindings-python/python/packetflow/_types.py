"""Typed shapes of the plain dicts the API takes and returns."""

from __future__ import annotations

from typing import List, Optional, Tuple, TypedDict

__all__ = ["ActorTypeStats", "HandlerStats", "NatsStats", "ReactorStats", "TokenSpec"]


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


class NatsStats(TypedDict):
    """The reactor's connection to NATS (``GET /health``'s ``nats`` member)."""

    #: ``"connected"``, ``"disconnected"`` or ``"connecting"``.
    state: str
    #: ``host:port`` of the server in use.
    server: str
    server_name: str
    server_version: str
    #: The server's largest message, in bytes.
    max_payload: int
    #: The last round trip to the server, in µs (measured every 5 s).
    rtt_us: int
    namespace: str
    #: Handler keys served (subscribed) on NATS.
    served_keys: int
    #: Connections made after a loss.
    reconnects: int
    #: The client's last event, e.g. ``"connected"``.
    last_event: Optional[str]
    #: Packets sent as NATS requests, and requests this reactor answered.
    requests_sent: int
    requests_served: int
    #: Requests answered PF001 (no responders), PF408, PF503 (the
    #: connection was down or lost) and PF413 (over ``max_payload``).
    no_responders: int
    timed_out: int
    lost: int
    too_large: int


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
    #: ``None`` until the reactor joins NATS (``connect("nats://...")``).
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
