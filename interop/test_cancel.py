"""Cancellation across languages and hops: a Python submitter withdraws a
call to a Node.js handler that `ctx.call`s an Elixir handler, all through a
`packetflow serve` hub. Both handlers observe it within 50 ms of the
withdrawal, the call ends PF499, and nothing stays in flight on any node.
(That a seed-spec peer never receives a cancel frame is tests/tests/cancel.rs's.)"""
import json

from conftest import PARTICIPANTS, WAIT, health, start_hub, wait_until

# What the issue allows between the withdrawal and each handler hearing of it.
OBSERVED_WITHIN_US = 50_000


def next_event(proc, element, kind, timeout=WAIT):
    """The next `{event: kind, element}` line a handler process printed."""
    while True:
        line = proc.line(timeout=timeout)
        if not line.startswith("{"):
            continue
        seen = json.loads(line)
        if seen.get("element") == element and seen.get("event") in (kind, "busy"):
            assert seen["event"] == kind, f"{proc.name}: {seen}"
            return seen


def test_a_withdrawn_call_stops_every_handler_down_a_chain_of_languages(world):
    hub, url = start_hub("hub-cancel")
    world.procs.append(hub)
    node = PARTICIPANTS["node"].serve(url, "json")
    world.procs.append(node)
    elixir = PARTICIPANTS["elixir"].serve(url, "json")
    world.procs.append(elixir)
    submitter = PARTICIPANTS["python"].submitter(url, "json")
    world.procs.append(submitter.proc)
    wait_until(lambda: {"df:cancel_chain_node", "df:cancel_leaf_elixir"} <= set(
        k for p in health(url)["peers"] for k in (p.get("handlers") or [])), "the hub to route both handlers")

    submitter.next_id += 1
    call = submitter.next_id
    submitter.proc.send({"id": call, "group": "df", "element": "cancel_chain_node",
                         "data": {"next": "cancel_leaf_elixir"}, "packet_id": "interop-cancel-1", "timeout_ms": 30_000})
    next_event(node, "cancel_chain_node", "started")
    next_event(elixir, "cancel_leaf_elixir", "started")

    submitter.next_id += 1
    withdraw = submitter.next_id
    submitter.proc.send({"id": withdraw, "cancel": "interop-cancel-1"})
    withdrawn = submitter.wait(withdraw)
    assert withdrawn["cancelled"] is True
    result = submitter.wait(call)
    assert result["status"] == "error" and result["error"]["code"] == "PF499", result

    for proc, element in ((node, "cancel_chain_node"), (elixir, "cancel_leaf_elixir")):
        seen = next_event(proc, element, "cancelled")
        took = seen["at_us"] - withdrawn["at_us"]
        assert took <= OBSERVED_WITHIN_US, f"{element} heard of the withdrawal after {took} µs"
        # Its node has nothing in flight any more (the handler's reactor says so).
        next_event(proc, element, "idle")
    wait_until(lambda: health(url)["in_flight"] == 0 and all(p["in_flight"] == 0 for p in health(url)["peers"]),
               "the hub to have nothing in flight")
