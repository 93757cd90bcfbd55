"""Authentication and authorization over HTTP, with authentication on.

The role matrix is generated from /openapi.json: every secured operation must answer 401
without a token, and each has an example below saying who may call it; an operation without
an example fails `test_every_operation_has_an_access_example`, so new endpoints are covered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ztdp.api import create_app, openapi_document
from ztdp.auth import MemoryTokenStore
from ztdp.settings import Settings

SUBJECT = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}
PATH_VALUES = {
    "app": "checkout",
    "svc": "checkout-api",
    "version": "1.0.0",
    "env": "dev",
    "res": "pg-db",
    "id": "prod-approval",
    "name": "unit-1",
    "dep_app": "checkout",
    "dep_svc": "worker",
    "secret": "db-pass",
}


class Caller:
    def __init__(self, client: TestClient, token: str | None) -> None:  # type: ignore[type-arg]
        self.client, self.token = client, token

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = await self.client.request(method, path, json=body, headers=headers)
        return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, data = await self.call(method, path, body)
        assert 200 <= code < 300, (method, path, code, data)
        return data


@dataclass
class World:
    client: TestClient  # type: ignore[type-arg]
    tokens: MemoryTokenStore
    admin: Caller
    callers: dict[str, Caller]

    def __getitem__(self, who: str) -> Caller:
        return self.callers[who]


async def issue(admin: Caller, name: str, grants: list[dict[str, Any]]) -> str:
    issued = await admin.ok("POST", "/v1/tokens", {"name": name, "grants": grants})
    return str(issued["secret"])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    announced: list[str] = []
    tokens = MemoryTokenStore()
    app = create_app(Settings(auth="on"), tokens=tokens, announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        [message] = announced
        admin = Caller(client, re.search(r"ztdp_\S+", message).group(0))  # type: ignore[union-attr]
        people = {
            "viewer": [{"role": "viewer"}],
            "dev-x": [{"role": "developer", "team": "team-x"}],
            "dev-y": [{"role": "developer", "team": "team-y"}],
            "carol": [
                {"role": "approver", "environments": ["prod"]},
                {"role": "developer", "team": "team-x"},
            ],
            "dave": [{"role": "approver", "environments": ["prod"]}],
            "ci-x": [{"role": "ci", "team": "team-x"}],
        }
        callers = {name: Caller(client, await issue(admin, name, g)) for name, g in people.items()}
        callers["admin"] = admin
        callers["nobody"] = Caller(client, None)
        for env in ("dev", "prod"):
            await admin.ok(
                "POST", "/v1/environments", {"metadata": {"name": env, "owner": "platform"}}
            )
        await admin.ok(
            "POST", "/v1/applications", {"metadata": {"name": "checkout", "owner": "team-x"}}
        )
        await admin.ok("PUT", "/v1/applications/checkout/environments/allowed", ["dev", "prod"])
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services",
            {
                "metadata": {"name": "checkout-api", "owner": "team-x"},
                "spec": {"application": "checkout"},
            },
        )
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services/checkout-api/versions",
            {"version": "1.0.0", "owner": "team-x"},
        )
        await admin.ok(
            "POST",
            "/v1/policies",
            {
                "metadata": {"name": "prod-approval", "owner": "platform"},
                "spec": {
                    "transition": {"environment": "prod"},
                    "rule": {"type": "approval", "required": 1},
                },
            },
        )
        await admin.ok(
            "POST",
            "/v1/resources",
            {
                "kind": "resource",
                "metadata": {"name": "pg-db", "owner": "team-x"},
                "spec": {"type": "postgres"},
            },
        )
        await admin.ok("POST", "/v1/applications/checkout/resources/pg-db")
        yield World(client, tokens, admin, callers)


# --- the matrix ----------------------------------------------------------------------------


def secured_operations() -> list[tuple[str, str, str]]:
    spec = openapi_document()
    return sorted(
        (op["operationId"], method.upper(), path)
        for path, item in spec["paths"].items()  # type: ignore[attr-defined]
        for method, op in item.items()
        if op.get("security")
    )


def fill(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: PATH_VALUES[m.group(1)], path)


def _n(prefix: str) -> str:
    _n.counter += 1  # type: ignore[attr-defined]
    return f"{prefix}-{_n.counter}"  # type: ignore[attr-defined]


_n.counter = 0  # type: ignore[attr-defined]

# operationId -> (who succeeds, who is refused with 403, a body factory)
READERS = ("viewer", "dev-y")
ADMIN_ONLY = ("admin", ("viewer", "dev-x", "dave"))
TEAM_X = ("dev-x", ("viewer", "dev-y", "dave"))
EXAMPLES: dict[str, tuple[str, tuple[str, ...], Any]] = {
    "create_application": (
        "dev-x",
        ("viewer", "dev-y"),
        lambda: {"metadata": {"name": _n("app"), "owner": "team-x"}},
    ),
    "update_application": (
        "dev-x",
        ("viewer", "dev-y"),
        lambda: {"metadata": {"name": "checkout", "owner": "team-x"}},
    ),
    "create_service": (
        *TEAM_X,
        lambda: {
            "metadata": {"name": _n("svc"), "owner": "team-x"},
            "spec": {"application": "checkout"},
        },
    ),
    "create_version": (
        *TEAM_X,
        lambda: {"version": f"1.0.{_n('p').split('-')[1]}", "owner": "team-x"},
    ),
    "deploy_version": (*TEAM_X, lambda: {"environment": "dev"}),
    # a set of team-x objects: each contract needs what its own route needs
    "submit_contracts": (
        *TEAM_X,
        lambda: [
            {"kind": "Application", "metadata": {"name": _n("app"), "owner": "team-x"}},
            {
                "kind": "Service",
                "metadata": {"name": "api"},
                "spec": {"application": "checkout"},
            },
        ],
    ),
    "add_dependency": ("dev-x", ("viewer", "dev-y"), None),  # needs a second service: see below
    "create_environment": (
        *ADMIN_ONLY,
        lambda: {"metadata": {"name": _n("env"), "owner": "platform"}},
    ),
    "update_environment": (
        *ADMIN_ONLY,
        lambda: {"metadata": {"name": "dev", "owner": "platform"}, "spec": {"description": "d"}},
    ),
    "update_service": (
        *TEAM_X,
        lambda: {
            "metadata": {"name": "checkout-api", "owner": "team-x"},
            "spec": {"application": "checkout", "port": 8080},
        },
    ),
    "update_resource": (
        *TEAM_X,
        lambda: {"metadata": {"name": "pg-db", "owner": "team-x"}, "spec": {"type": "postgres"}},
    ),
    "add_allowed": (*ADMIN_ONLY, lambda: ["dev"]),
    "replace_allowed": (*ADMIN_ONLY, lambda: ["dev", "prod"]),
    "allow_one": (*ADMIN_ONLY, lambda: None),
    "create_resource": (
        "dev-x",
        ("viewer", "dev-y"),
        lambda: {"metadata": {"name": _n("db"), "owner": "team-x"}, "spec": {"type": "postgres"}},
    ),
    "link_application_resource": (*TEAM_X, lambda: None),
    "link_service_resource_body": (*TEAM_X, lambda: {"resource": "pg-db"}),
    "link_service_resource": (*TEAM_X, lambda: None),
    "create_policy": (
        *ADMIN_ONLY,
        lambda: {
            "metadata": {"name": _n("pol"), "owner": "platform"},
            "spec": {"rule": {"type": "promotion", "requires": ["dev"]}},
        },
    ),
    "update_policy": (
        *ADMIN_ONLY,
        lambda: {
            "metadata": {"name": "prod-approval", "owner": "platform"},
            "spec": {
                "transition": {"environment": "prod"},
                "rule": {"type": "approval", "required": 1},
            },
        },
    ),
    "create_check": (
        *TEAM_X,
        lambda: {
            "metadata": {"name": _n("chk"), "owner": "ci"},
            "spec": {"check": "unit-tests", "subject": SUBJECT},
        },
    ),
    "update_check": (
        "ci-x",
        ("viewer", "dev-x", "dev-y", "dave"),
        lambda: {
            "metadata": {"name": "unit-1", "owner": "ci"},
            "spec": {"check": "unit-tests", "subject": SUBJECT, "status": "succeeded"},
        },
    ),
    "create_approval": (
        "dave",
        ("viewer", "dev-x"),
        lambda: {
            "metadata": {"name": _n("ok"), "owner": "dave"},
            "spec": {
                "policy": "prod-approval",
                "subject": SUBJECT,
                "environment": "prod",
                "approver": "dave",
            },
        },
    ),
    "apply": (*ADMIN_ONLY, lambda: None),
    "evaluate_policies": ("viewer", (), lambda: {**SUBJECT, "environment": "prod"}),
    "delete_application": (*TEAM_X, None),
    "delete_service": (*TEAM_X, None),
    "delete_version": (*TEAM_X, None),
    "delete_dependency": (*TEAM_X, None),
    "delete_environment": (*ADMIN_ONLY, None),
    "undeploy": (*TEAM_X, None),
    "disallow": (*ADMIN_ONLY, None),
    "delete_resource": (*TEAM_X, None),
    "unlink_application_resource": (*TEAM_X, None),
    "unlink_service_resource": (*TEAM_X, None),
    "delete_policy": (*ADMIN_ONLY, None),
    "delete_check": (*TEAM_X, None),
    "delete_approval": ("dave", ("viewer", "dev-x", "carol"), None),
    "issue_token": (*ADMIN_ONLY, lambda: {"name": _n("bot"), "grants": [{"role": "viewer"}]}),
    "list_tokens": (*ADMIN_ONLY, lambda: None),
    "get_token": (*ADMIN_ONLY, lambda: None),
    "revoke_token": (*ADMIN_ONLY, lambda: None),
    "create_secret": (*TEAM_X, lambda: {"name": _n("s"), "value": "v"}),
    "rotate_secret": (*TEAM_X, lambda: {"value": "v2"}),
    "delete_secret": (*TEAM_X, None),
    "reencrypt_secrets": (*ADMIN_ONLY, lambda: None),
}


# Deletes whose example object has dependents in the world; and what some deletes need first.
CASCADING = {
    "delete_application",
    "delete_service",
    "delete_environment",
    "delete_resource",
    "unlink_application_resource",
}


async def _prepare_delete(world: World, op_id: str) -> None:
    admin = world.admin
    if op_id in ("delete_dependency", "get_dependency"):
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services",
            {
                "metadata": {"name": "worker", "owner": "team-x"},
                "spec": {"application": "checkout"},
            },
        )
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services/checkout-api/dependencies",
            {"service": "worker"},
        )
    elif op_id in ("rotate_secret", "delete_secret"):
        await admin.ok(
            "POST",
            "/v1/applications/checkout/environments/dev/secrets",
            {"name": "db-pass", "value": "v1"},
        )
    elif op_id == "undeploy":
        await admin.ok(
            "POST",
            "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
            {"environment": "dev"},
        )
    elif op_id == "unlink_service_resource":
        await admin.ok("POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db")
    elif op_id == "delete_check":
        await admin.ok(
            "POST",
            "/v1/checks",
            {
                "metadata": {"name": "unit-1", "owner": "ci"},
                "spec": {"check": "unit-tests", "subject": SUBJECT},
            },
        )
    elif op_id == "delete_approval":
        await world["dave"].ok(
            "POST",
            "/v1/approvals",
            {
                "metadata": {"name": "unit-1", "owner": "dave"},
                "spec": {
                    "policy": "prod-approval",
                    "subject": SUBJECT,
                    "environment": "prod",
                    "approver": "dave",
                },
            },
        )


def test_every_operation_has_an_access_example() -> None:
    for op_id, method, _ in secured_operations():
        assert method == "GET" or op_id in EXAMPLES, f"no access example for {op_id}: add one"


@pytest.mark.parametrize(("op_id", "method", "path"), secured_operations())
async def test_no_token_is_401(world: World, op_id: str, method: str, path: str) -> None:
    for token in (None, "ztdp_0123456789abcdef_" + "x" * 43, "not-a-token"):
        code, problem = await Caller(world.client, token).call(method, fill(path), {})
        assert code == 401, (op_id, token, problem)
        assert problem["title"] == "Unauthenticated"


@pytest.mark.parametrize(("op_id", "method", "path"), secured_operations())
async def test_roles_and_teams(world: World, op_id: str, method: str, path: str) -> None:
    if method == "GET" and op_id not in EXAMPLES:
        for who in READERS:
            code, data = await world[who].call(
                method, fill(path) + ("?env=dev" if op_id == "apply" else "")
            )
            assert code not in (401, 403), (op_id, who, data)
        return
    allowed, refused, make = EXAMPLES[op_id]
    url = fill(path)
    if op_id in ("get_token", "revoke_token"):
        bot = await world.admin.ok(
            "POST", "/v1/tokens", {"name": _n("bot"), "grants": [{"role": "viewer"}]}
        )
        url = f"/v1/tokens/{bot['token']['id']}"
    if op_id == "update_check":
        await world.admin.ok(
            "POST",
            "/v1/checks",
            {
                "metadata": {"name": "unit-1", "owner": "ci"},
                "spec": {"check": "unit-tests", "subject": SUBJECT},
            },
        )
    if op_id == "add_dependency":
        await world.admin.ok(
            "POST",
            "/v1/applications/checkout/services",
            {
                "metadata": {"name": "worker", "owner": "team-x"},
                "spec": {"application": "checkout"},
            },
        )
        make = lambda: {"service": "worker"}  # noqa: E731
    if op_id == "apply":
        url += "?env=dev"
    await _prepare_delete(world, op_id)
    if op_id in CASCADING:
        url += "?cascade=true"
    before = await world.admin.ok("GET", "/v1/status")
    for who in refused:
        code, problem = await world[who].call(method, url, make() if make else None)
        assert code == 403, (op_id, who, problem)
        assert who in problem["detail"] or who == "viewer", problem["detail"]
    assert (await world.admin.ok("GET", "/v1/status"))["revision"] == before["revision"]
    code, data = await world[allowed].call(method, url, make() if make else None)
    assert 200 <= code < 300, (op_id, allowed, data)


# --- tokens --------------------------------------------------------------------------------


async def test_a_revoked_token_fails(world: World) -> None:
    issued = await world.admin.ok(
        "POST", "/v1/tokens", {"name": "temp", "grants": [{"role": "viewer"}]}
    )
    temp = Caller(world.client, issued["secret"])
    assert (await temp.ok("GET", "/v1/whoami"))["name"] == "temp"
    await world.admin.ok("DELETE", f"/v1/tokens/{issued['token']['id']}")
    code, problem = await temp.call("GET", "/v1/whoami")
    assert code == 401 and "revoked" in problem["detail"]


async def test_an_expired_token_fails(world: World) -> None:
    issued = await world.admin.ok(
        "POST", "/v1/tokens", {"name": "old", "grants": [{"role": "viewer"}]}
    )
    record = await world.tokens.get(issued["token"]["id"])
    assert record is not None
    await world.tokens.put(
        record.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    )
    code, problem = await Caller(world.client, issued["secret"]).call("GET", "/v1/whoami")
    assert code == 401 and "expired" in problem["detail"]


async def test_tokens_are_stored_hashed_and_never_shown_again(world: World) -> None:
    issued = await world.admin.ok(
        "POST", "/v1/tokens", {"name": "bot", "grants": [{"role": "viewer"}]}
    )
    secret = issued["secret"]
    record = await world.tokens.get(issued["token"]["id"])
    assert record is not None and secret not in record.model_dump_json()
    listed = await world.admin.ok("GET", "/v1/tokens")
    assert secret not in str(listed) and "hash" not in listed[0] and "salt" not in listed[0]


BAD_TOKEN = "ztdp_0123456789abcdef_" + "y" * 43


async def fail(client: TestClient, headers: dict[str, str] | None = None) -> int:  # type: ignore[type-arg]
    """Authenticate with a bad token; the status it gets."""
    resp = await client.get(
        "/v1/status", headers={"Authorization": f"Bearer {BAD_TOKEN}", **(headers or {})}
    )
    return resp.status


async def test_repeated_failures_are_limited_but_never_lock_out_a_valid_token(
    world: World,
) -> None:
    for _ in range(10):
        assert await fail(world.client) == 401
    resp = await world.client.get("/v1/status", headers={"Authorization": f"Bearer {BAD_TOKEN}"})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "not valid" in (await resp.json())["detail"]  # and it says why it failed
    assert (await world.admin.call("GET", "/v1/status"))[0] == 200  # the same client
    code, problem = await world["nobody"].call("GET", "/v1/status")
    assert code == 401 and "needs an Authorization" in problem["detail"]


async def test_requests_without_credentials_are_not_counted(world: World) -> None:
    for _ in range(20):
        assert (await world["nobody"].call("GET", "/v1/status"))[0] == 401
    assert await fail(world.client) == 401


@pytest.mark.redis
async def test_api_processes_on_one_redis_share_the_count(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str
) -> None:
    settings = Settings(
        graph_store="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        mailbox="nats",  # two processes on one installation share their actors through NATS
        nats_url=nats_url,
        nats_prefix=nats_prefix,
        auth="on",
        auth_max_failures=3,
    )
    quiet = lambda _: None  # noqa: E731
    a = TestClient(TestServer(create_app(settings, announce=quiet), host="127.0.0.1"))
    b = TestClient(TestServer(create_app(settings, announce=quiet), host="127.0.0.1"))
    async with a, b:
        assert [await fail(a), await fail(b), await fail(a)] == [401, 401, 401]
        assert await fail(b) == 429


async def test_behind_a_trusted_proxy_clients_are_told_apart() -> None:
    settings = Settings(auth="on", auth_max_failures=2, trusted_proxies=["127.0.0.1"])
    app = create_app(settings, announce=lambda _: None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        alice, bob = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
        assert [await fail(client, alice) for _ in range(3)] == [401, 401, 429]
        assert await fail(client, bob) == 401
        # what a client writes left of the proxy's entry does not change who it is
        assert await fail(client, {"X-Forwarded-For": "198.51.100.9, 203.0.113.1"}) == 429


async def test_without_trusted_proxies_a_client_cannot_pick_its_identity() -> None:
    settings = Settings(auth="on", auth_max_failures=2)
    app = create_app(settings, announce=lambda _: None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        spoofed = [await fail(client, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)]
        assert spoofed == [401, 401, 429]


async def test_no_token_or_secret_reaches_logs_or_changes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = await world.admin.ok(
        "POST", "/v1/tokens", {"name": "bot", "grants": [{"role": "viewer"}]}
    )
    await Caller(world.client, issued["secret"]).ok("GET", "/v1/whoami")
    await Caller(world.client, issued["secret"] + "x").call("GET", "/v1/whoami")
    changes = await world.admin.ok("GET", "/v1/changes")
    graph = await world.admin.ok("GET", "/v1/graph")
    events = await world.admin.ok("GET", "/v1/events?limit=10000")
    assert events  # the fixture's writes and decisions were recorded
    for secret in (issued["secret"], world.admin.token):
        assert secret not in caplog.text
        assert secret not in str(changes) and secret not in str(graph) and secret not in str(events)
    changed = {e["actor"] for e in events if e["type"] == "io.ztdp.graph.changed"}
    assert changed == {"system:ztdp", "token:admin"}


# --- who did it, and approvals -------------------------------------------------------------


async def test_changes_record_the_identity(world: World) -> None:
    created = await world["dev-x"].ok(
        "POST",
        "/v1/applications/checkout/services",
        {"metadata": {"name": "audited", "owner": "team-x"}, "spec": {"application": "checkout"}},
    )
    assert created["metadata"]["updated_by"] == "token:dev-x"
    [change] = await world.admin.ok(
        "GET", f"/v1/changes?since={created['metadata']['revision'] - 1}"
    )
    assert (
        change["actor"] == "token:dev-x" and change["revision"] == created["metadata"]["revision"]
    )


async def test_an_approval_by_the_deployer_does_not_satisfy_the_policy(world: World) -> None:
    approval = {
        "metadata": {"name": "by-carol", "owner": "carol"},
        "spec": {
            "policy": "prod-approval",
            "subject": SUBJECT,
            "environment": "prod",
            "approver": "carol",
        },
    }
    await world["carol"].ok("POST", "/v1/approvals", approval)
    code, problem = await world["carol"].call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "prod"},
    )
    assert code == 403
    assert "token:carol's own approval does not count for its own deploy" in problem["detail"]
    # someone else may deploy on carol's approval
    code, result = await world["dev-x"].call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "prod"},
    )
    assert code == 202, result


async def test_nobody_approves_as_someone_else(world: World) -> None:
    code, problem = await world["dave"].call(
        "POST",
        "/v1/approvals",
        {
            "metadata": {"name": "forged", "owner": "dave"},
            "spec": {
                "policy": "prod-approval",
                "subject": SUBJECT,
                "environment": "prod",
                "approver": "carol",
            },
        },
    )
    assert code == 403 and "only approve as itself" in problem["detail"]


async def test_a_developer_cannot_give_its_application_to_another_team(world: World) -> None:
    code, _ = await world["dev-x"].call(
        "PUT", "/v1/applications/checkout", {"metadata": {"name": "checkout", "owner": "team-y"}}
    )
    assert code == 403


# --- protection ----------------------------------------------------------------------------


async def test_cors_is_closed_by_default(world: World) -> None:
    resp = await world.client.options(
        "/v1/status",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await world.client.get("/v1/healthz", headers={"Origin": "https://evil.example"})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_opens_for_listed_origins_only() -> None:
    app = create_app(
        Settings(auth="on", cors_origins=["https://portal.example"]), announce=lambda _: None
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.options(
            "/v1/status",
            headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"},
        )
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://portal.example"
        resp = await client.get("/v1/healthz", headers={"Origin": "https://other.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers
