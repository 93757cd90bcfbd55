"""Injection of provider-generated secrets, end to end in one process: a service using a
resource whose provider generates a URL gets it as DATABASE_URL from a Kubernetes Secret
(the sandbox, over its real socket); rotating the secret regenerates it and rolls the pods."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import REPO
from ztdp.api import create_app
from ztdp.providers import ProviderInfo, ProviderRegistry
from ztdp.settings import Settings
from ztdp_kubernetes import KubernetesProvider, object_name
from ztdp_kubernetes.sandbox import Sandbox, sandbox

_spec = importlib.util.spec_from_file_location(
    "ztdp_generating", REPO / "tests/plugins/ztdp-generating/ztdp_generating/__init__.py"
)
assert _spec is not None and _spec.loader is not None
generating = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generating)

APP = "/v1/applications/shop"
SECRETS = APP + "/environments/dev/secrets"
NAME = object_name("shop", "api")
NODE = "resource/orders-db@dev"


@dataclass
class World:
    client: TestClient  # type: ignore[type-arg]
    kube: Sandbox
    namespace: str
    gen: Any

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.client.request(method, path, json=body)
        data = await resp.json(content_type=None)
        assert 200 <= resp.status < 300, (method, path, resp.status, data)
        return data

    async def finished(self, run: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            found = await self.ok("GET", f"/v1/runs/{run}")
            if found["status"] != "Running":
                return dict(found)
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)

    async def deployment(self) -> dict[str, Any]:
        dep = await self.kube.deployment(self.namespace, NAME)
        assert dep is not None
        return dep

    async def secret_data(self) -> dict[str, str]:
        code, body = await self.kube.get(f"/api/v1/namespaces/{self.namespace}/secrets/{NAME}")
        assert code == 200, body
        return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


@pytest.fixture
async def world() -> AsyncIterator[World]:
    registry = ProviderRegistry()
    gen = generating.GeneratingProvider()
    registry.register(KubernetesProvider(), ProviderInfo("kubernetes", "test", "test", "0"))
    registry.register(gen, ProviderInfo("generating", "test", "test", "0"))
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    async with sandbox() as kube:
        settings = Settings(
            kubeconfig=kube.kubeconfig,
            observe_interval=0,
            seed_resource_types={"gen": "generating"},
        )
        app = create_app(settings, providers=registry)
        try:
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                w = World(client, kube, namespace, gen)
                await w.ok(
                    "POST",
                    "/v1/environments",
                    {"metadata": {"name": "dev"}, "spec": {"kubernetes": {"namespace": namespace}}},
                )
                await w.ok("POST", "/v1/applications", {"metadata": {"name": "shop"}})
                await w.ok("POST", APP + "/environments/allowed", ["dev"])
                await w.ok(
                    "POST",
                    "/v1/resources",
                    {"metadata": {"name": "orders-db"}, "spec": {"type": "gen"}},
                )
                await w.ok("POST", APP + "/resources/orders-db")
                await w.ok(
                    "POST",
                    APP + "/services",
                    {"metadata": {"name": "api"}, "spec": {"application": "shop", "port": 80}},
                )
                await w.ok("POST", APP + "/services/api/resources/orders-db")
                await w.ok("POST", SECRETS, {"name": "api-key", "value": "k3y-of-the-api-9q"})
                await w.ok(
                    "POST",
                    APP + "/services/api/versions",
                    {"version": "1.0.0", "env": {"API_KEY": {"secret": "api-key"}}},
                )
                yield w
        finally:
            await registry.aclose()


async def test_a_used_resource_s_url_is_injected_through_a_secret(world: World) -> None:
    deployed = await world.ok(
        "POST", APP + "/services/api/versions/1.0.0/deploy", {"environment": "dev"}
    )
    run = await world.finished(deployed["run"])
    assert run["status"] == "Succeeded", run

    listed = {s["name"]: s for s in await world.ok("GET", SECRETS)}
    assert listed["orders-db.url"]["generated_by"] == NODE
    assert listed["orders-db.password"]["version"] == 1
    password = world.gen.passwords[NODE]
    dep = await world.deployment()
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": NAME, "key": "DATABASE_URL"}
    assert "value" not in env["DATABASE_URL"] and password not in json.dumps(dep)
    data = await world.secret_data()
    assert data["DATABASE_URL"] == f"gen://orders-db:{password}@db/orders-db"
    assert data["API_KEY"] == "k3y-of-the-api-9q"

    # Nothing changed since: the plan is all no-ops (references compared, with versions).
    plan = await world.ok("GET", APP + "/plan?environment=dev")
    [step] = [s for w in plan["waves"] for s in w["steps"] if s["kind"] == "deployment"]
    assert step["desired"]["env"]["DATABASE_URL"] == {"secret": "orders-db.url", "version": 1}
    assert plan["summary"]["create"] == plan["summary"]["update"] == 0, plan
    assert password not in json.dumps(plan)


async def test_rotating_a_generated_secret_regenerates_it_and_rolls_the_pods(
    world: World,
) -> None:
    deployed = await world.ok(
        "POST", APP + "/services/api/versions/1.0.0/deploy", {"environment": "dev"}
    )
    assert (await world.finished(deployed["run"]))["status"] == "Succeeded"
    old_password = world.gen.passwords[NODE]
    before = await world.deployment()
    # Applying again hands the provider its password back: nothing is regenerated.
    applied = await world.ok("POST", "/v1/apply?env=dev")
    assert (await world.finished(applied["run"]))["status"] == "Succeeded"
    assert world.gen.passwords[NODE] == old_password

    rotated = await world.ok("POST", SECRETS + "/orders-db.url/rotate", {})
    assert rotated["run"] is not None
    run = await world.finished(rotated["run"])
    assert run["status"] == "Succeeded", run
    new_password = world.gen.passwords[NODE]
    assert new_password != old_password
    assert world.gen.applies[-1] == (NODE, False)  # applied without its former outputs
    info = await world.ok("GET", SECRETS + "/orders-db.url")
    assert info["version"] == rotated["version"] + 1  # the provider's new value follows
    after = await world.deployment()
    digest = "ztdp.io/secrets-digest"
    tmpl = "spec", "template", "metadata", "annotations"
    a, b = after, before
    for key in tmpl:
        a, b = a[key], b[key]
    assert a[digest] != b[digest]
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert (await world.secret_data())["DATABASE_URL"].split(":")[2].split("@")[0] == new_password
    plan = await world.ok("GET", APP + "/plan?environment=dev")
    assert plan["summary"]["update"] == 0, plan


BLOG = "/v1/applications/blog"


async def both_deployed(world: World) -> None:
    """A second application, blog, whose service web uses shop's database; both deployed."""
    await world.ok("POST", "/v1/applications", {"metadata": {"name": "blog"}})
    await world.ok("POST", BLOG + "/environments/allowed", ["dev"])
    await world.ok("POST", BLOG + "/resources/orders-db")
    await world.ok(
        "POST",
        BLOG + "/services",
        {"metadata": {"name": "web"}, "spec": {"application": "blog", "port": 80}},
    )
    await world.ok("POST", BLOG + "/services/web/resources/orders-db")
    await world.ok("POST", BLOG + "/services/web/versions", {"version": "1.0.0"})
    for app, svc in (("shop", "api"), ("blog", "web")):
        deployed = await world.ok(
            "POST",
            f"/v1/applications/{app}/services/{svc}/versions/1.0.0/deploy",
            {"environment": "dev"},
        )
        assert (await world.finished(deployed["run"]))["status"] == "Succeeded"


