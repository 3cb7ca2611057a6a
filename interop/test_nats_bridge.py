"""A node on NATS bridges WebSocket and NATS (docs/protocol.md, "NATS",
"Bridging"), between real processes: two clustered `nats-server`s, a
`packetflow serve` bridge on one and a node on the other, and seed-spec
peers (interop/seed/seed_peer.py) on WebSocket.

- a seed peer connected to the bridge reaches a handler of the node on the
  other server;
- a handler of a seed peer connected to the bridge is reached from a seed
  peer connected to the other node, once the bridge saw it serve its key.
"""
import json
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import CLI, HERE, WAIT, Proc, Submitter, health, start_hub, wait_until
from test_nats import free_ports, nats_server_bin

SEED = os.path.join(HERE, "seed", "seed_peer.py")


def monitor(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


@pytest.fixture(scope="module")
def cluster():
    """Two `nats-server`s routing to each other: their client URLs."""
    client, http, route = free_ports(2), free_ports(2), free_ports(2)
    procs = []
    try:
        for i in range(2):
            other = route[1 - i]
            procs.append(subprocess.Popen(
                [nats_server_bin(), "-a", "127.0.0.1", "-p", str(client[i]), "-m", str(http[i]),
                 "-n", f"bridge-{i}", "--cluster_name", "pf-bridge",
                 "--cluster", f"nats://127.0.0.1:{route[i]}", "--routes", f"nats://127.0.0.1:{other}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(2):
            wait_until(lambda: (monitor(http[i], "/routez") or {}).get("num_routes", 0) >= 1,
                       f"nats-server {i} routing to the other")
        yield [f"nats://127.0.0.1:{p}" for p in client]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def nodes(cluster):
    """The bridge (no handlers) on the first server and the far node
    (`df:echo_far`) on the second: their WebSocket URLs."""
    procs = []
    try:
        bridge, bridge_url = start_hub("bridge", "--nats", cluster[0])
        procs.append(bridge)
        far, far_url = start_hub("far", "--nats", cluster[1], "--handler", "df:echo_far=echo")
        procs.append(far)
        wait_until(lambda: nats_of(bridge_url).get("state") == "connected", "the bridge on NATS")
        wait_until(lambda: nats_of(far_url).get("served_keys") == 1, "the far node serving its key")
        yield bridge_url, far_url
    finally:
        for p in reversed(procs):
            p.kill()


def nats_of(url):
    """The `nats` member of a node's /health (empty until it joined)."""
    return health(url).get("nats") or {}


def seed_submitter(url, name):
    return Submitter(Proc(["python3", SEED, "submit", url], name))


def until_answered(submitter, element, data):
    """Submits until the answer is not PF001 (a subscription reaches the
    other server of the cluster a moment after it is made)."""
    deadline = time.monotonic() + WAIT
    while True:
        result = submitter.request("df", element, data)
        code = (result.get("error") or {}).get("code")
        if code != "PF001" or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def test_a_seed_peer_on_the_bridge_reaches_a_handler_behind_the_other_server(nodes):
    bridge_url, _ = nodes
    seed = seed_submitter(bridge_url, "seed submitter on the bridge")
    try:
        result = until_answered(seed, "echo_far", {"from": "a seed peer"})
        assert result["status"] == "success", result
        assert result["data"] == {"from": "a seed peer"}
        assert health(bridge_url)["routed"]["nats"] >= 1
    finally:
        seed.proc.kill()


def test_a_seed_peers_handler_is_reached_from_the_other_server_through_the_bridge(nodes):
    bridge_url, far_url = nodes
    serving = Proc(["python3", SEED, "serve", bridge_url, "edge"], "seed handler on the bridge")
    near = seed_submitter(bridge_url, "seed submitter on the bridge")
    far = seed_submitter(far_url, "seed submitter on the far node")
    try:
        serving.wait_for("ready")
        # The bridge learns the seed peer's key when it serves one packet.
        result = near.request("df", "echo_edge", "first")
        assert result["status"] == "success", result
        wait_until(lambda: nats_of(bridge_url).get("bridged_keys", 0) >= 1, "the bridge serving df:echo_edge")
        result = until_answered(far, "echo_edge", {"across": "nats"})
        assert result["status"] == "success", result
        assert result["data"] == {"across": "nats"}
    finally:
        for p in (far.proc, near.proc, serving):
            p.kill()
