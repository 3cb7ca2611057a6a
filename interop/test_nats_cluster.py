"""An actor type hosted by nodes of different languages on a NATS cluster
(docs/protocol.md, "Membership", "Actor state in a key-value bucket"):
each language's handler joins one nats-server with JetStream through its
binding's `connect` with `actor_store` (and `membership_heartbeat_ms`),
and hosts `counter_shared`, whose answers name the language that ran the
turn. A Python submitter, a member too, messages the counters; a host is
killed (no goodbye), and every counter goes on from its state on another
language's node, read from the members' bucket."""
import os
import tempfile

import pytest

from conftest import PARTICIPANTS, WAIT, Proc
from test_nats import nats_server_bin, wait_for, free_ports

LANGUAGES = [name for name in ("python", "node", "elixir") if name in PARTICIPANTS]
NAMESPACE = f"interop-cluster-{os.getpid()}"
# A member that dies leaves every view within three heartbeats.
HEARTBEAT_MS = 250
ENV = {"PF_NATS_NAMESPACE": NAMESPACE, "PF_NATS_ACTOR_STORE": "1", "PF_NATS_HEARTBEAT_MS": str(HEARTBEAT_MS)}
COUNTERS = 12

pytestmark = pytest.mark.skipif(
    len(LANGUAGES) < 2 or "python" not in LANGUAGES, reason="needs Python and another language"
)


@pytest.fixture(scope="module")
def jetstream():
    """One nats-server with JetStream on, its store in a temporary folder:
    its client URL."""
    with tempfile.TemporaryDirectory(prefix="pf-interop-js-") as store:
        port = free_ports(1)[0]
        cmd = [nats_server_bin(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
        server = Proc(cmd, "nats-server")
        try:
            server.wait_for("Server is ready", "stderr")
            yield f"nats://127.0.0.1:{port}"
        finally:
            server.kill()


def message(s, actor, kind):
    """Sends `kind` (increment or get_value) to counter_shared `actor`
    until it is answered (while a dead host is noticed, a message may be
    answered PF503 or PF408: nothing ran); returns the answer's data."""
    meta = {"pf.actor_id": actor}

    def answered():
        result = s.request("rm", "actor.counter_shared", {"type": kind}, metadata=meta)
        if result["status"] == "success":
            return result["data"]
        assert result["error"]["code"] in ("PF503", "PF408"), result
        return None

    return wait_for(answered, f"counter_shared {actor} answering {kind}")


def test_an_actor_keeps_its_state_when_the_language_hosting_it_dies(jetstream):
    hosts, submitter = {}, None
    try:
        for name in LANGUAGES:
            hosts[name] = PARTICIPANTS[name].serve(jetstream, "json", env=ENV)
        submitter = PARTICIPANTS["python"].submitter(jetstream, "json", env=ENV)

        # Each counter lives on one language's node, as placement over the
        # live members hosting the type picks it. The members see each
        # other's entries a moment after joining, and a counter claimed
        # while their views disagreed stays where it is until the hosts
        # change: fresh counters until every language runs some.
        attempts = iter(range(1000))

        def spread():
            attempt = next(attempts)
            actors = [f"c{n}-{attempt}" for n in range(COUNTERS)]
            placed = {actor: message(submitter, actor, "increment")["host"] for actor in actors}
            return set(placed.values()) == set(LANGUAGES) and actors

        actors = wait_for(spread, "counters on every language")
        counts = {actor: 1 for actor in actors}

        # The languages are killed one after the other (no goodbye) until
        # one is left: each time, the counters go on from their state, those
        # the victim ran on another language's node, every turn acknowledged
        # before the kill kept. (A change of hosts may move other counters
        # too: a claim made while views disagreed is given up then.)
        alive = list(LANGUAGES)
        for victim in LANGUAGES[:-1]:
            hosts.pop(victim).kill()
            alive.remove(victim)
            for actor in actors:
                data = message(submitter, actor, "increment")
                counts[actor] += 1
                assert data["value"] == counts[actor], f"{actor} after {victim} died: {data}, expected {counts[actor]}"
                assert data["host"] in alive, f"{actor} answered by {data['host']} after {victim} died"
    finally:
        if submitter is not None:
            submitter.proc.kill()
        for proc in hosts.values():
            proc.kill()
