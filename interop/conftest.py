"""Fixtures of the interop suite: a hub (`packetflow serve`), handler
processes of every language connected to it, and long-lived submitter
processes that take JSON-line requests on stdin and print one result line
each (see participants/README.md for that small contract).

Every process runs on loopback, is bounded by timeouts, and is killed at the
end of the session.
"""
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CLI = os.path.join(TARGET, "release", "packetflow")
WAIT = 30.0  # seconds any single expected line may take


class Proc:
    """A child process whose stdout lines (and stderr lines) are read by
    threads into queues, so a test can wait for a line with a timeout."""

    def __init__(self, cmd, name, cwd=None, env=None):
        self.name = name
        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.out = queue.Queue()
        self.err = queue.Queue()
        self.err_lines = []
        for stream, q in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream, q):
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def line(self, q=None, timeout=WAIT):
        q = q or self.out
        try:
            line = q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no output within {timeout}s; stderr: {self.stderr_so_far()}")
        if line is None:
            raise AssertionError(f"{self.name} exited ({self.p.poll()}); stderr: {self.stderr_so_far()}")
        return line

    def wait_for(self, text, stream="stdout", timeout=WAIT):
        q = self.out if stream == "stdout" else self.err
        while True:
            line = self.line(q, timeout)
            if stream == "stderr":
                self.err_lines.append(line)
            if text in line:
                return line

    def stderr_so_far(self):
        lines = list(self.err_lines)
        while True:
            try:
                line = self.err.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                lines.append(line)
        self.err_lines = lines
        return "\n".join(lines[-20:])

    def send(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


class Submitter:
    """A long-lived submitter process: one request line in, one result out."""

    def __init__(self, proc):
        self.proc = proc
        self.next_id = 0
        self.early = {}

    def send(self, group, element, data, timeout_ms=None, metadata=None):
        """Sends one request without waiting; returns its id for `wait`."""
        self.next_id += 1
        rid = self.next_id
        req = {"id": rid, "group": group, "element": element, "data": data}
        if timeout_ms:
            req["timeout_ms"] = timeout_ms
        if metadata:
            req["metadata"] = metadata
        self.proc.send(req)
        return rid

    def request(self, group, element, data, timeout_ms=None, metadata=None):
        return self.wait(self.send(group, element, data, timeout_ms, metadata))

    def wait(self, rid):
        while rid not in self.early:
            answer = json.loads(self.proc.line())
            self.early[answer.get("id")] = answer
        answer = self.early.pop(rid)
        assert "error" not in answer or "result" in answer, f"{self.proc.name} refused the request: {answer}"
        return answer["result"]


def node_bin():
    return shutil.which("node") or "node"


class Participant:
    """How to run one language as a handler (serve) and as a submitter."""

    def __init__(self, name, serve, submit, ready, codecs, big_ints=True, cwd=None):
        self.name, self._serve, self._submit, self.ready = name, serve, submit, ready
        self.cwd = cwd
        self.codecs = codecs
        # Whether the language keeps integers beyond 2^53 exactly.
        self.big_ints = big_ints

    def serve(self, hub_url, codec, limits=None, env=None):
        """A handler process connected to `hub_url`. `limits` (max_inflight,
        max_queue) bound its reactor, for the flood tests; `env` adds to its
        environment (PF_NATS_NAMESPACE: its NATS namespace)."""
        cmd = self._serve(hub_url, self.name, codec)
        env = dict(os.environ, **(env or {}))
        if limits:
            env["PF_MAX_INFLIGHT"], env["PF_MAX_QUEUE"] = (str(n) for n in limits)
            if self.name == "rust":
                cmd += ["--max-inflight", str(limits[0]), "--max-queue", str(limits[1])]
        proc = Proc(cmd, f"{self.name} handler", cwd=self.cwd, env=env)
        stream, text = self.ready
        proc.wait_for(text, stream)
        return proc

    def submitter(self, hub_url, codec, env=None):
        """A submitter process connected to `hub_url`; `env` adds to its
        environment (PF_STDLIB: the standard elements its reactor hosts)."""
        env = dict(os.environ, **env) if env else None
        return Submitter(Proc(self._submit(hub_url, codec), f"{self.name} submitter", cwd=self.cwd, env=env))


def _rust_serve(hub, name, codec):
    cmd = [CLI, "serve", "--listen", "127.0.0.1:0", "--name", name, "--connect", hub]
    for kind, builtin in (("echo", "echo"), ("fail", "fail"), ("slow", "sleep")):
        cmd += ["--handler", f"df:{kind}_{name}={builtin}"]
    return cmd + ["--actor", f"counter_{name}=counter"]


PARTICIPANTS = {
    "rust": Participant(
        "rust",
        _rust_serve,
        lambda hub, codec: [CLI, "stream", "--url", hub] + (["--msgpack"] if codec == "msgpack" else []),
        ("stderr", "connected to"),
        ["json", "msgpack"],
    ),
    "seedjs": Participant(
        "seedjs",
        lambda hub, name, codec: [node_bin(), os.path.join(HERE, "seed", "seed_peer.js"), "serve", hub, name],
        lambda hub, codec: [node_bin(), os.path.join(HERE, "seed", "seed_peer.js"), "submit", hub],
        ("stdout", "ready"),
        ["json"],
        big_ints=False,  # JSON.parse turns them into the nearest double
    ),
    "seedpy": Participant(
        "seedpy",
        lambda hub, name, codec: ["python3", os.path.join(HERE, "seed", "seed_peer.py"), "serve", hub, name],
        lambda hub, codec: ["python3", os.path.join(HERE, "seed", "seed_peer.py"), "submit", hub],
        ("stdout", "ready"),
        ["json"],
    ),
}


PYTHON_VENV = os.path.join(os.environ.get("PACKETFLOW_PYTHON_VENV", os.path.join(TARGET, "python-venv")), "bin", "python")
NODE_PACKAGE = os.path.join(ROOT, "bindings-node")


def _python_participant():
    script = os.path.join(HERE, "participants", "pf_python.py")
    return Participant(
        "python",
        lambda hub, name, codec: [PYTHON_VENV, script, "serve", hub, name, codec],
        lambda hub, codec: [PYTHON_VENV, script, "submit", hub, codec],
        ("stdout", "ready"),
        ["json", "msgpack"],
    )


def _node_participant():
    script = os.path.join(HERE, "participants", "pf_node.js")
    return Participant(
        "node",
        lambda hub, name, codec: [node_bin(), script, "serve", hub, name, codec],
        lambda hub, codec: [node_bin(), script, "submit", hub, codec],
        ("stdout", "ready"),
        ["json", "msgpack"],
    )


ELIXIR_PROJECT = os.path.join(HERE, "participants", "pf_elixir")


def _elixir_participant():
    run = ["mix", "run", "--no-compile", "-e", "PfElixir.main(System.argv())", "--"]
    return Participant(
        "elixir",
        lambda hub, name, codec: run + ["serve", hub, name, codec],
        lambda hub, codec: run + ["submit", hub, codec],
        ("stdout", "ready"),
        ["json", "msgpack"],
        cwd=ELIXIR_PROJECT,
    )


def _probe(cmd, cwd=None):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=120, cwd=cwd).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# The bindings take part once built (scripts/test.sh builds them). Run on
# its own, the suite skips a binding that is not built; under `make test`
# (PACKETFLOW_INTEROP_REQUIRE_ALL) a missing one is a failure.
if os.path.exists(PYTHON_VENV) and _probe([PYTHON_VENV, "-c", "import packetflow"]):
    PARTICIPANTS["python"] = _python_participant()
