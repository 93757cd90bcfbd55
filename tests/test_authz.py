"""Authorization as an attacker tries it: bodies naming other teams' objects, and races.

Every write is decided on the graph it commits against (docs/auth.md), so these hold whatever
exists and whatever another process writes at the same moment.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ServerProcess
from ztdp.api import create_app
from ztdp.auth import MemoryTokenStore
from ztdp.settings import Settings

SUBJECT = {"application": "checkout", "service": "api", "version": "1.0.0"}
PEOPLE: dict[str, list[dict[str, Any]]] = {
    "viewer": [{"role": "viewer"}],
    "dev-x": [{"role": "developer", "team": "team-x"}],
    "dev-y": [{"role": "developer", "team": "team-y"}],
    "ci-x": [{"role": "ci", "team": "team-x"}],
    "ci-x-lint": [{"role": "ci", "team": "team-x", "checks": ["lint"]}],
    "ci-y": [{"role": "ci", "team": "team-y"}],
}


class Caller:
    def __init__(self, client: TestClient, token: str) -> None:  # type: ignore[type-arg]
        self.client, self.token = client, token

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, data = await self.call(method, path, body)
        assert 200 <= code < 300, (method, path, code, data)
        return data

    async def refused(self, method: str, path: str, body: Any = None) -> str:
        code, data = await self.call(method, path, body)
        assert code == 403, (method, path, code, data)
        return str(data["detail"])


def _app(name: str, owner: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "owner": owner}}


def _service(app: str, name: str, owner: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "owner": owner}, "spec": {"application": app}}


def _resource(name: str, owner: str, *, shared: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "postgres", **({"shared": True} if shared else {})}
    return {"kind": "resource", "metadata": {"name": name, "owner": owner}, "spec": spec}


def _check(name: str, status: str, check: str = "unit-tests", app: str = "checkout") -> Any:
    subject = {**SUBJECT, "application": app}
    return {
        "metadata": {"name": name, "owner": "ci"},
        "spec": {"check": check, "subject": subject, "status": status},
    }


@pytest.fixture
async def people() -> AsyncIterator[dict[str, Caller]]:
    """checkout (team-x) and billing (team-y), each with a service, a version and a database."""
    announced: list[str] = []
    app = create_app(Settings(auth="on"), tokens=MemoryTokenStore(), announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        admin = Caller(client, re.search(r"ztdp_\S+", announced[0]).group(0))  # type: ignore[union-attr]
        out = {"admin": admin}
        for name, grants in PEOPLE.items():
            issued = await admin.ok("POST", "/v1/tokens", {"name": name, "grants": grants})
            out[name] = Caller(client, issued["secret"])
        for app_name, owner in (("checkout", "team-x"), ("billing", "team-y")):
            await admin.ok("POST", "/v1/applications", _app(app_name, owner))
            await admin.ok(
                "POST", f"/v1/applications/{app_name}/services", _service(app_name, "api", owner)
            )
            await admin.ok(
                "POST",
                f"/v1/applications/{app_name}/services/api/versions",
                {"version": "1.0.0", "owner": owner},
            )
        await admin.ok("POST", "/v1/resources", _resource("x-db", "team-x"))
        await admin.ok("POST", "/v1/resources", _resource("y-db", "team-y"))
        yield out


# --- bodies that name other teams' objects -------------------------------------------------


async def test_a_check_of_another_team_cannot_be_rewritten(people: dict[str, Caller]) -> None:
    await people["dev-y"].ok(
        "POST", "/v1/checks", _check("billing-tests", "pending", app="billing")
    )
    # dev-x's body names its own application, but the stored check is team-y's
    detail = await people["dev-x"].refused(
        "PUT", "/v1/checks/billing-tests", _check("billing-tests", "pending")
    )
    assert "team-y" in detail
    stored = await people["admin"].ok("GET", "/v1/checks/billing-tests")
    assert stored["spec"]["subject"]["application"] == "billing"


async def test_a_team_cannot_mark_its_own_check_succeeded(people: dict[str, Caller]) -> None:
    await people["dev-x"].ok("POST", "/v1/checks", _check("unit-1", "pending"))
    detail = await people["dev-x"].refused(
        "PUT", "/v1/checks/unit-1", _check("unit-1", "succeeded")
    )
    assert "needs a ci grant for team team-x" in detail
    await people["dev-x"].refused("POST", "/v1/checks", _check("unit-2", "succeeded"))
    # CI records the result; the team cannot wipe it afterwards
    await people["ci-x"].ok("PUT", "/v1/checks/unit-1", _check("unit-1", "failed"))
    await people["dev-x"].refused("PUT", "/v1/checks/unit-1", _check("unit-1", "pending"))
    assert (await people["admin"].ok("GET", "/v1/checks/unit-1"))["spec"]["status"] == "failed"


async def test_a_ci_grant_is_scoped_to_its_team_and_checks(people: dict[str, Caller]) -> None:
    await people["ci-y"].refused("POST", "/v1/checks", _check("u-1", "succeeded"))
    await people["ci-x-lint"].refused("POST", "/v1/checks", _check("u-1", "succeeded"))
    await people["ci-x-lint"].ok("POST", "/v1/checks", _check("l-1", "succeeded", check="lint"))
    await people["ci-x"].ok("POST", "/v1/checks", _check("u-1", "succeeded"))
    # CI's usual flow: declare the check when the pipeline starts, record it at the end
    await people["ci-x"].ok("POST", "/v1/checks", _check("u-2", "pending"))
    await people["ci-x"].ok("PUT", "/v1/checks/u-2", _check("u-2", "succeeded"))
    await people["ci-y"].refused("POST", "/v1/checks", _check("u-3", "pending"))
    # a CI identity cannot move another team's check to its own subject either
    await people["ci-y"].ok("POST", "/v1/checks", _check("b-1", "failed", app="billing"))
    await people["ci-x"].refused("PUT", "/v1/checks/b-1", _check("b-1", "succeeded"))


async def test_linking_a_resource_needs_both_teams(people: dict[str, Caller]) -> None:
    detail = await people["dev-x"].refused("POST", "/v1/applications/checkout/resources/y-db")
    assert "team-y" in detail
    await people["dev-y"].refused("POST", "/v1/applications/checkout/resources/y-db")
    await people["dev-x"].ok("POST", "/v1/applications/checkout/resources/x-db")
    await people["dev-x"].ok("POST", "/v1/applications/checkout/services/api/resources/x-db")
    await people["dev-y"].refused("POST", "/v1/applications/checkout/services/api/resources/x-db")
    await people["dev-y"].refused(
        "POST", "/v1/applications/checkout/services/api/resources", {"resource": "x-db"}
    )
    linked = await people["admin"].ok("GET", "/v1/applications/checkout/resources")
    assert [r["metadata"]["name"] for r in linked] == ["x-db"]


async def test_a_shared_resource_is_made_by_the_platform_and_linked_by_anyone(
    people: dict[str, Caller],
) -> None:
    await people["dev-x"].refused(
        "POST", "/v1/resources", _resource("cache", "team-x", shared=True)
    )
    await people["admin"].ok("POST", "/v1/resources", _resource("cache", "platform", shared=True))
    await people["dev-x"].ok("POST", "/v1/applications/checkout/resources/cache")
    await people["dev-y"].ok("POST", "/v1/applications/billing/resources/cache")
    await people["viewer"].refused("POST", "/v1/applications/billing/resources/cache")


async def test_services_and_versions_cannot_be_given_to_another_team(
    people: dict[str, Caller],
) -> None:
    await people["dev-x"].refused(
        "POST", "/v1/applications/checkout/services", _service("checkout", "w", "team-y")
    )
    await people["dev-x"].refused(
        "POST",
        "/v1/applications/checkout/services/api/versions",
        {"version": "2.0.0", "owner": "team-y"},
    )
    await people["dev-y"].refused(
        "POST", "/v1/applications/checkout/services", _service("checkout", "w", "team-y")
    )


async def test_a_viewer_never_writes_even_where_nothing_exists(people: dict[str, Caller]) -> None:
    # No application "ghost": nobody owns it, yet a viewer is refused before any lookup.
    detail = await people["viewer"].refused(
        "POST", "/v1/applications/ghost/services", _service("ghost", "s", "team-x")
    )
    assert "no developer grant" in detail
    await people["viewer"].refused("POST", "/v1/applications/ghost/resources/x-db")
    await people["viewer"].refused("POST", "/v1/checks", _check("c", "pending", app="ghost"))


# --- two teams racing over two processes on one Redis --------------------------------------


@pytest.mark.redis
async def test_racing_teams_over_two_processes_never_write_into_each_other(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str
) -> None:
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
        "ZTDP_MAILBOX": "nats",  # processes of one installation share actors through NATS
        "ZTDP_NATS_URL": nats_url,
        "ZTDP_NATS_PREFIX": nats_prefix,
    }
    a = ServerProcess(env).start()
    b = ServerProcess(env).start()
    try:
        counts = await _race(a.url, b.url, a.admin_token() or "", rounds=150)
    finally:
        a.stop()
        b.stop()
    # the attackers won none of the races, and the owners lost none of theirs
    assert counts["foreign_writes"] == 0, counts
    assert counts["apps"] == 150, counts
    assert counts["attempts"] == 150 * 5, counts


async def _race(url_a: str, url_b: str, admin_token: str, *, rounds: int) -> dict[str, int]:
    """Team x creates and updates applications while dev-y and a viewer write into them on B.

    Per round: dev-y adds a service and takes the application over, the viewer adds a
    service, team x creates the application on A and updates it on B, all at once.
    """
    async with aiohttp.ClientSession() as http:

        async def call(base: str, token: str, method: str, path: str, body: Any) -> int:
            async with http.request(
                method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                await resp.read()
                assert resp.status < 500, (method, path, resp.status)
                return resp.status

        tokens: dict[str, str] = {}
        for who in ("dev-x", "dev-y", "viewer"):
            async with http.post(
                url_a + "/v1/tokens",
                json={"name": who, "grants": PEOPLE[who]},
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as resp:
                tokens[who] = (await resp.json())["secret"]

        async def round_(i: int) -> None:
            name = f"race-{i}"
            # B's writes are sent first, so they reach the server before A's create lands.
            await asyncio.gather(
                call(
                    url_b,
                    tokens["dev-y"],
                    "POST",
                    f"/v1/applications/{name}/services",
                    _service(name, "evil", "team-y"),
                ),
                call(
                    url_b,
                    tokens["viewer"],
                    "POST",
                    f"/v1/applications/{name}/services",
                    _service(name, "peek", "team-x"),
                ),
                call(
                    url_b,
                    tokens["dev-y"],
                    "PUT",
                    f"/v1/applications/{name}",
                    _app(name, "team-y"),
                ),
                call(url_a, tokens["dev-x"], "POST", "/v1/applications", _app(name, "team-x")),
                # team x's own update on B, racing the attackers' writes
                call(
                    url_b,
                    tokens["dev-x"],
                    "PUT",
                    f"/v1/applications/{name}",
                    {**_app(name, "team-x"), "spec": {"description": "mine"}},
                ),
            )

        for start in range(0, rounds, 25):
            await asyncio.gather(*(round_(i) for i in range(start, min(start + 25, rounds))))

        async with http.get(
            url_a + "/v1/graph", headers={"Authorization": f"Bearer {admin_token}"}
        ) as resp:
            graph = await resp.json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    apps = [n for n in nodes if n.startswith("application/race-")]
    foreign = [n for n in nodes if n.startswith("service/race-")]  # team x added none
    foreign += [n for n in apps if nodes[n]["data"]["metadata"]["owner"] != "team-x"]
    return {"apps": len(apps), "foreign_writes": len(foreign), "attempts": rounds * 5}
