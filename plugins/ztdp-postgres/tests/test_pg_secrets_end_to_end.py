"""A service using a Postgres database, end to end: the real provider on the real server, the
Kubernetes sandbox over its real socket. The database's URL reaches the Deployment only as
`DATABASE_URL` through a Kubernetes Secret and `secretKeyRef`; rotating it sets a new password
(the new one logs in, the old one is refused) and rolls the Deployment."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ztdp.api import create_app
from ztdp.providers import ProviderInfo, ProviderRegistry
from ztdp.settings import Settings
from ztdp_kubernetes import KubernetesProvider, object_name
from ztdp_kubernetes.sandbox import Sandbox, sandbox
from ztdp_postgres import PostgresProvider

NAME = object_name("shop", "api")
DIGEST = "ztdp.io/secrets-digest"


@dataclass
class World:
    client: TestClient  # type: ignore[type-arg]
    kube: Sandbox
    namespace: str
    env: str

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.client.request(method, path, json=body)
        data = await resp.json(content_type=None)
        assert 200 <= resp.status < 300, (method, path, resp.status, data)
        return data

    async def finished(self, run: str) -> dict[str, Any]:
        with anyio.fail_after(30):
            while True:
                found = await self.ok("GET", f"/v1/runs/{run}")
                if found["status"] != "Running":
                    return dict(found)
                await asyncio.sleep(0.05)

    async def deployment(self) -> dict[str, Any]:
        dep = await self.kube.deployment(self.namespace, NAME)
        assert dep is not None
        return dep

    async def database_url(self) -> str:
        path = f"/api/v1/namespaces/{self.namespace}/secrets/{NAME}"
        code, body = await self.kube.get(path)
        assert code == 200, body
        return base64.b64decode(body["data"]["DATABASE_URL"]).decode()


@pytest.fixture
async def world(admin_url: str, run_prefix: str) -> AsyncIterator[World]:
    registry = ProviderRegistry()
    for provider in (KubernetesProvider(), PostgresProvider()):
        registry.register(provider, ProviderInfo(provider.kind, "tests", "tests", "0"))
    env = f"e{uuid.uuid4().hex[:8]}"
    namespace = f"n{uuid.uuid4().hex[:8]}"
    async with sandbox() as kube:
        settings = Settings(
            kubeconfig=kube.kubeconfig,
            observe_interval=0,
            step_timeout=20,
            providers={"postgres": {"url": admin_url, "prefix": run_prefix}},
        )
        app = create_app(settings, providers=registry)
        try:
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                w = World(client, kube, namespace, env)
                spec = {"providers": {"kubernetes": {"namespace": namespace}}}
                await w.ok("POST", "/v1/environments", {"metadata": {"name": env}, "spec": spec})
                await w.ok("POST", "/v1/applications", {"metadata": {"name": "shop"}})
                await w.ok("POST", "/v1/applications/shop/environments/allowed", [env])
                await w.ok(
                    "POST",
                    "/v1/resources",
                    {"metadata": {"name": "orders-db"}, "spec": {"type": "postgres"}},
                )
                await w.ok("POST", "/v1/applications/shop/resources/orders-db")
                await w.ok(
                    "POST",
                    "/v1/applications/shop/services",
                    {"metadata": {"name": "api"}, "spec": {"application": "shop", "port": 8080}},
                )
                await w.ok("POST", "/v1/applications/shop/services/api/resources/orders-db")
                await w.ok(
                    "POST", "/v1/applications/shop/services/api/versions", {"version": "1.0.0"}
                )
                yield w
        finally:
            await registry.aclose()


async def _logs_in(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def test_a_service_gets_its_database_url_through_a_secret_and_rotation_rolls_it(
    world: World,
) -> None:
    deployed = await world.ok(
        "POST",
        "/v1/applications/shop/services/api/versions/1.0.0/deploy",
        {"environment": world.env},
    )
    run = await world.finished(deployed["run"])
    assert run["status"] == "Succeeded", run
    dep = await world.deployment()
    [var] = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert var == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": NAME, "key": "DATABASE_URL"}},
    }
    old_url = await world.database_url()
    assert old_url.startswith("postgresql://") and old_url not in json.dumps(dep)
    assert await _logs_in(old_url)
    secrets = f"/v1/applications/shop/environments/{world.env}/secrets"
    listed = {s["name"]: s for s in await world.ok("GET", secrets)}
    assert listed["orders-db.url"]["generated_by"] == f"resource/orders-db@{world.env}"

    rotated = await world.ok("POST", secrets + "/orders-db.url/rotate", {})
    run = await world.finished(rotated["run"])
    assert run["status"] == "Succeeded", run
    new_url = await world.database_url()
    assert new_url != old_url
    assert await _logs_in(new_url)
    assert not await _logs_in(old_url)  # the old password is refused
    after = await world.deployment()
    assert (
        after["spec"]["template"]["metadata"]["annotations"][DIGEST]
        != (dep["spec"]["template"]["metadata"]["annotations"][DIGEST])
    )
    plan = await world.ok("GET", f"/v1/applications/shop/plan?environment={world.env}")
    assert plan["summary"]["update"] == plan["summary"]["create"] == 0, plan
    assert new_url not in json.dumps(plan) and old_url not in json.dumps(plan)
