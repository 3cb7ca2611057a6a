"""The standard library across languages (docs/stdlib.md).

A mesh per codec: handler processes in Python, Node.js and Elixir on a
plain hub, and a second hub (`packetflow serve --stdlib '*'`) dialled into
it. The standard elements run in two places:

- in a binding's own reactor, through its `stdlib` option: each language's
  submitter, connected to the plain hub (which hosts none, so the element
  can only have run in the submitter);
- on the hub that hosts them, reached by a seed-spec peer with raw
  WebSocket frames (a PacketFlow node reaches another node's built-ins only
  through a default route: they are not announced).

`cf:seq` runs a pipeline whose three steps are handlers in the three
languages; `co:gather` (`min: 2`) waits on one handler in each language,
releases two of them, and the third is cancelled: its handler reports the
cancellation it saw (Python's task cancelled, Node's `ctx.signal` aborting,
Elixir's `{:packetflow_cancelled, id}`). `rm:lock` is contended from the
three languages: one holder at a time, under growing fencing tokens."""
import itertools
import json

import pytest

from conftest import CLI, PARTICIPANTS, WAIT, Proc, health, start_hub, wait_until

LANGS = ["python", "node", "elixir"]
SEEDS = ["seedpy", "seedjs"]
CODECS = ["json", "msgpack"]
STEPS = [{"group": "df", "element": f"append_{lang}"} for lang in LANGS]
# Data that the codecs must carry exactly through every hop.
START = ["héllo 𝄞", {"n": -1.5, "none": None}]
_case = itertools.count()


def need(*names):
    missing = [n for n in names if n not in PARTICIPANTS]
    if missing:
        pytest.skip(f"participants not available: {missing} (their bindings are not built)")


class Mesh:
    """The handler processes of one codec on a plain hub (`plain`), and a
    hub hosting every standard element dialled into it (`hosting`)."""

    def __init__(self, codec):
        self.procs = []
        self.submitters = {}
        hub, self.plain = start_hub(f"hub-stdlib-plain-{codec}")
        self.procs.append(hub)
        self.handlers = {}
        for lang in LANGS:
            self.handlers[lang] = PARTICIPANTS[lang].serve(self.plain, codec)
            self.procs.append(self.handlers[lang])
        hosting = Proc([CLI, "serve", "--listen", "127.0.0.1:0", "--name", f"hub-stdlib-{codec}",
                        "--stdlib", "*", "--connect", self.plain], f"hub-stdlib-{codec}")
        self.procs.append(hosting)
        line = hosting.wait_for("listening on", "stderr")
        self.hosting = next(w for w in line.split() if w.startswith("ws://"))
        wanted = {f"df:{kind}_{lang}" for lang in LANGS for kind in ("append", "wait", "release")}
        wait_until(lambda: wanted <= {k for p in health(self.hosting)["peers"] for k in (p.get("handlers") or [])},
                   "the hosting hub to know the handlers' routes")

    def submitter(self, lang, codec, stdlib=None):
        """A submitter of `lang`: on the plain hub, hosting `stdlib` itself,
        or (without) on the hosting hub."""
        key = (lang, codec, stdlib)
        if key not in self.submitters:
            if stdlib:
                s = PARTICIPANTS[lang].submitter(self.plain, codec, env={"PF_STDLIB": stdlib})
            else:
                s = PARTICIPANTS[lang].submitter(self.hosting, codec)
            self.procs.append(s.proc)
            self.submitters[key] = s
        return self.submitters[key]

    def close(self):
        for p in reversed(self.procs):
            p.kill()


@pytest.fixture(scope="module")
def meshes():
    need(*LANGS)
    made = {}

    def mesh(codec):
        if codec not in made:
            made[codec] = Mesh(codec)
        return made[codec]

    yield mesh
    for m in made.values():
        m.close()


def next_event(proc, tag, kind, timeout=WAIT):
    """The next line of a `wait_*` handler about `tag`, which must be `kind`."""
    while True:
        line = proc.line(timeout=timeout)
        if not line.startswith("{"):
            continue
        seen = json.loads(line)
        if seen.get("tag") == tag:
            assert seen["event"] == kind, f"{proc.name}: expected {kind}, got {seen}"
            return seen


def data_of(result):
    """The data of a successful result (a seed peer's has more fields)."""
    assert result["status"] == "success", result
    return result["data"]


