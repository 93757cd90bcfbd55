"""The secrets API over HTTP, authentication on: write-only, per application and environment."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.test_auth import World, world  # noqa: F401  (the fixture)
from ztdp.api import create_app
from ztdp.settings import Settings

BASE = "/v1/applications/checkout/environments/dev/secrets"
VALUE = "pa55-w0rd-only-here-7f3a"


async def _events(w: World) -> str:
    return json.dumps(await w.admin.ok("GET", "/v1/events?limit=10000"))


async def test_create_list_read_rotate_delete(world: World) -> None:  # noqa: F811
    dev = world["dev-x"]
    created = await dev.ok("POST", BASE, {"name": "db-pass", "value": VALUE})
    assert created["version"] == 1 and created["created_by"] == "token:dev-x"
    assert "value" not in created and VALUE not in json.dumps(created)
    assert [s["name"] for s in await world["viewer"].ok("GET", BASE)] == ["db-pass"]
    assert (await dev.ok("GET", BASE + "/db-pass"))["version"] == 1
    rotated = await dev.ok("POST", BASE + "/db-pass/rotate", {"value": VALUE + "-2"})
    assert rotated["version"] == 2 and VALUE not in json.dumps(rotated)
    code, again = await dev.call("POST", BASE, {"name": "db-pass", "value": "x"})
    assert code == 409, again
    deleted = await dev.ok("DELETE", BASE + "/db-pass")
    assert deleted["name"] == "db-pass"
    assert (await dev.call("GET", BASE + "/db-pass"))[0] == 404
    events = await _events(world)
    for kind in ("secret.created", "secret.rotated", "secret.deleted"):
        assert f"io.ztdp.{kind}" in events
    assert VALUE not in events


async def test_another_team_cannot_touch_the_secrets(world: World) -> None:  # noqa: F811
    await world["dev-x"].ok("POST", BASE, {"name": "db-pass", "value": VALUE})
    for who in ("dev-y", "viewer"):
        attacker = world[who]
        for method, path, body in (
            ("POST", BASE, {"name": "mine", "value": "x"}),
            ("POST", BASE + "/db-pass/rotate", {"value": "taken-over"}),
            ("DELETE", BASE + "/db-pass", None),
        ):
            code, problem = await attacker.call(method, path, body)
            assert code == 403, (who, method, path, problem)
    info = await world["dev-x"].ok("GET", BASE + "/db-pass")
    assert info["version"] == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        (
            "/v1/applications/nope/environments/dev/secrets",
            {"name": "a", "value": "b"},
            404,
            "nope",
        ),
        (
            "/v1/applications/checkout/environments/nope/secrets",
            {"name": "a", "value": "b"},
            404,
            "nope",
        ),
        (BASE, {"name": "Bad_Name", "value": "b"}, 422, "name"),
        (BASE, {"name": "a.b", "value": "b"}, 422, "name"),
        (BASE, {"name": "a", "value": ""}, 422, "value"),
        (BASE, {"name": "a", "value": 5}, 422, "value"),
        (BASE, {"name": "a", "value": "b", "extra": 1}, 422, "extra"),
        (BASE + "/nope/rotate", {"value": "b"}, 404, "nope"),
        (BASE + "/..%2F..%2Fx", None, 404, "names nothing"),
    ],
)
async def test_bad_requests_are_named(
    world: World,  # noqa: F811
    path: str,
    body: dict[str, object] | None,
    status: int,
    named: str,
) -> None:
    method = "GET" if body is None else "POST"
    code, problem = await world.admin.call(method, path, body)
    assert code == status, problem
    assert named in problem["detail"], problem


async def test_rotating_without_a_value_needs_a_generated_secret(world: World) -> None:  # noqa: F811
    await world.admin.ok("POST", BASE, {"name": "plain", "value": VALUE})
    code, problem = await world.admin.call("POST", BASE + "/plain/rotate", {})
    assert code == 422 and problem["errors"][0]["loc"] == "value", problem


@pytest.fixture
async def small() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(Settings(secret_max_bytes=16))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_values_are_bounded(small: TestClient) -> None:  # type: ignore[type-arg]
    await small.post("/v1/environments", json={"metadata": {"name": "dev"}})
    await small.post("/v1/applications", json={"metadata": {"name": "shop"}})
    path = "/v1/applications/shop/environments/dev/secrets"
    resp = await small.post(path, json={"name": "a", "value": "x" * 17})
    problem = await resp.json()
    assert resp.status == 422 and "at most 16" in problem["detail"], problem
    resp = await small.post(path, json={"name": "a", "value": "x" * 16})
    assert resp.status == 201


VERSIONS = "/v1/applications/checkout/services/checkout-api/versions"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DB_PASSWORD": "hunter2"}, "env.DB_PASSWORD"),
        ({"GITHUB_TOKEN": "tok-1234-abcd"}, "env.GITHUB_TOKEN"),
        ({"KEY": "-----BEGIN RSA PRIVATE KEY-----\nabc"}, "env.KEY"),
        ({"AWS": "AKIAABCDEFGHIJKLMNOP"}, "env.AWS"),
        ({"URL": "postgres://app:hunter2@db:5432/app"}, "env.URL"),
    ],
)
async def test_a_plain_credential_in_a_version_is_refused(
    world: World,  # noqa: F811
    env: dict[str, str],
    field: str,
) -> None:
    code, problem = await world.admin.call("POST", VERSIONS, {"version": "2.0.0", "env": env})
    assert code == 422, problem
    assert field in problem["detail"] and '{"secret": "<name>"}' in problem["detail"], problem
    for value in env.values():
        assert value not in json.dumps(problem)


async def test_plain_values_that_are_no_credentials_pass(world: World) -> None:  # noqa: F811
    env = {"LOG_LEVEL": "debug", "URL": "https://example.com/a", "MAX_TOKENS": "5"}
    await world.admin.ok("POST", VERSIONS, {"version": "2.0.0", "env": env})


async def test_a_reference_shows_in_the_plan_with_its_version(world: World) -> None:  # noqa: F811
    admin = world.admin
    await admin.ok("POST", BASE, {"name": "db-pass", "value": VALUE})
    await admin.ok(
        "POST", VERSIONS, {"version": "2.0.0", "env": {"DB_PASSWORD": {"secret": "db-pass"}}}
    )
    await admin.ok("POST", VERSIONS + "/2.0.0/deploy", {"environment": "dev"})
    plan = await admin.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    [step] = [s for w in plan["waves"] for s in w["steps"] if s["kind"] == "deployment"]
    assert step["desired"]["env"] == {"DB_PASSWORD": {"secret": "db-pass", "version": 1}}
    await admin.ok("POST", BASE + "/db-pass/rotate", {"value": VALUE + "x"})
    plan = await admin.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    [step] = [s for w in plan["waves"] for s in w["steps"] if s["kind"] == "deployment"]
    assert step["desired"]["env"]["DB_PASSWORD"]["version"] == 2
    assert VALUE not in json.dumps(plan)
    version = await admin.ok("GET", VERSIONS + "/2.0.0")
    assert version["env"] == {"DB_PASSWORD": {"secret": "db-pass"}}


async def test_a_reference_names_a_secret(world: World) -> None:  # noqa: F811
    body = {"version": "2.0.0", "env": {"A": {"secret": "Not A Name"}}}
    code, problem = await world.admin.call("POST", VERSIONS, body)
    assert code == 422 and "env.A" in problem["detail"], problem


async def test_a_reference_cannot_reach_another_application_s_secrets(
    world: World,  # noqa: F811
) -> None:
    """Only ZTDP's own injected references name another application (a resource's owner)."""
    body = {"version": "2.0.0", "env": {"A": {"secret": "db-pass", "application": "other"}}}
    code, problem = await world["dev-x"].call("POST", VERSIONS, body)
    assert code == 422 and "application" in json.dumps(problem), problem


async def test_a_deleted_application_s_secrets_go_with_it(world: World) -> None:  # noqa: F811
    """Another team's new application of the same name must not inherit them."""
    await world["dev-x"].ok("POST", BASE, {"name": "db-pass", "value": VALUE})
    await world.admin.ok("DELETE", "/v1/applications/checkout?cascade=true")
    await world.admin.ok(
        "POST", "/v1/applications", {"metadata": {"name": "checkout", "owner": "team-y"}}
    )
    assert await world["dev-y"].ok("GET", BASE) == []
    code, _ = await world["dev-y"].call("GET", BASE + "/db-pass")
    assert code == 404


