"""The planner: desired graph versus observed state, as waves of steps.

Every step of a wave depends only on steps of earlier waves, so a wave can run at once.
Creates and updates come first in dependency order; deletions follow in reverse dependency
order (dependents before what they depend on). A plan is a preview and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired

import networkx as nx
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from ztdp.contracts.models import PolicyMode
from ztdp.errors import DependencyCycle
from ztdp.graph import EdgeType, Graph, NodeKind, node_id
from ztdp.state import ObservedResource

Action = Literal["create", "update", "delete", "noop"]
# The provider that realises deployments (a service version run as containers). A resource's
# provider is named by its resource type; a deployment has no type to name one, so this is the
# one provider kind the core names.
DEPLOYMENT_PROVIDER = "kubernetes"


class FieldChange(TypedDict):
    path: Annotated[str, Field(description="dotted path of the field, e.g. 'image'")]
    before: Any
    after: Any


class StepPolicyResult(TypedDict):
    policy: Annotated[str, Field(description="policy name")]
    type: Annotated[str, Field(description="the policy's rule type")]
    mode: Annotated[
        PolicyMode, Field(description="audit: the failure is reported but does not deny")
    ]
    reason: str


class StepDecision(TypedDict):
    allowed: Annotated[
        bool, Field(description="whether a deploy would be allowed now: no enforced failure")
    ]
    failed: Annotated[
        list[StepPolicyResult],
        Field(description="the policies that failed, enforced and audit ones, with reasons"),
    ]


class PlanStep(TypedDict):
    node: Annotated[str, Field(description="the realised node, e.g. deployment/checkout/api@dev")]
    source: Annotated[str, Field(description="the graph node it realises")]
    kind: str
    action: Action
    provider: Annotated[str | None, Field(description="the provider kind that will realise it")]
    diff: list[FieldChange]
    depends_on: list[str]
    desired: Annotated[
        dict[str, Any], Field(description="the desired state (for a delete: the last observed)")
    ]
    decision: Annotated[
        StepDecision | None,
        Field(
            description="for a deployment's create or update: the policy verdict on its "
            "transition, as a deploy asked now would get it; null for other steps"
        ),
    ]
    blocked_by: Annotated[
        str | None,
        Field(
            description="why the step would not be carried out: a policy denial, a provider "
            "that is not installed, or a step it waits for that is blocked; null if nothing "
            "known blocks it"
        ),
    ]
    roll: NotRequired[
        Annotated[
            str,
            Field(
                description="only in a secret rotation's run: the rotated resource whose new "
                "secrets this deployment of another application is rolled onto"
            ),
        ]
    ]


class PlanWave(TypedDict):
    index: int
    steps: list[PlanStep]


class Plan(BaseModel):
    # Steps are plain typed dicts: a plan of 10,000 steps must not cost 100,000 model objects.
    application: str | None
    environment: str | None
    revision: int = Field(description="graph revision the plan was made from")
    waves: list[PlanWave]
    summary: dict[str, int] = Field(description="number of steps per action")


@dataclass(slots=True)
class Desired:
    node: str
    source: str
    kind: str
    provider: str | None
    state: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)


def deployment_node(app: str, svc: str, env: str) -> str:
    return f"deployment/{app}/{svc}@{env}"


def resource_node(res: str, env: str) -> str:
    return f"resource/{res}@{env}"


def _name(nid: str) -> str:
    return nid.rsplit("/", 1)[1]


@dataclass(frozen=True)
class SecretsSeen:
    """What a plan knows of secrets: their versions, and which providers generate outputs.

    A reference in a desired env shows the secret's version (a rotation is an update of every
    deployment using it), never a value.
    """

    versions: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # app -> name -> v
    # Whether a provider (by kind) generates a `url` output to inject into using services.
    injects: Callable[[str | None], bool] = lambda provider: False
    output: str = "url"


NO_SECRETS = SecretsSeen()
DEFAULT_INJECT_AS = "DATABASE_URL"


def _env(app: str, env: Mapping[str, Any], secrets: SecretsSeen) -> dict[str, Any]:
    """A version's env as desired: each secret reference with the secret's current version
    (None: it does not exist yet; applying then fails, naming it)."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if isinstance(value, Mapping) and "secret" in value:
            scope = value.get("application") or app
            version = secrets.versions.get(scope, {}).get(value["secret"])
            out[name] = {**value, "version": version}
        else:
            out[name] = value
    return out


def _injected(graph: Graph, app: str, used: Iterable[str], secrets: SecretsSeen) -> dict[str, Any]:
    """The env a service gets from the resources it uses whose provider generates a URL:
    `{spec.inject_as: {"secret": "<resource>.url"}}`, the secret of the resource's application."""
    out: dict[str, Any] = {}
    for dep in used:
        if graph.kind(dep) is not NodeKind.RESOURCE:
            continue
        spec = (graph.data(dep) or {}).get("spec", {})
        rtype = graph.data(node_id(NodeKind.RESOURCE_TYPE, spec.get("type", ""))) or {}
        if not secrets.injects(rtype.get("spec", {}).get("provider")):
            continue
        owners = graph.predecessors(dep, EdgeType.OWNS)
        scope = _name(owners[0]) if owners else app
        ref: dict[str, Any] = {"secret": f"{_name(dep)}.{secrets.output}"}
        if scope != app:
            ref["application"] = scope
        out[str(spec.get("inject_as") or DEFAULT_INJECT_AS)] = ref
    return out


