"""Test harness: real Redis (started here if none runs), one key prefix per test, strict tasks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from tests.nats_server import NatsServer
from ztdp.api import create_app
from ztdp.graph.store import GraphStore, MemoryGraphStore
from ztdp.graph.store.redis import RedisGraphStore
from ztdp.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A redis-server process of the tests' own, on a free port; `args` configure it."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.args],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail("redis-server did not start within 10 s")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """Stop it at once, as a crash would (SIGKILL)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: ZTDP_TEST_REDIS_URL, the local default, or one started for this run."""
    url = os.environ.get("ZTDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _redis_answers(url):
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.fail(f"no Redis answers at {url} and redis-server is not installed")
    server = RedisServer("--save", "", "--appendonly", "no").start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    prefix = f"ztdp-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A current NATS server with JetStream, started for this test run (see nats_server.py)."""
    server = NatsServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def nats_prefix(nats_url: str) -> Iterator[str]:
    """Stream, consumer and subject names of this test's own; its streams are deleted after
    it (JetStream reserves each stream's byte limit on disk)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    asyncio.run(_delete_streams(nats_url, prefix))


async def _delete_streams(url: str, prefix: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            if stream.config.name and stream.config.name.startswith(f"{prefix}_"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream.config.name)
    finally:
        await nc.close()


@pytest.fixture(params=["memory", "redis"])
async def graph_store(request: pytest.FixtureRequest) -> AsyncIterator[GraphStore]:
    """The same test against every graph store."""
    store: GraphStore
    if request.param == "memory":
        store = MemoryGraphStore()
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisGraphStore.from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    yield store
    await store.aclose()


@pytest.fixture
async def client(graph_store: GraphStore) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The API over a real loopback socket, on each graph store."""
    app = create_app(Settings(), store=graph_store)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture
async def memory_client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(Settings())
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    assert not leaked, f"test leaked tasks: {leaked}"


class ServerProcess:
    """`ztdp serve` as a separate process, as an operator would run it."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="ztdp-serve-")) / "output.log"

    def start(self) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ztdp", "serve", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.stop()
                    pytest.fail(f"ztdp serve did not start: {out}")
                time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text()

    def admin_token(self) -> str | None:
        """The admin token printed at the first start with authentication on."""
        found = re.search(r"ztdp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", self.text())
        return found.group(0) if found else None

    def stop(self) -> str:
        """Stop the server; return everything it printed."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return self.text()