async def test_reencrypting_with_the_same_key_rewrites_nothing(world: World) -> None:  # noqa: F811
    await world.admin.ok("POST", BASE, {"name": "db-pass", "value": VALUE})
    assert await world.admin.ok("POST", "/v1/secrets/reencrypt") == {"reencrypted": 0}


async def test_a_stored_version_with_a_plain_credential_still_loads() -> None:
    """Versions stored before the check are read, planned and deployed as they were."""
    from ztdp.graph import NodeKind, PutNode, node_id
    from ztdp.graph.store import MemoryGraphStore

    store = MemoryGraphStore()
    async with TestClient(TestServer(create_app(Settings(), store=store), host="127.0.0.1")) as c:
        for path, body in (
            ("/v1/environments", {"metadata": {"name": "dev"}}),
            ("/v1/applications", {"metadata": {"name": "shop"}}),
            (
                "/v1/applications/shop/services",
                {"metadata": {"name": "api"}, "spec": {"application": "shop"}},
            ),
            ("/v1/applications/shop/services/api/versions", {"version": "1.0.0"}),
        ):
            assert (await c.post(path, json=body)).status == 201
        graph = await store.read()
        vid = node_id(NodeKind.VERSION, "shop", "api", "1.0.0")
        old = {**(graph.data(vid) or {}), "env": {"DB_PASSWORD": "legacy-plain"}}
        await store.commit([PutNode(vid, NodeKind.VERSION, old)], expected_revision=graph.revision)
        resp = await c.get("/v1/applications/shop/services/api/versions/1.0.0")
        assert resp.status == 200 and (await resp.json())["env"] == {"DB_PASSWORD": "legacy-plain"}
        await c.post("/v1/applications/shop/environments/allowed", json=["dev"])
        resp = await c.post(
            "/v1/applications/shop/services/api/versions/1.0.0/deploy", json={"environment": "dev"}
        )
        assert resp.status == 202, await resp.text()
