#!/usr/bin/env python3
"""A soak run: a hub (`packetflow serve`), handler and submitter processes in
Rust, Python, Node.js and Elixir (the interop participants, see
interop/participants/README.md), mixed traffic for a while, with handlers
killed, stopped and started and submitters leaving and joining throughout.

Counts every request: sent, answered (by kind), lost (sent but never
answered, which must be 0), duplicated (answered twice, must be 0) and
wrong (an echo that came back different, or an error no fault explains,
must be 0). A submit whose handler left while holding it is answered PF503,
one sent to a handler that just left PF001; both count as answered. Samples
the hub's RSS (from /proc) every few seconds.

    python3 bench/soak/soak.py [--seconds 120] [--rate 150] [--json OUT]

Build first (bench/soak/soak.sh does both). Exits non-zero when anything
was lost, duplicated or wrong. Loopback only; every process it starts is
killed at the end.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CLI = os.path.join(TARGET, "release", "packetflow")
PARTICIPANTS = os.path.join(ROOT, "interop", "participants")
PYTHON = os.path.join(ROOT, "target", "python-venv", "bin", "python")
ELIXIR_PROJECT = os.path.join(PARTICIPANTS, "pf_elixir")
MIX_RUN = ["mix", "run", "--no-compile", "-e", "PfElixir.main(System.argv())", "--"]
LANGUAGES = ["rust", "python", "node", "elixir"]
READY_WAIT = 60.0  # seconds a process may take to say it is ready
DRAIN_WAIT = 60.0  # seconds a leaving submitter may take to answer everything


def serve_cmd(lang, hub, name, codec):
    if lang == "rust":
        return [CLI, "serve", "--listen", "127.0.0.1:0", "--name", name, "--connect", hub,
                "--handler", f"df:echo_{name}=echo", "--handler", f"df:slow_{name}=sleep"]
    if lang == "python":
        return [PYTHON, os.path.join(PARTICIPANTS, "pf_python.py"), "serve", hub, name, codec]
    if lang == "node":
        return ["node", os.path.join(PARTICIPANTS, "pf_node.js"), "serve", hub, name, codec]
    return MIX_RUN + ["serve", hub, name, codec]


def submit_cmd(lang, hub, codec):
    if lang == "rust":
        return [CLI, "stream", "--url", hub] + (["--msgpack"] if codec == "msgpack" else [])
    if lang == "python":
        return [PYTHON, os.path.join(PARTICIPANTS, "pf_python.py"), "submit", hub, codec]
    if lang == "node":
        return ["node", os.path.join(PARTICIPANTS, "pf_node.js"), "submit", hub, codec]
    return MIX_RUN + ["submit", hub, codec]


def env_for(lang):
    env = dict(os.environ)
    if lang == "node":
        env.setdefault("PACKETFLOW_NODE", os.path.join(ROOT, "bindings-node"))
    return env


class Proc:
    """A child process in its own session (so a kill reaches all of it)."""

    def __init__(self, cmd, name, lang):
        self.name, self.lang = name, lang
        self.p = subprocess.Popen(cmd, cwd=ELIXIR_PROJECT if lang == "elixir" else None, env=env_for(lang),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, bufsize=1, start_new_session=True)
        self.stderr_tail = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in self.p.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-20:]

    def wait_line(self, pred, timeout):
        """Reads stdout lines until one satisfies `pred` (bounded)."""
        result = {}

        def read():
            for line in self.p.stdout:
                if pred(line):
                    result["line"] = line
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if "line" not in result:
            self.kill()
            raise RuntimeError(f"{self.name}: not ready within {timeout}s; stderr: {self.stderr_tail}")
        return result["line"]

    def close_stdin(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Tally:
    """What every submitter saw, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.answered = 0
        self.ok = 0
        self.codes = {}
        self.duplicated = 0
        self.wrong = []  # the first few, for the report
        self.wrong_count = 0
        self.lost = 0

    def note_wrong(self, what):
        with self.lock:
            self.wrong_count += 1
            if len(self.wrong) < 20:
                self.wrong.append(what)


