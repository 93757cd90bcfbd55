"""A Redis outage: every route answers 503 with Retry-After, and the API recovers by itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import RedisServer
from ztdp.api import create_app
from ztdp.settings import Settings


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that writes every command to its append-only file before
    answering, so killing it loses nothing it acknowledged."""
    server = RedisServer(
        "--dir", str(tmp_path), "--save", "", "--appendonly", "yes", "--appendfsync", "always"
    ).start()
    yield server
    server.kill()


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document, its path parameters filled with some name."""
    return [
        (method.upper(), re.sub(r"{\w+}", "x1", path))
        for path, item in spec["paths"].items()
        for method in item
    ]


@pytest.mark.redis
async def test_a_redis_outage_is_a_503_everywhere_and_the_api_recovers_by_itself(
    durable_redis: RedisServer,
) -> None:
    announced: list[str] = []
    settings = Settings(
        graph_store="redis", redis_url=durable_redis.url, redis_prefix="ztdp-outage", auth="on"
    )
    app = create_app(settings, announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        [message] = announced
        token = re.search(r"ztdp_\S+", message).group(0)  # type: ignore[union-attr]
        auth = {"Authorization": f"Bearer {token}"}

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            resp = await client.request(method, path, json=body, headers=auth)
            return resp.status, await resp.json(content_type=None)

        dev = {"metadata": {"name": "dev", "owner": "platform"}}
        assert (await call("POST", "/v1/environments", dev))[0] == 201
        checkout = {"metadata": {"name": "checkout", "owner": "team-x"}}
        assert (await call("POST", "/v1/applications", checkout))[0] == 201
        spec = await (await client.get("/openapi.json")).json()

        durable_redis.kill()
        for method, path in operations(spec):
            resp = await client.request(method, path, json={}, headers=auth)
            assert resp.status == 503, (method, path, resp.status, await resp.text())
            assert resp.content_type == "application/problem+json", (method, path)
            assert int(resp.headers["Retry-After"]) >= 1, (method, path)
            assert "Redis" in (await resp.json())["detail"], (method, path)
        staging = {"metadata": {"name": "staging", "owner": "platform"}}
        assert (await call("POST", "/v1/environments", staging))[0] == 503

        durable_redis.start()  # the same port and data directory; the API is not restarted
        code, app_doc = await call("GET", "/v1/applications/checkout")
        assert code == 200 and app_doc["metadata"]["owner"] == "team-x", app_doc
        code, envs = await call("GET", "/v1/environments")
        assert code == 200 and [e["metadata"]["name"] for e in envs] == ["dev"]  # not staging
        assert (await call("POST", "/v1/environments", staging))[0] == 201
        code, health = await call("GET", "/v1/healthz")
        assert code == 200, health
