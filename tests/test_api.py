"""The v1 API over HTTP, on every graph store."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import Api


@pytest.fixture
def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


async def test_readme_flow_deploys_and_plans(api: Api) -> None:
    await api.environment("dev")
    await api.environment("prod")
    app = await api.application("checkout")
    assert app["kind"] == "Application" and app["metadata"]["revision"] > 0
    assert await api.ok("POST", "/v1/applications/checkout/environments/allowed", ["dev"], 200) == [
        "dev"
    ]
    await api.service("checkout", "checkout-api")
    version = await api.version("checkout", "checkout-api", "1.0.0")
    assert version["image"] == "checkout-api:1.0.0"

    code, result = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    assert code == 202, result
    assert result["decision"]["allowed"] is True
    deployments = await api.ok("GET", "/v1/environments/dev/deployments")
    assert [(d["service"], d["version"]) for d in deployments] == [("checkout-api", "1.0.0")]

    plan = await api.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    [wave] = plan["waves"]
    [step] = wave["steps"]
    assert step["node"] == "deployment/checkout/checkout-api@dev"
    assert step["action"] == "create" and step["provider"] == "kubernetes"
    assert {"path": "image", "before": None, "after": "checkout-api:1.0.0"} in step["diff"]


async def test_a_denied_deploy_is_403_naming_the_policy_and_changes_nothing(api: Api) -> None:
    await api.environment("dev")
    await api.environment("prod")
    await api.application("checkout")
    await api.ok("POST", "/v1/applications/checkout/environments/dev/allowed", status=200)
    await api.service("checkout", "checkout-api")
    await api.version("checkout", "checkout-api")
    before = await api.revision()
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403
    assert "builtin-allowed-environments" in problem["detail"]
    assert "prod is not in application checkout's allowed environments (dev)" in problem["detail"]
    assert [r["passed"] for r in problem["decision"]["results"]] == [False]
    assert await api.revision() == before
    assert await api.ok("GET", "/v1/environments/prod/deployments") == []


async def test_plan_without_environment_orders_the_application_graph(api: Api) -> None:
    await api.basic()
    await api.service("checkout", "worker")
    await api.ok(
        "POST",
        "/v1/applications/checkout/services/worker/dependencies",
        {"service": "checkout-api"},
        200,
    )
    plan = await api.ok("GET", "/v1/applications/checkout/plan")
    order = {s["node"]: w["index"] for w in plan["waves"] for s in w["steps"]}
    assert order["application/checkout"] < order["service/checkout/checkout-api"]
    assert order["service/checkout/checkout-api"] < order["service/checkout/worker"]
    assert order["service/checkout/checkout-api"] < order["version/checkout/checkout-api/1.0.0"]


async def test_plan_orders_resources_before_the_services_that_use_them(api: Api) -> None:
    await api.basic()
    await api.ok(
        "POST",
        "/v1/resources",
        {
            "kind": "resource",
            "metadata": {"name": "pg-db", "owner": "team-x"},
            "spec": {"type": "postgres", "config_ref": "config/postgres/pg-db"},
        },
    )
    code, problem = await api.call(
        "POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db"
    )
    assert code == 409 and "not linked to application checkout" in problem["detail"]
    await api.ok("POST", "/v1/applications/checkout/resources/pg-db", status=201)
    await api.ok(
        "POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db", status=201
    )
    assert [
        r["metadata"]["name"]
        for r in await api.ok("GET", "/v1/applications/checkout/services/checkout-api/resources")
    ] == ["pg-db"]
    await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    plan = await api.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    waves = [[(s["node"], s["provider"]) for s in w["steps"]] for w in plan["waves"]]
    assert waves == [
        [("resource/pg-db@dev", "postgres")],
        [("deployment/checkout/checkout-api@dev", "kubernetes")],
    ]


async def test_a_dependency_cycle_is_a_422_naming_its_nodes(api: Api) -> None:
    await api.basic()
    await api.service("checkout", "worker")
    await api.ok(
        "POST",
        "/v1/applications/checkout/services/worker/dependencies",
        {"service": "checkout-api"},
        200,
    )
    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/dependencies",
        {"service": "worker"},
    )
    assert code == 422  # refused when declared, so that no plan of checkout ever meets it
    assert set(problem["cycle"]) == {"service/checkout/checkout-api", "service/checkout/worker"}
    assert "dependency cycle" in problem["detail"]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/applications", {"metadata": {"name": "Bad", "owner": "x"}}, 422, "metadata.name"),
        ("/v1/applications", {"metadata": {"name": "a", "owner": "x"}, "color": 1}, 422, "color"),
        ("/v1/applications", {"metadata": {"name": "schema", "owner": "x"}}, 422, "metadata.name"),
        (
            "/v1/applications/checkout/services",
            {
                "metadata": {"name": "api", "owner": "x"},
                "spec": {"application": "checkout", "port": "x"},
            },
            422,
            "spec.port",
        ),
        (
            "/v1/applications/checkout/services",
            {"metadata": {"name": "api", "owner": "x"}, "spec": {"application": "other"}},
            422,
            "spec.application",
        ),
        (
            "/v1/applications/nope/services",
            {"metadata": {"name": "api", "owner": "x"}, "spec": {"application": "nope"}},
            404,
            None,
        ),
        (
            "/v1/applications/checkout/services/checkout-api/versions",
            {"version": "1.0", "owner": "x"},
            422,
            "version",
        ),
        (
            "/v1/applications/checkout/services/checkout-api/versions",
            {"version": "1.0.0", "owner": "x"},
            409,
            None,
        ),
        (
            "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
            {"environment": "staging"},
            422,
            "environment",
        ),
        (
            "/v1/applications/checkout/services/checkout-api/versions/9.9.9/deploy",
            {"environment": "dev"},
            404,
            None,
        ),
        ("/v1/applications/checkout/environments/allowed", ["dev", "nowhere"], 422, "body[1]"),
        ("/v1/environments", {"metadata": {"name": "dev", "owner": "x"}}, 409, None),
        (
            "/v1/policies",
            {
                "metadata": {"name": "p", "owner": "x"},
                "spec": {"rule": {"type": "expression", "expression": "1 +"}},
            },
            422,
            "spec.rule.expression",
        ),
        (
            "/v1/policies",
            {"metadata": {"name": "p", "owner": "x"}, "spec": {"rule": {"type": "sometimes"}}},
            422,
            "spec.rule",
        ),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field_and_changes_nothing(
    api: Api, path: str, body: Any, status: int, field: str | None
) -> None:
    await api.basic()
    before = await api.revision()
    code, problem = await api.call("POST", path, body)
    assert code == status, problem
    assert problem["status"] == status and problem["detail"]
    if field is not None:
        locs = [e["loc"] for e in problem["errors"]]
        assert any(loc == field or loc.startswith(field + ".") for loc in locs), locs
    assert await api.revision() == before


async def test_unreadable_bodies_are_400(api: Api) -> None:
    for raw in (b"{not json", b""):
        resp = await api.client.post("/v1/applications", data=raw)
        assert resp.status == 400
        assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_an_oversized_body_is_413(api: Api) -> None:
    big = io.BytesIO(b"[" + b"1," * 600_000 + b"1]")
    resp = await api.client.post("/v1/applications", data=big)
    assert resp.status == 413
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_update_with_a_stale_revision_is_409(api: Api) -> None:
    created = await api.application("checkout")
    rev = created["metadata"]["revision"]
    body = {"metadata": {"name": "checkout", "owner": "team-y"}, "spec": {"description": "new"}}
    updated = await api.ok("PUT", "/v1/applications/checkout", body, 200)
    assert updated["metadata"]["owner"] == "team-y" and updated["metadata"]["revision"] > rev
    code, problem = await api.call(
        "PUT", "/v1/applications/checkout", body, headers={"If-Match": f'"{rev}"'}
    )
    assert code == 409 and "read it again" in problem["detail"]
    stale = {**body, "metadata": {**body["metadata"], "revision": rev}}
    code, _ = await api.call("PUT", "/v1/applications/checkout", stale)
    assert code == 409
    fresh = {**body, "metadata": {**body["metadata"], "revision": updated["metadata"]["revision"]}}
    await api.ok("PUT", "/v1/applications/checkout", fresh, 200)


async def test_reads_and_lists(api: Api) -> None:
    await api.basic()
    assert [a["metadata"]["name"] for a in await api.ok("GET", "/v1/applications")] == ["checkout"]
    assert (await api.ok("GET", "/v1/applications/checkout"))["spec"]["tags"] == ["payments"]
    assert [
        s["metadata"]["name"] for s in await api.ok("GET", "/v1/applications/checkout/services")
    ] == ["checkout-api"]
    assert (await api.ok("GET", "/v1/applications/checkout/services/checkout-api"))["spec"][
        "port"
    ] == 8080
    assert [
        v["version"]
        for v in await api.ok("GET", "/v1/applications/checkout/services/checkout-api/versions")
    ] == ["1.0.0"]
    assert await api.ok("GET", "/v1/applications/checkout/environments/allowed") == ["dev", "prod"]
    assert [e["metadata"]["name"] for e in await api.ok("GET", "/v1/environments")] == [
        "dev",
        "prod",
    ]
    schema = await api.ok("GET", "/v1/applications/schema")
    assert schema["title"] == "Application" and "metadata" in schema["properties"]
    schema = await api.ok("GET", "/v1/applications/checkout/services/schema")
    assert schema["title"] == "Service"
    assert [r["metadata"]["name"] for r in await api.ok("GET", "/v1/resources")] == ["postgres"]
    code, problem = await api.call("GET", "/v1/applications/nope")
    assert code == 404 and problem["detail"] == "application nope does not exist"
    graph = await api.ok("GET", "/v1/graph")
    assert {
        "source": "application/checkout",
        "target": "environment/dev",
        "type": "allowed_in",
    } in graph["edges"]
    assert (await api.ok("GET", "/v1/healthz")) == {"status": "ok"}


async def test_apply_plans_every_application_in_the_environment(api: Api) -> None:
    await api.basic()
    await api.application("billing")
    await api.ok("POST", "/v1/applications/billing/environments/allowed", ["dev"], 200)
    await api.service("billing", "invoices")
    await api.version("billing", "invoices", "2.0.0")
    await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    await api.deploy("billing", "invoices", "2.0.0", "dev")
    result = await api.ok("POST", "/v1/apply?env=dev", status=202)
    nodes = sorted(s["node"] for w in result["plan"]["waves"] for s in w["steps"])
    assert nodes == ["deployment/billing/invoices@dev", "deployment/checkout/checkout-api@dev"]
    code, _ = await api.call("POST", "/v1/apply?env=nowhere")
    assert code == 422
    code, _ = await api.call("POST", "/v1/apply")
    assert code == 422


async def test_a_new_version_replaces_the_old_one_in_an_environment(api: Api) -> None:
    await api.basic()
    await api.version("checkout", "checkout-api", "1.1.0")
    await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    await api.deploy("checkout", "checkout-api", "1.1.0", "dev")
    deployments = await api.ok("GET", "/v1/environments/dev/deployments")
    assert [d["version"] for d in deployments] == ["1.1.0"]
    v1 = await api.ok("GET", "/v1/applications/checkout/services/checkout-api/versions/1.0.0")
    assert v1["environments"] == []


async def test_openapi_and_docs_are_served_locally(api: Api) -> None:
    spec = await api.ok("GET", "/openapi.json")
    assert spec["openapi"] == "3.1.0"
    assert "/v1/applications/{app}/services/{svc}/versions/{version}/deploy" in spec["paths"]
    page = await api.client.get("/docs")
    html = await page.text()
    assert (
        page.status == 200
        and "/docs/static/swagger-ui-bundle.js" in html
        and "http" not in html.split("<body>")[1]
    )
    js = await api.client.get("/docs/static/swagger-ui-bundle.js")
    assert js.status == 200 and len(await js.read()) > 100_000


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    code, problem = await api.call("GET", "/v1/nothing")
    assert code == 404 and "no route" in problem["detail"]
    resp = await api.client.delete("/v1/environments")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