def check_seq(s):
    """A `cf:seq` through the three languages, then one whose middle step
    fails: it ends there, with that step's code and index."""
    result = s.request("cf", "seq", {"steps": STEPS, "input": START}, timeout_ms=20_000)
    assert data_of(result) == {"value": START + LANGS, "steps": 3}

    failing = [STEPS[0], {"group": "df", "element": "fail_node"}, STEPS[2]]
    result = s.request("cf", "seq", {"steps": failing, "input": []}, timeout_ms=20_000)
    assert result["status"] == "error" and result["error"]["code"] == "PF500", result
    assert "step 1 (df:fail_node)" in result["error"]["message"], result
    assert "boom from node" in result["error"]["message"], result


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("lang", LANGS)
def test_seq_across_three_languages_hosted_by_each_languages_reactor(meshes, lang, codec):
    check_seq(meshes(codec).submitter(lang, codec, stdlib="cf:*"))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("seed", SEEDS)
def test_seq_across_three_languages_from_a_seed_peer_hosted_by_the_hub(meshes, seed, codec):
    """The seed peer speaks JSON to the hub; `codec` is the one the handler
    processes speak."""
    check_seq(meshes(codec).submitter(seed, "json"))


# Who cancels whom: each language is the slow one once per codec; with
# JSON the next language's reactor hosts co:gather, with MessagePack the
# hub does, for a seed-spec peer.
GATHERS = [(slow, codec) for codec in CODECS for slow in LANGS]


@pytest.mark.parametrize("slow, codec", GATHERS, ids=[f"{s}-slow-{c}" for s, c in GATHERS])
def test_gather_min_2_cancels_the_slowest_language(meshes, slow, codec):
    mesh = meshes(codec)
    if codec == "json":
        host = LANGS[(LANGS.index(slow) + 1) % len(LANGS)]
        s = mesh.submitter(host, codec, stdlib="co:*")
    else:
        s = mesh.submitter("seedpy", "json")
    case = next(_case)
    tags = {lang: f"gather-{case}-{lang}" for lang in LANGS}
    calls = [{"group": "df", "element": f"wait_{lang}", "data": {"tag": tags[lang]}} for lang in LANGS]
    gather = s.send("co", "gather", {"calls": calls, "min": 2}, timeout_ms=20_000)

    # Every call is running; the two fast ones are then let go.
    for lang in LANGS:
        next_event(mesh.handlers[lang], tags[lang], "started")
    for lang in LANGS:
        if lang != slow:
            assert data_of(s.request("df", f"release_{lang}", tags[lang])) is True

    result = s.wait(gather)
    expected = [{"ok": False, "cancelled": True} if lang == slow else {"ok": True, "value": tags[lang]}
                for lang in LANGS]
    assert data_of(result) == expected
    # The slow handler saw its cancellation, in its own language's way.
    next_event(mesh.handlers[slow], tags[slow], "cancelled")


# rm:lock contended from the three languages, hosted by the hub that hosts
# every standard element (each language reaches it through `hello.stdlib`).
# Hosted by the submitters themselves, nodes that have just joined may for a
# while disagree on the lock's owner and two owners grant it (docs/stdlib.md,
# "What locks and leases do not guarantee"): not tested here.
def test_lock_contended_from_three_languages(meshes):
    mesh = meshes("json")
    subs = {lang: mesh.submitter(lang, "json") for lang in LANGS}
    name = f"lock-{next(_case)}"
    last = 0

    # Try-lock rounds: all three ask at once while the lock is free; exactly
    # one gets it, under a token larger than any before.
    for _ in range(5):
        asked = {lang: s.send("rm", "lock", {"name": name, "ttl_ms": 30_000}, timeout_ms=20_000)
                 for lang, s in subs.items()}
        answers = {lang: data_of(subs[lang].wait(rid)) for lang, rid in asked.items()}
        winners = [lang for lang, a in answers.items() if a["acquired"]]
        assert len(winners) == 1, answers
        token = answers[winners[0]]["token"]
        assert token > last, answers
        last = token
        assert all(a == {"acquired": False, "token": None, "expires_at": None}
                   for lang, a in answers.items() if lang != winners[0]), answers
        unlocked = subs[winners[0]].request("rm", "lock", {"unlock": name, "token": token})
        assert data_of(unlocked) == {"released": True}

    # Waiting: one language holds the lock briefly; the other two wait for
    # it and get it in turn as each hold expires (nobody unlocks), never two
    # at once: a later hold starts after the earlier one ended.
    ttl = 400
    first, *waiting = LANGS
    held = data_of(subs[first].request("rm", "lock", {"name": name, "ttl_ms": ttl}))
    assert held["acquired"] and held["token"] > last, held
    asked = {lang: subs[lang].send("rm", "lock", {"name": name, "ttl_ms": ttl, "wait_ms": 15_000},
                                   timeout_ms=20_000) for lang in waiting}
    holds = [held] + [data_of(subs[lang].wait(rid)) for lang, rid in asked.items()]
    assert all(h["acquired"] for h in holds), holds
    holds.sort(key=lambda h: h["token"])
    assert len({h["token"] for h in holds}) == 3, holds
    for earlier, later in zip(holds, holds[1:]):
        assert later["expires_at"] - ttl >= earlier["expires_at"], holds
