"""The provider seam's contract suite (`ztdp.testing.ProviderContract`), on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pg_support import resource

from tests.ports import free_port
from ztdp.providers import Resource, Target
from ztdp.testing import ProviderContract
from ztdp_postgres import PostgresProvider


class TestPostgresProviderContract(ProviderContract):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[PostgresProvider]:
        p = PostgresProvider()
        yield p
        await p.aclose()

    @pytest.fixture
    async def target(self, env: str, settings: dict[str, str]) -> Target:
        self.env = env
        return Target(environment=env, settings=settings)

    def make_resource(self, name: str) -> Resource:
        return resource(name, getattr(self, "env", "contract"))

    async def unreachable_target(self) -> Target:
        # A closed port: connection refused, as when the server is down.
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
        return Target(environment="contract", settings={"url": url, "connect_timeout": 2})

    def invalid_resource(self) -> Resource:
        r = resource("wrongtype", getattr(self, "env", "contract"))
        return Resource(
            node=r.node, kind=r.kind, name=r.name, application=r.application,
            desired={"type": "mysql", "config_ref": "v1"},
        )  # fmt: skip