async def test_rotating_a_shared_resource_s_secret_rolls_every_application_using_it(
    world: World,
) -> None:
    """Another application's service uses shop's database: the rotation's run rolls its
    deployment too (only shop's were re-planned before, and blog's kept the old URL)."""
    await both_deployed(world)
    web = object_name("blog", "web")
    before = await world.kube.deployment(world.namespace, web)
    assert before is not None
    # Something of blog's own not applied yet: not shop's to apply by rotating its secret.
    await world.ok(
        "POST", "/v1/resources", {"metadata": {"name": "cache"}, "spec": {"type": "gen"}}
    )
    await world.ok("POST", BLOG + "/resources/cache")

    rotated = await world.ok("POST", SECRETS + "/orders-db.url/rotate", {})
    run = await world.finished(rotated["run"])
    assert run["status"] == "Succeeded", run
    rolled = {s["node"] for s in run["steps"] if s["action"] == "update"}
    assert {"deployment/blog/web@dev", "deployment/shop/api@dev", NODE} <= rolled, run
    assert "resource/cache@dev" not in {s["node"] for s in run["steps"]}
    after = await world.kube.deployment(world.namespace, web)
    assert after is not None
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    code, body = await world.kube.get(f"/api/v1/namespaces/{world.namespace}/secrets/{web}")
    assert code == 200, body
    url = base64.b64decode(body["data"]["DATABASE_URL"]).decode()
    assert url.split(":")[2].split("@")[0] == world.gen.passwords[NODE]
    plan = await world.ok("GET", BLOG + "/plan?environment=dev")
    assert plan["summary"] == {"create": 1, "update": 0, "delete": 0, "noop": 2}, plan


