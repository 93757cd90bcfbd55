"""Policies through the API: each built-in kind, CEL, and decisions that explain themselves."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import Api

SUBJECT = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}


@pytest.fixture
async def api(memory_client: TestClient) -> Api:  # type: ignore[type-arg]
    api = Api(memory_client)
    await api.basic()
    return api


def policy(name: str, rule: dict[str, Any], environment: str | None = "prod") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "owner": "platform-team"},
        "spec": {"transition": {"edge": "deploy", "environment": environment}, "rule": rule},
    }


async def decide(api: Api, env: str = "prod") -> dict[str, Any]:
    return await api.ok("POST", "/v1/policies/evaluate", {**SUBJECT, "environment": env}, 200)  # type: ignore[no-any-return]


def results(decision: dict[str, Any]) -> dict[str, bool]:
    return {r["policy"]: r["passed"] for r in decision["results"]}


async def test_promotion_requires_the_version_in_dev_first(api: Api) -> None:
    await api.ok(
        "POST", "/v1/policies", policy("dev-first", {"type": "promotion", "requires": ["dev"]})
    )
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403
    assert (
        "policy dev-first (promotion): version 1.0.0 is not deployed to dev yet"
        in problem["detail"]
    )
    assert (await api.deploy("checkout", "checkout-api", "1.0.0", "dev"))[0] == 202
    # deployed to dev, but not Ready there (no cluster here): still refused, saying so;
    # tests/test_promotion.py follows a version to Ready and on to prod
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403
    assert "in dev" in problem["detail"] and "(needs Ready)" in problem["detail"]


async def test_approval_needs_distinct_listed_approvers(api: Api) -> None:
    await api.ok(
        "POST",
        "/v1/policies",
        policy("prod-approval", {"type": "approval", "required": 2, "approvers": ["alice", "bob"]}),
    )

    async def approve(name: str, who: str) -> None:
        await api.ok(
            "POST",
            "/v1/approvals",
            {
                "metadata": {"name": name, "owner": who},
                "spec": {
                    "policy": "prod-approval",
                    "subject": SUBJECT,
                    "environment": "prod",
                    "approver": who,
                },
            },
        )

    await approve("a1", "alice")
    await approve("a2", "alice")
    await approve("a3", "mallory")
    decision = await decide(api)
    [reason] = [r["reason"] for r in decision["results"] if r["policy"] == "prod-approval"]
    assert reason == "1 of 2 approvals (not listed as approvers: token:mallory)"
    await approve("a4", "bob")
    assert results(await decide(api))["prod-approval"] is True
    assert (await api.deploy("checkout", "checkout-api", "1.0.0", "prod"))[0] == 202


async def test_approvals_must_name_an_approval_policy(api: Api) -> None:
    await api.ok(
        "POST", "/v1/policies", policy("dev-first", {"type": "promotion", "requires": ["dev"]})
    )
    code, problem = await api.call(
        "POST",
        "/v1/approvals",
        {
            "metadata": {"name": "a1", "owner": "alice"},
            "spec": {
                "policy": "dev-first",
                "subject": SUBJECT,
                "environment": "prod",
                "approver": "alice",
            },
        },
    )
    assert code == 422 and problem["errors"][0]["loc"] == "spec.policy"


async def test_check_policy_needs_each_named_check_succeeded(api: Api) -> None:
    await api.ok(
        "POST", "/v1/policies", policy("gates", {"type": "check", "checks": ["unit-tests", "scan"]})
    )
    check = {
        "metadata": {"name": "unit-1", "owner": "ci"},
        "spec": {"check": "unit-tests", "subject": SUBJECT, "status": "pending"},
    }
    created = await api.ok("POST", "/v1/checks", check)
    decision = await decide(api)
    [reason] = [r["reason"] for r in decision["results"] if r["policy"] == "gates"]
    assert reason == "checks not succeeded for 1.0.0: unit-tests (pending), scan (missing)"
    check["spec"]["status"] = "succeeded"
    await api.ok("PUT", "/v1/checks/unit-1", check, 200)
    code, _ = await api.call(
        "PUT",
        "/v1/checks/unit-1",
        check,
        headers={"If-Match": str(created["metadata"]["revision"])},
    )
    assert code == 409
    await api.ok(
        "POST",
        "/v1/checks",
        {
            "metadata": {"name": "scan-1", "owner": "ci"},
            "spec": {"check": "scan", "subject": SUBJECT, "status": "succeeded"},
        },
    )
    assert results(await decide(api))["gates"] is True
    assert [c["metadata"]["name"] for c in await api.ok("GET", "/v1/checks")] == [
        "scan-1",
        "unit-1",
    ]


async def test_cel_expression_policies_see_the_transition(api: Api) -> None:
    await api.ok(
        "POST",
        "/v1/policies",
        policy(
            "major-one",
            {
                "type": "expression",
                "expression": 'version.version.startsWith("2.")',
                "message": "only 2.x may reach prod",
            },
        ),
    )
    decision = await decide(api)
    assert decision["allowed"] is False
    [reason] = [r["reason"] for r in decision["results"] if r["policy"] == "major-one"]
    assert reason == "only 2.x may reach prod"
    body = policy(
        "major-one",
        {
            "type": "expression",
            "expression": 'transition.environment == "prod" && version.version.startsWith("1.")',
        },
    )
    await api.ok("PUT", "/v1/policies/major-one", body, 200)
    assert (await decide(api))["allowed"] is True


async def test_cel_errors_deny_with_the_reason(api: Api) -> None:
    await api.ok(
        "POST",
        "/v1/policies",
        policy("odd", {"type": "expression", "expression": "service.nope == 1"}),
    )
    await api.ok(
        "POST", "/v1/policies", policy("non-bool", {"type": "expression", "expression": "1 + 1"})
    )
    decision = await decide(api)
    reasons = {r["policy"]: r["reason"] for r in decision["results"]}
    assert reasons["odd"].startswith("expression failed to evaluate")
    assert reasons["non-bool"] == "expression returned IntType, not a bool"
    assert decision["allowed"] is False


async def test_policies_only_guard_the_transitions_they_select(api: Api) -> None:
    await api.ok(
        "POST", "/v1/policies", policy("never", {"type": "expression", "expression": "false"})
    )
    assert (await decide(api, "dev"))["allowed"] is True
    assert results(await decide(api, "dev")) == {"builtin-allowed-environments": True}
    assert (await decide(api, "prod"))["allowed"] is False


async def test_allowed_environments_policy_with_its_own_list(api: Api) -> None:
    await api.ok(
        "POST",
        "/v1/policies",
        policy(
            "only-dev", {"type": "allowed-environments", "environments": ["dev"]}, environment=None
        ),
    )
    decision = await decide(api, "prod")
    assert results(decision) == {"builtin-allowed-environments": True, "only-dev": False}
    assert "prod is not in the policy's list (dev)" in decision["results"][1]["reason"]


async def test_policies_are_listed_read_and_refuse_unknown_targets(api: Api) -> None:
    await api.ok(
        "POST", "/v1/policies", policy("dev-first", {"type": "promotion", "requires": ["dev"]})
    )
    assert [p["metadata"]["name"] for p in await api.ok("GET", "/v1/policies")] == ["dev-first"]
    assert (await api.ok("GET", "/v1/policies/dev-first"))["spec"]["rule"]["requires"] == ["dev"]
    code, problem = await api.call(
        "POST",
        "/v1/policies",
        policy("x", {"type": "promotion", "requires": ["dev"]}, environment="staging"),
    )
    assert code == 422 and problem["errors"][0]["loc"] == "spec.transition.environment"
    graph = await api.ok("GET", "/v1/graph")
    assert {"source": "policy/dev-first", "target": "environment/prod", "type": "policy"} in graph[
        "edges"
    ]
