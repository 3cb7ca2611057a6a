"""Reactors on NATS (docs/protocol.md, "NATS"): `connect` with a nats://
URL and the NATS options, against a real nats-server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

import packetflow
from packetflow import Context, Reactor

from .nats_server import NatsServer, jetstream_server, nats_server  # noqa: F401 (fixtures)

WAIT = 10.0  # seconds a member has to show in another's view


async def test_a_handler_is_called_from_another_reactor_through_nats(nats_server: NatsServer) -> None:  # noqa: F811
    serving, asking = Reactor(name="serving"), Reactor(name="asking")
    try:

        @serving.handler("df", "upper")
        async def upper(data: Any, ctx: Context) -> Any:
            return {"upper": data.upper(), "trace": ctx.metadata.get("trace")}

        await serving.connect(nats_server.url, namespace="py-test", name="py serving")
        await asking.connect(nats_server.url, namespace="py-test", connect_timeout_ms=2000)
        result = await asking.submit("df", "upper", "over nats", metadata={"trace": "t-1"}, timeout_ms=5000)
        assert result.ok, result
        assert result.data == {"upper": "OVER NATS", "trace": "t-1"}
        errors = await asking.submit("df", "missing", None)
        assert errors.error is not None and errors.error.code == "PF001"

        nats = asking.stats()["nats"]
        assert nats is not None
        assert nats["state"] == "connected"
        assert nats["server"] == f"127.0.0.1:{nats_server.port}"
        assert nats["requests_sent"] == 2
        assert nats["rtt_us"] > 0
        assert nats["members"] is None  # joined without membership
        served = serving.stats()["nats"]
        assert served is not None and served["requests_served"] == 1 and served["served_keys"] == 1
    finally:
        await asking.stop()
        await serving.stop()


def test_connect_sync_joins_nats_too(nats_server: NatsServer) -> None:  # noqa: F811
    serving, asking = Reactor(name="serving-sync"), Reactor(name="asking-sync")
    try:
        serving.register("df", "twice", lambda data, ctx: data * 2)
        serving.connect_sync(nats_server.url)
        asking.connect_sync(nats_server.url)
        assert asking.call_sync("df", "twice", 21) == 42
    finally:
        asking.stop_sync()
        serving.stop_sync()


async def test_a_reactor_off_nats_shows_none(reactor: Reactor) -> None:
    assert reactor.stats()["nats"] is None


@pytest.mark.parametrize(
    "options, named",
    [
        ({"namespace": "a.*"}, "namespace must be"),
        ({"user": "pf"}, "user and password must be given together"),
        ({"tls_cert": "/nonexistent/c.pem"}, "tls_cert and tls_key must be given together"),
        ({"tls_ca": "/nonexistent/ca.pem"}, "tls_ca /nonexistent/ca.pem"),
        ({"credentials_file": "/nonexistent/x.creds"}, "credentials_file /nonexistent/x.creds"),
        ({"connect_timeout_ms": 0}, "connect_timeout_ms must be at least 1"),
        ({"msgpack": True}, "msgpack is an option of WebSocket peers"),
        ({"membership": True, "membership_heartbeat_ms": 0}, "membership_heartbeat_ms must be from 10 to 60000 ms"),
        ({"actor_store": True, "membership_heartbeat_ms": 60001}, "membership_heartbeat_ms must be from 10 to"),
        ({"membership_heartbeat_ms": 250}, "membership_heartbeat_ms is the heartbeat of membership"),
    ],
)
async def test_a_bad_option_is_pf400_naming_it(reactor: Reactor, options: Any, named: str) -> None:
    # Judged before any server is dialled: no server is needed.
    with pytest.raises(packetflow.InvalidPacketError) as caught:
        await reactor.connect("nats://127.0.0.1:4222", **options)
    assert caught.value.code == "PF400"
    assert caught.value.message.startswith(named), caught.value.message
    assert reactor.stats()["nats"] is None


async def test_nats_options_for_a_websocket_url_are_pf400(reactor: Reactor) -> None:
    with pytest.raises(packetflow.InvalidPacketError, match="^PF400: namespace is an option of NATS URLs"):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", namespace="pf")


async def test_the_cluster_options_for_a_websocket_url_are_pf400(reactor: Reactor) -> None:
    with pytest.raises(packetflow.InvalidPacketError, match="^PF400: actor_store is an option of NATS URLs"):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", actor_store=True)


async def test_actor_store_on_a_reactor_with_a_file_store_is_pf400_naming_it(tmp_path: Path) -> None:
    # Judged before any server is dialled: the actor types would be split
    # between two stores.
    r = Reactor(name="file-store", actor_store=tmp_path / "actors.db")
    try:
        with pytest.raises(packetflow.InvalidPacketError) as caught:
            await r.connect("nats://127.0.0.1:4222", actor_store=True)
        assert caught.value.code == "PF400"
        assert caught.value.message.startswith("actor_store: actor types are registered with another store")
    finally:
        await r.stop()


def health(addr: str) -> Dict[str, Any]:
    """The `GET /health` document of a reactor listening on `addr`."""
    with urllib.request.urlopen(f"http://{addr}/health", timeout=5) as response:
        document: Dict[str, Any] = json.load(response)
        return document


async def membership_showing(addr: str, members: List[str]) -> Dict[str, Any]:
    """`nats.membership` of the reactor at `addr` once it lists exactly
    `members` (polled every 20 ms, for at most WAIT seconds)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        seen = (await asyncio.to_thread(health, addr))["nats"]["membership"]
        if seen is not None and sorted(seen["members"]) == sorted(members):
            return dict(seen)
        assert asyncio.get_running_loop().time() < deadline, f"{addr} never listed {members}: {seen}"
        await asyncio.sleep(0.02)


