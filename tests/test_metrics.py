"""Prometheus /metrics: the figures move with the work, and who may read them."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Api
from tests.test_runtime import FakeProvider, finished, registry
from ztdp.api import create_app
from ztdp.auth import MemoryTokenStore
from ztdp.settings import Settings
from ztdp.telemetry import Telemetry

DEPLOY = "/v1/applications/{app}/services/{svc}/versions/{version}/deploy"


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def scrape(api: Api, **kw: Any) -> str:
    resp = await api.client.get("/metrics", **kw)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return await resp.text()


@pytest.fixture
def kube() -> FakeProvider:
    return FakeProvider("kubernetes")


@pytest.fixture
async def api(kube: FakeProvider) -> AsyncIterator[Api]:
    settings = Settings(observe_interval=0.1, retry_backoff=0.01, auth="off")
    app = create_app(settings, providers=registry(kube))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client)


async def test_the_figures_move_after_a_deploy_and_a_repaired_drift(
    api: Api, kube: FakeProvider
) -> None:
    before = await scrape(api)
    assert value(before, "ztdp_runs_total") == 0
    await api.basic()
    code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    assert code == 202, accepted
    run = await finished(api, accepted["run"])
    assert run["status"] == "Succeeded"

    after = await scrape(api)
    assert value(after, "ztdp_http_requests_total", route=DEPLOY, status="202") == 1
    assert value(after, "ztdp_http_request_duration_seconds_count", route=DEPLOY) == 1
    assert value(after, "ztdp_http_requests_total", route="/v1/environments", status="201") == 2
    assert value(after, "ztdp_runs_total", trigger="deploy", status="Succeeded") == 1
    assert value(after, "ztdp_run_duration_seconds_count", trigger="deploy") == 1
    assert value(after, "ztdp_step_duration_seconds_count", action="create") == 1
    assert (
        value(
            after,
            "ztdp_provider_call_duration_seconds_count",
            provider="kubernetes",
            operation="apply",
            outcome="ok",
        )
        == 1
    )
    assert value(after, "ztdp_actors", status="Ready") >= 1
    assert value(after, "ztdp_partitions_owned") == 16
    assert "ztdp_mailbox_depth" in after
    # a path with names in it counts under its route, not as a series of its own
    assert "checkout-api" not in after

    # someone deletes what ZTDP made: observation finds it, repairs it, counts it
    kube.live.clear()
    deadline = time.monotonic() + 10
    while value(text := await scrape(api), "ztdp_drift_total", outcome="repaired") < 1:
        assert time.monotonic() < deadline, "no repair counted within 10 s"
        await asyncio.sleep(0.05)
    assert value(text, "ztdp_drift_total", outcome="detected") >= 1
    assert "deployment/checkout/checkout-api@dev" in kube.live


async def test_an_unknown_path_is_counted_as_unmatched() -> None:
    app = create_app(Settings(auth="off"), providers=registry())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        for n in range(3):
            await client.get(f"/no/such/path/{n}")
        text = await scrape(api)
    assert value(text, "ztdp_http_requests_total", route="unmatched", status="404") == 3
    assert "/no/such" not in text


@pytest.mark.parametrize("public", [False, True])
async def test_metrics_need_a_token_unless_public(public: bool) -> None:
    announced: list[str] = []
    settings = Settings(auth="on", metrics_public=public)
    app = create_app(
        settings, providers=registry(), tokens=MemoryTokenStore(), announce=announced.append
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        anonymous = await client.get("/metrics")
        if public:
            assert anonymous.status == 200
        else:
            assert anonymous.status == 401
            assert anonymous.headers["Content-Type"].startswith("application/problem+json")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer ztdp_nope"})
            assert wrong.status == 401
        found = re.search(r"ztdp_\S+", announced[0])
        assert found is not None
        token = found.group(0)
        authorized = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert authorized.status == 200
        assert token not in await authorized.text()


async def test_two_apps_in_one_process_keep_their_figures_apart() -> None:
    one, two = Telemetry(), Telemetry()
    one.metrics.runs.labels("deploy", "Succeeded").inc()
    assert value(one.metrics.exposition().decode(), "ztdp_runs_total") == 1
    assert value(two.metrics.exposition().decode(), "ztdp_runs_total") == 0