if _probe([node_bin(), "-e", f"require({NODE_PACKAGE!r})"]):
    os.environ.setdefault("PACKETFLOW_NODE", NODE_PACKAGE)
    PARTICIPANTS["node"] = _node_participant()
if shutil.which("mix") and _probe(["mix", "run", "--no-compile", "-e", "Code.ensure_loaded!(PacketFlow.Reactor)"],
                                  cwd=ELIXIR_PROJECT):
    PARTICIPANTS["elixir"] = _elixir_participant()
MISSING = {"python", "node", "elixir"} - set(PARTICIPANTS)
if MISSING and os.environ.get("PACKETFLOW_INTEROP_REQUIRE_ALL"):
    raise RuntimeError(f"interop participants that cannot start: {sorted(MISSING)}")


def start_hub(name, *args):
    """A `packetflow serve` hub with no handlers (`args` add options to
    `serve`): (process, ws URL)."""
    hub = Proc([CLI, "serve", "--listen", "127.0.0.1:0", "--name", name, *args], name)
    line = hub.wait_for("listening on", "stderr")
    return hub, next(w for w in line.split() if w.startswith("ws://"))


def health(ws_url):
    """The `GET /health` document of the node at `ws_url`."""
    http = ws_url.replace("ws://", "http://", 1).rsplit("/packetflow/v1", 1)[0] + "/health"
    with urllib.request.urlopen(http, timeout=5) as response:
        return json.load(response)


def wait_until(check, what, timeout=WAIT):
    """Polls `check` (every 10 ms) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class World:
    """Hubs with one handler process each, and submitters, made on demand
    and shared by the tests of a session."""

    def __init__(self):
        self.procs = []
        self.hubs = {}
        self.submitters = {}

    def hub(self, handler, codec):
        """A hub whose only handler process is `handler` (seed peers are a
        hub's default route, so each needs a hub of its own)."""
        key = (handler, codec)
        if key not in self.hubs:
            hub, url = start_hub(f"hub-{handler}")
            self.procs.append(hub)
            self.procs.append(PARTICIPANTS[handler].serve(url, codec))
            self.hubs[key] = url
        return self.hubs[key]

    def submitter(self, submitter, hub_url, codec):
        key = (submitter, hub_url, codec)
        if key not in self.submitters:
            s = PARTICIPANTS[submitter].submitter(hub_url, codec)
            self.procs.append(s.proc)
            self.submitters[key] = s
        return self.submitters[key]

    def close(self):
        for p in reversed(self.procs):
            p.kill()


@pytest.fixture(scope="session")
def world():
    w = World()
    yield w
    w.close()
