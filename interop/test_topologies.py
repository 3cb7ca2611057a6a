"""Topologies beyond hub and spoke: a Python reactor that others dial
directly, a chain where a Node handler calls an Elixir handler through
`ctx.call`, and busy routes that go around their hub (direct paths)."""
import os

import pytest

from conftest import HERE, PARTICIPANTS, PYTHON_VENV, Proc, health, start_hub


def need(*names):
    missing = [n for n in names if n not in PARTICIPANTS]
    if missing:
        pytest.skip(f"participants not available: {missing} (their bindings are not built)")


VALUE = {"text": "naïve 𝄞", "n": [1, 2.5, None, True], "nested": {"empty": []}}


def test_direct_python_listens_node_and_elixir_dial_it(world):
    need("python", "node", "elixir")
    listener = Proc([PYTHON_VENV, os.path.join(HERE, "participants", "pf_python.py"), "listen", "python"],
                    "python listener")
    world.procs.append(listener)
    url = listener.wait_for("ready").split()[1]

    # An Elixir handler dials the Python reactor too.
    world.procs.append(PARTICIPANTS["elixir"].serve(url, "json"))
    node = PARTICIPANTS["node"].submitter(url, "json")
    elixir = PARTICIPANTS["elixir"].submitter(url, "msgpack")
    world.procs += [node.proc, elixir.proc]

    for s in (node, elixir):
        assert s.request("df", "echo_python", VALUE) == {"status": "success", "data": VALUE}
        failed = s.request("df", "fail_python", 1)
        assert failed["error"]["code"] == "PF500" and "boom from python" in failed["error"]["message"]
    # Node reaches the Elixir handler through the Python reactor it dialled.
    assert node.request("df", "echo_elixir", VALUE) == {"status": "success", "data": VALUE}


def test_chain_node_handler_calls_elixir_handler(world):
    need("node", "elixir", "python")
    hub, hub_url = start_hub("hub-chain")
    world.procs.append(hub)
    world.procs.append(PARTICIPANTS["elixir"].serve(hub_url, "msgpack"))
    world.procs.append(PARTICIPANTS["node"].serve(hub_url, "json"))
    s = PARTICIPANTS["python"].submitter(hub_url, "json")
    world.procs.append(s.proc)

    result = s.request("df", "relay_node", {"to": "elixir", "data": VALUE})
    assert result == {"status": "success", "data": {"via": "node", "answer": VALUE}}
    # A failure deep in the chain comes back as an error naming its cause.
    result = s.request("df", "relay_node", {"to": "nobody", "data": 1})
    assert result["status"] == "error", result
    assert result["error"]["code"] in ("PF001", "PF500"), result
    assert "echo_nobody" in result["error"]["message"], result


def test_busy_routes_go_direct_between_reactors_of_every_binding(world):
    """A reactor that only `connect`s listens for direct links by itself;
    once a route is busy, its packets stop crossing the hub (the hub's
    count for the handler stops growing), with the same answers."""
    need("python", "node", "elixir")
    for sub, han in (("python", "node"), ("node", "elixir"), ("elixir", "python")):
        url = world.hub(han, "json")
        s = world.submitter(sub, url, "json")

        def through_hub():
            peers = health(url)["peers"]
            return sum(p["submitted"] for p in peers if f"df:echo_{han}" in (p["handlers"] or []))

        # 16 packets make a route busy; the link is up some round trips
        # later (how many depends on the machine's load): send in rounds of
        # 20 until a whole round goes around the hub, at most 50 rounds.
        sent, crossed_rounds = 0, []
        for _ in range(50):
            before = through_hub()
            for _ in range(20):
                data = {"i": sent, "text": "naïve"}
                assert s.request("df", f"echo_{han}", data) == {"status": "success", "data": data}
                sent += 1
            crossed_rounds.append(through_hub() - before)
            if crossed_rounds[-1] == 0:
                break
        assert crossed_rounds[-1] == 0, f"{sub} -> {han}: every round crossed the hub: {crossed_rounds}"