async def test_a_rotation_never_rolls_another_application_back_to_what_it_planned(
    world: World,
) -> None:
    """blog deploys 2.0.0 while shop's rotation, planned with blog's 1.0.0, is under way: the
    rotation does not apply the 1.0.0 it planned (it would undo blog's deploy, landing after
    it), and says why; blog's own run rolls 2.0.0 onto the new secrets."""
    await both_deployed(world)
    held, original = asyncio.Event(), world.gen.apply

    async def apply(*, resource: Any, target: Any) -> Any:
        if not resource.secrets:  # the rotation's apply: held until blog has deployed
            await held.wait()
        return await original(resource=resource, target=target)

    world.gen.apply = apply
    rotated = await world.ok("POST", SECRETS + "/orders-db.url/rotate", {})
    await world.ok("POST", BLOG + "/services/web/versions", {"version": "2.0.0"})
    deployed = await world.ok(
        "POST", BLOG + "/services/web/versions/2.0.0/deploy", {"environment": "dev"}
    )
    held.set()  # blog's run waits behind the rotation's apply of the database: both go on
    rotation = await world.finished(rotated["run"])
    [roll] = [s for s in rotation["steps"] if s["node"] == "deployment/blog/web@dev"]
    assert roll["status"] == "Failed", rotation
    assert "changed since the rotation of orders-db's secrets was planned" in roll["error"]
    assert (await world.finished(deployed["run"]))["status"] == "Succeeded"
    web = await world.kube.deployment(world.namespace, object_name("blog", "web"))
    assert web is not None
    assert web["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


async def test_a_missing_secret_fails_the_step_naming_it(world: World) -> None:
    await world.ok("DELETE", SECRETS + "/api-key")
    deployed = await world.ok(
        "POST", APP + "/services/api/versions/1.0.0/deploy", {"environment": "dev"}
    )
    run = await world.finished(deployed["run"])
    assert run["status"] == "Failed"
    [step] = [s for s in run["steps"] if s["node"].startswith("deployment/")]
    assert "secret api-key" in step["error"] and "environment dev" in step["error"], step


async def test_a_generated_secret_takes_no_value_and_a_user_one_needs_one(world: World) -> None:
    deployed = await world.ok(
        "POST", APP + "/services/api/versions/1.0.0/deploy", {"environment": "dev"}
    )
    assert (await world.finished(deployed["run"]))["status"] == "Succeeded"
    resp = await world.client.post(SECRETS + "/orders-db.url/rotate", json={"value": "mine"})
    problem = await resp.json()
    assert resp.status == 422 and "generated by resource/orders-db@dev" in problem["detail"]
    resp = await world.client.post(SECRETS + "/api-key/rotate", json={})
    assert resp.status == 422
    resp = await world.client.post(SECRETS, json={"name": "orders-db.url", "value": "x"})
    assert resp.status == 422  # a user's secret is a DNS label: never a generated name