def desired_in_environment(
    graph: Graph,
    environment: str,
    applications: Iterable[str],
    secrets: SecretsSeen = NO_SECRETS,
) -> dict[str, Desired]:
    """What the applications want realised in one environment, with dependencies."""
    env_id = node_id(NodeKind.ENVIRONMENT, environment)
    out: dict[str, Desired] = {}
    realised: dict[str, str] = {}  # graph node -> its realised node in this environment
    users: list[tuple[Desired, Iterable[str]]] = []  # a deployment and what its service uses
    for app in applications:
        for owned in graph.out(node_id(NodeKind.APPLICATION, app), EdgeType.OWNS):
            data = graph.data(owned) or {}
            spec = data["spec"]
            if graph.kind(owned) is NodeKind.RESOURCE:
                rtype = graph.data(node_id(NodeKind.RESOURCE_TYPE, spec["type"])) or {}
                nid = realised[owned] = resource_node(_name(owned), environment)
                state = {"type": spec["type"], "config_ref": spec["config_ref"]}
                provider = rtype.get("spec", {}).get("provider")
                out[nid] = Desired(nid, owned, "resource", provider, state)
                continue
            for vid in graph.out(owned, EdgeType.HAS_VERSION):
                if env_id not in graph.out(vid, EdgeType.DEPLOY):
                    continue
                ver = graph.data(vid) or {}
                nid = realised[owned] = deployment_node(app, _name(owned), environment)
                state = {
                    "version": ver["version"],
                    "image": ver["image"],
                    "config_ref": ver["config_ref"],
                    "port": spec["port"],
                    "public": spec["public"],
                    "replicas": ver.get("replicas", 1),
                    # What the version sets itself wins over what a resource injects.
                    "env": _env(
                        app,
                        {
                            **_injected(graph, app, graph.out(owned, EdgeType.USES), secrets),
                            **ver.get("env", {}),
                        },
                        secrets,
                    ),
                }
                desired = out[nid] = Desired(nid, vid, "deployment", DEPLOYMENT_PROVIDER, state)
                users.append((desired, graph.out(owned, EdgeType.USES)))
    # A dependency outside this plan (another application's service) is not ordered here.
    for desired, used in users:
        desired.depends_on = [realised[dep] for dep in used if dep in realised]
    return out


def desired_application(graph: Graph, app: str) -> dict[str, Desired]:
    """The application's own graph, ordered parents before children, dependencies first."""
    app_id = node_id(NodeKind.APPLICATION, app)
    out: dict[str, Desired] = {app_id: Desired(app_id, app_id, "application", None, {})}
    for owned in graph.successors(app_id, EdgeType.OWNS):
        kind = graph.kind(owned)
        provider = None
        if kind is NodeKind.RESOURCE:
            rtype = (graph.data(owned) or {})["spec"]["type"]
            rdata = graph.data(node_id(NodeKind.RESOURCE_TYPE, rtype)) or {}
            provider = rdata.get("spec", {}).get("provider")
        out[owned] = Desired(owned, owned, str(kind), provider, {}, [app_id])
        for vid in graph.successors(owned, EdgeType.HAS_VERSION):
            out[vid] = Desired(vid, vid, "version", None, {}, [owned])
    for nid, desired in out.items():
        if desired.kind == "service":
            desired.depends_on.extend(d for d in graph.successors(nid, EdgeType.USES) if d in out)
    return out


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = ""
) -> list[FieldChange]:
    """Field-level differences, in the order of `after`'s fields, then fields only in `before`.

    Nested mappings are compared field by field; lists and other values whole.
    """
    if not before:  # a create: every field is new (the common case, kept cheap)
        return [{"path": prefix + key, "before": None, "after": a} for key, a in after.items()]
    changes: list[FieldChange] = []
    for key, a in after.items():
        b = before.get(key)
        if b == a and (b is not None or key in before):
            continue
        if isinstance(b, Mapping) and isinstance(a, Mapping):
            changes.extend(diff(b, a, f"{prefix}{key}."))
        else:
            changes.append({"path": f"{prefix}{key}", "before": b, "after": a})
    changes.extend(
        {"path": f"{prefix}{key}", "before": b, "after": None}
        for key, b in before.items()
        if key not in after
    )
    return changes


