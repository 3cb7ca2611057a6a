"""An actor type defined in each language (`counter_<lang>`, hosted by that
language's handler process), messaged from every language, the CLI's
`stream` and both seed-spec peers, with JSON and with MessagePack wherever
both ends speak it: an actor message is an ordinary submit to
`rm:actor.<type>` with the actor's id in `metadata["pf.actor_id"]`."""
import subprocess

import pytest

from conftest import CLI, PARTICIPANTS

NAMES = list(PARTICIPANTS)
# The languages whose handler process hosts an actor type (the seed peers
# are written from the seed spec alone: they can message actors, not host them).
HOSTS = [n for n in NAMES if not n.startswith("seed")]
PAIRS = [
    (s, h, codec)
    for s in NAMES
    for h in HOSTS
    for codec in ("json", "msgpack")
    if codec in PARTICIPANTS[s].codecs and codec in PARTICIPANTS[h].codecs
]


def pair_id(p):
    return f"{p[0]}->{p[1]}[{p[2]}]"


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_an_actor_in_one_language_counts_messages_from_another(world, pair):
    submitter, host, codec = pair
    hub = world.hub(host, codec)
    s = world.submitter(submitter, hub, codec)
    # A fresh actor per pair: the type is virtual, so it starts at 0.
    meta = {"pf.actor_id": f"from-{submitter}-{codec}"}
    element = f"actor.counter_{host}"
    first = s.request("rm", element, {"type": "increment", "by": 2}, metadata=meta)
    assert first["status"] == "success" and first["data"] == {"value": 2}, first
    second = s.request("rm", element, {"type": "increment"}, metadata=meta)
    assert second["data"] == {"value": 3}, second
    read = s.request("rm", element, {"type": "get_value"}, metadata=meta)
    assert read["data"] == {"value": 3}, read
    # The core's rules answer the same way whatever the host's language.
    unknown = s.request("rm", element, {"type": "explode"}, metadata=meta)
    assert unknown["status"] == "error" and unknown["error"]["code"] == "PF400", unknown
    no_id = s.request("rm", element, {"type": "get_value"})
    assert no_id["status"] == "error" and no_id["error"]["code"] == "PF400", no_id
    assert "pf.actor_id" in no_id["error"]["message"], no_id


@pytest.mark.parametrize("host", HOSTS)
def test_the_cli_messages_an_actor_of_each_language(world, host):
    url = world.hub(host, "json")

    def actor(*args):
        return subprocess.run([CLI, "actor", *args], capture_output=True, text=True, timeout=60)
    sent = actor("send", url, f"counter_{host}", "from-cli", '{"type": "increment", "by": 5}')
    assert sent.returncode == 0, sent.stderr
    assert '"data":{"value":5}' in sent.stdout, sent.stdout
    again = actor("send", url, f"counter_{host}", "from-cli", '{"type": "get_value"}', "--msgpack")
    assert again.returncode == 0 and '"data":{"value":5}' in again.stdout, again
