"""Reading and changing each kind one by one (issue 9): environments, resources, services,
ETags that If-Match accepts, immutable versions, and deployments that say why they failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api, Caller, authenticated
from tests.test_runtime import SETTINGS, FakeProvider, finished, registry
from ztdp.api import create_app
from ztdp.graph.store import GraphStore

PEOPLE: dict[str, list[dict[str, Any]]] = {
    "dev-x": [{"role": "developer", "team": "team-x"}],
    "dev-y": [{"role": "developer", "team": "team-y"}],
}


@pytest.fixture
def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


@pytest.fixture
async def people(graph_store: GraphStore) -> AsyncIterator[dict[str, Caller]]:
    """Authentication on: checkout (team-x) with checkout-api, and team-x's database x-db."""
    async with authenticated(graph_store, PEOPLE) as callers:
        admin = callers["admin"]
        await admin.environment("dev")
        await admin.application("checkout", "team-x")
        await admin.service("checkout", "checkout-api")
        await admin.ok("POST", "/v1/resources", _resource("x-db", owner="team-x"))
        yield callers


def _resource(name: str, type_: str = "postgres", **extra: Any) -> dict[str, Any]:
    owner = extra.pop("owner", None)
    meta = {"name": name, **({"owner": owner} if owner else {})}
    return {"kind": "resource", "metadata": meta, "spec": {"type": type_, **extra}}


@pytest.fixture
def kube() -> FakeProvider:
    return FakeProvider("kubernetes")


@pytest.fixture
def pg() -> FakeProvider:
    return FakeProvider("postgres")


