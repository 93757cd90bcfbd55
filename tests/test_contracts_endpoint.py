"""`POST /v1/contracts`: a set of contracts of any kinds, applied idempotently, over HTTP."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import Api, authenticated
from ztdp.graph.store import GraphStore

TEAM = "team-x"


def contracts() -> list[dict[str, Any]]:
    """A realistic set, deliberately out of dependency order."""
    return [
        {"kind": "Deployment", "application": "shop", "service": "api", "version": "1.0.0",
         "environment": "dev"},
        {"kind": "ServiceVersion", "application": "shop", "service": "api", "version": "1.0.0",
         "config_ref": "api-config"},
        {"kind": "ServiceVersion", "application": "shop", "service": "worker",
         "version": "1.0.0"},
        {"kind": "Service", "metadata": {"name": "api"},
         "spec": {"application": "shop", "port": 8080, "public": True}},
        {"kind": "Service", "metadata": {"name": "worker"}, "spec": {"application": "shop"}},
        {"kind": "Dependency", "application": "shop", "service": "worker",
         "uses": {"application": "shop", "service": "api"}},
        {"kind": "ResourceLink", "application": "shop", "resource": "shop-db",
         "services": ["api", "worker"]},
        {"kind": "Resource", "metadata": {"name": "shop-db", "owner": TEAM},
         "spec": {"type": "postgres", "config_ref": "config/postgres/shop-db"}},
        {"kind": "AllowedEnvironments", "application": "shop", "environments": ["dev", "prod"]},
        {"kind": "Application", "metadata": {"name": "shop", "owner": TEAM},
         "spec": {"description": "the shop"}},
        {"kind": "Policy", "metadata": {"name": "dev-before-prod", "owner": "platform-team"},
         "spec": {"transition": {"environment": "prod"},
                  "rule": {"type": "promotion", "requires": ["dev"]}}},
        {"kind": "Environment", "metadata": {"name": "prod", "owner": "platform-team"}},
        {"kind": "Environment", "metadata": {"name": "dev", "owner": "platform-team"}},
    ]  # fmt: skip


@pytest.fixture
def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


def actions(result: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(r["kind"], r["name"]): r["action"] for r in result["results"]}


async def test_a_set_creates_everything_and_deploys_then_changes_nothing(api: Api) -> None:
    first = await api.ok("POST", "/v1/contracts", contracts(), 200)
    assert first["dry_run"] is False
    assert actions(first) == {
        ("Environment", "dev"): "created",
        ("Environment", "prod"): "created",
        ("Application", "shop"): "created",
        ("AllowedEnvironments", "shop"): "updated",
        ("Resource", "shop-db"): "created",
        ("Service", "shop/api"): "created",
        ("Service", "shop/worker"): "created",
        ("ResourceLink", "shop/shop-db"): "created",
        ("Dependency", "shop/worker -> shop/api"): "created",
        ("ServiceVersion", "shop/api/1.0.0"): "created",
        ("ServiceVersion", "shop/worker/1.0.0"): "created",
        ("Policy", "dev-before-prod"): "created",
        ("Deployment", "shop/api/1.0.0@dev"): "deployed",
    }
    # applied in dependency order, whatever the order of the list
    assert [r["kind"] for r in first["results"]][:3] == [
        "Environment",
        "Environment",
        "Application",
    ]
    [deployed] = [r for r in first["results"] if r["kind"] == "Deployment"]
    assert deployed["decision"]["allowed"] is True
    assert first["runs"] == [deployed["run"]]
    assert (await api.ok("GET", f"/v1/runs/{deployed['run']}"))["id"] == deployed["run"]
    assert first["changes"] and first["revision"] == await api.revision()
    # each object is what its single-object route reads
    assert (await api.ok("GET", "/v1/applications/shop/services/api"))["metadata"]["owner"] == TEAM
    assert await api.ok("GET", "/v1/applications/shop/environments/allowed") == ["dev", "prod"]
    assert await api.ok("GET", "/v1/applications/shop/services/worker/dependencies") == ["shop/api"]
    used = await api.ok("GET", "/v1/applications/shop/services/worker/resources")
    assert [r["metadata"]["name"] for r in used] == ["shop-db"]
    deployments = await api.ok("GET", "/v1/environments/dev/deployments")
    assert [(d["service"], d["version"]) for d in deployments] == [("api", "1.0.0")]

    revision = await api.revision()
    again = await api.ok("POST", "/v1/contracts", contracts(), 200)
    assert set(actions(again).values()) == {"unchanged"}
    assert again["runs"] == [] and again["changes"] == []
    assert await api.revision() == revision


async def test_a_changed_field_updates_only_that_object(api: Api) -> None:
    await api.ok("POST", "/v1/contracts", contracts(), 200)
    changed = contracts()
    [svc] = [c for c in changed if c["kind"] == "Service" and c["metadata"]["name"] == "worker"]
    svc["spec"]["port"] = 9090
    before = await api.revision()
    result = await api.ok("POST", "/v1/contracts", changed, 200)
    assert {k: a for k, a in actions(result).items() if a != "unchanged"} == {
        ("Service", "shop/worker"): "updated"
    }
    assert await api.revision() == before + 1
    stored = await api.ok("GET", "/v1/applications/shop/services/worker")
    assert stored["spec"]["port"] == 9090


async def test_a_changed_version_is_a_409_naming_it_and_changes_nothing(api: Api) -> None:
    await api.ok("POST", "/v1/contracts", contracts(), 200)
    changed = contracts()
    [version] = [c for c in changed if c["kind"] == "ServiceVersion" and c["service"] == "api"]
    version["config_ref"] = "other-config"
    changed.append({"kind": "Application", "metadata": {"name": "other", "owner": TEAM}})
    before = await api.revision()
    code, problem = await api.call("POST", "/v1/contracts", changed)
    assert code == 409, problem
    assert "body[1] (ServiceVersion" in problem["detail"]
    assert "version 1.0.0 of service api" in problem["detail"] and "immutable" in problem["detail"]
    assert await api.revision() == before
    assert (await api.call("GET", "/v1/applications/other"))[0] == 404


async def test_a_dry_run_changes_nothing_and_shows_decisions_changes_and_plan(api: Api) -> None:
    before = await api.revision()
    prod = [
        *contracts(),
        {"kind": "Deployment", "application": "shop", "service": "worker", "version": "1.0.0",
         "environment": "prod"},
    ]  # fmt: skip
    result = await api.ok("POST", "/v1/contracts?dry_run=true", prod, 200)
    assert result["dry_run"] is True and result["runs"] == []
    assert await api.revision() == before
    assert (await api.call("GET", "/v1/applications/shop"))[0] == 404
    got = actions(result)
    assert got[("Application", "shop")] == "created"
    assert got[("Deployment", "shop/api/1.0.0@dev")] == "deployed"
    # the promotion policy refuses worker in prod: it was never in dev
    assert got[("Deployment", "shop/worker/1.0.0@prod")] == "denied"
    [denied] = [r for r in result["results"] if r["action"] == "denied"]
    assert "dev-before-prod" in [p["policy"] for p in denied["decision"]["results"]]
    assert any(op.get("id") == "application/shop" for op in result["changes"]), result["changes"]
    plans = {p["environment"]: p for p in result["plans"]}
    assert set(plans) == {"dev", "prod"}
    nodes = [s["node"] for w in plans["dev"]["waves"] for s in w["steps"]]
    assert "deployment/shop/api@dev" in nodes and "resource/shop-db@dev" in nodes


async def test_an_invalid_contract_refuses_the_whole_set_naming_its_index(api: Api) -> None:
    bad = contracts()
    bad[3]["spec"]["port"] = "eighty"
    code, problem = await api.call("POST", "/v1/contracts", bad)
    assert code == 422
    assert problem["errors"][0]["loc"].startswith("body[3].spec.port"), problem
    code, problem = await api.call("POST", "/v1/contracts", [{"kind": "Gadget"}])
    assert code == 422 and problem["errors"][0]["loc"] == "body[0].kind"
    # a contract naming what does not exist: 422 naming it, nothing written
    code, problem = await api.call(
        "POST",
        "/v1/contracts",
        [
            {"kind": "Environment", "metadata": {"name": "dev", "owner": "platform-team"}},
            {"kind": "Service", "metadata": {"name": "api"}, "spec": {"application": "ghost"}},
        ],
    )
    assert code == 422 and "body[1] (Service api)" in problem["detail"], problem
    assert await api.ok("GET", "/v1/environments") == []


async def test_the_size_of_a_set_is_limited(api: Api) -> None:
    many = [{"kind": "Environment", "metadata": {"name": f"e{i}"}} for i in range(501)]
    code, problem = await api.call("POST", "/v1/contracts", many)
    assert code == 422 and "500" in problem["detail"], problem


async def test_a_set_with_another_teams_object_is_refused_whole(graph_store: GraphStore) -> None:
    people = {
        "dev-x": [{"role": "developer", "team": "team-x"}],
        "dev-y": [{"role": "developer", "team": "team-y"}],
    }
    async with authenticated(graph_store, people) as who:
        platform = [c for c in contracts() if c["kind"] in ("Environment", "Policy")]
        await who["admin"].ok("POST", "/v1/contracts", platform, 200)
        mine = [c for c in contracts() if c["kind"] not in ("Environment", "Policy")]
        # the allowed environments are the platform's to set: without them team-x may send it
        mine = [c for c in mine if c["kind"] != "AllowedEnvironments"]
        theirs = copy.deepcopy(mine)
        theirs.append({"kind": "Application", "metadata": {"name": "yard", "owner": "team-y"}})
        before = await who["admin"].revision()
        code, problem = await who["dev-x"].call("POST", "/v1/contracts", theirs)
        assert code == 403, problem
        assert f"body[{len(theirs) - 1}] (Application yard)" in problem["detail"]
        assert await who["admin"].revision() == before
        assert (await who["admin"].call("GET", "/v1/applications/shop"))[0] == 404

        await who["admin"].ok(
            "POST",
            "/v1/contracts",
            [{"kind": "Application", "metadata": {"name": "shop", "owner": TEAM}},
             {"kind": "AllowedEnvironments", "application": "shop", "environments": ["dev"]}],
            200,
        )  # fmt: skip
        done = await who["dev-x"].ok("POST", "/v1/contracts", mine, 200)
        assert actions(done)[("Deployment", "shop/api/1.0.0@dev")] == "deployed"
        # team-y may not even restate team-x's objects unchanged
        code, problem = await who["dev-y"].call("POST", "/v1/contracts", mine)
        assert code == 403, problem


async def test_a_deployment_policy_refuses_is_a_403_and_nothing_is_written(api: Api) -> None:
    prod = [
        *contracts(),
        {"kind": "Deployment", "application": "shop", "service": "worker", "version": "1.0.0",
         "environment": "prod"},
    ]  # fmt: skip
    before = await api.revision()
    code, problem = await api.call("POST", "/v1/contracts", prod)
    assert code == 403, problem
    assert "body[13] (Deployment shop/worker)" in problem["detail"], problem
    assert "dev-before-prod" in problem["detail"]
    assert await api.revision() == before
    assert await api.ok("GET", "/v1/environments") == []


async def test_an_owner_left_out_is_defaulted_as_by_the_objects_route(api: Api) -> None:
    await api.ok(
        "POST",
        "/v1/contracts",
        [{"kind": "Application", "metadata": {"name": "shop"}}],
        200,
    )
    app = await api.ok("GET", "/v1/applications/shop")
    assert app["metadata"]["owner"] == "platform-team"  # authentication is off
