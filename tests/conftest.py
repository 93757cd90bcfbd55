"""Test harness: real Redis (started here if none runs), one key prefix per test, strict tasks."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from tests.nats_server import NatsServer
from tests.ports import free_port
from ztdp.api import create_app
from ztdp.graph.store import GraphStore, MemoryGraphStore
from ztdp.graph.store.redis import RedisGraphStore
from ztdp.settings import Settings

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# An installation on Redis refuses to start without the key of its secrets: the tests' own
# servers and processes (which inherit the environment) share one made for this run.
os.environ.setdefault("ZTDP_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())


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


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end from synchronous code, even one called inside a running
    event loop (a fixture an async fixture asked for): in a thread with a loop of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _postgres_answers(url: str) -> bool:
    import asyncpg

    async def ping() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return _blocking(ping())


async def _sql(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PostgresServer:
    """A PostgreSQL of the tests' own (initdb and pg_ctl in a temporary directory, on a free
    port, trust authentication), for machines where none answers at 127.0.0.1:5432."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ztdp-postgres-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as its own user then
            shutil.chown(self.dir, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=60)

    def start(self) -> PostgresServer:
        if not (POSTGRES_BIN / "initdb").exists():
            pytest.fail(f"no PostgreSQL answers and {POSTGRES_BIN}/initdb is not installed")
        self._run(
            str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.dir / "log"), "-w", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test run's own on a real PostgreSQL: ZTDP_TEST_POSTGRES_URL, the
    local default, or a server started for this run; dropped at the end."""
    server = None
    url = os.environ.get("ZTDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if not _postgres_answers(url):
        server = PostgresServer().start()
        url = server.url
    name = f"ztdp_test_{uuid.uuid4().hex[:12]}"
    _blocking(_sql(url, f"CREATE DATABASE {name}"))
    yield url.rsplit("/", 1)[0] + f"/{name}"
    try:
        _blocking(_sql(url, f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """The test run's database with a schema of this test's own (`?schema=`), dropped after."""
    schema = f"t{uuid.uuid4().hex[:12]}"
    yield f"{postgres_database}?schema={schema}"
    _blocking(_sql(postgres_database, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


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
        # No Kubernetes sandbox unless the test asks for one (ZTDP_SANDBOX=auto or on).
        self.env = {**os.environ, "ZTDP_SANDBOX": "off", **(env or {})}
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
        while not self.started():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.stop()
                pytest.fail(f"ztdp serve did not start: {out}")
            time.sleep(0.05)
        return self

    def started(self) -> bool:
        """Whether the application is up: the port answers from the start, with 503
        `{"status": "starting"}` on /v1/healthz until then."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except urllib.error.HTTPError as err:
            return b"starting" not in err.read()
        except OSError:
            return False

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
