"""Nodes of three languages on a NATS cluster (docs/protocol.md, "NATS"):
three nats-server processes routed to each other on loopback; a Python, a
Node.js and an Elixir handler, each connected to a different server; and a
submitter of each language on its handler's server, so that every request
to another language crosses a route between servers. Every language
submits to every other; values and error codes cross exactly."""
import json
import os
import shutil
import socket
import time
import urllib.request

import pytest

from conftest import PARTICIPANTS, WAIT, Proc

LANGUAGES = [name for name in ("python", "node", "elixir") if name in PARTICIPANTS]
NAMESPACE = f"interop-{os.getpid()}"
PAIRS = [(s, h) for s in LANGUAGES for h in LANGUAGES if s != h]


def nats_server_bin():
    """NATS_SERVER_BIN, else nats-server on the PATH or in /usr/sbin
    (scripts/test.sh installs it through scripts/ensure-nats-server.sh)."""
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or \
        shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("nats-server not found: run scripts/ensure-nats-server.sh or set NATS_SERVER_BIN")
    return found


def free_ports(n):
    """`n` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def monitor(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.load(response)


def wait_for(check, what, timeout=WAIT):
    """Polls `check` every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster():
    """Three nats-server processes, each routing to the other two; the
    client URL of each, once every server has its two routes."""
    ports = free_ports(9)
    clients, monitors, routes = ports[0:3], ports[3:6], ports[6:9]
    procs = []
    try:
        for i in range(3):
            others = ",".join(f"nats://127.0.0.1:{routes[j]}" for j in range(3) if j != i)
            cmd = [nats_server_bin(), "-a", "127.0.0.1", "-p", str(clients[i]), "-m", str(monitors[i]),
                   "-n", f"interop-{i}", "--cluster_name", "interop", "--cluster", f"nats://127.0.0.1:{routes[i]}",
                   "--routes", others]
            procs.append(Proc(cmd, f"nats-server {i}"))
        for i, proc in enumerate(procs):
            proc.wait_for("Server is ready", "stderr")
            wait_for(lambda: monitor(monitors[i], "/routez")["num_routes"] >= 2, f"server {i}'s routes")
        yield [f"nats://127.0.0.1:{port}" for port in clients]
    finally:
        for proc in procs:
            proc.kill()


@pytest.fixture(scope="module")
def nodes(cluster):
    """The handler and the submitter of language `i` on server `i`: what a
    submitter asks of every other language crosses a route between
    servers. Every process joins the namespace NAMESPACE."""
    env = {"PF_NATS_NAMESPACE": NAMESPACE}
    procs, submitters = [], {}
    try:
        for i, name in enumerate(LANGUAGES):
            procs.append(PARTICIPANTS[name].serve(cluster[i % 3], "json", env=env))
        for i, name in enumerate(LANGUAGES):
            s = PARTICIPANTS[name].submitter(cluster[i % 3], "json", env=env)
            procs.append(s.proc)
            submitters[name] = s
        # A subscription made through one server reaches the others a
        # moment later: each submitter asks until the answer is not PF001.
        for s in submitters.values():
            for handler in LANGUAGES:
                wait_for(lambda: s.request("df", f"echo_{handler}", "probe")["status"] == "success",
                         f"{s.proc.name} to reach echo_{handler}")
        yield submitters
    finally:
        for proc in reversed(procs):
            proc.kill()


VALUES = [
    ("unicode", "héllo wörld — 中文 — 😀 𝄞 \"quoted\" \\ back"),
    ("nested", {"list": [1, -2.5, None, True], "map": {"é": [[], {}]}, "text": ""}),
    ("big integers", [2**63 - 1, -(2**63), 2**64 - 1]),
    ("large payload", "x" * 200_000),
]


def pair_id(pair):
    return f"{pair[0]}->{pair[1]}"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_values_cross_the_cluster_exactly(nodes, pair):
    submitter, handler = pair
    s = nodes[submitter]
    for label, value in VALUES:
        result = s.request("df", f"echo_{handler}", value)
        assert result["status"] == "success", f"{label}: {result}"
        assert result["data"] == value, f"{label} changed on the way"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_errors_keep_their_codes_across_the_cluster(nodes, pair):
    submitter, handler = pair
    s = nodes[submitter]
    failed = s.request("df", f"fail_{handler}", {"why": "on purpose"})
    assert failed["status"] == "error"
    assert failed["error"]["code"] == "PF500"
    assert handler in failed["error"]["message"]
    # The deadline travels with the request (Pf-Deadline-Ms).
    late = s.request("df", f"slow_{handler}", 3000, timeout_ms=200)
    assert late["error"]["code"] == "PF408", late
    nobody = s.request("df", "nobody_serves_this", 1)
    assert nobody["error"]["code"] == "PF001", nobody


@pytest.mark.skipif("node" not in LANGUAGES or "python" not in LANGUAGES, reason="needs Node.js and Python")
def test_a_handler_calls_another_language_over_the_cluster(nodes):
    """Elixir (or Python) asks Node.js's relay, whose ctx.call reaches
    Python's echo: two NATS requests, each across servers."""
    asking = nodes["elixir" if "elixir" in LANGUAGES else "python"]
    result = asking.request("df", "relay_node", {"to": "python", "data": {"n": 7}})
    assert result["status"] == "success", result
    assert result["data"] == {"via": "node", "answer": {"n": 7}}


def test_a_submit_in_another_namespace_sees_no_handler(cluster):
    """The namespace option reaches the core from each binding: a Python
    reactor in the default namespace finds none of the handlers."""
    if "python" not in PARTICIPANTS:
        pytest.skip("needs the Python binding")
    other = PARTICIPANTS["python"].submitter(cluster[0], "json", env={"PF_NATS_NAMESPACE": ""})
    try:
        for handler in LANGUAGES:
            result = other.request("df", f"echo_{handler}", "x")
            assert result["error"]["code"] == "PF001", result
    finally:
        other.proc.kill()
