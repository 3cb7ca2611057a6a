"""listen/connect with tokens and TLS: the options reach the core, and its
refusals (PF401, PF403, PF400, TLS failures) arrive as the usual
exceptions."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
from typing import Any, AsyncIterator, List, Tuple

import pytest
import trustme

import packetflow
from packetflow import Reactor, TokenSpec

CLIENT_TOKEN = "client-token-0123456789"
UPPER_ONLY_TOKEN = "upper-only-token-0123456789"
OTHER_TOKEN = "not-a-known-token-0123456789"

TOKENS: List[TokenSpec] = [
    {"name": "client", "token": CLIENT_TOKEN, "submit": ["df:*"]},
    {"name": "upper-only", "token": UPPER_ONLY_TOKEN, "submit": ["df:upper"]},
]


async def no_route_to(client: Reactor, group: str, element: str) -> None:
    """Waits (bounded) until a submit to ``group:element`` is PF001."""
    for _ in range(500):
        res = await client.submit(group, element, None, timeout_ms=1000)
        if isinstance(res.error, packetflow.NoHandlerError):
            return
        assert isinstance(res.error, packetflow.UnavailableError), res
        await asyncio.sleep(0.01)
    raise AssertionError(f"{group}:{element} stayed routed to a peer")


def url_of(addr: str, scheme: str = "ws") -> str:
    return f"{scheme}://{addr}/packetflow/v1"


def serving(name: str) -> Reactor:
    server = Reactor(name=name)
    server.register("df", "upper", lambda data, ctx: data.upper())
    server.register("df", "secret", lambda data, ctx: "the secret")
    return server


@pytest.fixture
async def guarded() -> AsyncIterator[Tuple[Reactor, str]]:
    """A server that requires one of TOKENS."""
    server = serving("guarded")
    try:
        addr = await server.listen("127.0.0.1:0", tokens=TOKENS)
        yield server, addr
    finally:
        await server.stop()


async def test_the_right_token_is_let_in(guarded: Tuple[Reactor, str]) -> None:
    _, addr = guarded
    async with Reactor(name="with-token") as client:
        await client.connect(url_of(addr), token=CLIENT_TOKEN)
        assert await client.call("df", "upper", "let in") == "LET IN"
        assert await client.call("df", "secret") == "the secret"


@pytest.mark.parametrize("token", [OTHER_TOKEN, None], ids=["wrong", "missing"])
async def test_a_wrong_or_missing_token_is_pf401(guarded: Tuple[Reactor, str], token: Any) -> None:
    _, addr = guarded
    async with Reactor(name="refused") as client:
        with pytest.raises(packetflow.AuthenticationError) as info:
            await client.connect(url_of(addr), token=token)
        assert info.value.code == "PF401"
        assert isinstance(info.value, PermissionError)
        # The message never shows a token.
        assert OTHER_TOKEN not in str(info.value)
        # Nothing stays connected: once the refused connection has closed,
        # the server's handlers are out of reach. (Until then the core may
        # still route to it and get PF503: see no_route_to.)
        await no_route_to(client, "df", "upper")


async def test_a_token_without_the_permission_is_pf403(guarded: Tuple[Reactor, str]) -> None:
    _, addr = guarded
    async with Reactor(name="limited") as client:
        await client.connect(url_of(addr), token=UPPER_ONLY_TOKEN)
        assert await client.call("df", "upper", "allowed") == "ALLOWED"
        res = await client.submit("df", "secret", None)
        assert isinstance(res.error, packetflow.PermissionDeniedError), res
        assert res.error.code == "PF403"
        assert "upper-only" in res.error.message and "df:secret" in res.error.message
        with pytest.raises(packetflow.PermissionDeniedError):
            await client.call("df", "secret")
        # The connection stays usable.
        assert await client.call("df", "upper", "still") == "STILL"


async def test_tokens_from_a_file_and_inline_add_up(tmp_path: pathlib.Path) -> None:
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(
        '[[tokens]]\nname = "from-file"\ntoken = "from-the-file-0123456789"\nsubmit = ["df:*"]\n'
    )
    server = serving("file-auth")
    try:
        # A pathlib.Path for the file, a str would do as well.
        addr = await server.listen("127.0.0.1:0", auth_file=tokens_file, tokens=TOKENS[:1])
        for token in ("from-the-file-0123456789", CLIENT_TOKEN):
            async with Reactor(name="file-client") as client:
                await client.connect(url_of(addr), token=token)
                assert await client.call("df", "upper", "f") == "F"
        async with Reactor(name="file-refused") as client:
            with pytest.raises(packetflow.AuthenticationError):
                await client.connect(url_of(addr), token=OTHER_TOKEN)
    finally:
        await server.stop()


async def test_bad_tokens_files_and_tokens_are_pf400(reactor: Reactor, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(packetflow.InvalidPacketError, match="cannot read tokens file .*missing.toml"):
        await reactor.listen("127.0.0.1:0", auth_file=str(missing))
    typo = tmp_path / "typo.json"
    typo.write_text('{"tokens": [{"name": "t", "token": "0123456789abcdefgh", "sumbit": ["*"]}]}')
    with pytest.raises(packetflow.InvalidPacketError, match=r"typo.json: tokens\[0\]: unknown field \"sumbit\""):
        await reactor.listen("127.0.0.1:0", auth_file=typo)
    with pytest.raises(packetflow.InvalidPacketError, match="at least 16 bytes") as info:
        await reactor.listen("127.0.0.1:0", tokens=[{"name": "short", "token": "tiny"}])
    assert "tiny" not in str(info.value)
    with pytest.raises(packetflow.InvalidPacketError, match="exactly one of token and token_sha256"):
        await reactor.listen("127.0.0.1:0", tokens=[{"name": "none"}])
    with pytest.raises(packetflow.InvalidPacketError, match="submit"):
        await reactor.listen("127.0.0.1:0", tokens=[{"name": "p", "token": CLIENT_TOKEN, "submit": ["zz:x"]}])
    # A token that cannot travel in an HTTP header.
    with pytest.raises(packetflow.InvalidPacketError, match="visible ASCII"):
        await reactor.connect("ws://127.0.0.1:1/packetflow/v1", token="has a\nnewline")


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"auth_file": 5}, TypeError, "auth_file must be a str or os.PathLike, got int"),
        ({"tls_cert": b"x.pem"}, TypeError, "tls_cert must be a str or os.PathLike, got bytes"),
        ({"tls_key": ["k"]}, TypeError, "tls_key must be a str or os.PathLike, got list"),
        ({"tokens": {1}}, TypeError, "tokens: set is not JSON-serializable"),
        ({"tokens": [{"name": "a", "token": b"x"}]}, TypeError, r'tokens\[0\]\["token"\]: bytes is not JSON-serializable'),
        # Once converted, tokens are the core's to judge, as in a tokens file.
        ({"tokens": "abc"}, packetflow.InvalidPacketError, "tokens must be a list of token maps, got a string"),
        ({"tokens": {"name": "x"}}, packetflow.InvalidPacketError, "tokens must be a list of token maps, got a map"),
        ({"tokens": ["x"]}, packetflow.InvalidPacketError, r"tokens\[0\] must be a map"),
        ({"tokens": [{"token": CLIENT_TOKEN}]}, packetflow.InvalidPacketError, r"tokens\[0\]\.name is missing"),
        ({"tokens": [{"name": "a", "sumbit": []}]}, packetflow.InvalidPacketError, r'tokens\[0\]: unknown field "sumbit"'),
        ({"tokens": [{"name": 1}]}, packetflow.InvalidPacketError, r"tokens\[0\]\.name must be a string, got 1"),
        ({"tokens": [{"name": "a", "token": 12345}]}, packetflow.InvalidPacketError, r"tokens\[0\]\.token must be a string, got a number"),
        ({"tokens": [{"name": "a", "submit": "df:*"}]}, packetflow.InvalidPacketError, r"tokens\[0\]\.submit must be an array of patterns"),
        ({"tokens": [{"name": "a", "serve": ["df:*", 7]}]}, packetflow.InvalidPacketError, r"tokens\[0\]\.serve must hold strings, got 7"),
    ],
)
async def test_listen_options_of_the_wrong_shape(
    reactor: Reactor, kwargs: Any, error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        await reactor.listen("127.0.0.1:0", **kwargs)
    with pytest.raises(error, match=fragment):
        reactor.listen_sync("127.0.0.1:0", **kwargs)


async def test_connect_options_of_the_wrong_shape(reactor: Reactor) -> None:
    url = "ws://127.0.0.1:1/packetflow/v1"
    with pytest.raises(TypeError, match="token must be str, got int"):
        await reactor.connect(url, token=123456789)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tls_ca must be a str or os.PathLike, got int"):
        await reactor.connect(url, tls_ca=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await reactor.connect(url, False, "token")  # type: ignore[misc]


def test_sync_faces_take_the_options() -> None:
    server = serving("sync-guarded")
    client = Reactor(name="sync-client")
    refused = Reactor(name="sync-refused")
    try:
        addr = server.listen_sync("127.0.0.1:0", tokens=TOKENS)
        with pytest.raises(packetflow.AuthenticationError):
            refused.connect_sync(url_of(addr), token=OTHER_TOKEN)
        client.connect_sync(url_of(addr), token=UPPER_ONLY_TOKEN, msgpack=True)
        assert client.call_sync("df", "upper", "sync") == "SYNC"
        with pytest.raises(packetflow.PermissionDeniedError):
            client.call_sync("df", "secret")
    finally:
        refused.stop_sync()
        client.stop_sync()
        server.stop_sync()


class Tls:
    """A CA made for this test, a certificate it issued for 127.0.0.1 and
    localhost, and the three PEM files."""

    def __init__(self, folder: pathlib.Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = folder / "ca.pem"
        self.cert = folder / "node.crt"
        self.key = folder / "node.key"
        ca.cert_pem.write_to_path(str(self.ca))
        for i, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(str(self.cert), append=i > 0)
        cert.private_key_pem.write_to_path(str(self.key))


@pytest.fixture
def tls(tmp_path: pathlib.Path) -> Tls:
    return Tls(tmp_path)


async def test_a_round_trip_over_wss(tls: Tls) -> None:
    server = serving("tls-server")
    try:
        addr = await server.listen("127.0.0.1:0", tls_cert=tls.cert, tls_key=str(tls.key))
        async with Reactor(name="tls-client") as client:
            # Registered before connecting: the server learns it in the hello.
            client.register("cf", "back", lambda data, ctx: {"back": data})
            await client.connect(url_of(addr, "wss"), tls_ca=tls.ca)
            assert await client.call("df", "upper", "encrypted") == "ENCRYPTED"
            # And the other way, over the same connection.
            assert await server.call("cf", "back", [1, "two"]) == {"back": [1, "two"]}
        # MessagePack over TLS too.
        async with Reactor(name="tls-msgpack") as client:
            await client.connect(url_of(addr, "wss"), tls_ca=tls.ca, msgpack=True)
            assert await client.call("df", "upper", "packed") == "PACKED"
    finally:
        await server.stop()


async def test_tls_and_a_token_together(tls: Tls) -> None:
    server = serving("tls-auth")
    try:
        addr = await server.listen("127.0.0.1:0", tokens=TOKENS, tls_cert=tls.cert, tls_key=tls.key)
        port = addr.rsplit(":", 1)[1]
        async with Reactor(name="tls-auth-client") as client:
            with pytest.raises(packetflow.AuthenticationError):
                await client.connect(url_of(addr, "wss"), tls_ca=tls.ca)
            # By name: the certificate is valid for localhost too.
            await client.connect(f"wss://localhost:{port}/packetflow/v1", tls_ca=tls.ca, token=CLIENT_TOKEN)
            assert await client.call("df", "upper", "both") == "BOTH"
    finally:
        await server.stop()


async def test_tls_failures(tls: Tls, tmp_path: pathlib.Path) -> None:
    server = serving("tls-failures")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    try:
        addr = await server.listen("127.0.0.1:0", tls_cert=tls.cert, tls_key=tls.key)
        async with Reactor(name="tls-failing") as client:
            # A CA that did not issue the node's certificate.
            with pytest.raises(packetflow.UnavailableError, match="TLS handshake failed.*UnknownIssuer"):
                await client.connect(url_of(addr, "wss"), tls_ca=other_ca)
            # Plain WebSocket to a TLS listener.
            with pytest.raises(packetflow.PacketFlowError):
                await client.connect(url_of(addr, "ws"))
            # An unreadable CA file.
            with pytest.raises(packetflow.InvalidPacketError, match="CA file"):
                await client.connect(url_of(addr, "wss"), tls_ca=tmp_path / "nope.pem")
            # The listener still serves a good client.
            await client.connect(url_of(addr, "wss"), tls_ca=tls.ca)
            assert await client.call("df", "upper", "fine") == "FINE"
    finally:
        await server.stop()


async def test_bad_tls_files_are_pf400(reactor: Reactor, tls: Tls, tmp_path: pathlib.Path) -> None:
    with pytest.raises(packetflow.InvalidPacketError, match="cannot read TLS certificate"):
        await reactor.listen("127.0.0.1:0", tls_cert=tmp_path / "none.crt", tls_key=tls.key)
    not_pem = tmp_path / "plain.txt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(packetflow.InvalidPacketError, match="TLS certificate .*plain.txt"):
        await reactor.listen("127.0.0.1:0", tls_cert=not_pem, tls_key=tls.key)
    with pytest.raises(packetflow.InvalidPacketError, match="TLS key"):
        await reactor.listen("127.0.0.1:0", tls_cert=tls.cert, tls_key=not_pem)
    # Both or neither.
    with pytest.raises(packetflow.InvalidPacketError):
        await reactor.listen("127.0.0.1:0", tls_cert=tls.cert)


async def test_a_token_given_by_its_sha256() -> None:
    digest = hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()
    server = serving("hashed")
    try:
        addr = await server.listen(
            "127.0.0.1:0", tokens=[{"name": "hashed", "token_sha256": digest.upper(), "submit": ["df:upper"]}]
        )
        async with Reactor(name="hashed-client") as client:
            await client.connect(url_of(addr), token=CLIENT_TOKEN)
            assert await client.call("df", "upper", "h") == "H"
            with pytest.raises(packetflow.PermissionDeniedError):
                await client.call("df", "secret")
        async with Reactor(name="hashed-refused") as client:
            # The digest itself is not the token.
            with pytest.raises(packetflow.AuthenticationError):
                await client.connect(url_of(addr), token=digest)
    finally:
        await server.stop()