def generations(depends_on: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Group nodes so that each depends only on nodes of earlier groups (Kahn's algorithm).

    The same result as `networkx.topological_generations`, computed on the planner's own
    adjacency: building a networkx DiGraph for it would cost more than the sort itself.
    A cycle is reported with networkx, naming the nodes on it.
    """
    indegree = dict.fromkeys(depends_on, 0)
    dependents: dict[str, list[str]] = {n: [] for n in depends_on}
    for node, deps in depends_on.items():
        for dep in deps:
            dependents[dep].append(node)
            indegree[node] += 1
    current = sorted(n for n, count in indegree.items() if count == 0)
    result: list[list[str]] = []
    placed = 0
    while current:
        result.append(current)
        placed += len(current)
        ready = []
        for node in current:
            for dependent in dependents[node]:
                indegree[dependent] -= 1
                if indegree[dependent] == 0:
                    ready.append(dependent)
        current = sorted(ready)
    if placed != len(indegree):
        stuck = {n for n, count in indegree.items() if count > 0}
        dag: nx.DiGraph[str] = nx.DiGraph()
        dag.add_edges_from((d, n) for n in stuck for d in depends_on[n] if d in stuck)
        raise DependencyCycle([u for u, _ in nx.find_cycle(dag)])
    return result


def make_plan(
    desired: Mapping[str, Desired],
    observed: Mapping[str, ObservedResource],
    *,
    application: str | None,
    environment: str | None,
    revision: int,
) -> Plan:
    waves: list[PlanWave] = []
    summary = {"create": 0, "update": 0, "delete": 0, "noop": 0}
    order = generations({nid: d.depends_on for nid, d in desired.items()})
    for generation in order:
        steps: list[PlanStep] = []
        for nid in generation:
            d = desired[nid]
            seen = observed.get(nid)
            changes = diff(seen.state if seen else {}, d.state)
            action: Action = "create" if seen is None else ("update" if changes else "noop")
            summary[action] += 1
            steps.append(
                {
                    "node": nid,
                    "source": d.source,
                    "kind": d.kind,
                    "action": action,
                    "provider": d.provider,
                    "diff": changes,
                    "depends_on": d.depends_on,
                    "desired": d.state,
                    "decision": None,
                    "blocked_by": None,
                }
            )
        waves.append({"index": len(waves), "steps": steps})

    gone = {nid: o for nid, o in observed.items() if nid not in desired}
    gone_deps = {nid: [d for d in o.depends_on if d in gone] for nid, o in gone.items()}
    for generation in reversed(generations(gone_deps)):
        steps = []
        for nid in generation:
            o = gone[nid]
            summary["delete"] += 1
            steps.append(
                {
                    "node": nid,
                    "source": o.source or o.node,
                    "kind": o.kind,
                    "action": "delete",
                    "provider": o.provider,
                    "diff": diff(o.state, {}),
                    "depends_on": gone_deps[nid],
                    "desired": o.state,
                    "decision": None,
                    "blocked_by": None,
                }
            )
        waves.append({"index": len(waves), "steps": steps})
    return Plan.model_construct(
        application=application,
        environment=environment,
        revision=revision,
        waves=waves,
        summary=summary,
    )


def deletions(plan: Plan) -> Plan:
    """Only the plan's delete steps: what realising a delete does, and nothing else (a
    delete must not create in one environment what another lacks)."""
    waves: list[PlanWave] = []
    for wave in plan.waves:
        steps = [s for s in wave["steps"] if s["action"] == "delete"]
        if steps:
            waves.append({"index": len(waves), "steps": steps})
    summary = {"create": 0, "update": 0, "delete": sum(len(w["steps"]) for w in waves), "noop": 0}
    return Plan.model_construct(
        application=plan.application,
        environment=plan.environment,
        revision=plan.revision,
        waves=waves,
        summary=summary,
    )


def waits(waves: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each step's node -> the steps of the plan it waits for.

    A step waits for the steps it depends on; a deletion instead waits for the deletion of
    the steps that depend on it. Dependencies outside the plan are already in place.
    """
    steps = {s["node"]: s for w in waves for s in w["steps"]}
    out: dict[str, list[str]] = {node: [] for node in steps}
    for node, step in steps.items():
        for dep in step["depends_on"]:
            if dep not in steps:
                continue
            if step["action"] == "delete":
                out[dep].append(node)
            else:
                out[node].append(dep)
    return out


def mark_blocked(plan: Plan, reasons: Mapping[str, str]) -> None:
    """Set `blocked_by` of each step as a run of the plan would find it.

    `reasons` holds what stops a step of its own (a denial, a missing provider). As in a run,
    a step waiting for a blocked step is blocked by it first, whatever its own reason.
    """
    before = waits(plan.waves)
    blocked: dict[str, str] = {}
    # Waves are in the order a run starts them: whatever a step waits for comes earlier.
    for wave in plan.waves:
        for step in wave["steps"]:
            node = step["node"]
            cause = next((d for d in before[node] if d in blocked), None)
            reason = f"blocked by {cause}: {blocked[cause]}" if cause else reasons.get(node)
            if reason is not None:
                step["blocked_by"] = blocked[node] = reason
