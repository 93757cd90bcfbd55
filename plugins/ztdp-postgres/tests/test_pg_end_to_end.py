"""The provider inside ZTDP, over HTTP: a service's database realised by a deploy's run.

The API runs with this provider (the real one, on the real server) and a fake Kubernetes; the
server comes from the configured default (`Settings.providers["postgres"]`), the environment
adds only what applications see (`spec.providers.postgres.host_for_apps`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from tests.test_runtime import finished
from ztdp.api import create_app
from ztdp.providers import ProviderInfo, ProviderRegistry
from ztdp.settings import Settings
from ztdp.testing import FakeProvider
from ztdp_postgres import PostgresProvider, database_name


@pytest.fixture
async def api(admin_url: str, run_prefix: str) -> AsyncIterator[Api]:
    settings = Settings(
        step_timeout=20,
        retry_backoff=0.01,
        provider_retries=2,
        observe_interval=0,
        providers={"postgres": {"url": admin_url, "prefix": run_prefix}},
    )
    registry = ProviderRegistry()
    for provider in (FakeProvider("kubernetes"), PostgresProvider()):
        registry.register(provider, ProviderInfo(provider.kind, "tests", "tests", "0"))
    app = create_app(settings, providers=registry)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client)


async def test_a_deploy_creates_the_database_its_service_uses(
    api: Api, admin_url: str, run_prefix: str
) -> None:
    spec = {"providers": {"postgres": {"host_for_apps": "pg.apps.internal:5432"}}}
    await api.ok(
        "POST",
        "/v1/environments",
        {"metadata": {"name": "dev", "owner": "platform-team"}, "spec": spec},
    )
    await api.application("checkout")
    await api.ok("PUT", "/v1/applications/checkout/environments/allowed", ["dev"], 200)
    await api.service("checkout", "checkout-api")
    await api.version("checkout", "checkout-api", "1.0.0")
    await api.ok(
        "POST",
        "/v1/resources",
        {
            "kind": "resource",
            "metadata": {"name": "pg-db", "owner": "team-x"},
            "spec": {"type": "postgres", "config_ref": "config/postgres/pg-db"},
        },
    )
    await api.ok("POST", "/v1/applications/checkout/resources/pg-db")
    await api.ok("POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db")
    code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    assert code == 202, accepted
    run = await finished(api, accepted["run"], 30)
    assert run["status"] == "Succeeded", run
    name = database_name(run_prefix, "dev", "pg-db")
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name
        )
    finally:
        await conn.close()
    assert owner == name
    # The core's deletion rules: a resource a service uses is not deleted unless cascading.
    code, problem = await api.call("DELETE", "/v1/resources/pg-db")
    assert code == 409, problem
    assert "checkout-api" in str(problem)


async def test_a_password_in_the_environment_is_refused_without_echoing_it(api: Api) -> None:
    for section in (
        {"url": "postgresql://postgres:xyzzy-pw@db:5432/postgres"},
        {"url": "postgresql://postgres@db:5432/postgres", "password": "xyzzy-pw"},
    ):
        code, problem = await api.call(
            "POST",
            "/v1/environments",
            {
                "metadata": {"name": "leaky", "owner": "platform-team"},
                "spec": {"providers": {"postgres": section}},
            },
        )
        assert code == 422, problem
        assert "xyzzy" not in str(problem)
        assert problem["errors"][0]["loc"].startswith("spec.providers.postgres")
