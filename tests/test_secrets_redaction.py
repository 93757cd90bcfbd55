"""No secret value appears anywhere but in the secret store (encrypted) and the Kubernetes
Secret: a real `ztdp serve` process (Redis graph, state and secret stores, the Postgres event
store, the Kubernetes sandbox, the Postgres provider on a real server and a test provider that
generates secrets) creates, rotates, injects, regenerates and fails with them; then its
output, events, event store, plans, state in Redis, API answers and errors are searched for
every value, plain and in base64."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import unquote

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from tests.conftest import REPO, ServerProcess
from ztdp_kubernetes import object_name
from ztdp_kubernetes.sandbox import Sandbox, sandbox

GENERATING = REPO / "tests" / "plugins" / "ztdp-generating"
APP = "/v1/applications/shop"
SECRETS = APP + "/environments/dev/secrets"
NAME = object_name("shop", "api")


class Client:
    """The API over HTTP, keeping every answer's body to search it afterwards."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.answers: list[str] = []

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as resp:
            text = await resp.text()
            self.answers.append(text)
            return resp.status, json.loads(text) if text else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, data = await self.call(method, path, body)
        assert 200 <= code < 300, (method, path, code, data)
        return data

    async def finished(self, run: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            found = await self.ok("GET", f"/v1/runs/{run}")
            if found["status"] != "Running":
                return dict(found)
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)


async def _kube_secret(kube: Sandbox, namespace: str) -> dict[str, str]:
    code, body = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{NAME}")
    assert code == 200, body
    return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


async def _redis_dump(url: str, prefix: str) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    parts: list[str] = []
    try:
        async for key in client.scan_iter(f"{prefix}:*"):
            kind = await client.type(key)
            if kind == "string":
                parts.append(str(await client.get(key)))
            elif kind == "hash":
                parts.append(json.dumps(await client.hgetall(key)))
            elif kind == "list":
                parts.append(json.dumps(await client.lrange(key, 0, -1)))
            elif kind == "set":
                parts.append(json.dumps(sorted(await client.smembers(key))))
            elif kind == "zset":
                parts.append(json.dumps(await client.zrange(key, 0, -1)))
            elif kind == "stream":
                parts.append(json.dumps(await client.xrange(key)))
    finally:
        await client.aclose()
    assert parts, "nothing in Redis: the test reads the wrong prefix"
    return "\n".join(parts)


async def _event_store_dump(url: str) -> str:
    dsn, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(f"SELECT * FROM {schema}.ztdp_events ORDER BY seq")
    finally:
        await conn.close()
    assert rows, "the event store holds nothing: the test reads the wrong place"
    return "\n".join(json.dumps(dict(r), default=str) for r in rows)


def _leaks(values: dict[str, str], where: dict[str, str]) -> list[str]:
    found = []
    for what, value in values.items():
        forms = {value, base64.b64encode(value.encode()).decode()}
        for place, text in where.items():
            if any(form in text for form in forms):
                found.append(f"{what} in {place}")
    return found


async def _drop_prefixed(url: str, prefix: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        ):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for (name,) in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", prefix + "%"
        ):
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def test_no_secret_value_appears_anywhere(
    redis_url: str, redis_prefix: str, postgres_url: str, postgres_database: str
) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    pg_prefix = f"zr{uuid.uuid4().hex[:8]}"
    user_values = {"db-pass v1": f"v1-{uuid.uuid4().hex}", "db-pass v2": f"v2-{uuid.uuid4().hex}"}
    async with sandbox() as kube:
        server = ServerProcess(
            {
                "PYTHONPATH": str(GENERATING),
                "ZTDP_KUBECONFIG": kube.kubeconfig,
                "ZTDP_GRAPH_STORE": "redis",
                "ZTDP_REDIS_URL": redis_url,
                "ZTDP_REDIS_PREFIX": redis_prefix,
                "ZTDP_AUTH": "off",
                "ZTDP_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode(),
                "ZTDP_EVENT_STORE": "postgres",
                "ZTDP_EVENT_STORE_URL": postgres_url,
                "ZTDP_SEED_RESOURCE_TYPES": '{"gen": "generating", "postgres": "postgres"}',
                "ZTDP_PROVIDERS": json.dumps(
                    {"postgres": {"url": postgres_database, "prefix": pg_prefix}}
                ),
                "ZTDP_OBSERVE_INTERVAL": "0.5",
                "ZTDP_PROVIDER_RETRIES": "0",
            }
        )
        await asyncio.to_thread(server.start)
        try:
            async with aiohttp.ClientSession() as session:
                api = Client(session, server.url)
                generated = await _scenario(api, kube, namespace, user_values)
                plans = [
                    await api.ok("GET", APP + "/plan?environment=dev"),
                    await api.ok("GET", "/v1/applications/shop/plan"),
                ]
                for path in (
                    "/v1/events?limit=10000",
                    "/v1/changes",
                    "/v1/runs",
                    "/v1/environments/dev/deployments",
                    SECRETS,
                    SECRETS + "/orders-db.url",
                    APP + "/services/api/versions/1.0.0",
                    "/v1/resources/orders-db",
                ):
                    await api.ok("GET", path)
        finally:
            output = await asyncio.to_thread(server.stop)
            await _drop_prefixed(postgres_database, pg_prefix)
    values = {**user_values, **generated}
    where = {
        "the process's output (stderr and stdout)": output,
        "API answers": "\n".join(api.answers),
        "plans": json.dumps(plans),
        "Redis (graph, state snapshots, secret store)": await _redis_dump(redis_url, redis_prefix),
        "the event store": await _event_store_dump(postgres_url),
    }
    assert "Traceback" not in output, output
    assert _leaks(values, where) == []


