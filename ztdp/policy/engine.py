"""Policy evaluation: which policies guard a transition, and whether each one is met.

A decision always lists every policy consulted with the reason it passed or failed, so a
denial explains itself. An audit policy's failure is listed too, but does not deny: it is how
a rule is tried before it is enforced. Evaluation only reads the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from ztdp.contracts import Policy, principal_of
from ztdp.contracts.models import (
    AllowedEnvironmentsRule,
    ApprovalRule,
    CheckRule,
    ExpressionRule,
    PolicyMode,
    PromotionRule,
    parse_duration,
)
from ztdp.graph import EdgeType, Graph, NodeKind, node_id
from ztdp.policy import cel

BUILTIN_ALLOWED = "builtin-allowed-environments"


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """How a realised deployment is doing, as the runtime last saw it."""

    status: str  # Pending, Progressing, Ready, Failed, ...
    since: datetime | None  # when it took this status
    version: str | None = None  # the version the runtime is realising there


HealthOf = Callable[[str, str, str], NodeHealth | None]
"""(application, service, environment) -> the deployment's health, None if never realised."""


def _nothing_runs(application: str, service: str, environment: str) -> NodeHealth | None:
    return None


class Transition(BaseModel):
    edge: Literal["deploy"] = "deploy"
    application: str
    service: str
    version: str
    environment: str
    actor: str | None = Field(default=None, description="who asks for the transition")


class PolicyResult(BaseModel):
    policy: str = Field(description="policy name")
    type: str = Field(description="the policy's rule type")
    mode: PolicyMode = Field(
        description="audit: a failure would have denied the transition, but does not"
    )
    passed: bool
    reason: str


class Decision(BaseModel):
    allowed: bool = Field(description="no enforced policy failed (audit failures never deny)")
    transition: Transition
    results: list[PolicyResult]

    @property
    def unmet(self) -> list[PolicyResult]:
        """The enforced policies that failed: the reasons for a denial."""
        return [r for r in self.results if not r.passed and r.mode == "enforce"]

    @property
    def audit_denials(self) -> list[PolicyResult]:
        """The audit policies that failed: they would have denied, had they been enforced."""
        return [r for r in self.results if not r.passed and r.mode == "audit"]

    def explain(self) -> str:
        """The reasons for a denial: enforced failures only, never passing or audit policies."""
        unmet = self.unmet
        if not unmet:
            return "allowed"
        return "; ".join(f"policy {r.policy} ({r.type}): {r.reason}" for r in unmet)


# --- CEL: the variables expressions see (the expressions: ztdp/policy/cel.py) --------------


def _cel_activation(graph: Graph, t: Transition) -> dict[str, Any]:
    app = graph.data(node_id(NodeKind.APPLICATION, t.application)) or {}
    svc = graph.data(node_id(NodeKind.SERVICE, t.application, t.service)) or {}
    ver = graph.data(node_id(NodeKind.VERSION, t.application, t.service, t.version)) or {}
    env = graph.data(node_id(NodeKind.ENVIRONMENT, t.environment)) or {}
    return {
        "transition": t.model_dump(),
        "application": app,
        "service": svc,
        "version": ver,
        "environment": env,
        "deployments": deployments_of_service(graph, t.application, t.service),
    }


# --- helpers over the graph ---------------------------------------------------------------


def deployments_of_service(graph: Graph, app: str, svc: str) -> dict[str, str]:
    """environment name -> version currently deployed there."""
    out: dict[str, str] = {}
    for vid in graph.successors(node_id(NodeKind.SERVICE, app, svc), EdgeType.HAS_VERSION):
        version = (graph.data(vid) or {}).get("version", "")
        for eid in graph.successors(vid, EdgeType.DEPLOY):
            out[eid.split("/", 1)[1]] = version
    return out


def allowed_environments(graph: Graph, app: str) -> list[str]:
    ids = graph.successors(node_id(NodeKind.APPLICATION, app), EdgeType.ALLOWED_IN)
    return sorted(i.split("/", 1)[1] for i in ids)


def _matches(policy: Policy, t: Transition) -> bool:
    sel = policy.spec.transition
    return (
        sel.edge == t.edge
        and sel.environment in (None, t.environment)
        and sel.application in (None, t.application)
    )


# --- the rules -----------------------------------------------------------------------------


def _allowed(graph: Graph, t: Transition, rule: AllowedEnvironmentsRule | None) -> tuple[bool, str]:
    if rule is not None and rule.environments is not None:
        allowed, source = sorted(rule.environments), "the policy's list"
    else:
        allowed, source = (
            allowed_environments(graph, t.application),
            (f"application {t.application}'s allowed environments"),
        )
    if t.environment in allowed:
        return True, f"{t.environment} is in {source}"
    listed = ", ".join(allowed) if allowed else "none"
    return False, f"{t.environment} is not in {source} ({listed})"