@asynccontextmanager
async def with_runtime(store: GraphStore, *providers: FakeProvider, **settings: Any) -> Any:
    """The API with a runtime on fake providers, after `Api.basic`."""
    app = create_app(
        SETTINGS.model_copy(update=settings), store=store, providers=registry(*providers)
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        yield api


# --- environments --------------------------------------------------------------------------


async def test_an_environment_is_read_and_changed(api: Api) -> None:
    created = await api.environment("dev")
    read = await api.ok("GET", "/v1/environments/dev")
    assert read.pop("status") == {"target": None}  # no cluster configured, no sandbox
    assert read == created
    change = {
        "metadata": {"name": "dev"},  # no owner: the stored one is kept
        "spec": {
            "kubernetes": {"kubeconfig": "/etc/k/dev", "context": "dev-1", "namespace": "apps"},
            "reconcile": "report-only",
        },
    }
    changed = await api.ok("PUT", "/v1/environments/dev", change)
    assert changed["metadata"]["owner"] == "platform-team"
    # The former spelling is read as spec.providers.kubernetes, and shown so.
    assert changed["spec"]["providers"]["kubernetes"]["context"] == "dev-1"
    read = await api.ok("GET", "/v1/environments/dev")
    assert read["spec"]["reconcile"] == "report-only"
    assert read["status"] == {"target": "the cluster of kubeconfig /etc/k/dev"}
    stale = f'"{created["metadata"]["revision"]}"'
    code, problem = await api.call(
        "PUT", "/v1/environments/dev", change, headers={"If-Match": stale}
    )
    assert code == 409 and "environment dev is at revision" in problem["detail"]
    code, problem = await api.call("PUT", "/v1/environments/prod", {"metadata": {"name": "prod"}})
    assert code == 404 and "environment prod" in problem["detail"]
    code, problem = await api.call("PUT", "/v1/environments/dev", {"metadata": {"name": "qa"}})
    assert code == 422 and problem["errors"][0]["loc"] == "metadata.name"


async def test_only_a_platform_admin_changes_an_environment(people: dict[str, Caller]) -> None:
    body = {"metadata": {"name": "dev"}, "spec": {"reconcile": "report-only"}}
    code, problem = await people["dev-x"].call("PUT", "/v1/environments/dev", body)
    assert code == 403 and "platform-admin" in problem["detail"]
    assert (await people["admin"].ok("PUT", "/v1/environments/dev", body))["spec"][
        "reconcile"
    ] == "report-only"


@pytest.fixture
async def watched(graph_store: GraphStore, kube: FakeProvider) -> AsyncIterator[Api]:
    """The runtime with a fake Kubernetes, its actors observing every 0.05 s."""
    async with with_runtime(graph_store, kube, observe_interval=0.05) as api:
        yield api


async def wait_for_status(api: Api, path: str, status: str) -> dict[str, Any]:
    with anyio.fail_after(5):
        while (d := await api.ok("GET", path))["status"] != status:  # noqa: ASYNC110 - polls the API as a client does
            await asyncio.sleep(0.02)
    return d  # type: ignore[no-any-return]


async def test_a_changed_reconcile_mode_applies_from_the_next_run(
    watched: Api, kube: FakeProvider
) -> None:
    _, accepted = await watched.deploy("checkout", "checkout-api", "1.0.0", "dev")
    await finished(watched, accepted["run"])
    await watched.ok(
        "PUT",
        "/v1/environments/dev",
        {"metadata": {"name": "dev"}, "spec": {"reconcile": "report-only"}},
    )
    run = await watched.ok("POST", "/v1/apply?env=dev", status=202)
    assert (await finished(watched, run["run"]))["steps"][0]["status"] == "Unchanged"
    node = "deployment/checkout/checkout-api@dev"
    kube.live[node]["image"] = "evil:1"  # changed behind ZTDP's back
    drifted = await wait_for_status(
        watched, "/v1/environments/dev/deployments/checkout/checkout-api", "Drifted"
    )
    assert drifted["reason"] == "drifted: image"
    assert kube.live[node]["image"] == "evil:1"  # recorded, not repaired


# --- resources -----------------------------------------------------------------------------


async def test_a_resource_or_else_a_resource_type_is_read_by_name(api: Api) -> None:
    rtype = await api.ok("GET", "/v1/resources/postgres")
    assert rtype["kind"] == "ResourceType" and rtype["spec"]["provider"] == "postgres"
    created = await api.ok("POST", "/v1/resources", _resource("pg-db", owner="team-x"))
    assert await api.ok("GET", "/v1/resources/pg-db") == created
    code, problem = await api.call("GET", "/v1/resources/nothing")
    assert code == 404 and "no resource or resource type nothing" in problem["detail"]
    # one namespace for both kinds, so that a name reads one thing
    code, problem = await api.call("POST", "/v1/resources", _resource("postgres", owner="x"))
    assert code == 409 and "a resource type named postgres already exists" in problem["detail"]
    code, problem = await api.call(
        "POST",
        "/v1/resources",
        {"kind": "ResourceType", "metadata": {"name": "pg-db"}, "spec": {"provider": "postgres"}},
    )
    assert code == 409 and "a resource named pg-db already exists" in problem["detail"]


async def test_a_resource_is_changed_and_its_type_only_while_unused(api: Api) -> None:
    await api.basic()
    await api.ok("POST", "/v1/resources", _resource("pg-db", owner="team-x"))
    changed = await api.ok("PUT", "/v1/resources/pg-db", _resource("pg-db", "redis"))
    assert changed["spec"]["type"] == "redis" and changed["metadata"]["owner"] == "team-x"
    await api.ok("POST", "/v1/applications/checkout/resources/pg-db")
    code, problem = await api.call("PUT", "/v1/resources/pg-db", _resource("pg-db"))
    assert code == 409
    assert problem["detail"] == (
        "resource pg-db is used by application checkout: its type cannot change from redis to "
        "postgres; create a resource of the new type instead"
    )
    config = _resource("pg-db", "redis", config_ref="config/redis/pg-db")
    assert (await api.ok("PUT", "/v1/resources/pg-db", config))["spec"]["config_ref"] == (
        "config/redis/pg-db"
    )
    code, _ = await api.call("PUT", "/v1/resources/pg-db", _resource("other"))
    assert code == 422
    rtype = {"kind": "ResourceType", "metadata": {"name": "postgres"}, "spec": {"provider": "pg2"}}
    assert (await api.ok("PUT", "/v1/resources/postgres", rtype))["spec"]["provider"] == "pg2"
    code, problem = await api.call("PUT", "/v1/resources/postgres", _resource("postgres"))
    assert code == 404 and "resource postgres does not exist" in problem["detail"]


async def test_a_resource_is_changed_by_its_team_and_shared_by_an_admin(
    people: dict[str, Caller],
) -> None:
    dev_x, dev_y, admin = people["dev-x"], people["dev-y"], people["admin"]
    await dev_x.ok("PUT", "/v1/resources/x-db", _resource("x-db", config_ref="c/x-db"))
    detail = (await dev_y.call("PUT", "/v1/resources/x-db", _resource("x-db")))[1]["detail"]
    assert "not a developer of team team-x" in detail
    code, problem = await dev_x.call("PUT", "/v1/resources/x-db", _resource("x-db", shared=True))
    assert code == 403 and "may not change spec.shared of resource x-db" in problem["detail"]
    await admin.ok("PUT", "/v1/resources/x-db", _resource("x-db", shared=True))
    # a shared resource stays shared unless an admin says otherwise
    code, _ = await dev_x.call("PUT", "/v1/resources/x-db", _resource("x-db"))
    assert code == 403
    await dev_x.ok("PUT", "/v1/resources/x-db", _resource("x-db", shared=True, description="d"))
    rtype = {"kind": "ResourceType", "metadata": {"name": "postgres"}, "spec": {"provider": "pg"}}
    code, problem = await dev_x.call("PUT", "/v1/resources/postgres", rtype)
    assert code == 403 and "change resource types" in problem["detail"]


# --- services ------------------------------------------------------------------------------


async def test_a_service_is_changed(api: Api) -> None:
    await api.basic()
    path = "/v1/applications/checkout/services/checkout-api"
    read = await api.ok("GET", path)
    body = {"metadata": {"name": "checkout-api"}, "spec": {"application": "checkout", "port": 9090}}
    code, changed = await api.call(
        "PUT", path, body, headers={"If-Match": f'"{read["metadata"]["revision"]}"'}
    )
    assert (
        code == 200 and changed["spec"]["port"] == 9090 and changed["metadata"]["owner"] == "team-x"
    )
    assert (await api.ok("GET", path))["spec"]["public"] is False
    code, problem = await api.call("PUT", path, body, headers={"If-Match": '"1"'})
    assert code == 409 and "service checkout-api of application checkout is at" in problem["detail"]
    wrong = {**body, "spec": {"application": "billing"}}
    code, problem = await api.call("PUT", path, wrong)
    assert code == 422 and problem["errors"][0]["loc"] == "spec.application"
    code, _ = await api.call("PUT", "/v1/applications/checkout/services/nope", body)
    assert code == 422  # metadata.name names another service
    code, _ = await api.call(
        "PUT", "/v1/applications/checkout/services/nope", {**body, "metadata": {"name": "nope"}}
    )
    assert code == 404


async def test_a_service_is_changed_by_its_application_team_only(
    people: dict[str, Caller],
) -> None:
    path = "/v1/applications/checkout/services/checkout-api"
    body = {"metadata": {"name": "checkout-api"}, "spec": {"application": "checkout"}}
    code, _ = await people["dev-y"].call("PUT", path, body)
    assert code == 403
    given = {**body, "metadata": {"name": "checkout-api", "owner": "team-y"}}
    code, problem = await people["dev-x"].call("PUT", path, given)
    assert code == 403 and "team-y" in problem["detail"]
    assert (await people["dev-x"].ok("PUT", path, body))["metadata"]["owner"] == "team-x"


# --- ETags, If-Match and immutable versions ------------------------------------------------

APPROVAL_POLICY = {
    "metadata": {"name": "prod-approval", "owner": "platform-team"},
    "spec": {"transition": {"environment": "prod"}, "rule": {"type": "approval"}},
}
SUBJECT = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}
CHECK = {"metadata": {"name": "unit-1", "owner": "ci"}, "spec": {"check": "u", "subject": SUBJECT}}