async def _scenario(
    api: Client, kube: Sandbox, namespace: str, user_values: dict[str, str]
) -> dict[str, str]:
    """Create, rotate, inject, regenerate and fail; the generated values, as the Kubernetes
    Secret shows them (the only place outside the secret store that may hold them)."""
    await api.ok(
        "POST",
        "/v1/environments",
        {"metadata": {"name": "dev"}, "spec": {"kubernetes": {"namespace": namespace}}},
    )
    await api.ok("POST", "/v1/applications", {"metadata": {"name": "shop"}})
    await api.ok("POST", APP + "/environments/allowed", ["dev"])
    for res, rtype, inject in (
        ("orders-db", "gen", None),
        ("bad-db", "gen", "BAD_URL"),
        ("pg-db", "postgres", "PG_URL"),
    ):
        await api.ok(
            "POST",
            "/v1/resources",
            {"metadata": {"name": res}, "spec": {"type": rtype, "inject_as": inject}},
        )
        await api.ok("POST", APP + f"/resources/{res}")
    await api.ok(
        "POST", APP + "/services", {"metadata": {"name": "api"}, "spec": {"application": "shop"}}
    )
    for res in ("orders-db", "bad-db", "pg-db"):
        await api.ok("POST", APP + f"/services/api/resources/{res}")
    await api.ok("POST", SECRETS, {"name": "db-pass", "value": user_values["db-pass v1"]})
    await api.ok("POST", SECRETS + "/db-pass/rotate", {"value": user_values["db-pass v2"]})
    code, refused = await api.call(
        "POST",
        APP + "/services/api/versions",
        {"version": "0.9.0", "env": {"DB_PASSWORD": user_values["db-pass v1"]}},
    )
    assert code == 422, refused
    await api.ok(
        "POST",
        APP + "/services/api/versions",
        {"version": "1.0.0", "env": {"DB_PASSWORD": {"secret": "db-pass"}}},
    )
    deployed = await api.ok(
        "POST", APP + "/services/api/versions/1.0.0/deploy", {"environment": "dev"}
    )
    assert (await api.finished(deployed["run"]))["status"] == "Succeeded"
    first = await _kube_secret(kube, namespace)
    assert first["DB_PASSWORD"] == user_values["db-pass v2"]

    for generated_secret in ("orders-db.url", "pg-db.password"):
        rotated = await api.ok("POST", SECRETS + f"/{generated_secret}/rotate", {})
        assert (await api.finished(rotated["run"]))["status"] == "Succeeded"
    second = await _kube_secret(kube, namespace)
    assert second["DATABASE_URL"] != first["DATABASE_URL"]
    assert second["PG_URL"] != first["PG_URL"]

    # A careless provider quotes its URL, password included, in an error: it is scrubbed.
    await api.ok(
        "PUT",
        "/v1/resources/bad-db",
        {
            "metadata": {"name": "bad-db"},
            "spec": {"type": "gen", "config_ref": "fail", "inject_as": "BAD_URL"},
        },
    )
    applied = await api.ok("POST", "/v1/apply?env=dev")
    run = await api.finished(applied["run"])
    assert run["status"] == "Failed", run
    [failed] = [s for s in run["steps"] if s["node"] == "resource/bad-db@dev"]
    assert "cannot connect to [secret]: refused" in failed["error"], failed

    generated: dict[str, str] = {}
    for label, data in (("first", first), ("second", second)):
        for var in ("DATABASE_URL", "BAD_URL", "PG_URL"):
            url = data[var]
            generated[f"{var} ({label})"] = url
            generated[f"password in {var} ({label})"] = unquote(url.split(":")[2].split("@")[0])
    return generated
