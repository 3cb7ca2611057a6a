"""`make demo`: a hub, services in Python, Node.js and Elixir, and a
submitter that calls across all of them, and runs a `cf:seq` pipeline whose
steps are in the three languages. Everything runs on this machine (loopback
only) and stops by itself.

    python demo/demo.py     (scripts/demo.sh builds what it needs first)
"""
import asyncio
import json
import os
import subprocess
import sys
import time

import packetflow

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def start(cmd, cwd=None, env=None):
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


async def wait_line(proc, text, stream="stdout", timeout=120):
    """The first line of `proc` containing `text`, or a clear failure."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        line = await asyncio.wait_for(loop.run_in_executor(None, pipe.readline), deadline - loop.time())
        if not line:
            err = proc.stderr.read() if stream == "stdout" else ""
            raise SystemExit(f"a demo process exited early: {' '.join(proc.args)}\n{err}")
        if text in line:
            return line
    raise SystemExit(f"timed out waiting for {text!r} from {' '.join(proc.args)}")


async def main() -> int:
    procs = []
    try:
        hub = start([os.path.join(TARGET, "release", "packetflow"), "serve", "--listen", "127.0.0.1:0", "--name", "demo-hub"])
        procs.append(hub)
        line = await wait_line(hub, "listening on", "stderr")
        url = next(w for w in line.split() if w.startswith("ws://"))
        print("PacketFlow demo: one hub, services in three languages, all on this machine\n")
        print(f"  hub      packetflow serve   {url}")

        env = dict(os.environ, PACKETFLOW_NODE=os.path.join(ROOT, "bindings-node"))
        services = [
            ("python", "df:sentiment", [sys.executable, os.path.join(HERE, "python_service.py"), url], None),
            ("node", "df:translate, df:ballots, actor counter", ["node", os.path.join(HERE, "node_service.js"), url], None),
            ("elixir", "co:vote", ["mix", "run", "--no-compile", "-e", f'DemoService.main("{url}")'],
             os.path.join(HERE, "elixir_service")),
        ]
        for name, keys, cmd, cwd in services:
            proc = start(cmd, cwd=cwd, env=env)
            procs.append(proc)
            await wait_line(proc, "ready")
            print(f"  {name:<8} serves {keys}")

        # An actor message is an ordinary packet: rm:actor.<type>, the id in
        # metadata (docs/protocol.md, "Actors").
        visits = {"pf.actor_id": "visits"}
        # The standard cf:seq, run by the submitter's reactor: each step's
        # answer is the next one's data (docs/stdlib.md).
        pipeline = {"steps": [{"group": "df", "element": "sentiment"}, {"group": "df", "element": "ballots"},
                              {"group": "co", "element": "vote"}], "input": "great news, happy team"}
        calls = [
            ("df", "sentiment", "I love how fast this is", None),
            ("df", "translate", "hello world", None),
            ("co", "vote", ["tea", "coffee", "tea"], None),
            ("cf", "seq", pipeline, None),
            ("rm", "actor.counter", {"type": "increment"}, visits),
            ("rm", "actor.counter", {"type": "increment"}, visits),
            ("rm", "actor.counter", {"type": "get_value"}, visits),
            ("df", "sentiment", 42, None),
            ("df", "nowhere", None, None),
        ]
        print('\n  a Python submitter, hosting the standard library (stdlib="*"), calls across the hub:\n')
        # co:vote stays the Elixir service's: a user's handler wins over the
        # standard element of its key.
        async with packetflow.Reactor(name="demo-submitter", stdlib="*") as r:
            await r.connect(url)
            for group, element, data, metadata in calls:
                started = time.perf_counter()
                result = await r.submit(group, element, data, timeout_ms=5000, metadata=metadata)
                ms = (time.perf_counter() - started) * 1000
                # A pipeline is shown by its input.
                arg = json.dumps(data["input"] if data is pipeline else data, ensure_ascii=False)
                if result.ok:
                    out = dict(result.data) if isinstance(result.data, dict) else result.data
                    # The last step's answer carries the trail of the steps.
                    last = out["value"] if data is pipeline else out
                    by = last.pop("served_by", None) if isinstance(last, dict) else None
                    if isinstance(by, list):
                        by = " → ".join(by)
                    shown = json.dumps(out, ensure_ascii=False)
                    print(f"  {group}:{element:<13} {arg:<26} served by {by or '?':<24} {shown}  ({ms:.1f} ms)")
                else:
                    print(f"  {group}:{element:<13} {arg:<26} {result.error.code}: {result.error.message}  ({ms:.1f} ms)")
        print("\n  done: every call answered, every process stopped")
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.stdin.close()
            except OSError:
                pass
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
