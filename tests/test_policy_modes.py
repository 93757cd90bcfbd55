"""Audit-only policies, and plans that carry the policy verdict and the blockers of each step."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import Api

DEV_PLAN = "/v1/applications/checkout/plan?environment=dev"
DEPLOYMENT = "deployment/checkout/checkout-api@dev"
NEEDS_TESTS = {"type": "check", "checks": ["unit-tests"]}
NO_TESTS = "checks not succeeded for 1.0.0: unit-tests (missing)"


@pytest.fixture
async def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    api = Api(client)
    await api.basic()
    return api


def policy(
    name: str, rule: dict[str, Any], *, mode: str | None = None, environment: str = "prod"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"transition": {"edge": "deploy", "environment": environment}}
    spec["rule"] = rule
    if mode is not None:
        spec["mode"] = mode
    return {"metadata": {"name": name, "owner": "platform-team"}, "spec": spec}


def outcome(decision: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """policy -> (mode, passed)"""
    return {r["policy"]: (r["mode"], r["passed"]) for r in decision["results"]}


async def audit_denials(api: Api) -> list[dict[str, Any]]:
    return await api.ok("GET", "/v1/events?type=policy.audit_denied")  # type: ignore[no-any-return]


def steps(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["node"]: s for w in plan["waves"] for s in w["steps"]}


# --- audit-only policies -------------------------------------------------------------------


async def test_policies_are_enforced_unless_they_say_audit(api: Api) -> None:
    created = await api.ok("POST", "/v1/policies", policy("needs-tests", NEEDS_TESTS))
    assert created["spec"]["mode"] == "enforce"
    code, problem = await api.call("POST", "/v1/policies", policy("odd", NEEDS_TESTS, mode="warn"))
    assert code == 422 and "spec.mode" in problem["detail"]


async def test_a_failing_audit_policy_lets_the_deploy_through_and_records_the_denial(
    api: Api,
) -> None:
    await api.ok("POST", "/v1/policies", policy("needs-tests", NEEDS_TESTS, mode="audit"))
    code, result = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 202, result
    decision = result["decision"]
    assert decision["allowed"] is True
    assert outcome(decision) == {
        "builtin-allowed-environments": ("enforce", True),
        "needs-tests": ("audit", False),
    }
    [failed] = [r for r in decision["results"] if not r["passed"]]
    assert failed["reason"] == NO_TESTS

    [event] = await audit_denials(api)
    assert event["type"] == "io.ztdp.policy.audit_denied"
    assert event["subject"] == "policy/needs-tests"
    assert event["data"] == {
        "policy": "needs-tests",
        "type": "check",
        "reason": NO_TESTS,
        "transition": {
            "edge": "deploy",
            "application": "checkout",
            "service": "checkout-api",
            "version": "1.0.0",
            "environment": "prod",
            "actor": "anonymous",
        },
        "allowed": True,
    }


async def test_an_enforced_denial_names_only_the_enforced_failures(api: Api) -> None:
    await api.ok("POST", "/v1/policies", policy("needs-tests", NEEDS_TESTS))
    await api.ok(
        "POST",
        "/v1/policies",
        policy("no-latest", {"type": "expression", "expression": "version.image != ''"}),
    )
    await api.ok(
        "POST",
        "/v1/policies",
        policy("two-approvals", {"type": "approval", "required": 2}, mode="audit"),
    )
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403
    assert problem["detail"] == (
        f"deploy of checkout-api 1.0.0 to prod denied: policy needs-tests (check): {NO_TESTS}"
    )
    assert outcome(problem["decision"]) == {
        "builtin-allowed-environments": ("enforce", True),
        "needs-tests": ("enforce", False),
        "no-latest": ("enforce", True),
        "two-approvals": ("audit", False),
    }
    # the deploy was asked for: the audit policy would have denied it too
    [event] = await audit_denials(api)
    assert event["subject"] == "policy/two-approvals" and event["data"]["allowed"] is False


async def test_switching_an_audit_policy_to_enforce_blocks(api: Api) -> None:
    body = policy("needs-tests", NEEDS_TESTS, mode="audit")
    await api.ok("POST", "/v1/policies", body)
    body["spec"]["mode"] = "enforce"
    updated = await api.ok("PUT", "/v1/policies/needs-tests", body)
    assert updated["spec"]["mode"] == "enforce"
    code, problem = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 403 and NO_TESTS in problem["detail"]
    assert outcome(problem["decision"])["needs-tests"] == ("enforce", False)


async def test_evaluating_without_deploying_records_no_audit_denial(api: Api) -> None:
    await api.ok("POST", "/v1/policies", policy("needs-tests", NEEDS_TESTS, mode="audit"))
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
    assert decision["allowed"] is True
    assert outcome(decision)["needs-tests"] == ("audit", False)
    assert await audit_denials(api) == []


async def test_an_audit_expression_cannot_spend_the_budget_of_an_enforced_one(api: Api) -> None:
    # about 33,000 steps: it stops at the decision's budget of 2,000
    fifty = "[" + ",".join(str(i) for i in range(1, 51)) + "]"
    costly = f"{fifty}.all(x, {' + '.join(['x'] * 45)} > 0)"
    # "a-costly" sorts first, but the enforced policy is evaluated first
    await api.ok(
        "POST",
        "/v1/policies",
        policy("a-costly", {"type": "expression", "expression": costly}, mode="audit"),
    )
    await api.ok(
        "POST",
        "/v1/policies",
        policy("b-cheap", {"type": "expression", "expression": "transition.version != ''"}),
    )
    code, result = await api.deploy("checkout", "checkout-api", "1.0.0", "prod")
    assert code == 202, result
    assert [(r["policy"], r["passed"]) for r in result["decision"]["results"]] == [
        ("builtin-allowed-environments", True),
        ("a-costly", False),
        ("b-cheap", True),
    ]


# --- the verdict of each plan step ---------------------------------------------------------


async def test_a_plan_step_carries_the_verdict_of_policy_on_its_transition(api: Api) -> None:
    code, _ = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    assert code == 202
    step = steps(await api.ok("GET", DEV_PLAN))[DEPLOYMENT]
    assert step["action"] == "create"
    assert step["decision"] == {"allowed": True, "failed": []}
    assert step["blocked_by"] is None

    # policy added after the deploy: a run of the plan would be refused
    await api.ok("POST", "/v1/policies", policy("needs-tests", NEEDS_TESTS, environment="dev"))
    await api.ok(
        "POST",
        "/v1/policies",
        policy(
            "two-approvals", {"type": "approval", "required": 2}, mode="audit", environment="dev"
        ),
    )
    step = steps(await api.ok("GET", DEV_PLAN))[DEPLOYMENT]
    assert step["action"] == "create"
    assert step["decision"] == {
        "allowed": False,
        "failed": [
            {"policy": "needs-tests", "type": "check", "mode": "enforce", "reason": NO_TESTS},
            {
                "policy": "two-approvals",
                "type": "approval",
                "mode": "audit",
                "reason": "0 of 2 approvals",
            },
        ],
    }
    assert step["blocked_by"] == f"denied by policy: policy needs-tests (check): {NO_TESTS}"

    # an audit failure alone is shown, but blocks nothing
    body = policy("needs-tests", NEEDS_TESTS, mode="audit", environment="dev")
    await api.ok("PUT", "/v1/policies/needs-tests", body)
    step = steps(await api.ok("GET", DEV_PLAN))[DEPLOYMENT]
    assert step["decision"]["allowed"] is True
    assert [r["mode"] for r in step["decision"]["failed"]] == ["audit", "audit"]
    assert step["blocked_by"] is None


async def test_a_plan_step_names_the_provider_that_is_not_installed(api: Api) -> None:
    # A type whose provider no installed plugin offers (postgres and kubernetes are installed).
    await api.ok(
        "POST",
        "/v1/resources",
        {
            "kind": "ResourceType",
            "metadata": {"name": "queue", "owner": "platform-team"},
            "spec": {"provider": "rabbitmq"},
        },
    )
    await api.ok(
        "POST",
        "/v1/resources",
        {
            "kind": "resource",
            "metadata": {"name": "jobs", "owner": "team-x"},
            "spec": {"type": "queue", "config_ref": "config/queue/jobs"},
        },
    )
    await api.ok("POST", "/v1/applications/checkout/resources/jobs", status=201)
    await api.ok(
        "POST", "/v1/applications/checkout/services/checkout-api/resources/jobs", status=201
    )
    await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    plan = steps(await api.ok("GET", DEV_PLAN))
    missing = "no provider 'rabbitmq' is installed (installed: "
    queue = plan["resource/jobs@dev"]
    assert queue["provider"] == "rabbitmq" and queue["decision"] is None
    assert queue["blocked_by"].startswith(missing)
    # as in a run: what waits for a blocked step is blocked by it
    deployment = plan[DEPLOYMENT]
    assert deployment["decision"] == {"allowed": True, "failed": []}
    assert deployment["blocked_by"] == f"blocked by resource/jobs@dev: {queue['blocked_by']}"


async def test_plan_steps_are_declared_with_their_verdict_in_the_openapi_document(
    api: Api,
) -> None:
    document = await api.ok("GET", "/openapi.json")
    schemas = document["components"]["schemas"]
    step = schemas["PlanStep"]
    assert {"decision", "blocked_by"} <= set(step["required"])
    assert step["properties"]["decision"]["anyOf"] == [
        {"$ref": "#/components/schemas/StepDecision"},
        {"type": "null"},
    ]
    assert schemas["StepPolicyResult"]["properties"]["mode"]["enum"] == ["enforce", "audit"]
    assert "mode" in schemas["PolicyResult"]["required"]
