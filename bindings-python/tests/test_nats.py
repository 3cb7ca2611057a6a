"""Reactors on NATS (docs/protocol.md, "NATS"): `connect` with a nats://
URL and the NATS options, against a real nats-server on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import packetflow
from packetflow import Context, Reactor

from .nats_server import NatsServer, nats_server  # noqa: F401 (a fixture)


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