def sample_value(rng):
    """Mixed JSON data: nested objects, arrays, strings, integers, floats."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randrange(-2**31, 2**31)
    if kind == 1:
        return "".join(rng.choice("abcxyzé✓ ") for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return [rng.randrange(1000) for _ in range(rng.randrange(0, 8))]
    if kind == 3:
        return {"k": rng.randrange(100), "s": "v" * rng.randrange(0, 50), "n": None, "b": True,
                "deep": {"a": [1, {"b": 2.5}]}}
    if kind == 4:
        return rng.randrange(1, 10**6) / 8  # exact in binary
    return None


class Submitter:
    """A submitter process with a sending thread (at a steady rate, a bounded
    number outstanding) and a reading thread (one answer per request)."""

    def __init__(self, soak, lang, codec, index):
        self.soak, self.lang, self.codec = soak, lang, codec
        self.name = f"{lang}-submitter-{index}-{codec}"
        self.proc = Proc(submit_cmd(lang, soak.hub_url, codec), self.name, lang)
        self.pending = {}  # id -> (target handler, element, data)
        self.answered_ids = set()
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.rng = random.Random(hash(self.name) & 0xFFFFFFFF)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self):
        interval = 1.0 / self.soak.rate
        next_at = time.monotonic()
        n = 0
        while not self.stopping.is_set():
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up
            handler = self.soak.pick_handler(self.rng)
            if handler is None:
                continue
            n += 1
            rid = f"{self.name}:{n}"
            if self.rng.random() < 0.1:
                element, data = f"slow_{handler}", self.rng.randrange(1, 200)
            else:
                element, data = f"echo_{handler}", sample_value(self.rng)
            with self.lock:
                while len(self.pending) >= 500 and not self.stopping.is_set():
                    self.lock.wait(0.5)  # a bounded window per submitter
                self.pending[rid] = (handler, element, data)
            line = json.dumps({"id": rid, "group": "df", "element": element, "data": data, "timeout_ms": 20000})
            try:
                self.proc.p.stdin.write(line + "\n")
                self.proc.p.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                with self.lock:
                    del self.pending[rid]
                self.soak.tally.note_wrong(f"{self.name} stopped taking requests; stderr {self.proc.stderr_tail}")
                return
            with self.soak.tally.lock:
                self.soak.tally.sent += 1

    def _read(self):
        tally = self.soak.tally
        for line in self.proc.p.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                tally.note_wrong(f"{self.name} printed {line!r}")
                continue
            rid = answer.get("id")
            with self.lock:
                request = self.pending.pop(rid, None)
                duplicate = request is None and rid in self.answered_ids
                self.answered_ids.add(rid)
                self.lock.notify_all()
            if duplicate:
                with tally.lock:
                    tally.duplicated += 1
                continue
            if request is None:
                tally.note_wrong(f"{self.name}: an answer to {rid!r}, never sent")
                continue
            self._check(request, answer)

    def _check(self, request, answer):
        tally = self.soak.tally
        handler, element, data = request
        result = answer.get("result")
        with tally.lock:
            tally.answered += 1
        if not isinstance(result, dict):
            tally.note_wrong(f"{self.name}: not a result: {answer}")
            return
        if result.get("status") == "success":
            with tally.lock:
                tally.ok += 1
            if result.get("data") != data:
                tally.note_wrong(f"{self.name}: {element} returned {result.get('data')!r} for {data!r}")
            return
        code = (result.get("error") or {}).get("code")
        with tally.lock:
            tally.codes[code] = tally.codes.get(code, 0) + 1
        # PF503: the handler left holding it; PF001: it had left already.
        if code not in ("PF503", "PF001") or not self.soak.has_left(handler):
            tally.note_wrong(f"{self.name}: {element} answered {result} though {handler} was up")

    def leave(self):
        """Stops sending, closes stdin, waits for every answer: what is
        still pending after that is lost."""
        self.stopping.set()
        self.sender.join(10)
        self.proc.close_stdin()
        deadline = time.monotonic() + DRAIN_WAIT
        with self.lock:
            while self.pending and time.monotonic() < deadline:
                self.lock.wait(0.5)
            lost = len(self.pending)
        try:
            self.proc.p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.reader.join(5)
        with self.lock:
            lost = len(self.pending)
        if lost:
            self.soak.tally.note_wrong(f"{self.name}: {lost} requests never answered, e.g. {list(self.pending)[:3]}")
        with self.soak.tally.lock:
            self.soak.tally.lost += lost
        self.proc.kill()


class Soak:
    def __init__(self, args):
        self.rate = args.rate
        self.tally = Tally()
        self.handlers = {}  # name -> Proc
        self.ready_at = {}  # name -> when it became ready
        self.left = set()
        self.handlers_lock = threading.Lock()
        self.generation = 0
        self.events = []
        self.rss = []
        self.start_time = None
        self.hub = Proc([CLI, "serve", "--listen", "127.0.0.1:0", "--name", "soak-hub"], "hub", "rust")
        # The hub names its address on stderr; read it there.
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline and not any("ws://" in l for l in self.hub.stderr_tail):
            time.sleep(0.05)
        line = next((l for l in self.hub.stderr_tail if "ws://" in l), None)
        if line is None:
            raise RuntimeError(f"the hub did not start: {self.hub.stderr_tail}")
        self.hub_url = next(w for w in line.split() if w.startswith("ws://"))
        self.http = self.hub_url.replace("ws://", "http://").rsplit("/packetflow/v1", 1)[0]

    def event(self, what):
        t = time.monotonic() - self.start_time if self.start_time else 0.0
        self.events.append((round(t, 1), what))
        print(f"[{t:6.1f}s] {what}", flush=True)

    def start_handler(self, lang, codec):
        self.generation += 1
        name = f"{lang}{self.generation}"
        proc = Proc(serve_cmd(lang, self.hub_url, name, codec), name, lang)
        if lang == "rust":
            # The CLI says it is connected on stderr.
            deadline = time.monotonic() + READY_WAIT
            while not any("connected to" in l for l in proc.stderr_tail):
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"{name} did not connect: {proc.stderr_tail}")
                time.sleep(0.05)
        else:
            proc.wait_line(lambda l: l.strip() == "ready", READY_WAIT)
        with self.handlers_lock:
            self.handlers[name] = proc
            self.ready_at[name] = time.monotonic()
        return name

    def stop_handler(self, name, kill):
        with self.handlers_lock:
            proc = self.handlers.pop(name)
            self.left.add(name)
        if kill:
            proc.kill()
            return proc

        def leave():
            # The participants stop when stdin closes; `packetflow serve`
            # on SIGTERM. Either way the node stops: work in flight is
            # answered PF503 and the connection closed.
            if proc.lang == "rust":
                proc.p.send_signal(signal.SIGTERM)
            else:
                proc.close_stdin()
            try:
                proc.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.event(f"{name} did not stop within 15 s: killed")
            proc.kill()

        threading.Thread(target=leave, daemon=True).start()
        return proc

    def pick_handler(self, rng):
        """A live handler, announced for at least a second: the hub tells
        the submitters about a new one a moment after it says ready."""
        settled = time.monotonic() - 1.0
        with self.handlers_lock:
            names = [n for n in self.handlers if self.ready_at[n] <= settled]
        return rng.choice(names) if names else None

    def has_left(self, name):
        with self.handlers_lock:
            return name in self.left

    def hub_rss_kib(self):
        try:
            with open(f"/proc/{self.hub.p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def hub_health(self):
        try:
            with urllib.request.urlopen(self.http + "/health", timeout=5) as r:
                return json.load(r)
        except OSError:
            return {}

    def sample(self):
        t = time.monotonic() - self.start_time
        health = self.hub_health()
        self.rss.append({"t": round(t, 1), "rss_kib": self.hub_rss_kib(), "peers": len(health.get("peers", [])),
                         "in_flight": sum(p.get("in_flight", 0) for p in health.get("peers", [])),
                         "sent": self.tally.sent, "answered": self.tally.answered})

    def shutdown(self):
        with self.handlers_lock:
            procs = list(self.handlers.values())
        for p in procs:
            p.kill()
        self.hub.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="how long the traffic runs")
    ap.add_argument("--rate", type=float, default=150.0, help="requests per second per submitter")
    ap.add_argument("--churn", type=float, default=5.0, help="seconds between join/leave events")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated subset of " + ",".join(LANGUAGES))
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args()
    languages = [l for l in args.languages.split(",") if l]
    rng = random.Random(7)
    soak = Soak(args)
    submitters = []
    departures = []  # threads of submitters leaving (each drains, then counts what is lost)
    try:
        codecs = ["json", "msgpack"]
        for i, lang in enumerate(languages):
            soak.start_handler(lang, codecs[i % 2])
        for i, lang in enumerate(languages):
            submitters.append(Submitter(soak, lang, codecs[(i + 1) % 2], 0))
        soak.start_time = time.monotonic()
        soak.event(f"hub {soak.hub_url}; handlers {sorted(soak.handlers)}; submitters {[s.name for s in submitters]}")
        soak.sample()
        next_sample = soak.start_time + args.sample
        next_churn = soak.start_time + args.churn
        end = soak.start_time + args.seconds
        index = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                soak.sample()
                next_sample += args.sample
            if now >= next_churn:
                next_churn += args.churn
                choice = rng.randrange(4)
                with soak.handlers_lock:
                    live = sorted(soak.handlers)
                if choice == 0 and live:
                    victim = rng.choice(live)
                    lang = soak.stop_handler(victim, kill=True).lang
                    soak.event(f"killed handler {victim} (SIGKILL)")
                    soak.event(f"joined handler {soak.start_handler(lang, rng.choice(codecs))}")
                elif choice == 1 and live:
                    victim = rng.choice(live)
                    lang = soak.stop_handler(victim, kill=False).lang
                    soak.event(f"handler {victim} leaving (stops its node)")
                    soak.event(f"joined handler {soak.start_handler(lang, rng.choice(codecs))}")
                elif choice == 2:
                    soak.event(f"joined handler {soak.start_handler(rng.choice(languages), rng.choice(codecs))}")
                else:
                    leaving = submitters.pop(rng.randrange(len(submitters)))
                    soak.event(f"submitter {leaving.name} leaving")
                    departure = threading.Thread(target=leaving.leave)
                    departure.start()
                    departures.append(departure)
                    index += 1
                    joined = Submitter(soak, leaving.lang, rng.choice(codecs), index)
                    submitters.append(joined)
                    soak.event(f"joined submitter {joined.name}")
            time.sleep(0.05)
        soak.event("traffic ends; every submitter drains and leaves")
        for s in submitters:
            departure = threading.Thread(target=s.leave)
            departure.start()
            departures.append(departure)
        for departure in departures:
            departure.join(DRAIN_WAIT + 30)
        soak.sample()
    finally:
        soak.shutdown()
    report(soak, args, languages)
    t = soak.tally
    return 0 if (t.lost == 0 and t.duplicated == 0 and t.wrong_count == 0 and t.sent == t.answered) else 1



def report(soak, args, languages):
    t = soak.tally
    rss = [s["rss_kib"] for s in soak.rss if s["rss_kib"]]
    print()
    print(f"soak: {args.seconds:.0f} s, languages {','.join(languages)}, {args.rate:.0f} req/s per submitter")
    print(f"sent {t.sent}  answered {t.answered}  lost {t.lost}  duplicated {t.duplicated}  wrong {t.wrong_count}")
    print(f"answers: {t.ok} success, " + ", ".join(f"{n} {c}" for c, n in sorted(t.codes.items())))
    churn = [e for _, e in soak.events if "joined" in e or "leaving" in e or "killed" in e]
    print(f"events: {len(churn)} joins and leaves, {sum('killed' in e for e in churn)} of them SIGKILLs")
    print("hub RSS over time:")
    print("   t (s)   RSS (MiB)   peers   in flight   sent   answered")
    for s in soak.rss:
        mib = f"{s['rss_kib'] / 1024:.1f}" if s["rss_kib"] else "?"
        print(f"  {s['t']:6.1f}   {mib:>9}   {s['peers']:5}   {s['in_flight']:9}   {s['sent']:6}   {s['answered']:8}")
    if rss:
        print(f"hub RSS: first {rss[0] / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB, last {rss[-1] / 1024:.1f} MiB")
    for w in t.wrong:
        print("WRONG:", w)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "rate": args.rate, "languages": languages, "sent": t.sent,
                       "answered": t.answered, "lost": t.lost, "duplicated": t.duplicated, "ok": t.ok,
                       "wrong_count": t.wrong_count,
                       "codes": t.codes, "wrong": t.wrong, "events": soak.events, "samples": soak.rss}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