async def test_members_show_in_each_others_view(jetstream_server: NatsServer) -> None:  # noqa: F811
    a, b = Reactor(name="member-a"), Reactor(name="member-b")
    try:
        a_addr, b_addr = await a.listen("127.0.0.1:0"), await b.listen("127.0.0.1:0")
        ids = [(await asyncio.to_thread(health, addr))["node_id"] for addr in (a_addr, b_addr)]
        await a.connect(jetstream_server.url, namespace="py.members", membership=True, membership_heartbeat_ms=250)
        # `actor_store` implies membership.
        await b.connect(jetstream_server.url, namespace="py.members", actor_store=True)
        seen = await membership_showing(a_addr, ids)
        # `a` made the bucket with its heartbeat: a TTL of three.
        assert seen["bucket"] == "py_members_members"
        assert (seen["heartbeat_ms"], seen["ttl_ms"]) == (250, 750)
        # `b` found the bucket there and beats at a third of its TTL.
        seen = await membership_showing(b_addr, ids)
        assert seen["heartbeat_ms"] == 250
        # stats() shows the members /health shows.
        for member in (a, b):
            nats = member.stats()["nats"]
            assert nats is not None and nats["members"] == sorted(ids)
        # A member that stops deletes its entry: it leaves the view.
        await b.stop()
        await membership_showing(a_addr, ids[:1])
    finally:
        await b.stop()
        await a.stop()


def test_connect_sync_judges_the_options_alike(sync_reactor: Reactor) -> None:
    with pytest.raises(packetflow.InvalidPacketError, match="^PF400: require_tls is an option of NATS URLs"):
        sync_reactor.connect_sync("ws://127.0.0.1:1/packetflow/v1", require_tls=True)
    with pytest.raises(packetflow.InvalidPacketError, match="^PF400: tls_cert and tls_key must be given together"):
        sync_reactor.connect_sync("nats://127.0.0.1:4222", tls_key="k.pem")


async def test_values_of_the_wrong_type_are_type_errors(reactor: Reactor) -> None:
    with pytest.raises(TypeError, match="password must be str, got int"):
        await reactor.connect("nats://127.0.0.1:4222", user="pf", password=1234)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tls_key must be a str or os.PathLike, got bytes"):
        await reactor.connect("nats://127.0.0.1:4222", tls_key=b"k.pem")  # type: ignore[arg-type]


async def test_an_unreachable_server_is_pf503(reactor: Reactor) -> None:
    # A port nobody listens on: bound, read, and released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(packetflow.UnavailableError) as caught:
        await asyncio.wait_for(reactor.connect(f"nats://127.0.0.1:{port}", connect_timeout_ms=2000), 30)
    assert caught.value.code == "PF503"
    assert f"127.0.0.1:{port}" in caught.value.message
    assert reactor.stats()["nats"] is None


async def test_a_server_refusing_the_credentials_is_pf401() -> None:
    server = NatsServer("--user", "pf", "--pass", "right-password")
    r = Reactor(name="refused")
    try:
        with pytest.raises(packetflow.AuthenticationError) as caught:
            await r.connect(server.url, user="pf", password="wrong-password")
        assert caught.value.code == "PF401"
        assert "wrong-password" not in caught.value.message
        await r.connect(server.url, user="pf", password="right-password")
        assert r.stats()["nats"] is not None
    finally:
        await r.stop()
        server.stop()
