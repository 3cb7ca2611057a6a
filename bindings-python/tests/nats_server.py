"""A real `nats-server` on a free loopback port for the NATS tests, killed
when the test is done. The binary is ``NATS_SERVER_BIN`` when set, else
``nats-server`` on the PATH or in /usr/sbin (scripts/test.sh installs it
through scripts/ensure-nats-server.sh)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator, List

import pytest

START_TIMEOUT = 15.0  # seconds a server has to start accepting


def binary() -> str:
    given = os.environ.get("NATS_SERVER_BIN")
    if given:
        return given
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nats-server not found: run scripts/ensure-nats-server.sh or set NATS_SERVER_BIN")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One `nats-server -a 127.0.0.1 -p PORT` and its URL; with
    ``jetstream``, JetStream on (``-js``), its store in a temporary
    directory removed when the server stops."""

    def __init__(self, *options: str, jetstream: bool = False) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = tempfile.TemporaryDirectory(prefix="pf-nats-js-") if jetstream else None
        if self.store is not None:
            options = ("-js", "-sd", self.store.name, *options)
        cmd: List[str] = [binary(), "-a", "127.0.0.1", "-p", str(self.port), *options]
        # Its log goes to a file: a pipe nobody reads could fill and stall it.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}) while starting: {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nats-server did not accept on port {self.port} in time")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()
        if self.store is not None:
            self.store.cleanup()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jetstream_server() -> Iterator[NatsServer]:
    server = NatsServer(jetstream=True)
    try:
        yield server
    finally:
        server.stop()
