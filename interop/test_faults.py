"""Errors that come from the network rather than from a handler, across
languages: PF001 for a key nobody serves, PF503 when the handler's process
dies mid-request, PF429 when a flood overruns a handler's bounds. Each
check ends every submitter call with exactly one answer."""
import time

import pytest

from conftest import PARTICIPANTS, health, start_hub, wait_until

NAMES = list(PARTICIPANTS)
# Handlers whose reactors have bounds to overrun (a seed peer has none).
BOUNDED = [n for n in NAMES if not n.startswith("seed")]


def other(name):
    """A submitter in another language than `name`, so each fault crosses a
    language boundary (rotating through the participants)."""
    others = [n for n in NAMES if n != name]
    return others[NAMES.index(name) % len(others)]


@pytest.mark.parametrize("submitter", NAMES)
def test_no_handler_anywhere_is_pf001(world, submitter):
    hub = world.hub("rust", "json")
    s = world.submitter(submitter, hub, "json")
    result = s.request("df", "nobody_serves_this", 1)
    assert result["status"] == "error"
    assert result["error"]["code"] == "PF001", result
    assert "df:nobody_serves_this" in result["error"]["message"]


def forwarded(hub_url):
    """How many packets the hub has sent to its peers and not yet seen
    answered (only the handler's peer is ever sent any here)."""
    return sum(peer["in_flight"] for peer in health(hub_url)["peers"])


@pytest.mark.parametrize("handler", NAMES)
def test_killed_handler_is_pf503_for_its_submitter(world, handler):
    submitter = other(handler)
    hub, hub_url = start_hub(f"hub-kill-{handler}")
    world.procs.append(hub)
    victim = PARTICIPANTS[handler].serve(hub_url, "json")
    world.procs.append(victim)
    s = PARTICIPANTS[submitter].submitter(hub_url, "json")
    world.procs.append(s.proc)

    rid = s.send("df", f"slow_{handler}", 20_000, timeout_ms=30_000)
    # The hub holds the packet for the handler's connection: it reached it.
    wait_until(lambda: forwarded(hub_url), f"the hub to forward the packet to {handler}")
    killed_at = time.monotonic()
    victim.kill()
    result = s.wait(rid)
    assert result["status"] == "error"
    assert result["error"]["code"] == "PF503", result
    assert time.monotonic() - killed_at < 10, "the call ended, but only after a long wait"


@pytest.mark.parametrize("handler", BOUNDED)
def test_flood_is_answered_pf429_past_the_bounds(world, handler):
    submitter = other(handler)
    hub, hub_url = start_hub(f"hub-flood-{handler}")
    world.procs.append(hub)
    # Two running, two waiting: the rest of a burst must be refused.
    world.procs.append(PARTICIPANTS[handler].serve(hub_url, "json", limits=(2, 2)))
    s = PARTICIPANTS[submitter].submitter(hub_url, "json")
    world.procs.append(s.proc)

    burst = 40
    ids = [s.send("df", f"slow_{handler}", 300, timeout_ms=20_000) for _ in range(burst)]
    results = [s.wait(rid) for rid in ids]
    codes = [r["error"]["code"] if r["status"] == "error" else "ok" for r in results]
    assert len(results) == burst
    assert set(codes) <= {"ok", "PF429"}, codes
    assert codes.count("PF429") >= burst - 8, codes
    assert codes.count("ok") >= 2, codes
