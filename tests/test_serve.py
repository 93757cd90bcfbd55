"""`ztdp serve` as a real process: the embedded default and the Redis store across restarts."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.conftest import ServerProcess


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_starts_on_the_embedded_memory_store() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        code, status = call(f"{server.url}/v1/status")
        assert code == 200 and status["graph_store"] == "memory"
    finally:
        server.stop()


@pytest.mark.redis
def test_serve_on_redis_loses_nothing_across_a_restart(redis_url: str, redis_prefix: str) -> None:
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
    }
    first = ServerProcess(env).start()
    try:
        assert (
            call(
                f"{first.url}/v1/environments",
                "POST",
                {"metadata": {"name": "dev", "owner": "platform-team"}},
            )[0]
            == 201
        )
        assert (
            call(
                f"{first.url}/v1/applications",
                "POST",
                {"metadata": {"name": "checkout", "owner": "team-x"}, "spec": {"tags": []}},
            )[0]
            == 201
        )
        assert (
            call(f"{first.url}/v1/applications/checkout/environments/allowed", "PUT", ["dev"])[0]
            == 200
        )
        before = call(f"{first.url}/v1/graph")[1]
    finally:
        first.stop()
    second = ServerProcess(env).start()
    try:
        after = call(f"{second.url}/v1/graph")[1]
        assert after == before
        code, app = call(f"{second.url}/v1/applications/checkout")
        assert code == 200 and app["spec"]["tags"] == []
        assert call(f"{second.url}/v1/applications/checkout/environments/allowed")[1] == ["dev"]
    finally:
        second.stop()


@pytest.mark.redis
def test_two_api_processes_on_one_redis_see_each_others_writes(
    redis_url: str, redis_prefix: str
) -> None:
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
    }
    a, b = ServerProcess(env).start(), ServerProcess(env).start()
    try:
        assert (
            call(f"{a.url}/v1/environments", "POST", {"metadata": {"name": "dev", "owner": "p"}})[0]
            == 201
        )
        code, problem = call(
            f"{b.url}/v1/environments", "POST", {"metadata": {"name": "dev", "owner": "p"}}
        )
        assert code == 409 and problem["detail"] == "environment dev already exists"
    finally:
        a.stop()
        b.stop()
