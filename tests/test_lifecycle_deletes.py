"""Deleting every kind, undeploying, cascades and dry runs, over HTTP.

Deleting realised intent starts a run that removes the real objects in reverse dependency
order; dependents make a delete a 409 unless it cascades; a dry run changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from tests.test_authz import Caller
from tests.test_runtime import SETTINGS, FakeProvider, finished, registry
from ztdp.api import create_app
from ztdp.auth import MemoryTokenStore
from ztdp.providers import Resource, Target
from ztdp.settings import Settings

DEPLOYMENT = "deployment/checkout/checkout-api@dev"
DATABASE = "resource/pg-db@dev"


class RecordingProvider(FakeProvider):
    """The fake provider, noting every delete in one list shared by both providers."""

    def __init__(self, kind: str, deletes: list[str]) -> None:
        super().__init__(kind)
        self.deletes = deletes

    async def delete(self, *, resource: Resource, target: Target) -> None:
        self.deletes.append(resource.node)
        await super().delete(resource=resource, target=target)


@pytest.fixture
def deletes() -> list[str]:
    return []


@pytest.fixture
def kube(deletes: list[str]) -> RecordingProvider:
    return RecordingProvider("kubernetes", deletes)


@pytest.fixture
def pg(deletes: list[str]) -> RecordingProvider:
    return RecordingProvider("postgres", deletes)


@pytest.fixture
async def api(kube: RecordingProvider, pg: RecordingProvider) -> AsyncIterator[Api]:
    """checkout-api 1.0.0 using the database pg-db, realised in dev."""
    app = create_app(SETTINGS, providers=registry(kube, pg))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        await api.ok(
            "POST",
            "/v1/resources",
            {
                "kind": "resource",
                "metadata": {"name": "pg-db", "owner": "team-x"},
                "spec": {"type": "postgres"},
            },
        )
        for link in ("/resources/pg-db", "/services/checkout-api/resources/pg-db"):
            code, _ = await api.call("POST", "/v1/applications/checkout" + link)
            assert code in (200, 201)
        code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
        assert code == 202, accepted
        assert (await finished(api, accepted["run"]))["status"] == "Succeeded"
        assert set(kube.live) == {DEPLOYMENT} and set(pg.live) == {DATABASE}
        yield api


def _steps(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["node"], s["action"]) for w in plan["waves"] for s in w["steps"]]


async def test_deleting_a_realised_application_removes_its_objects_dependents_first(
    api: Api, kube: RecordingProvider, pg: RecordingProvider, deletes: list[str]
) -> None:
    code, problem = await api.call("DELETE", "/v1/applications/checkout")
    assert code == 409, problem
    assert {d["node"] for d in problem["dependents"]} == {
        "service/checkout/checkout-api",
        "version/checkout/checkout-api/1.0.0",
    }
    assert "?cascade=true" in problem["detail"]
    code, result = await api.call("DELETE", "/v1/applications/checkout?cascade=true")
    assert code == 202, result
    assert result["deleted"][0] == "application/checkout"
    [plan] = result["plans"]
    # the Deployment before the database it uses: reverse dependency order, wave by wave
    assert _steps(plan) == [(DEPLOYMENT, "delete"), (DATABASE, "delete")]
    [run_id] = result["runs"]
    run = await finished(api, run_id)
    assert run["status"] == "Succeeded" and run["trigger"] == "delete"
    assert deletes == [DEPLOYMENT, DATABASE]
    assert kube.live == {} and pg.live == {}
    assert (await api.call("GET", "/v1/applications/checkout"))[0] == 404
    assert await api.ok("GET", "/v1/environments/dev/deployments") == []


async def test_dry_runs_answer_the_plan_and_change_nothing(
    api: Api, kube: RecordingProvider, deletes: list[str]
) -> None:
    before = await api.revision()
    code, preview = await api.call("DELETE", "/v1/applications/checkout?cascade=true&dry_run=true")
    assert code == 200 and preview["dry_run"] is True and preview["runs"] == []
    assert preview["revision"] is None
    assert _steps(preview["plans"][0]) == [(DEPLOYMENT, "delete"), (DATABASE, "delete")]
    # a deploy preview: the decision, the graph change and the plan
    await api.version("checkout", "checkout-api", "1.1.0")
    before = await api.revision()
    code, preview = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.1.0/deploy?dry_run=true",
        {"environment": "dev"},
    )
    assert code == 200, preview
    assert preview["decision"]["allowed"] is True and preview["dry_run"] is True
    assert {c["op"] for c in preview["changes"]} == {"put_edge", "delete_edge"}
    [update] = [s for w in preview["plan"]["waves"] for s in w["steps"] if s["node"] == DEPLOYMENT]
    assert update["action"] == "update"
    assert {"path": "version", "before": "1.0.0", "after": "1.1.0"} in update["diff"]
    # a denied deploy is a decision too, not a 403, when only asked
    code, preview = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.1.0/deploy?dry_run=true",
        {"environment": "staging-not-allowed"},
    )
    assert code == 422  # no such environment: still an error naming the field
    await api.environment("qa")
    code, preview = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.1.0/deploy?dry_run=true",
        {"environment": "qa"},
    )
    assert code == 200 and preview["decision"]["allowed"] is False
    assert preview["plan"] is None and preview["changes"] == []
    assert await api.revision() == before + 1  # only the environment qa was created
    assert deletes == [] and set(kube.live) == {DEPLOYMENT}


async def test_undeploying_removes_the_real_objects(
    api: Api, kube: RecordingProvider, pg: RecordingProvider, deletes: list[str]
) -> None:
    code, result = await api.call(
        "DELETE", "/v1/environments/dev/deployments/checkout/checkout-api"
    )
    assert code == 202, result
    assert result["unlinked"] == ["version/checkout/checkout-api/1.0.0 -deploy-> environment/dev"]
    run = await finished(api, result["runs"][0])
    assert run["status"] == "Succeeded" and run["trigger"] == "undeploy"
    assert deletes == [DEPLOYMENT] and set(pg.live) == {DATABASE}  # the database stays
    assert await api.ok("GET", "/v1/environments/dev/deployments") == []
    code, problem = await api.call(
        "DELETE", "/v1/environments/dev/deployments/checkout/checkout-api"
    )
    assert code == 404 and "is not deployed to dev" in problem["detail"]


async def test_deleting_a_deployed_version_undeploys_it(api: Api, deletes: list[str]) -> None:
    code, result = await api.call(
        "DELETE", "/v1/applications/checkout/services/checkout-api/versions/1.0.0"
    )
    assert code == 202, result
    await finished(api, result["runs"][0])
    assert deletes == [DEPLOYMENT]


# --- every kind, at the path that reads it, on both graph stores ----------------------------


@pytest.fixture
async def plain(client: TestClient) -> Api:  # type: ignore[type-arg]
    api = Api(client)
    await api.basic()
    await api.service("checkout", "worker")
    await api.ok(
        "POST",
        "/v1/applications/checkout/services/checkout-api/dependencies",
        {"service": "worker"},
        200,
    )
    await api.ok(
        "POST",
        "/v1/resources",
        {
            "kind": "resource",
            "metadata": {"name": "pg-db", "owner": "team-x"},
            "spec": {"type": "postgres"},
        },
    )
    await api.call("POST", "/v1/applications/checkout/resources/pg-db")
    await api.call("POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db")
    policy = {
        "metadata": {"name": "prod-approval", "owner": "platform-team"},
        "spec": {"transition": {"environment": "prod"}, "rule": {"type": "approval"}},
    }
    await api.ok("POST", "/v1/policies", policy)
    subject = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}
    await api.ok(
        "POST",
        "/v1/approvals",
        {
            "metadata": {"name": "ok-1", "owner": "alice"},
            "spec": {
                "policy": "prod-approval",
                "subject": subject,
                "environment": "prod",
                "approver": "alice",
            },
        },
    )
    await api.ok(
        "POST",
        "/v1/checks",
        {
            "metadata": {"name": "unit-1", "owner": "ci"},
            "spec": {"check": "unit-tests", "subject": subject},
        },
    )
    return api


# path read and deleted; whether it first needs ?cascade=true; what else goes with it
KINDS = [
    ("/v1/applications/checkout/services/worker", True, ["service/checkout/worker"]),
    (
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0",
        False,
        ["version/checkout/checkout-api/1.0.0", "approval/ok-1", "check/unit-1"],
    ),
    ("/v1/environments/prod", True, ["environment/prod", "policy/prod-approval", "approval/ok-1"]),
    ("/v1/resources/pg-db", True, ["resource/pg-db"]),
    ("/v1/policies/prod-approval", False, ["policy/prod-approval", "approval/ok-1"]),
    ("/v1/checks/unit-1", False, ["check/unit-1"]),
    ("/v1/approvals/ok-1", False, ["approval/ok-1"]),
    ("/v1/applications/checkout/services/checkout-api/dependencies/checkout/worker", False, []),
    ("/v1/applications/checkout/environments/prod/allowed", False, []),
    ("/v1/applications/checkout/resources/pg-db", True, []),
    ("/v1/applications/checkout/services/checkout-api/resources/pg-db", False, []),
]


@pytest.mark.parametrize(("path", "cascade", "deleted"), KINDS, ids=[k[0] for k in KINDS])
async def test_each_kind_is_deleted_at_the_path_that_reads_it(
    plain: Api, path: str, cascade: bool, deleted: list[str]
) -> None:
    assert (await plain.call("GET", path))[0] == 200
    before = await plain.revision()
    if cascade:
        code, problem = await plain.call("DELETE", path)
        assert code == 409 and problem["dependents"], problem
        assert await plain.revision() == before
    code, result = await plain.call("DELETE", path + ("?cascade=true" if cascade else ""))
    assert code == 200, result  # nothing here is realised: no run
    assert result["deleted"][:1] == deleted[:1] and set(deleted) <= set(result["deleted"])
    assert (await plain.call("GET", path))[0] == 404
    assert (await plain.call("DELETE", path))[0] == 404
    [change] = await plain.ok("GET", f"/v1/changes?since={before}")
    assert change["actor"] == "anonymous"


async def test_a_resource_type_in_use_is_a_409(plain: Api) -> None:
    code, problem = await plain.call("DELETE", "/v1/resources/postgres")
    assert code == 409 and problem["dependents"][0]["node"] == "resource/pg-db"


# --- cascades are authorized like every write ------------------------------------------------


@pytest.fixture
async def teams() -> AsyncIterator[dict[str, Caller]]:
    import re

    announced: list[str] = []
    app = create_app(Settings(auth="on"), tokens=MemoryTokenStore(), announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        admin = Caller(client, re.search(r"ztdp_\S+", announced[0]).group(0))  # type: ignore[union-attr]
        out = {"admin": admin}
        for who, team in (("dev-x", "team-x"), ("dev-y", "team-y")):
            grants = [{"role": "developer", "team": team}]
            issued = await admin.ok("POST", "/v1/tokens", {"name": who, "grants": grants})
            out[who] = Caller(client, issued["secret"])
        for app_name, owner in (("checkout", "team-x"), ("billing", "team-y")):
            await admin.ok(
                "POST", "/v1/applications", {"metadata": {"name": app_name, "owner": owner}}
            )
            await admin.ok(
                "POST",
                f"/v1/applications/{app_name}/services",
                {"metadata": {"name": "api", "owner": owner}, "spec": {"application": app_name}},
            )
        yield out


async def test_a_cascade_never_takes_another_teams_objects(teams: dict[str, Caller]) -> None:
    # billing's api (team-y) uses checkout's api (team-x)
    await teams["dev-y"].ok(
        "POST",
        "/v1/applications/billing/services/api/dependencies",
        {"application": "checkout", "service": "api"},
    )
    code, problem = await teams["dev-x"].call("DELETE", "/v1/applications/checkout/services/api")
    assert code == 409 and problem["dependents"][0]["node"] == "service/billing/api"
    detail = await teams["dev-x"].refused(
        "DELETE", "/v1/applications/checkout/services/api?cascade=true"
    )
    assert "team-y" in detail and "cascade" in detail
    await teams["dev-y"].refused("DELETE", "/v1/applications/checkout/services/api?cascade=true")
    await teams["dev-y"].ok(
        "DELETE", "/v1/applications/billing/services/api/dependencies/checkout/api"
    )
    # the platform's policy naming the application is the platform's to delete
    await teams["admin"].ok("POST", "/v1/environments", {"metadata": {"name": "dev", "owner": "p"}})
    await teams["admin"].ok(
        "POST",
        "/v1/policies",
        {
            "metadata": {"name": "checkout-rule", "owner": "platform-team"},
            "spec": {
                "transition": {"application": "checkout"},
                "rule": {"type": "promotion", "requires": ["dev"]},
            },
        },
    )
    detail = await teams["dev-x"].refused("DELETE", "/v1/applications/checkout?cascade=true")
    assert "policy/checkout-rule" in detail and "platform-admin" in detail
    await teams["dev-y"].refused("DELETE", "/v1/applications/checkout?cascade=true")
    result = await teams["admin"].ok("DELETE", "/v1/applications/checkout?cascade=true")
    assert "policy/checkout-rule" in result["deleted"]
    assert (await teams["dev-y"].call("GET", "/v1/applications/billing/services/api"))[0] == 200
