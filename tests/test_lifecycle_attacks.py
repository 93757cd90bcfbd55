"""Deletes as an attacker and a bad day would try them (found by review; each failed once).

Each docstring gives the request sequence; the assertion states what must hold.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from tests.test_authz import Caller
from tests.test_lifecycle_deletes import (  # noqa: F401  (fixtures)
    DATABASE,
    DEPLOYMENT,
    RecordingProvider,
    api,
    deletes,
    kube,
    pg,
)
from tests.test_runtime import SETTINGS, finished, registry
from ztdp.api import create_app
from ztdp.auth import MemoryTokenStore
from ztdp.providers import Resource, Target
from ztdp.settings import Settings

# --- realising the delete of an environment ----------------------------------------------


async def test_deleting_an_environment_removes_its_databases_too(
    api: Api,  # noqa: F811
    kube: RecordingProvider,  # noqa: F811
    pg: RecordingProvider,  # noqa: F811
    deletes: list[str],  # noqa: F811
) -> None:
    """Exploit (platform-admin, nothing else needed):

        checkout-api 1.0.0 deployed to dev, using database pg-db (realised as resource/pg-db@dev)
        DELETE /v1/environments/dev?cascade=true

    The environment is gone from the graph, but the delete's plan only removes the
    Deployment: `desired_in_environment` (called by `Catalog.plan_on` on the graph after the
    delete) still wants every linked resource "in dev", because it never checks that the
    environment exists, so `resource/pg-db@dev` is neither planned for deletion nor ever
    reachable again (no environment, no apply). The real database is left behind, unmanaged.
    """
    code, result = await api.call("DELETE", "/v1/environments/dev?cascade=true")
    assert code == 202, result
    for run_id in result["runs"]:
        assert (await finished(api, run_id))["status"] == "Succeeded"
    assert (await api.call("GET", "/v1/environments/dev"))[0] == 404
    assert kube.live == {}
    assert pg.live == {}, f"real objects left behind in deleted environment dev: {set(pg.live)}"
    assert set(deletes) == {DEPLOYMENT, DATABASE}


class TargetRecorder(RecordingProvider):
    """Notes the target settings every apply and delete is given."""

    def __init__(self, kind: str, noted: list[str]) -> None:
        super().__init__(kind, noted)
        self.targets: dict[str, list[dict[str, Any]]] = {"apply": [], "delete": []}

    async def apply(self, *, resource: Resource, target: Target) -> Any:
        self.targets["apply"].append(dict(target.settings))
        return await super().apply(resource=resource, target=target)

    async def delete(self, *, resource: Resource, target: Target) -> None:
        self.targets["delete"].append(dict(target.settings))
        await super().delete(resource=resource, target=target)


async def test_deleting_an_environment_deletes_where_its_objects_are() -> None:
    """Exploit (platform-admin):

        PUT /v1/environments/dev  {"spec": {"kubernetes": {"context": "dev-cluster",
                                                           "namespace": "team-dev"}}}
        deploy checkout-api 1.0.0 to dev (realised in context dev-cluster, namespace team-dev)
        DELETE /v1/environments/dev?cascade=true

    The delete run's steps get their target from `Runtime._target`, which reads the
    environment from the graph *when the step runs*, after the delete committed: the
    environment is gone, so the provider is handed empty settings (no context, no namespace:
    the kubeconfig's current context and a namespace named after the environment). The
    real Deployment in dev-cluster/team-dev is never deleted (the provider finds nothing
    where it looks, and reports success), or worse, objects of that name in whatever
    cluster the default kubeconfig points at are deleted instead.
    """
    recorded: list[str] = []
    k8s = TargetRecorder("kubernetes", recorded)
    app = create_app(SETTINGS, providers=registry(k8s))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        where = {"context": "dev-cluster", "namespace": "team-dev"}
        env = await api.ok("GET", "/v1/environments/dev")
        env["spec"]["kubernetes"] = where
        await api.ok("PUT", "/v1/environments/dev", env, 200)
        code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
        assert code == 202, accepted
        assert (await finished(api, accepted["run"]))["status"] == "Succeeded"
        assert k8s.targets["apply"][-1]["namespace"] == "team-dev"
        code, result = await api.call("DELETE", "/v1/environments/dev?cascade=true")
        assert code == 202, result
        await finished(api, result["runs"][0])
        assert recorded == [DEPLOYMENT]
        [settings] = k8s.targets["delete"]
        assert settings.get("context") == "dev-cluster", settings
        assert settings.get("namespace") == "team-dev", settings


# --- cascades and deletes authorized more widely than the writes that made the object ----


@pytest.fixture
async def people() -> AsyncIterator[dict[str, Caller]]:
    announced: list[str] = []
    app = create_app(Settings(auth="on"), tokens=MemoryTokenStore(), announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        admin = Caller(client, re.search(r"ztdp_\S+", announced[0]).group(0))  # type: ignore[union-attr]
        out = {"admin": admin}
        grants = {
            "dev-x": [{"role": "developer", "team": "team-x"}],
            "dev-p": [{"role": "developer", "team": "platform-team"}],
        }
        for who, g in grants.items():
            issued = await admin.ok("POST", "/v1/tokens", {"name": who, "grants": g})
            out[who] = Caller(client, issued["secret"])
        for env in ("dev", "prod"):
            await admin.ok("POST", "/v1/environments", {"metadata": {"name": env}})
        await admin.ok(
            "POST", "/v1/applications", {"metadata": {"name": "checkout", "owner": "team-x"}}
        )
        await admin.ok("PUT", "/v1/applications/checkout/environments/allowed", ["dev", "prod"])
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services",
            {"metadata": {"name": "api"}, "spec": {"application": "checkout"}},
        )
        await admin.ok(
            "POST", "/v1/applications/checkout/services/api/versions", {"version": "1.0.0"}
        )
        yield out


async def test_a_cascade_cannot_delete_a_policy_a_developer_could_not_delete(
    people: dict[str, Caller],
) -> None:
    """Exploit (developer of team-x; the platform-admin wrote a policy for team-x's app and
    recorded team-x as its owner):

        admin: POST /v1/policies {"metadata": {"name": "checkout-prod-approval",
                                               "owner": "team-x"},
                                  "spec": {"transition": {"application": "checkout",
                                                          "environment": "prod"},
                                           "rule": {"type": "approval"}}}
        dev-x: DELETE /v1/policies/checkout-prod-approval            -> 403 (admin only)
        dev-x: DELETE /v1/applications/checkout?cascade=true         -> 200, policy deleted
        dev-x: POST   /v1/applications {"metadata": {"name": "checkout"}} ... and deploy to
               prod with no approval.

    `cascade_guard` (ztdp/api/access.py) authorizes every dependent by `owning_team`, i.e.
    `metadata.owner`, but policies (like environments and resource types) are written only
    by a platform-admin whatever their owner: the cascade removes what the caller "could not
    remove one by one" (docs/decisions.md, Lifecycle), and with it the approval gate.
    """
    policy = {
        "metadata": {"name": "checkout-prod-approval", "owner": "team-x"},
        "spec": {
            "transition": {"application": "checkout", "environment": "prod"},
            "rule": {"type": "approval"},
        },
    }
    await people["admin"].ok("POST", "/v1/policies", policy)
    await people["dev-x"].refused("DELETE", "/v1/policies/checkout-prod-approval")
    code, result = await people["dev-x"].call("DELETE", "/v1/applications/checkout?cascade=true")
    assert code == 403, (code, result)
    assert (await people["admin"].call("GET", "/v1/policies/checkout-prod-approval"))[0] == 200


async def test_a_resource_type_is_deleted_only_by_a_platform_admin(
    people: dict[str, Caller],
) -> None:
    """Exploit (developer of the platform team, `ZTDP_PLATFORM_TEAM`, default platform-team):

        admin: POST /v1/resources {"kind": "ResourceType", "metadata": {"name": "redis"},
                                   "spec": {"provider": "redis"}}   (owner defaults to
                                                                     platform-team)
        dev-p: PUT    /v1/resources/redis  (kind ResourceType)      -> 403, admin only
        dev-p: DELETE /v1/resources/redis                           -> 200, deleted

    DELETE /v1/resources/{res} (ztdp/api/v1/resources.py, `_resource_team`) authorizes a
    resource type by its owning team, assuming it is "ZTDP's, so platform-admin only"; but
    a type a platform-admin creates is owned by the platform team (or whatever team the
    admin names), so any developer of that team deletes what only an admin may create or
    change (docs/auth.md: resource types are platform-admin). With ?cascade=true it also
    takes every resource of that type the caller's team owns.
    """
    rtype = {"kind": "ResourceType", "metadata": {"name": "redis"}, "spec": {"provider": "redis"}}
    stored = await people["admin"].ok("POST", "/v1/resources", rtype)
    assert stored["metadata"]["owner"] == "platform-team"
    await people["dev-p"].refused("PUT", "/v1/resources/redis", rtype)
    code, result = await people["dev-p"].call("DELETE", "/v1/resources/redis")
    assert code == 403, (code, result)
    assert (await people["admin"].call("GET", "/v1/resources/redis"))[0] == 200
