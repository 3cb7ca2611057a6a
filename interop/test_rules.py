"""The rules docs/protocol.md decides once for every binding ("Handlers and
their context"), seen from outside: the same scenario against a handler
process of each language gives the same answer, word for word where the core
writes the words."""
import json
import socket

import pytest

from conftest import PARTICIPANTS, Proc

BINDINGS = ["python", "node", "elixir"]


def need(name):
    if name not in PARTICIPANTS:
        pytest.skip(f"participant {name} is not available (its binding is not built)")


def rust_submitter(world, hub_url):
    """The CLI's `stream`, which every run has: the handler's language is
    what varies in these tests."""
    return world.submitter("rust", hub_url, "json")


def outcome(result):
    """A result without what varies between runs (packet id, duration)."""
    return {k: v for k, v in result.items() if k in ("status", "data", "error")}


def ask(s, element, data):
    return outcome(s.request("df", element, data))


@pytest.mark.parametrize("handler", BINDINGS)
def test_ctx_call_after_the_answer_is_the_cores_pf503(world, handler):
    need(handler)
    s = rust_submitter(world, world.hub(handler, "json"))
    assert ask(s, f"keep_{handler}", None) == {"status": "success", "data": "kept"}
    # The keeping packet was answered (its result is in hand): a call made
    # with its context now is refused by the core, and makes no child.
    late = ask(s, f"late_{handler}", "too late")
    assert late == {
        "status": "success",
        "data": {
            "code": "PF503",
            "message": f"ctx.call to df:echo_{handler} after the handler answered; call before returning",
        },
    }


@pytest.mark.parametrize("handler", BINDINGS)
def test_a_packet_runs_the_registration_it_was_routed_to(world, handler):
    need(handler)
    s = rust_submitter(world, world.hub(handler, "json"))
    running = s.send("df", f"version_{handler}", 300)
    # Replaced while the first packet is on its way or running: that packet
    # still runs the function it was routed to, later ones the new one.
    assert ask(s, f"replace_{handler}", None) == {"status": "success", "data": "replaced"}
    assert ask(s, f"version_{handler}", 0) == {"status": "success", "data": "v2"}
    assert outcome(s.wait(running)) == {"status": "success", "data": "v1"}


def unused_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_dial_is_the_cores_answer_in_every_binding():
    present = [b for b in BINDINGS if b in PARTICIPANTS]
    if not present:
        pytest.skip("no binding is built")
    url = f"ws://127.0.0.1:{unused_port()}/packetflow/v1"
    answers = {}
    for name in present:
        participant = PARTICIPANTS[name]
        cmd = participant._submit(url, "json")
        dial = cmd[: cmd.index("submit")] + ["dial", url]
        proc = Proc(dial, f"{name} dialer", cwd=participant.cwd)
        try:
            answers[name] = json.loads(proc.line())
        finally:
            proc.kill()
    for name, answer in answers.items():
        assert answer["code"] == "PF503", (name, answer)
        assert answer["message"].startswith(f"cannot connect to {url}: "), (name, answer)
    # One answer, whichever language asked: the core wrote it.
    assert len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1, answers
