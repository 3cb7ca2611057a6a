"""Shared fixtures: a fresh reactor per test, stopped afterwards."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterator

import pytest

import packetflow


@pytest.fixture
async def reactor() -> AsyncIterator[packetflow.Reactor]:
    r = packetflow.Reactor(name="test")
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def sync_reactor() -> Iterator[packetflow.Reactor]:
    r = packetflow.Reactor(name="test-sync")
    try:
        yield r
    finally:
        r.stop_sync()


async def wait_for(event: asyncio.Event, timeout: float = 5.0) -> None:
    """Waits on `event`, failing the test instead of hanging."""
    await asyncio.wait_for(event.wait(), timeout)
