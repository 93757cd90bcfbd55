"""The planner: desired graph versus observed state, as waves of steps.

Every step of a wave depends only on steps of earlier waves, so a wave can run at once.
Creates and updates come first in dependency order; deletions follow in reverse dependency
order (dependents before what they depend on). A plan is a preview and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, Field

from ztdp.errors import DependencyCycle
from ztdp.graph import EdgeType, Graph, NodeKind, node_id
from ztdp.state import ObservedResource

Action = Literal["create", "update", "delete", "noop"]
KUBERNETES = "kubernetes"


class FieldChange(BaseModel):
    path: str = Field(description="dotted path of the field, e.g. 'image'")
    before: Any = None
    after: Any = None


class PlanStep(BaseModel):
    node: str = Field(description="the realised node, e.g. deployment/checkout/checkout-api@dev")
    source: str = Field(description="the graph node it realises")
    kind: str
    action: Action
    provider: str | None = Field(description="the provider kind that will realise it")
    diff: list[FieldChange]
    depends_on: list[str]


class PlanWave(BaseModel):
    index: int
    steps: list[PlanStep]


class Plan(BaseModel):
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


def desired_in_environment(graph: Graph, environment: str, applications: Iterable[str]) -> dict[str, Desired]:
    """What the applications want realised in one environment, with dependencies."""
    env_id = node_id(NodeKind.ENVIRONMENT, environment)
    out: dict[str, Desired] = {}
    uses: list[tuple[str, str]] = []  # (dependent node, service or resource graph id)
    for app in applications:
        app_id = node_id(NodeKind.APPLICATION, app)
        for owned in graph.successors(app_id, EdgeType.OWNS):
            kind = graph.kind(owned)
            if kind is NodeKind.RESOURCE:
                spec = (graph.data(owned) or {})["spec"]
                rtype = graph.data(node_id(NodeKind.RESOURCE_TYPE, spec["type"])) or {}
                name = _name(owned)
                nid = resource_node(name, environment)
                out[nid] = Desired(
                    nid, owned, "resource", rtype.get("spec", {}).get("provider"),
                    {"name": name, "type": spec["type"], "config_ref": spec["config_ref"],
                     "environment": environment},
                )
            elif kind is NodeKind.SERVICE:
                svc = graph.data(owned) or {}
                for vid in graph.successors(owned, EdgeType.HAS_VERSION):
                    if not graph.has_edge(vid, env_id, EdgeType.DEPLOY):
                        continue
                    ver = graph.data(vid) or {}
                    spec = svc["spec"]
                    nid = deployment_node(app, _name(owned), environment)
                    out[nid] = Desired(
                        nid, vid, "deployment", KUBERNETES,
                        {"application": app, "service": _name(owned), "version": ver["version"],
                         "image": ver["image"], "config_ref": ver["config_ref"],
                         "port": spec["port"], "public": spec["public"], "environment": environment},
                    )
                    uses.extend((nid, dep) for dep in graph.successors(owned, EdgeType.USES))
    for nid, dep in uses:
        if graph.kind(dep) is NodeKind.RESOURCE:
            target = resource_node(_name(dep), environment)
        else:
            _, dep_app, dep_svc = dep.split("/")
            target = deployment_node(dep_app, dep_svc, environment)
        if target in out:
            out[nid].depends_on.append(target)
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
            provider = (graph.data(node_id(NodeKind.RESOURCE_TYPE, rtype)) or {}).get("spec", {}).get("provider")
        out[owned] = Desired(owned, owned, str(kind), provider, {}, [app_id])
        for vid in graph.successors(owned, EdgeType.HAS_VERSION):
            out[vid] = Desired(vid, vid, "version", None, {}, [owned])
    for nid, desired in out.items():
        if desired.kind == "service":
            desired.depends_on.extend(d for d in graph.successors(nid, EdgeType.USES) if d in out)
    return out


def diff(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[FieldChange]:
    """Field-level differences; nested mappings are compared field by field, lists whole."""
    changes: list[FieldChange] = []
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        path = f"{prefix}{key}"
        if isinstance(b, Mapping) and isinstance(a, Mapping):
            changes.extend(diff(b, a, f"{path}."))
        else:
            changes.append(FieldChange.model_construct(path=path, before=b, after=a))
    return changes


def _generations(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    dag: nx.DiGraph[str] = nx.DiGraph()
    dag.add_nodes_from(nodes)
    dag.add_edges_from(edges)
    try:
        return [sorted(g) for g in nx.topological_generations(dag)]
    except nx.NetworkXUnfeasible:
        cycle = [u for u, _ in nx.find_cycle(dag)]
        raise DependencyCycle(cycle) from None


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
    edges = [(dep, nid) for nid, d in desired.items() for dep in d.depends_on]
    for generation in _generations(desired, edges):
        steps = []
        for nid in generation:
            d = desired[nid]
            seen = observed.get(nid)
            changes = diff(seen.state if seen else {}, d.state)
            action: Action = "create" if seen is None else ("update" if changes else "noop")
            summary[action] += 1
            steps.append(PlanStep.model_construct(
                node=nid, source=d.source, kind=d.kind, action=action, provider=d.provider,
                diff=changes, depends_on=d.depends_on,
            ))
        waves.append(PlanWave.model_construct(index=len(waves), steps=steps))

    gone = {nid: o for nid, o in observed.items() if nid not in desired}
    gone_edges = [(dep, nid) for nid, o in gone.items() for dep in o.depends_on if dep in gone]
    for generation in reversed(_generations(gone, gone_edges)):
        steps = []
        for nid in generation:
            o = gone[nid]
            summary["delete"] += 1
            steps.append(PlanStep.model_construct(
                node=nid, source=o.source or o.node, kind=o.kind, action="delete", provider=o.provider,
                diff=diff(o.state, {}), depends_on=[d for d in o.depends_on if d in gone],
            ))
        waves.append(PlanWave.model_construct(index=len(waves), steps=steps))
    return Plan.model_construct(
        application=application, environment=environment, revision=revision, waves=waves,
        summary=summary,
    )
