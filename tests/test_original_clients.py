"""Clients of the original ZTDP API keep working (issue 9): bodies without owners, resources of
types nobody realises, links that answer 201, and the README's flow run as written."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import REPO, ServerProcess
from tests.helpers import Api, Caller, authenticated
from ztdp.api import create_app
from ztdp.graph.store import GraphStore
from ztdp.settings import Settings

FLOW = REPO / "config" / "examples" / "flow.sh"


@pytest.fixture
def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


# --- the README's flow ---------------------------------------------------------------------


def test_the_flow_script_runs_against_ztdp_serve() -> None:
    """As on a fresh machine: the embedded default with its sandbox, and the flow ends with
    checkout-api Ready in dev, then in prod."""
    env = {"ZTDP_GRAPH_STORE": "memory", "ZTDP_AUTH": "off", "ZTDP_SANDBOX": "auto"}
    server = ServerProcess(env).start()
    try:
        done = subprocess.run(
            ["bash", str(FLOW)],
            env={**os.environ, "ZTDP_URL": server.url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        out = server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in out, out
    [version] = [line for line in done.stdout.splitlines() if "worker/versions -> 201" in line]
    assert '"owner": "team-x"' in version  # inherited from its service, and that from checkout
    assert "/v1/environments/dev/deployments/checkout/checkout-api: Ready" in done.stdout
    assert "/v1/environments/prod/deployments/checkout/checkout-api: Ready" in done.stdout
    assert "sandbox (Kubernetes API emulator: nothing runs)" in out


def _readme_flow() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## The main flow with curl", 1)[1].split("```sh", 1)[1].split("```", 1)[0]


def test_the_readme_flow_is_the_one_the_script_runs() -> None:
    readme, script = _readme_flow(), FLOW.read_text()
    bodies = re.findall(r"-d '([^']*)'", readme)
    assert len(bodies) >= 12
    for body in bodies:
        assert f"'{body}'" in script, f"README body not run by flow.sh: {body}"
    paths = set(re.findall(r"\$B(/v1/[^\s\"'…]+)", readme)) - {
        "/v1/runs/5f0c",
        "/v1/events?type=run",
    }
    for path in paths:
        assert path in script, f"README path not run by flow.sh: {path}"


# --- owners left out -----------------------------------------------------------------------


async def test_bodies_without_owners_take_the_parents_or_the_platform_teams(
    graph_store: GraphStore,
) -> None:
    app = create_app(Settings(platform_team="ops"), store=graph_store)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        env = await api.ok("POST", "/v1/environments", {"metadata": {"name": "dev"}})
        assert env["metadata"]["owner"] == "ops"  # authentication is off: the platform's
        await api.application("checkout", "team-x")
        svc = await api.ok(
            "POST",
            "/v1/applications/checkout/services",
            {"metadata": {"name": "api"}, "spec": {"application": "checkout"}},
        )
        assert svc["metadata"]["owner"] == "team-x"
        version = await api.ok(
            "POST", "/v1/applications/checkout/services/api/versions", {"version": "1.0.0"}
        )
        assert version["owner"] == "team-x"
        for path, body in [
            ("/v1/applications", {"metadata": {"name": "billing"}}),
            (
                "/v1/resources",
                {"kind": "resource", "metadata": {"name": "db"}, "spec": {"type": "postgres"}},
            ),
            (
                "/v1/policies",
                {
                    "metadata": {"name": "p"},
                    "spec": {"rule": {"type": "promotion", "requires": ["dev"]}},
                },
            ),
        ]:
            assert (await api.ok("POST", path, body))["metadata"]["owner"] == "ops"
        # an update without owner keeps the stored one
        changed = await api.ok(
            "PUT", "/v1/applications/checkout", {"metadata": {"name": "checkout"}, "spec": {}}
        )
        assert changed["metadata"]["owner"] == "team-x"


PEOPLE: dict[str, list[dict[str, Any]]] = {
    "viewer": [{"role": "viewer"}],
    "dev-x": [{"role": "developer", "team": "team-x"}],
    "dev-y": [{"role": "developer", "team": "team-y"}],
    "dev-xy": [
        {"role": "developer", "team": "team-x"},
        {"role": "developer", "team": "team-y"},
    ],
}


@pytest.fixture
async def people(graph_store: GraphStore) -> AsyncIterator[dict[str, Caller]]:
    """Authentication on: checkout (team-x), its service api, and team-z's service of it, ops."""
    async with authenticated(graph_store, PEOPLE) as callers:
        admin = callers["admin"]
        await admin.application("checkout", "team-x")
        await admin.service("checkout", "api")
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services",
            {"metadata": {"name": "ops", "owner": "team-z"}, "spec": {"application": "checkout"}},
        )
        yield callers


