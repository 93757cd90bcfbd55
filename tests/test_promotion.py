"""Promotion means healthy: Ready in the required environments, for `min_ready` if set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from tests.test_runtime import SETTINGS, FakeProvider, finished, registry
from ztdp.api import create_app
from ztdp.api.keys import EVENT_STORE, RUNTIME
from ztdp.events import Event, make_event
from ztdp.graph import EdgeType, Graph, NodeKind, PutEdge, PutNode, node_id
from ztdp.policy import NodeHealth, Transition, evaluate
from ztdp.providers import Observation, Resource, Target

DEV = "deployment/checkout/checkout-api@dev"


def promotion(min_ready: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "promotion", "requires": ["dev"]}
    if min_ready:
        rule["min_ready"] = min_ready
    return {
        "metadata": {"name": "dev-before-prod", "owner": "platform-team"},
        "spec": {"transition": {"environment": "prod"}, "rule": rule},
    }


@pytest.fixture
def kube() -> FakeProvider:
    return FakeProvider("kubernetes")


@pytest.fixture
async def api(kube: FakeProvider) -> AsyncIterator[Api]:
    app = create_app(SETTINGS, providers=registry(kube, FakeProvider("postgres")))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        yield api


async def deploy_to_dev(api: Api) -> dict[str, Any]:
    code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    assert code == 202, accepted
    return await finished(api, accepted["run"])


async def test_a_failed_dev_deployment_blocks_promotion_naming_status_and_time(
    api: Api, kube: FakeProvider
) -> None:
    await api.ok("POST", "/v1/policies", promotion())
    kube.fail[DEV] = "image pull failed"
    assert (await deploy_to_dev(api))["status"] == "Failed"
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403, problem
    [result] = [r for r in problem["decision"]["results"] if r["policy"] == "dev-before-prod"]
    assert result["passed"] is False
    assert result["reason"].startswith("version 1.0.0 is Failed in dev since 20")
    assert result["reason"].endswith("Z (needs Ready)")
    # repaired in dev: now it may go on
    del kube.fail[DEV]
    assert (await deploy_to_dev(api))["status"] == "Succeeded"
    code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 202, accepted
    [result] = [r for r in accepted["decision"]["results"] if r["policy"] == "dev-before-prod"]
    assert result["reason"].startswith("version 1.0.0 is Ready in dev since 20")


async def test_min_ready_holds_a_fresh_deployment_back(api: Api) -> None:
    await api.ok("POST", "/v1/policies", promotion("10m"))
    assert (await deploy_to_dev(api))["status"] == "Succeeded"
    decision = await api.ok(
        "POST",
        "/v1/policies/evaluate",
        {
            "application": "checkout",
            "service": "checkout-api",
            "version": "1.0.0",
            "environment": "prod",
        },
        200,
    )
    [result] = [r for r in decision["results"] if r["policy"] == "dev-before-prod"]
    assert result["passed"] is False
    assert "is Ready in dev since" in result["reason"] and result["reason"].endswith("needs 10m")


async def test_min_ready_must_be_a_duration(api: Api) -> None:
    code, problem = await api.call("POST", "/v1/policies", promotion("ten minutes"))
    assert code == 422 and problem["errors"][0]["loc"] == "spec.rule.promotion.min_ready"


# --- the rule itself, with the clock in hand ---------------------------------------------


def _graph() -> Graph:
    graph = Graph()
    app, svc = node_id(NodeKind.APPLICATION, "a"), node_id(NodeKind.SERVICE, "a", "s")
    ver, env = node_id(NodeKind.VERSION, "a", "s", "1.0.0"), node_id(NodeKind.ENVIRONMENT, "dev")
    policy = node_id(NodeKind.POLICY, "p")
    graph.apply(
        [
            PutNode(app, NodeKind.APPLICATION, {"metadata": {"name": "a", "owner": "t"}}),
            PutNode(svc, NodeKind.SERVICE, {"metadata": {"name": "s", "owner": "t"}}),
            PutNode(ver, NodeKind.VERSION, {"version": "1.0.0"}),
            PutNode(env, NodeKind.ENVIRONMENT, {"metadata": {"name": "dev", "owner": "t"}}),
            PutNode(node_id(NodeKind.ENVIRONMENT, "prod"), NodeKind.ENVIRONMENT, {}),
            PutNode(
                policy,
                NodeKind.POLICY,
                {
                    "metadata": {"name": "p", "owner": "t"},
                    "spec": {
                        "transition": {"environment": "prod"},
                        "rule": {"type": "promotion", "requires": ["dev"], "min_ready": "1h30m"},
                    },
                },
            ),
            PutEdge(svc, ver, EdgeType.HAS_VERSION),
            PutEdge(ver, env, EdgeType.DEPLOY),
        ],
        1,
    )
    return graph


@pytest.mark.parametrize(
    ("status", "ready_for", "version", "passed", "reason"),
    [
        ("Ready", timedelta(hours=2), "1.0.0", True, "Ready in dev since 2026-01-01T10:00:00Z"),
        ("Ready", timedelta(minutes=89), "1.0.0", False, "for 1h29m; needs 1h30m"),
        ("Degraded", timedelta(hours=2), "1.0.0", False, "is Degraded in dev since"),
        ("Ready", timedelta(hours=2), "0.9.0", False, "is Pending in dev"),  # old version Ready
        (None, timedelta(0), None, False, "is Pending in dev (needs Ready)"),
    ],
)
def test_promotion_reads_status_and_since(
    status: str | None, ready_for: timedelta, version: str | None, passed: bool, reason: str
) -> None:
    since = datetime(2026, 1, 1, 10, tzinfo=UTC)

    def health(app: str, svc: str, env: str) -> NodeHealth | None:
        assert (app, svc, env) == ("a", "s", "dev")
        return None if status is None else NodeHealth(status, since, version)

    t = Transition(application="a", service="s", version="1.0.0", environment="prod")
    decision = evaluate(_graph(), t, health=health, now=since + ready_for)
    [result] = [r for r in decision.results if r.policy == "p"]
    assert result.passed is passed and reason in result.reason, result.reason


async def test_min_ready_takes_ascii_digits_only(api: Api) -> None:
    code, problem = await api.call("POST", "/v1/policies", promotion("\u0661\u0660m"))
    assert code == 422, problem


# --- report-only environments: drift is not Ready -------------------------------------------


@pytest.fixture
async def watched(kube: FakeProvider) -> AsyncIterator[Api]:
    """Actors observe every 0.05 s; `audit` is report-only; prod needs Ready in audit."""
    settings = SETTINGS.model_copy(update={"observe_interval": 0.05})
    app = create_app(settings, providers=registry(kube, FakeProvider("postgres")))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        await api.ok(
            "POST",
            "/v1/environments",
            {"metadata": {"name": "audit", "owner": "p"}, "spec": {"reconcile": "report-only"}},
        )
        await api.ok("POST", "/v1/applications/checkout/environments/audit/allowed", status=200)
        policy = promotion()
        policy["spec"]["rule"]["requires"] = ["audit"]
        await api.ok("POST", "/v1/policies", policy)
        yield api


async def _promotion_result(api: Api) -> dict[str, Any]:
    subject = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}
    decision = await api.ok(
        "POST", "/v1/policies/evaluate", {**subject, "environment": "prod"}, 200
    )
    [result] = [r for r in decision["results"] if r["policy"] == "dev-before-prod"]
    return result  # type: ignore[no-any-return]


async def test_a_deployment_drifted_in_a_report_only_environment_is_not_ready(
    watched: Api, kube: FakeProvider
) -> None:
    code, accepted = await watched.deploy("checkout", "checkout-api", "1.0.0", "audit")
    assert code == 202, accepted
    assert (await finished(watched, accepted["run"]))["status"] == "Succeeded"
    assert (await _promotion_result(watched))["passed"] is True
    node = "deployment/checkout/checkout-api@audit"
    observed = 0
    observe = kube.observe

    async def counting(*, resource: Resource, target: Target) -> Observation | None:
        nonlocal observed
        observed += 1
        return await observe(resource=resource, target=target)

    kube.observe = counting  # type: ignore[method-assign]
    del kube.live[node]  # deleted behind ZTDP's back; report-only: not repaired
    with anyio.fail_after(5):
        while (await _promotion_result(watched))["passed"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        seen = observed
        while observed < seen + 3:  # three more observations of the same drift  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    result = await _promotion_result(watched)
    assert "is Drifted in audit since" in result["reason"], result["reason"]
    [deployment] = await watched.ok("GET", "/v1/environments/audit/deployments")
    assert deployment["status"] == "Drifted"
    drifts = await watched.ok("GET", f"/v1/events?node={node}&type=drift.detected")
    assert len(drifts) == 1  # said once, not at every observation


def _status_event(status: str, at: datetime) -> Event:
    return make_event("actor.status", subject=DEV, data={"status": status})._replace(
        time=at.timestamp()
    )


async def _ready_since(api: Api) -> datetime | None:
    health = await api.client.app[RUNTIME].health("checkout", "checkout-api")
    seen = health("checkout", "checkout-api", "dev")
    assert seen is not None and seen.status == "Ready"
    return seen.since


async def _prod_check(api: Api) -> dict[str, Any]:
    decision = await api.ok(
        "POST",
        "/v1/policies/evaluate",
        {
            "application": "checkout",
            "service": "checkout-api",
            "version": "1.0.0",
            "environment": "prod",
        },
        200,
    )
    [result] = [r for r in decision["results"] if r["policy"] == "dev-before-prod"]
    return result  # type: ignore[no-any-return]


async def test_min_ready_reads_the_status_history_in_the_event_store(api: Api) -> None:
    """The history, not only the actor's record, says since when dev has been Ready. Here
    the history is rewritten to hold an unbroken run of Ready statuses that began two hours
    ago (as a history kept across a restart does), and promotion counts from its start."""
    await api.ok("POST", "/v1/policies", promotion("1h"))
    await deploy_to_dev(api)
    assert (await _prod_check(api))["passed"] is False  # Ready for seconds only
    record = await _ready_since(api)
    assert record is not None
    earlier = record - timedelta(hours=2)
    await api.client.app[EVENT_STORE].append(
        [
            _status_event("Degraded", earlier - timedelta(hours=1)),
            _status_event("Ready", earlier),
            _status_event("Ready", record),  # the history's newest status is the record's
        ]
    )
    assert await _ready_since(api) == earlier
    result = await _prod_check(api)
    assert result["passed"] is True, result
    assert "Ready in dev since " + earlier.strftime("%Y-%m-%dT%H:%M:%S") in result["reason"]


async def test_a_history_behind_the_record_does_not_stretch_min_ready(api: Api) -> None:
    """A history whose newest status is not the record's has not caught up (the NATS feed
    lags): the record's `since` decides, never an older Ready the history still shows."""
    await api.ok("POST", "/v1/policies", promotion("1h"))
    await deploy_to_dev(api)
    record = await _ready_since(api)
    assert record is not None
    await api.client.app[EVENT_STORE].append(
        [
            _status_event("Ready", record - timedelta(hours=2)),
            _status_event("Degraded", record - timedelta(hours=1)),
        ]
    )
    assert await _ready_since(api) == record
    assert (await _prod_check(api))["passed"] is False
