"""The install check's round trip, run by the Python of a fresh venv that
installed the wheel from dist/ (scripts/install-check.sh):

    python roundtrip.py CLI NPM_PROJECT MIX_PROJECT

Starts a hub with the packetflow command from dist/, a Node.js service in
the npm project and an Elixir service in the Mix project, then serves
df:install_python itself. A call to df:install_elixir goes Python -> hub ->
Elixir -> hub -> Node.js -> hub -> Python and back; the same call from the
packetflow command, and a call nobody serves, follow. Every process runs on
loopback and is stopped at the end; every wait has a deadline.
"""
import asyncio
import json
import os
import subprocess
import sys

import packetflow

STEP_TIMEOUT_S = 120


def start(cmd, cwd=None):
    return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


async def wait_line(proc, text, stream="stdout"):
    """The first line of `proc` containing `text`, or a clear failure."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT_S
    while (left := deadline - loop.time()) > 0:
        line = await asyncio.wait_for(loop.run_in_executor(None, pipe.readline), left)
        if not line:
            proc.wait(timeout=10)
            rest = (proc.stderr.read() if stream == "stdout" else "") or ""
            raise SystemExit(f"{' '.join(proc.args)} exited ({proc.returncode}) before {text!r}:\n{rest}")
        if text in line:
            return line
    raise SystemExit(f"no {text!r} from {' '.join(proc.args)} within {STEP_TIMEOUT_S} s")


def python_step(text, ctx):
    if not isinstance(text, str):
        raise TypeError(f"install_python needs a string, got {type(text).__name__}")
    return {"text": text.upper(), "path": ["python"]}


async def main(cli, npm_project, mix_project):
    procs = []
    try:
        hub = start([cli, "serve", "--listen", "127.0.0.1:0", "--name", "install-hub"])
        procs.append(hub)
        line = await wait_line(hub, "listening on", "stderr")
        url = next(w for w in line.split() if w.startswith("ws://"))
        async with packetflow.Reactor(name="install-python") as r:
            r.register("df", "install_python", python_step)
            await r.connect(url)
            # Each service is a file inside its project (copied there by
            # install-check.sh), so that it finds the package installed there.
            for cmd, cwd in ((["node", "service.js", url], npm_project),
                             (["mix", "run", "service.exs", url], mix_project)):
                proc = start(cmd, cwd)
                procs.append(proc)
                await wait_line(proc, "ready")

            got = await r.call("df", "install_elixir", "hello", timeout_ms=30_000)
            want = {"text": "HELLO!", "path": ["elixir", "node", "python"]}
            assert got == want, f"python -> elixir -> node -> python gave {got!r}, expected {want!r}"
            print(f"python -> elixir -> node -> python: {json.dumps(got)}")

            submit = await asyncio.create_subprocess_exec(
                cli, "submit", "--url", url, "df", "install_elixir", '"from the cli"',
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(submit.communicate(), STEP_TIMEOUT_S)
            assert submit.returncode == 0, f"packetflow submit exited {submit.returncode}: {err.decode()}"
            data = json.loads(out)["data"]
            assert data == {"text": "FROM THE CLI!", "path": ["elixir", "node", "python"]}, data
            print(f"cli -> elixir -> node -> python: {json.dumps(data)}")

            missing = await r.submit("df", "install_nobody", None, timeout_ms=30_000)
            assert not missing.ok and missing.error.code == "PF001", missing
            print(f"a key nobody serves: {missing.error.code}")
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
                p.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
