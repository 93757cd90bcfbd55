"""The Postgres server the provider's tests run against, and names of this test run's own.

The server is ZTDP_TEST_POSTGRES_URL (or the local default) when it checks the passwords of
ordinary roles. A server that trusts every login (the local default does) cannot show that an
old password is refused, so then the tests start a server of their own (the root suite's
`PostgresServer`) whose `pg_hba.conf` trusts only the admin role `postgres` and asks every
other role for its SCRAM password.

Every database and role the tests make starts with this run's prefix; all of them are dropped
at the end of the session, whatever the tests left.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.conftest import PostgresServer, _blocking, _postgres_answers
from ztdp.providers import Target
from ztdp_postgres import PostgresProvider, quote_ident

HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class PasswordServer(PostgresServer):
    """The root suite's throwaway server, asking every role but `postgres` for its password."""

    def start(self) -> PasswordServer:
        super().start()
        (self.data / "pg_hba.conf").write_text(HBA)
        _blocking(_reload(self.url))
        return self


async def _reload(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _checks_passwords(url: str) -> bool:
    """Whether `url`'s server refuses an ordinary role's wrong password."""
    role = f"ztdp_probe_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-password'")
        try:
            probe = await asyncpg.connect(url, user=role, password="wrong-password", timeout=5)
        except asyncpg.InvalidAuthorizationSpecificationError:
            return True
        await probe.close()
        return False
    finally:
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
        await conn.close()


async def _drop_prefixed(url: str, prefix: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        pattern = prefix.replace("_", r"\_") + "%"
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", pattern
        ):
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        for (name,) in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", pattern
        ):
            await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """An admin URL of a server that checks ordinary roles' passwords (see the module)."""
    url = os.environ.get("ZTDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if _postgres_answers(url) and _blocking(_checks_passwords(url)):
        yield url
        return
    server = PasswordServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def run_prefix(admin_url: str) -> Iterator[str]:
    """This test run's name prefix; whatever carries it is dropped at the end."""
    prefix = f"zt{uuid.uuid4().hex[:8]}"
    yield prefix
    _blocking(_drop_prefixed(admin_url, prefix))


@pytest.fixture
def settings(admin_url: str, run_prefix: str) -> dict[str, str]:
    return {"url": admin_url, "prefix": run_prefix}


@pytest.fixture
def env() -> str:
    """An environment of this test's own: its names never meet another test's."""
    return f"e{uuid.uuid4().hex[:8]}"


@pytest.fixture
def target(env: str, settings: dict[str, str]) -> Target:
    return Target(environment=env, settings=settings)


@pytest.fixture
async def provider() -> AsyncIterator[PostgresProvider]:
    p = PostgresProvider()
    yield p
    await p.aclose()
