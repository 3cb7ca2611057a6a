"""Typed shapes of the plain dicts the API returns."""

from __future__ import annotations

from typing import List, Tuple, TypedDict

__all__ = ["HandlerStats", "ReactorStats"]


class HandlerStats(TypedDict):
    """Counters of one ``group:element`` handler (latencies in µs)."""

    group: str
    element: str
    count: int
    errors: int
    sum_us: int
    p50_us: int
    p99_us: int
    latency_buckets: List[Tuple[int, int]]


class ReactorStats(TypedDict):
    """What :meth:`Reactor.stats` returns."""

    name: str
    in_flight: int
    queued: int
    unrouted: int
    handlers: List[HandlerStats]
