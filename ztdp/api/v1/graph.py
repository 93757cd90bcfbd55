"""The live graph: the intent graph with what is realised of it in each environment and the
status of each realisation, in one read (what `/ui` draws)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from ztdp.api.access import READ
from ztdp.api.keys import CATALOG, RUNTIME
from ztdp.api.routing import Reply
from ztdp.api.v1.common import router
from ztdp.graph import NodeKind
from ztdp.planner import Desired, desired_in_environment

# Edges between a realised node and the graph: what it realises, where it runs, what it needs.
REALISES, RUNS_IN, DEPENDS_ON = "realises", "runs_in", "depends_on"


class Realised(BaseModel):
    environment: str
    source: str = Field(description="the graph node it realises, e.g. version/checkout/api/1.0.0")
    provider: str | None = Field(description="the provider kind that realises it")
    status: str = Field(
        description="its actor's status: Pending (not realised yet), Progressing, Ready, "
        "Degraded, Drifted, Failed, Blocked, Deleting"
    )
    reason: str | None = Field(description="the last error, or the provider's message")
    since: datetime | None = Field(description="when it took this status")


class LiveNode(BaseModel):
    id: str
    kind: str = Field(
        description="a graph kind (application, service, version, environment, resourcetype, "
        "resource, policy, check, approval) or a realised one: deployment, resource-instance"
    )
    data: dict[str, Any] = Field(
        description="a graph node's stored object; a realised node's `Realised` fields"
    )


class LiveEdge(BaseModel):
    source: str
    target: str
    type: str = Field(
        description="a graph edge type (owns, has_version, allowed_in, deploy, uses, policy, "
        "satisfies) or realises, runs_in, depends_on"
    )


class LiveGraph(BaseModel):
    revision: int = Field(description="the graph revision it was read at")
    nodes: list[LiveNode]
    edges: list[LiveEdge]


REALISED_KIND: dict[str, Literal["deployment", "resource-instance"]] = {
    "deployment": "deployment",
    "resource": "resource-instance",
}


@router.add(
    "GET",
    "/v1/graph/live",
    "The intent graph, what is realised of it in each environment and each one's status",
    tag="system",
    responses={200: LiveGraph},
    access=READ,
)
async def get_live_graph(request: web.Request, body: None) -> Reply:
    """Every node and edge of `GET /v1/graph`, plus one node per realisation: a `deployment`
    (`deployment/{app}/{svc}@{env}`) for each version deployed to an environment, and a
    `resource-instance` (`resource/{res}@{env}`) for each resource realised there or needed by
    a deployment there, with its actor's status (Pending where nothing realised it yet).
    Follow changes with `GET /v1/events` and `Accept: text/event-stream`:
    `io.ztdp.actor.status` events carry a realised node's new status (their subject is its id),
    `io.ztdp.graph.changed` events say the graph changed."""
    graph = await request.app[CATALOG].graph()
    whole = graph.to_dict()
    apps = [nid.split("/", 1)[1] for nid, _ in graph.nodes(NodeKind.APPLICATION)]
    desired: dict[str, tuple[str, Desired]] = {}
    for env_id, _ in sorted(graph.nodes(NodeKind.ENVIRONMENT)):
        env = env_id.split("/", 1)[1]
        for nid, d in desired_in_environment(graph, env, apps).items():
            desired[nid] = (env, d)
    states = await request.app[RUNTIME].supervisor.actor_states(sorted(desired))
    nodes, edges = whole["nodes"], whole["edges"]
    # A resource is wanted wherever its application is, but shown only where it was applied
    # (it has an actor) or where a deployment needs it.
    shown = {nid for nid, (_, d) in desired.items() if d.kind != "resource" or nid in states}
    shown |= {dep for nid in list(shown) for dep in desired[nid][1].depends_on if dep in desired}
    for nid in sorted(shown):
        env, d = desired[nid]
        state = states.get(nid)
        realised = Realised(
            environment=env,
            source=d.source,
            provider=d.provider,
            status=state.status.value if state else "Pending",
            reason=(state.last_error or state.message or None) if state else None,
            since=state.since if state else None,
        )
        kind = REALISED_KIND.get(d.kind, d.kind)
        nodes.append({"id": nid, "kind": kind, "data": realised.model_dump(mode="json")})
        edges.append({"source": d.source, "target": nid, "type": REALISES})
        edges.append({"source": nid, "target": f"environment/{env}", "type": RUNS_IN})
        edges.extend(
            {"source": nid, "target": dep, "type": DEPENDS_ON}
            for dep in d.depends_on
            if dep in shown
        )
    return 200, whole