def _app(name: str, owner: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, **({"owner": owner} if owner else {})}}


async def test_a_new_object_without_owner_is_the_callers_teams(people: dict[str, Caller]) -> None:
    assert (await people["dev-x"].ok("POST", "/v1/applications", _app("a1")))["metadata"][
        "owner"
    ] == "team-x"
    assert (await people["admin"].ok("POST", "/v1/applications", _app("a2")))["metadata"][
        "owner"
    ] == "platform-team"
    code, problem = await people["dev-xy"].call("POST", "/v1/applications", _app("a3"))
    assert code == 422 and problem["errors"][0]["loc"] == "metadata.owner"
    assert problem["detail"] == (
        "metadata.owner: must be given, because token:dev-xy is a developer of several teams "
        "(team-x, team-y): say which one owns it"
    )
    await people["dev-xy"].ok("POST", "/v1/applications", _app("a3", "team-y"))
    code, _ = await people["viewer"].call("POST", "/v1/applications", _app("a4"))
    assert code == 403


async def test_a_missing_owner_never_lets_a_caller_do_more(people: dict[str, Caller]) -> None:
    dev_y = people["dev-y"]
    before = await people["admin"].revision()
    ownerless_service = {"metadata": {"name": "sneaky"}, "spec": {"application": "checkout"}}
    code, problem = await dev_y.call(
        "POST", "/v1/applications/checkout/services", ownerless_service
    )
    assert code == 403 and "not a developer of team team-x" in problem["detail"]
    code, _ = await dev_y.call(
        "POST", "/v1/applications/checkout/services/api/versions", {"version": "2.0.0"}
    )
    assert code == 403
    code, _ = await dev_y.call("PUT", "/v1/applications/checkout", _app("checkout"))
    assert code == 403
    # a version inherits its service's owner: team-z's service takes team-z, as naming it would
    code, problem = await people["dev-x"].call(
        "POST", "/v1/applications/checkout/services/ops/versions", {"version": "1.0.0"}
    )
    assert code == 403 and "team-z" in problem["detail"]
    assert await people["admin"].revision() == before
    created = await people["dev-x"].ok(
        "POST", "/v1/applications/checkout/services", ownerless_service
    )
    assert created["metadata"]["owner"] == "team-x"


# --- resources and links -------------------------------------------------------------------


async def test_a_resource_may_name_a_type_nobody_realises(api: Api) -> None:
    await api.basic()
    cache = {"kind": "resource", "metadata": {"name": "cache"}, "spec": {"type": "redis"}}
    assert (await api.ok("POST", "/v1/resources", cache))["spec"]["type"] == "redis"
    await api.ok("POST", "/v1/applications/checkout/resources/cache")
    await api.ok("POST", "/v1/applications/checkout/services/checkout-api/resources/cache")
    plan = await api.ok("GET", "/v1/applications/checkout/plan")
    [step] = [s for w in plan["waves"] for s in w["steps"] if s["node"] == "resource/cache"]
    assert step["provider"] is None  # no resource type redis, so no provider to realise it


async def test_linking_answers_201_when_it_links_and_200_when_it_was(api: Api) -> None:
    await api.basic()
    await api.ok(
        "POST",
        "/v1/resources",
        {"kind": "resource", "metadata": {"name": "pg-db"}, "spec": {"type": "postgres"}},
    )
    path = "/v1/applications/checkout/resources/pg-db"
    assert [(await api.call("POST", path))[0] for _ in range(2)] == [201, 200]
    svc = "/v1/applications/checkout/services/checkout-api/resources"
    assert (await api.call("POST", svc, {"resource": "pg-db"}))[0] == 201
    assert (await api.call("POST", f"{svc}/pg-db"))[0] == 200