def _promotion(
    graph: Graph, t: Transition, rule: PromotionRule, health: HealthOf, now: datetime
) -> tuple[bool, str]:
    """Deployed is not enough: the version must be Ready there, for `min_ready` if set."""
    deployed = deployments_of_service(graph, t.application, t.service)
    missing = [env for env in rule.requires if deployed.get(env) != t.version]
    if missing:
        return False, f"version {t.version} is not deployed to {', '.join(missing)} yet"
    need = parse_duration(rule.min_ready) if rule.min_ready else timedelta(0)
    unmet, met = [], []
    for env in rule.requires:
        seen = health(t.application, t.service, env)
        if seen is None or seen.version != t.version:
            # Deployed in the graph, but no runtime has started on this version there yet.
            unmet.append(f"version {t.version} is Pending in {env} (needs Ready)")
            continue
        since = f" since {_iso(seen.since)}" if seen.since else ""
        if seen.status != "Ready":
            unmet.append(f"version {t.version} is {seen.status} in {env}{since} (needs Ready)")
        elif need and (seen.since is None or now - seen.since < need):
            ready_for = _human(now - seen.since) if seen.since else "an unknown time"
            unmet.append(
                f"version {t.version} is Ready in {env}{since}, for {ready_for}; "
                f"needs {rule.min_ready}"
            )
        else:
            met.append(f"Ready in {env}{since}")
    if unmet:
        return False, "; ".join(unmet)
    return True, f"version {t.version} is {', '.join(met)}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _human(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return (
        "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
        or "0s"
    )


def _checks(graph: Graph, t: Transition, rule: CheckRule) -> tuple[bool, str]:
    subject = {"application": t.application, "service": t.service, "version": t.version}
    status: dict[str, str] = {}
    for _, data in graph.nodes(NodeKind.CHECK):
        spec = data["spec"]
        # several records of one check: any success counts
        if (
            spec["subject"] == subject
            and spec["check"] in rule.checks
            and status.get(spec["check"]) != "succeeded"
        ):
            status[spec["check"]] = spec["status"]
    unmet = [
        f"{c} ({status.get(c, 'missing')})" for c in rule.checks if status.get(c) != "succeeded"
    ]
    if unmet:
        return False, f"checks not succeeded for {t.version}: {', '.join(unmet)}"
    return True, f"checks succeeded: {', '.join(rule.checks)}"


def _approvals(graph: Graph, t: Transition, rule: ApprovalRule, policy: str) -> tuple[bool, str]:
    subject = {"application": t.application, "service": t.service, "version": t.version}
    approvers: set[str] = set()
    ignored: set[str] = set()
    own = False
    for aid in graph.predecessors(node_id(NodeKind.POLICY, policy), EdgeType.SATISFIES):
        spec = (graph.data(aid) or {}).get("spec", {})
        if spec.get("subject") != subject or spec.get("environment") != t.environment:
            continue
        who = principal_of(spec["approver"])  # a plain name, stored before principals, is a token
        if who == t.actor:
            own = True  # nobody approves their own deploy
            continue
        (approvers if not rule.approvers or who in rule.approvers else ignored).add(who)
    notes = [f"not listed as approvers: {', '.join(sorted(ignored))}"] if ignored else []
    if own:
        notes.append(f"{t.actor}'s own approval does not count for its own deploy")
    note = f" ({'; '.join(notes)})" if notes else ""
    if len(approvers) < rule.required:
        return False, f"{len(approvers)} of {rule.required} approvals{note}"
    return True, f"approved by {', '.join(sorted(approvers))}"


def _expression(
    graph: Graph, t: Transition, rule: ExpressionRule, budget: cel.StepBudget
) -> tuple[bool, str]:
    return cel.evaluate(
        rule.expression, _cel_activation(graph, t), message=rule.message, budget=budget
    )


def evaluate(
    graph: Graph,
    t: Transition,
    *,
    health: HealthOf | None = None,
    now: datetime | None = None,
) -> Decision:
    """Decide a transition against the built-in rule and every policy that selects it.

    `health` says how each deployment is doing; without it (no runtime) nothing is Ready.
    """
    health = health or _nothing_runs
    now = now or datetime.now(UTC)
    budget = cel.StepBudget(cel.LIMITS.steps)  # for all its expressions together
    ok, reason = _allowed(graph, t, None)
    results = [
        PolicyResult(
            policy=BUILTIN_ALLOWED,
            type="allowed-environments",
            mode="enforce",
            passed=ok,
            reason=reason,
        )
    ]
    selected = [Policy.model_validate(data) for _, data in graph.nodes(NodeKind.POLICY)]
    selected = [p for p in selected if _matches(p, t)]
    # Enforced policies spend the CEL budget first, so an audit policy cannot exhaust it and
    # make an enforced one fail: an audit policy never denies, not even that way.
    selected.sort(key=lambda p: (p.spec.mode != "enforce", p.metadata.name))
    consulted: list[PolicyResult] = []
    for policy in selected:
        rule = policy.spec.rule
        match rule:
            case AllowedEnvironmentsRule():
                ok, reason = _allowed(graph, t, rule)
            case PromotionRule():
                ok, reason = _promotion(graph, t, rule, health, now)
            case CheckRule():
                ok, reason = _checks(graph, t, rule)
            case ApprovalRule():
                ok, reason = _approvals(graph, t, rule, policy.metadata.name)
            case ExpressionRule():
                ok, reason = _expression(graph, t, rule, budget)
        consulted.append(
            PolicyResult(
                policy=policy.metadata.name,
                type=rule.type,
                mode=policy.spec.mode,
                passed=ok,
                reason=reason,
            )
        )
    results += sorted(consulted, key=lambda r: r.policy)
    allowed = all(r.passed for r in results if r.mode == "enforce")
    return Decision(allowed=allowed, transition=t, results=results)