# path read -> the body a PUT there sends back (None: the kind has no PUT)
READS: dict[str, dict[str, Any] | None] = {
    "/v1/applications/checkout": {"metadata": {"name": "checkout"}},
    "/v1/applications/checkout/services/checkout-api": {
        "metadata": {"name": "checkout-api"},
        "spec": {"application": "checkout"},
    },
    "/v1/applications/checkout/services/checkout-api/versions/1.0.0": None,
    "/v1/environments/dev": {"metadata": {"name": "dev"}},
    "/v1/resources/pg-db": _resource("pg-db"),
    "/v1/resources/postgres": {
        "kind": "ResourceType",
        "metadata": {"name": "postgres"},
        "spec": {"provider": "postgres"},
    },
    "/v1/policies/prod-approval": APPROVAL_POLICY,
    "/v1/checks/unit-1": CHECK,
    "/v1/approvals/ok-1": None,
}


@pytest.mark.parametrize("path", sorted(READS))
async def test_every_read_carries_an_etag_that_if_match_accepts(api: Api, path: str) -> None:
    await api.basic()
    await api.ok("POST", "/v1/resources", _resource("pg-db", owner="team-x"))
    await api.ok("POST", "/v1/policies", APPROVAL_POLICY)
    await api.ok("POST", "/v1/checks", CHECK)
    approval = {"policy": "prod-approval", "subject": SUBJECT, "environment": "prod"}
    await api.ok(
        "POST",
        "/v1/approvals",
        {"metadata": {"name": "ok-1", "owner": "x"}, "spec": {**approval, "approver": "dave"}},
    )
    resp = await api.client.get(path)
    data = await resp.json()
    revision = data["metadata"]["revision"] if "metadata" in data else data["revision"]
    assert resp.headers["ETag"] == f'"{revision}"'
    body = READS[path]
    if body is None:
        return
    await api.environment("qa")  # another object's change does not make this ETag stale
    put = await api.client.put(path, json=body, headers={"If-Match": resp.headers["ETag"]})
    assert put.status == 200, await put.text()
    assert put.headers["ETag"] == f'"{await api.revision()}"'
    stale = await api.client.put(path, json=body, headers={"If-Match": resp.headers["ETag"]})
    assert stale.status == 409 and "read it again" in (await stale.json())["detail"]


async def test_versions_are_immutable(api: Api) -> None:
    await api.basic()
    path = "/v1/applications/checkout/services/checkout-api/versions/1.0.0"
    resp = await api.client.put(path, json={"version": "1.0.0", "image": "other:1"})
    assert resp.status == 405 and resp.headers["Allow"] == "DELETE, GET"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert "versions are immutable" in (await resp.json())["detail"]
    assert (await api.ok("GET", path))["image"] == "checkout-api:1.0.0"


# --- deployments: one at a time, and why ---------------------------------------------------


@pytest.fixture
async def runtime(
    graph_store: GraphStore, kube: FakeProvider, pg: FakeProvider
) -> AsyncIterator[Api]:
    async with with_runtime(graph_store, kube, pg) as api:
        yield api


async def test_one_deployment_is_read_with_its_status(runtime: Api) -> None:
    path = "/v1/environments/dev/deployments/checkout/checkout-api"
    code, problem = await runtime.call("GET", path)
    assert code == 404
    assert (
        problem["detail"] == "service checkout-api of application checkout is not deployed to dev"
    )
    _, accepted = await runtime.deploy("checkout", "checkout-api", "1.0.0", "dev")
    await finished(runtime, accepted["run"])
    one = await runtime.ok("GET", path)
    assert one == (await runtime.ok("GET", "/v1/environments/dev/deployments"))[0]
    assert (one["version"], one["status"], one["reason"]) == ("1.0.0", "Ready", None)
    assert one["since"] is not None
    for missing in ("qa/deployments/checkout/checkout-api", "dev/deployments/checkout/nope"):
        assert (await runtime.call("GET", f"/v1/environments/{missing}"))[0] == 404


async def test_deployments_say_why_they_failed_or_are_blocked(
    runtime: Api, kube: FakeProvider, pg: FakeProvider
) -> None:
    await runtime.ok("POST", "/v1/resources", _resource("pg-db", owner="team-x"))
    await runtime.ok("POST", "/v1/applications/checkout/resources/pg-db")
    await runtime.ok("POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db")
    await runtime.service("checkout", "worker")
    await runtime.version("checkout", "worker")
    pg.fail["resource/pg-db@dev"] = "disk quota exceeded"
    kube.fail["deployment/checkout/worker@dev"] = "image pull refused"
    for svc in ("worker", "checkout-api"):
        _, accepted = await runtime.deploy("checkout", svc, "1.0.0", "dev")
        await finished(runtime, accepted["run"])
    listed = {d["service"]: d for d in await runtime.ok("GET", "/v1/environments/dev/deployments")}
    assert (listed["worker"]["status"], listed["worker"]["reason"]) == (
        "Failed",
        "image pull refused",
    )
    blocked = listed["checkout-api"]
    assert (blocked["status"], blocked["reason"]) == (
        "Blocked",
        "blocked by resource/pg-db@dev: disk quota exceeded",
    )
    assert blocked["since"] is not None
    one = await runtime.ok("GET", "/v1/environments/dev/deployments/checkout/checkout-api")
    assert one == blocked


async def test_an_environment_read_can_be_written_back_whole(memory_client: TestClient) -> None:  # type: ignore[type-arg]
    """Read, change, write back: the read-only `status` a read adds is ignored, not refused."""
    api = Api(memory_client)
    await api.ok("POST", "/v1/environments", {"metadata": {"name": "dev"}}, 201)
    read = await api.ok("GET", "/v1/environments/dev")
    assert "status" in read
    read["spec"]["description"] = "changed"
    written = await api.ok("PUT", "/v1/environments/dev", read)
    assert written["spec"]["description"] == "changed" and "status" not in written
